//! The CounterFact probability test (spec §10.1), as the reference's `test_batch_prediction`
//! and `summarize.py` compute it.
//!
//! Per case and prompt kind (rewrite, paraphrase, neighborhood), each prompt is scored with both
//! candidates by [`new_vs_true`] (the mean token NLL of `" " + candidate`). Then, per case:
//! - `*_success`: mean over the kind's prompts of `NLL(true) > NLL(new)` (rewrite, paraphrase)
//!   or `NLL(true) < NLL(new)` (neighborhood);
//! - `*_diff`: mean of `exp(−NLL(new)) − exp(−NLL(true))` (rewrite, paraphrase) or of
//!   `exp(−NLL(true)) − exp(−NLL(new))` (neighborhood);
//! - `*_acc`: mean of "every target token is the argmax", for `target_new` (rewrite,
//!   paraphrase) or `target_true` (neighborhood);
//! - `*_gen`: the realistic score ([`super::realistic`], ours): mean of "greedy decoding from the
//!   prompt alone says `target_new`" (rewrite, paraphrase) or `target_true` (neighborhood).
//!
//! The aggregate is the mean over cases × 100, and `score_hmean` the harmonic mean of the three
//! aggregate success rates: the field names of `tests/golden/seq100-*.json`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::probs::{CandidateScore, new_vs_true};
use super::realistic::{greedy_says_scored, rate};
use crate::backend::Backend;
use crate::edit::{Case, Probes};
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// The NLLs of both candidates after one prompt.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NllPair {
    pub target_new: f32,
    pub target_true: f32,
}

/// Raw NLLs per prompt kind. Serialised as in the golden files: a kind with one prompt (always,
/// in the EasyEdit schema) is one `{target_new, target_true}` object; a kind with several (the
/// ROME schema's 2 paraphrases and 10 neighbours) is a list of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseNll {
    #[serde(serialize_with = "one_or_many", deserialize_with = "one_or_many_back")]
    pub rewrite: Vec<NllPair>,
    #[serde(serialize_with = "one_or_many", deserialize_with = "one_or_many_back")]
    pub paraphrase: Vec<NllPair>,
    #[serde(serialize_with = "one_or_many", deserialize_with = "one_or_many_back")]
    pub neighborhood: Vec<NllPair>,
}

fn one_or_many<S: Serializer>(v: &[NllPair], s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        [one] => one.serialize(s),
        many => many.serialize(s),
    }
}

/// Reads what [`one_or_many`] wrote.
fn one_or_many_back<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<NllPair>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(NllPair),
        Many(Vec<NllPair>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

/// One case's scores, fractions in `[0, 1]` (not × 100), field names as the golden `per_case`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CfCase {
    pub case_id: Option<u64>,
    pub nll: CaseNll,
    pub rewrite_success: f64,
    pub paraphrase_success: f64,
    pub neighborhood_success: f64,
    pub rewrite_diff: f64,
    pub paraphrase_diff: f64,
    pub neighborhood_diff: f64,
    pub rewrite_acc: f64,
    pub paraphrase_acc: f64,
    pub neighborhood_acc: f64,
    pub rewrite_gen: f64,
    pub paraphrase_gen: f64,
    pub neighborhood_gen: f64,
}

/// Means over cases × 100, field names as the golden `agg`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CfAgg {
    pub rewrite_success: f64,
    pub paraphrase_success: f64,
    pub neighborhood_success: f64,
    pub rewrite_diff: f64,
    pub paraphrase_diff: f64,
    pub neighborhood_diff: f64,
    pub rewrite_acc: f64,
    pub paraphrase_acc: f64,
    pub neighborhood_acc: f64,
    pub rewrite_gen: f64,
    pub paraphrase_gen: f64,
    pub neighborhood_gen: f64,
    pub score_hmean: f64,
}

/// The aggregate's fields in the golden files' order (the `*_gen` ones are ours).
pub const CF_METRICS: [&str; 13] = [
    "rewrite_success",
    "paraphrase_success",
    "neighborhood_success",
    "rewrite_diff",
    "paraphrase_diff",
    "neighborhood_diff",
    "rewrite_acc",
    "paraphrase_acc",
    "neighborhood_acc",
    "rewrite_gen",
    "paraphrase_gen",
    "neighborhood_gen",
    "score_hmean",
];

impl CfAgg {
    /// `(name, value)` in [`CF_METRICS`] order.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let v = [
            self.rewrite_success,
            self.paraphrase_success,
            self.neighborhood_success,
            self.rewrite_diff,
            self.paraphrase_diff,
            self.neighborhood_diff,
            self.rewrite_acc,
            self.paraphrase_acc,
            self.neighborhood_acc,
            self.rewrite_gen,
            self.paraphrase_gen,
            self.neighborhood_gen,
            self.score_hmean,
        ];
        CF_METRICS.into_iter().zip(v).collect()
    }
}

