//! zsRE token accuracy (spec §10.3), with the neighbourhood prompts of spec §2.3.
//!
//! For an answer with tokens `t = tokens(" " + answer)` and a prompt, position `p` is probed
//! with the input `prompt + decode(t_<p)` (string concatenation, tokenised again): it is correct
//! when the argmax at the input's last token equals the first token of `tokens(decode(t_p))`.
//! A case scores, for its rewrite prompt (`src`, answer `target_new`) and its paraphrase, the
//! mean correctness over the answer's positions; for the neighbourhood, the NQ question `loc`
//! gets a `"?"` and must still produce `loc_ans` the same way (absolute accuracy, no comparison
//! with the unedited model). The aggregate is the mean over cases × 100, under the reference's
//! `summarize.py` names `rewrite_acc`, `paraphrase_acc`, `neighborhood_acc`; `score_hmean` (the
//! harmonic mean of the three) is ours, for one headline number. So are the realistic scores
//! `*_gen` ([`super::realistic`]): the share of prompts from which greedy decoding says the whole
//! answer (`target_new` for the rewrite and paraphrase prompts, `loc_ans` after `loc + "?"`).
//!
//! This model adds no BOS (`tests/golden/README.md`), so the reference's Llama-3 branch
//! (drop BOS, `prompt + " " + …`) does not apply; a tokenizer that adds BOS has it stripped from
//! the answer tokens.

use serde::{Deserialize, Serialize};

use super::counterfact::hmean;
use super::probs::argmax_at;
use super::realistic::{greedy_says, rate};
use crate::backend::Backend;
use crate::edit::{Case, Probes};
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// Inputs per forward pass of [`last_token_argmax`].
const SEQS_PER_PASS: usize = 64;

/// One probed answer position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenProbe {
    /// `prompt + decode(t_<p)`.
    pub input: String,
    /// First token of `tokens(decode(t_p))`.
    pub expected: u32,
}

/// One case's accuracies in `[0, 1]`, with the per-position outcomes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZsreCase {
    pub case_id: Option<u64>,
    pub rewrite_acc: f64,
    pub paraphrase_acc: f64,
    pub neighborhood_acc: f64,
    pub rewrite_gen: f64,
    pub paraphrase_gen: f64,
    pub neighborhood_gen: f64,
    pub rewrite_correct: Vec<bool>,
    pub paraphrase_correct: Vec<bool>,
    pub neighborhood_correct: Vec<bool>,
}

/// Means over cases × 100.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZsreAgg {
    pub rewrite_acc: f64,
    pub paraphrase_acc: f64,
    pub neighborhood_acc: f64,
    pub rewrite_gen: f64,
    pub paraphrase_gen: f64,
    pub neighborhood_gen: f64,
    pub score_hmean: f64,
}

/// The aggregate's fields.
pub const ZSRE_METRICS: [&str; 7] = [
    "rewrite_acc",
    "paraphrase_acc",
    "neighborhood_acc",
    "rewrite_gen",
    "paraphrase_gen",
    "neighborhood_gen",
    "score_hmean",
];

impl ZsreAgg {
    /// `(name, value)` in [`ZSRE_METRICS`] order.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let v = [
            self.rewrite_acc,
            self.paraphrase_acc,
            self.neighborhood_acc,
            self.rewrite_gen,
            self.paraphrase_gen,
            self.neighborhood_gen,
            self.score_hmean,
        ];
        ZSRE_METRICS.into_iter().zip(v).collect()
    }
}

/// Tokens of `text` without a leading BOS.
fn text_tokens(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text)?;
    if tok.add_bos() && ids.first().copied() == tok.bos_id() {
        ids.remove(0);
    }
    Ok(ids)
}

/// The probes of `answer` after `prompt`: one per token of `" " + answer`.
///
/// # Errors
/// An answer that encodes to no token, or a token whose decoded text encodes to none.
pub fn answer_probes(tok: &Tokenizer, prompt: &str, answer: &str) -> Result<Vec<TokenProbe>> {
    let t = text_tokens(tok, &format!(" {answer}"))?;
    if t.is_empty() {
        return Err(Error::input(format!(
            "the answer {answer:?} encodes to no token"
        )));
    }
    (0..t.len())
        .map(|p| {
            let input = format!("{prompt}{}", tok.decode(&t[..p])?);
            let piece = tok.decode(&t[p..=p])?;
            let expected = *text_tokens(tok, &piece)?.first().ok_or_else(|| {
                Error::input(format!("the answer piece {piece:?} encodes to no token"))
            })?;
            Ok(TokenProbe { input, expected })
        })
        .collect()
}

