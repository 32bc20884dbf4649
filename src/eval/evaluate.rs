//! One evaluation of a model on a list of cases: the dataset's metrics (CounterFact or zsRE),
//! optionally fluency, and the collapse monitor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::collapse::{CollapseReport, PerplexitySlice, collapse_report};
use super::counterfact::{self, CfAgg, CfCase};
use super::fluency::{FluencyCase, FluencyOptions, case_seed, fluency_cases};
use super::zsre::{self, ZsreAgg, ZsreCase};
use crate::backend::Backend;
use crate::edit::{Case, EditState, Probes};
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// Which metric family a dataset gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// The probability test of spec §10.1.
    CounterFact,
    /// The token accuracy of spec §10.3.
    Zsre,
}

impl DatasetKind {
    /// The kind of every case.
    ///
    /// # Errors
    /// No case, a case without probes (a plain request list), or a mix of kinds.
    pub fn of(cases: &[Case]) -> Result<Self> {
        let kind_of = |c: &Case| match c.probes {
            Probes::CounterFact { .. } => Some(DatasetKind::CounterFact),
            Probes::Zsre { .. } => Some(DatasetKind::Zsre),
            Probes::None => None,
        };
        let first = cases
            .first()
            .ok_or_else(|| Error::input("the dataset holds no case to evaluate"))?;
        let kind = kind_of(first).ok_or_else(|| {
            Error::input(
                "the evaluation needs CounterFact or zsRE records (with paraphrase and \
                 neighbourhood prompts); a plain request list has nothing to evaluate with",
            )
        })?;
        if let Some((i, _)) = cases
            .iter()
            .enumerate()
            .find(|(_, c)| kind_of(c) != Some(kind))
        {
            return Err(Error::input(format!(
                "record {i} is not a {kind:?} record like record 0; evaluate one dataset kind at a time"
            )));
        }
        Ok(kind)
    }
}

/// What an evaluation measures besides the dataset's metrics.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// Fluency generations (off when `None` or `cases == 0`).
    pub fluency: Option<FluencyOptions>,
    /// Perplexity slice of the collapse monitor (off when `None`; the layer norms are always
    /// read).
    pub perplexity: Option<PerplexitySlice>,
}

/// Aggregates of the dataset's metric family.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Aggregate {
    CounterFact(CfAgg),
    Zsre(ZsreAgg),
}

impl Aggregate {
    /// `(name, value)` pairs, in the golden files' order.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        match self {
            Aggregate::CounterFact(a) => a.values(),
            Aggregate::Zsre(a) => a.values(),
        }
    }

    /// One value by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

/// Per-case scores of the dataset's metric family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CaseScores {
    CounterFact(Vec<CfCase>),
    Zsre(Vec<ZsreCase>),
}

/// Fluency over the scored cases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FluencyReport {
    /// Mean n-gram entropy × 100 (the reference's reported number).
    pub ngram_entropy: f64,
    pub per_case: Vec<FluencyCase>,
}

/// One evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub n_cases: usize,
    pub agg: Aggregate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fluency: Option<FluencyReport>,
    pub collapse: CollapseReport,
    pub per_case: CaseScores,
    /// Wall-clock seconds in all ...
    pub seconds: f64,
    /// ... and by part.
    pub seconds_by_part: EvalSeconds,
}

/// Wall-clock seconds of an evaluation's parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalSeconds {
    /// The probability / token-accuracy test.
    pub scoring: f64,
    /// Fluency generations.
    pub fluency: f64,
    /// The collapse monitor (perplexity and layer norms).
    pub monitor: f64,
}

impl EvalReport {
    /// Every headline number: the aggregate, fluency (`ngram_entropy`) and the perplexity
    /// (`wikitext_ppl`) when measured, and `dw_fro_l{layer}` per edited layer.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut m: Vec<(String, f64)> = self
            .agg
            .values()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some(f) = &self.fluency {
            m.push(("ngram_entropy".into(), f.ngram_entropy));
        }
        if let Some(p) = self.collapse.wikitext_ppl {
            m.push(("wikitext_ppl".into(), p));
        }
        for l in &self.collapse.layers {
            m.push((format!("dw_fro_l{}", l.layer), l.dw_fro));
        }
        m
    }
}

/// Progress inside one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalStep {
    /// The probability / token-accuracy test of `cases` cases is running.
    Scoring { cases: usize },
    /// Fluency generation `done` of `total` finished.
    Generated { done: usize, total: usize },
    /// The collapse monitor is running.
    Monitor,
}