/// Success, diff and acc of one prompt kind from its `(new, true)` scores.
/// `new_should_win` is true for rewrite and paraphrase, false for neighborhood.
///
/// # Panics
/// On an empty kind (the caller validates that every kind has a prompt).
pub fn kind_scores(pairs: &[(CandidateScore, CandidateScore)], new_should_win: bool) -> [f64; 3] {
    assert!(!pairs.is_empty(), "a prompt kind without prompts");
    let n = pairs.len() as f64;
    let mut s = [0.0; 3];
    for (new, truth) in pairs {
        let (win, lose) = if new_should_win {
            (new, truth)
        } else {
            (truth, new)
        };
        // The reference compares the f32 NLLs and takes exp of them in f64.
        s[0] += f64::from(u8::from(lose.nll > win.nll));
        s[1] += (-f64::from(win.nll)).exp() - (-f64::from(lose.nll)).exp();
        s[2] += f64::from(u8::from(win.argmax_all));
    }
    s.map(|x| x / n)
}

/// The prompts of a CounterFact case by kind: rewrite (the request's sentence), paraphrases,
/// neighbours.
///
/// # Errors
/// A case without a true target, without CounterFact probes, or with an empty prompt kind.
pub fn case_prompts(case: &Case) -> Result<[Vec<String>; 3]> {
    let r = &case.request;
    let who = r.case_id.map_or_else(|| r.label(), |c| format!("case {c}"));
    if r.target_true.is_none() {
        return Err(Error::input(format!(
            "{who} has no true target; the CounterFact test compares target_new with target_true"
        )));
    }
    let Probes::CounterFact {
        paraphrase,
        neighborhood,
    } = &case.probes
    else {
        return Err(Error::input(format!(
            "{who} is not a CounterFact record (no paraphrase/neighbourhood prompts)"
        )));
    };
    if paraphrase.is_empty() || neighborhood.is_empty() {
        return Err(Error::input(format!(
            "{who} has no paraphrase or no neighbourhood prompt; each kind needs at least one"
        )));
    }
    Ok([vec![r.sentence()], paraphrase.clone(), neighborhood.clone()])
}

/// Builds a case's scores from its candidate scores, laid out as [`counterfact_cases`] asks for
/// them (per kind, per prompt, `(new, true)`), and its realistic rates per kind.
pub fn case_from_scores(
    case_id: Option<u64>,
    counts: [usize; 3],
    scores: &[CandidateScore],
    gen_rates: [f64; 3],
) -> CfCase {
    assert_eq!(
        scores.len(),
        2 * counts.iter().sum::<usize>(),
        "two scores per prompt"
    );
    let mut kinds = vec![];
    let mut at = 0;
    for n in counts {
        let pairs: Vec<(CandidateScore, CandidateScore)> = (0..n)
            .map(|p| (scores[at + 2 * p], scores[at + 2 * p + 1]))
            .collect();
        at += 2 * n;
        kinds.push(pairs);
    }
    let nlls = |k: &[(CandidateScore, CandidateScore)]| -> Vec<NllPair> {
        k.iter()
            .map(|(n, t)| NllPair {
                target_new: n.nll,
                target_true: t.nll,
            })
            .collect()
    };
    let [rs, rd, ra] = kind_scores(&kinds[0], true);
    let [ps, pd, pa] = kind_scores(&kinds[1], true);
    let [ns, nd, na] = kind_scores(&kinds[2], false);
    CfCase {
        case_id,
        nll: CaseNll {
            rewrite: nlls(&kinds[0]),
            paraphrase: nlls(&kinds[1]),
            neighborhood: nlls(&kinds[2]),
        },
        rewrite_success: rs,
        paraphrase_success: ps,
        neighborhood_success: ns,
        rewrite_diff: rd,
        paraphrase_diff: pd,
        neighborhood_diff: nd,
        rewrite_acc: ra,
        paraphrase_acc: pa,
        neighborhood_acc: na,
        rewrite_gen: gen_rates[0],
        paraphrase_gen: gen_rates[1],
        neighborhood_gen: gen_rates[2],
    }
}

/// What [`counterfact_cases`] asks of the model for a list of cases.
pub struct CfQuestions {
    /// Per prompt, `(prompt, target_new, Some(target_true))` for the teacher-forced pass.
    pub items: Vec<(String, String, Option<String>)>,
    /// Per prompt, `(prompt, the answer it should say)` for the realistic rule: `target_new`
    /// after rewrite and paraphrase prompts, the true target after the neighbours.
    pub said: Vec<(String, String)>,
    /// Per case, its prompts per kind.
    pub counts: Vec<[usize; 3]>,
}