/// The fraction of probes whose prediction is the expected token.
///
/// # Panics
/// When the lengths differ or there is no probe.
pub fn token_accuracy(predicted: &[u32], probes: &[TokenProbe]) -> f64 {
    assert_eq!(predicted.len(), probes.len(), "one prediction per probe");
    assert!(!probes.is_empty(), "token accuracy of no probe");
    let ok = predicted
        .iter()
        .zip(probes)
        .filter(|(p, q)| **p == q.expected)
        .count();
    ok as f64 / probes.len() as f64
}

/// The argmax token after each input's last token.
///
/// Consecutive inputs whose tokens each extend the previous one's (the probes of one answer,
/// almost always) share one sequence, the longest, read at each input's last row: causal
/// attention makes that row's logits the shorter input's own. Inputs that break the chain start
/// a new sequence.
///
/// # Errors
/// An input that encodes to no token; backend failures.
pub async fn last_token_argmax<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    inputs: &[String],
) -> Result<Vec<u32>> {
    // Runs of inputs sharing a sequence: (the sequence, each member's last position).
    let mut runs: Vec<(Vec<u32>, Vec<usize>)> = vec![];
    for text in inputs {
        let ids = tok.encode(text)?;
        if ids.is_empty() {
            return Err(Error::input(format!(
                "the prompt {text:?} encodes to no token"
            )));
        }
        match runs.last_mut() {
            Some((seq, ends)) if ids.len() >= seq.len() && ids.starts_with(seq) => {
                ends.push(ids.len() - 1);
                *seq = ids;
            }
            _ => {
                let end = ids.len() - 1;
                runs.push((ids, vec![end]));
            }
        }
    }
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in runs.chunks(SEQS_PER_PASS) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|(seq, _)| seq.clone()).collect();
        let at: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .flat_map(|(s, (_, ends))| ends.iter().map(move |&e| (s, e)))
            .collect();
        out.extend(argmax_at(model, &seqs, &at).await?);
    }
    Ok(out)
}

/// The probes of a zsRE case: rewrite, paraphrases (all of them, one after another), neighbourhood.
///
/// # Errors
/// A case that is not a zsRE record; see [`answer_probes`].
pub fn case_probes(tok: &Tokenizer, case: &Case) -> Result<[Vec<TokenProbe>; 3]> {
    let probes = |kind: Vec<(String, String)>| -> Result<Vec<TokenProbe>> {
        let mut out = vec![];
        for (prompt, answer) in kind {
            out.extend(answer_probes(tok, &prompt, &answer)?);
        }
        Ok(out)
    };
    let [rewrite, paraphrase, neighborhood] = realistic_prompts(case)?;
    Ok([probes(rewrite)?, probes(paraphrase)?, probes(neighborhood)?])
}

/// The `(prompt, answer)` pairs of a case, for its probes and its realistic scores: rewrite,
/// paraphrases, neighbourhood (`loc + "?"`, `loc_ans`).
fn realistic_prompts(case: &Case) -> Result<[Vec<(String, String)>; 3]> {
    let r = &case.request;
    let Probes::Zsre {
        paraphrase,
        loc,
        loc_ans,
    } = &case.probes
    else {
        let who = r.case_id.map_or_else(|| r.label(), |c| format!("case {c}"));
        return Err(Error::input(format!("{who} is not a zsRE record")));
    };
    Ok([
        vec![(r.sentence(), r.target_new.clone())],
        paraphrase
            .iter()
            .map(|p| (p.clone(), r.target_new.clone()))
            .collect(),
        vec![(format!("{loc}?"), loc_ans.clone())],
    ])
}