/// Evaluates `model` on `cases` (a prefix of the dataset: case `i` here is dataset case `i`,
/// which seeds its fluency generation).
///
/// # Errors
/// Records of the wrong shape (see [`DatasetKind::of`]), tokenisation and backend failures.
pub async fn evaluate<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    cases: &[Case],
    state: &EditState<B::Tensor>,
    opts: &EvalOptions,
    mut on_step: impl FnMut(EvalStep),
) -> Result<EvalReport> {
    let t0 = clock_now();
    let kind = DatasetKind::of(cases)?;
    on_step(EvalStep::Scoring { cases: cases.len() });
    let (agg, per_case) = match kind {
        DatasetKind::CounterFact => {
            let c = counterfact::counterfact_cases(model, tok, cases).await?;
            (
                Aggregate::CounterFact(counterfact::aggregate(&c)),
                CaseScores::CounterFact(c),
            )
        }
        DatasetKind::Zsre => {
            let c = zsre::zsre_cases(model, tok, cases).await?;
            (Aggregate::Zsre(zsre::aggregate(&c)), CaseScores::Zsre(c))
        }
    };
    let t_scored = clock_now();
    let fluency = match opts.fluency.filter(|f| f.cases > 0) {
        Some(f) => {
            let n = f.cases.min(cases.len());
            let prompts: Vec<(Option<u64>, String)> = cases[..n]
                .iter()
                .map(|c| (c.request.case_id, c.request.sentence()))
                .collect();
            let seeds: Vec<u64> = (0..n).map(|i| case_seed(f.seed, i)).collect();
            let per_case = fluency_cases(model, tok, &prompts, &seeds, &f, |i| {
                on_step(EvalStep::Generated {
                    done: i + 1,
                    total: n,
                })
            })
            .await?;
            let mean = per_case.iter().map(|c| c.ngram_entropy).sum::<f64>() / n as f64;
            Some(FluencyReport {
                ngram_entropy: 100.0 * mean,
                per_case,
            })
        }
        None => None,
    };
    let t_generated = clock_now();
    on_step(EvalStep::Monitor);
    let collapse = collapse_report(model, state, opts.perplexity.as_ref()).await?;
    let seconds_by_part = EvalSeconds {
        scoring: since(t0, t_scored),
        fluency: since(t_scored, t_generated),
        monitor: elapsed(t_generated).as_secs_f64(),
    };
    Ok(EvalReport {
        n_cases: cases.len(),
        agg,
        fluency,
        collapse,
        per_case,
        seconds: elapsed(t0).as_secs_f64(),
        seconds_by_part,
    })
}

/// A monotonic clock reading where one exists (native), for the reports' timings.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn clock_now() -> Option<std::time::Instant> {
    Some(std::time::Instant::now())
}

/// The browser has no `Instant`; the page times runs itself.
#[cfg(target_arch = "wasm32")]
pub(crate) fn clock_now() -> Option<std::time::Instant> {
    None
}

/// Seconds from `a` to `b` (zero without a clock).
fn since(a: Option<std::time::Instant>, b: Option<std::time::Instant>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    }
}

/// Time since `t0` (zero without a clock).
pub(crate) fn elapsed(t0: Option<std::time::Instant>) -> Duration {
    t0.map_or(Duration::ZERO, |t| t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::dataset::parse_cases;

    const CF: &str = r#"{"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is",
        "subject": "Danielle Darrieux", "target_new": "English", "ground_truth": "French",
        "rephrase_prompt": "r", "locality_prompt": "l"}"#;
    const ZSRE: &str = r#"{"subject": "UniFirst", "src": "What is the product made by UniFirst?",
        "answers": ["uniform"], "rephrase": "What will UniFirst make?", "loc": "nq question: q",
        "loc_ans": "Walter"}"#;
    const PLAIN: &str =
        r#"{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome"}"#;

    fn kind(records: &[&str]) -> Result<DatasetKind> {
        DatasetKind::of(&parse_cases(&format!("[{}]", records.join(",")), "t.json").unwrap())
    }

    #[test]
    fn dataset_kinds_and_bad_mixes() {
        assert_eq!(kind(&[CF, CF]).unwrap(), DatasetKind::CounterFact);
        assert_eq!(kind(&[ZSRE]).unwrap(), DatasetKind::Zsre);
        let err = kind(&[PLAIN]).unwrap_err().to_string();
        assert!(err.contains("CounterFact or zsRE records"), "{err}");
        let err = kind(&[CF, ZSRE]).unwrap_err().to_string();
        assert!(err.contains("record 1"), "{err}");
        let err = DatasetKind::of(&[]).unwrap_err().to_string();
        assert!(err.contains("no case"), "{err}");
    }
}