impl CfQuestions {
    /// The questions of `cases`, case after case, kind after kind.
    ///
    /// # Errors
    /// See [`case_prompts`].
    pub fn of(cases: &[Case]) -> Result<Self> {
        let mut q = CfQuestions {
            items: vec![],
            said: vec![],
            counts: vec![],
        };
        for case in cases {
            let prompts = case_prompts(case)?;
            let r = &case.request;
            let truth = r.target_true.clone().expect("checked by case_prompts");
            for (k, kind) in prompts.iter().enumerate() {
                for p in kind {
                    q.items
                        .push((p.clone(), r.target_new.clone(), Some(truth.clone())));
                    let expected = if k < 2 { &r.target_new } else { &truth };
                    q.said.push((p.clone(), expected.clone()));
                }
            }
            q.counts.push(prompts.map(|k| k.len()));
        }
        Ok(q)
    }

    /// The teacher-forced pass: per prompt, the new target's score, then the true one's.
    ///
    /// # Errors
    /// See [`new_vs_true`].
    pub async fn score<B: Backend>(
        &self,
        model: &Model<B>,
        tok: &Tokenizer,
    ) -> Result<Vec<CandidateScore>> {
        Ok(new_vs_true(model, tok, &self.items)
            .await?
            .into_iter()
            .flat_map(|(n, t)| [n, t.expect("a truth was given")])
            .collect())
    }

    /// From the teacher-forced `scores`, the score of each [`Self::said`] pair's answer (the
    /// new target's for rewrite and paraphrase prompts, the true one's for the neighbours).
    pub fn said_scores(&self, scores: &[CandidateScore]) -> Vec<CandidateScore> {
        let mut out = Vec::with_capacity(self.said.len());
        let mut at = 0;
        for c in &self.counts {
            for (k, &m) in c.iter().enumerate() {
                for p in 0..m {
                    out.push(scores[at + 2 * p + usize::from(k == 2)]);
                }
                at += 2 * m;
            }
        }
        out
    }
}

/// Scores every case on `model`: one teacher-forced pass, and the realistic rule taken from it
/// where it read the same tokens ([`greedy_says_scored`]).
///
/// # Errors
/// See [`case_prompts`] and [`new_vs_true`].
pub async fn counterfact_cases<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    cases: &[Case],
) -> Result<Vec<CfCase>> {
    let q = CfQuestions::of(cases)?;
    let scores = q.score(model, tok).await?;
    let says = greedy_says_scored(model, tok, &q.said, &q.said_scores(&scores)).await?;
    let (mut at, mut at_said) = (0, 0);
    Ok(cases
        .iter()
        .zip(q.counts)
        .map(|(case, c)| {
            let n = 2 * c.iter().sum::<usize>();
            let mut gen_rates = [0.0; 3];
            for (k, &m) in c.iter().enumerate() {
                gen_rates[k] = rate(&says[at_said..at_said + m]);
                at_said += m;
            }
            let out = case_from_scores(case.request.case_id, c, &scores[at..at + n], gen_rates);
            at += n;
            out
        })
        .collect())
}

/// The harmonic mean of positive values; 0 when any is 0 (as `scipy.stats.hmean` gives for a
/// zero entry).
pub fn hmean(v: &[f64]) -> f64 {
    if v.is_empty() || v.iter().any(|&x| x <= 0.0) {
        return 0.0;
    }
    v.len() as f64 / v.iter().map(|x| 1.0 / x).sum::<f64>()
}