/// Scores every case on `model`.
///
/// # Errors
/// See [`case_probes`] and [`last_token_argmax`].
pub async fn zsre_cases<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    cases: &[Case],
) -> Result<Vec<ZsreCase>> {
    let probes: Vec<[Vec<TokenProbe>; 3]> = cases
        .iter()
        .map(|c| case_probes(tok, c))
        .collect::<Result<_>>()?;
    let inputs: Vec<String> = probes
        .iter()
        .flatten()
        .flatten()
        .map(|p| p.input.clone())
        .collect();
    let predicted = last_token_argmax(model, tok, &inputs).await?;
    let mut said = vec![];
    let mut counts = vec![];
    for case in cases {
        let asked = realistic_prompts(case)?;
        counts.push(asked.each_ref().map(Vec::len));
        said.extend(asked.into_iter().flatten());
    }
    let says = greedy_says(model, tok, &said).await?;
    let (mut at, mut at_said) = (0, 0);
    let mut out = vec![];
    for ((case, kinds), counts) in cases.iter().zip(&probes).zip(counts) {
        let mut gen_rates = [0.0; 3];
        for (k, &m) in counts.iter().enumerate() {
            gen_rates[k] = rate(&says[at_said..at_said + m]);
            at_said += m;
        }
        let mut correct: [Vec<bool>; 3] = Default::default();
        let mut acc = [0.0; 3];
        for (k, kind) in kinds.iter().enumerate() {
            let pred = &predicted[at..at + kind.len()];
            at += kind.len();
            correct[k] = pred
                .iter()
                .zip(kind)
                .map(|(p, q)| *p == q.expected)
                .collect();
            acc[k] = if kind.is_empty() {
                0.0
            } else {
                token_accuracy(pred, kind)
            };
        }
        let [rewrite_correct, paraphrase_correct, neighborhood_correct] = correct;
        out.push(ZsreCase {
            case_id: case.request.case_id,
            rewrite_acc: acc[0],
            paraphrase_acc: acc[1],
            neighborhood_acc: acc[2],
            rewrite_gen: gen_rates[0],
            paraphrase_gen: gen_rates[1],
            neighborhood_gen: gen_rates[2],
            rewrite_correct,
            paraphrase_correct,
            neighborhood_correct,
        });
    }
    Ok(out)
}

/// Means over `cases` × 100.
///
/// # Panics
/// On no case.
pub fn aggregate(cases: &[ZsreCase]) -> ZsreAgg {
    assert!(!cases.is_empty(), "aggregate of no case");
    let mean =
        |f: fn(&ZsreCase) -> f64| 100.0 * cases.iter().map(f).sum::<f64>() / cases.len() as f64;
    let (r, p, n) = (
        mean(|c| c.rewrite_acc),
        mean(|c| c.paraphrase_acc),
        mean(|c| c.neighborhood_acc),
    );
    ZsreAgg {
        rewrite_acc: r,
        paraphrase_acc: p,
        neighborhood_acc: n,
        rewrite_gen: mean(|c| c.rewrite_gen),
        paraphrase_gen: mean(|c| c.paraphrase_gen),
        neighborhood_gen: mean(|c| c.neighborhood_gen),
        score_hmean: hmean(&[r, p, n]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(expected: u32) -> TokenProbe {
        TokenProbe {
            input: String::new(),
            expected,
        }
    }

    #[test]
    fn token_accuracy_by_hand() {
        // A three-token answer of which the model gets the first and the last right.
        let probes = [probe(10), probe(11), probe(12)];
        assert!((token_accuracy(&[10, 99, 12], &probes) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(token_accuracy(&[10, 11, 12], &probes), 1.0);
        assert_eq!(token_accuracy(&[0, 0, 0], &probes), 0.0);
    }

    #[test]
    fn aggregate_by_hand() {
        let case = |r, p, n| ZsreCase {
            case_id: None,
            rewrite_acc: r,
            paraphrase_acc: p,
            neighborhood_acc: n,
            rewrite_gen: r,
            paraphrase_gen: 0.0,
            neighborhood_gen: 1.0,
            rewrite_correct: vec![],
            paraphrase_correct: vec![],
            neighborhood_correct: vec![],
        };
        let agg = aggregate(&[case(1.0, 0.5, 0.25), case(0.0, 0.5, 0.75)]);
        assert_eq!(
            (agg.rewrite_acc, agg.paraphrase_acc, agg.neighborhood_acc),
            (50.0, 50.0, 50.0)
        );
        assert!((agg.score_hmean - 50.0).abs() < 1e-12);
        assert_eq!(
            (agg.rewrite_gen, agg.paraphrase_gen, agg.neighborhood_gen),
            (50.0, 0.0, 100.0)
        );
    }
}