/// Means over `cases` × 100.
///
/// # Panics
/// On no case (the benchmark rejects an empty dataset first).
pub fn aggregate(cases: &[CfCase]) -> CfAgg {
    assert!(!cases.is_empty(), "aggregate of no case");
    let mean =
        |f: fn(&CfCase) -> f64| 100.0 * cases.iter().map(f).sum::<f64>() / cases.len() as f64;
    let (rs, ps, ns) = (
        mean(|c| c.rewrite_success),
        mean(|c| c.paraphrase_success),
        mean(|c| c.neighborhood_success),
    );
    CfAgg {
        rewrite_success: rs,
        paraphrase_success: ps,
        neighborhood_success: ns,
        rewrite_diff: mean(|c| c.rewrite_diff),
        paraphrase_diff: mean(|c| c.paraphrase_diff),
        neighborhood_diff: mean(|c| c.neighborhood_diff),
        rewrite_acc: mean(|c| c.rewrite_acc),
        paraphrase_acc: mean(|c| c.paraphrase_acc),
        neighborhood_acc: mean(|c| c.neighborhood_acc),
        rewrite_gen: mean(|c| c.rewrite_gen),
        paraphrase_gen: mean(|c| c.paraphrase_gen),
        neighborhood_gen: mean(|c| c.neighborhood_gen),
        score_hmean: hmean(&[rs, ps, ns]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(nll: f32, argmax_all: bool) -> CandidateScore {
        CandidateScore {
            nll,
            argmax_all,
            top_tied: false,
        }
    }

    #[test]
    fn new_beating_true_scores_one() {
        // Rewrite: NLL(new) = ln 2 (p = 1/2), NLL(true) = ln 4 (p = 1/4), new is the argmax.
        // Paraphrase: new loses (p = 1/8 vs 1/2). Neighborhood: true wins (p = 1/2 vs 1/4),
        // but true is not the argmax.
        let (l2, l4, l8) = (2f32.ln(), 4f32.ln(), 8f32.ln());
        let scores = [
            s(l2, true),
            s(l4, false),
            s(l8, false),
            s(l2, true),
            s(l4, false),
            s(l2, false),
        ];
        let c = case_from_scores(Some(3), [1, 1, 1], &scores, [1.0, 0.5, 0.0]);
        assert_eq!(c.rewrite_success, 1.0);
        assert_eq!(c.paraphrase_success, 0.0);
        assert_eq!(c.neighborhood_success, 1.0);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-7;
        assert!(close(c.rewrite_diff, 0.25), "{}", c.rewrite_diff);
        assert!(
            close(c.paraphrase_diff, 0.125 - 0.5),
            "{}",
            c.paraphrase_diff
        );
        assert!(
            close(c.neighborhood_diff, 0.5 - 0.25),
            "{}",
            c.neighborhood_diff
        );
        assert_eq!(
            (c.rewrite_acc, c.paraphrase_acc, c.neighborhood_acc),
            (1.0, 0.0, 0.0)
        );
        assert_eq!(
            c.nll.rewrite[0],
            NllPair {
                target_new: l2,
                target_true: l4
            }
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["nll"]["rewrite"]["target_true"], serde_json::json!(l4));
    }

    #[test]
    fn several_prompts_average_and_serialise_as_a_list() {
        // Two neighbours: one where true wins, one tie (a tie is not a success).
        let scores = [
            s(1.0, false),
            s(2.0, false),
            s(1.0, false),
            s(2.0, false),
            s(1.0, false),
            s(0.5, true),
            s(1.0, false),
            s(1.0, true),
        ];
        let c = case_from_scores(None, [1, 1, 2], &scores, [1.0, 0.5, 0.0]);
        assert_eq!(c.neighborhood_success, 0.5);
        assert_eq!(c.neighborhood_acc, 1.0);
        let want = ((-0.5f64).exp() - (-1.0f64).exp()) / 2.0;
        assert!((c.neighborhood_diff - want).abs() < 1e-12);
        let json = serde_json::to_value(&c).unwrap();
        assert!(json["nll"]["neighborhood"].is_array());
        assert!(json["nll"]["paraphrase"].is_object());
    }

    #[test]
    fn aggregate_is_mean_times_100_with_hmean() {
        let scores_win = [
            s(0.1, true),
            s(3.0, false),
            s(0.1, false),
            s(3.0, false),
            s(3.0, false),
            s(0.1, true),
        ];
        let scores_lose = [
            s(3.0, false),
            s(0.1, true),
            s(3.0, false),
            s(0.1, false),
            s(3.0, false),
            s(0.1, true),
        ];
        let a = case_from_scores(Some(0), [1, 1, 1], &scores_win, [1.0, 0.5, 0.0]);
        let b = case_from_scores(Some(1), [1, 1, 1], &scores_lose, [1.0, 0.5, 0.0]);
        let agg = aggregate(&[a, b]);
        assert_eq!(agg.rewrite_success, 50.0);
        assert_eq!(agg.paraphrase_success, 50.0);
        assert_eq!(agg.neighborhood_success, 100.0);
        assert_eq!(agg.rewrite_diff, 0.0);
        assert!((agg.score_hmean - 3.0 / (1.0 / 50.0 + 1.0 / 50.0 + 1.0 / 100.0)).abs() < 1e-9);
        // The golden pre-edit aggregate: hmean(37, 36, 66).
        assert!((hmean(&[37.0, 36.0, 66.0]) - 42.88390243902439).abs() < 1e-9);
        assert_eq!(hmean(&[0.0, 50.0, 60.0]), 0.0);
        assert_eq!(agg.values()[12], ("score_hmean", agg.score_hmean));
    }
}
