//! Realistic, generation-based success (issue 14; arXiv 2502.11177, "The Mirage of Model
//! Editing"): does the model, decoding greedily from the prompt alone, *say* the answer?
//!
//! The rule, the same for every prompt kind: with `p = tokens(prompt)` and
//! `t = tokens(" " + answer)` (no BOS), the prompt succeeds when the first `|t|` tokens of the
//! greedy continuation of `p` are `t`. The teacher-forced scores differ in two ways: they
//! compare probabilities (or average per-token hits) instead of asking for the exact answer, and
//! they read the model on the tokens of the concatenated string `prompt + " " + answer`, which
//! BPE may split differently from what the model would have to emit.
//!
//! Greedy decoding emits `t` exactly when, at every `j`, the argmax after `p ++ t[..j]` is
//! `t[j]`; so one packed forward of `p ++ t[..|t|−1]` per prompt decides it (the decoding
//! stops at the first miss, and later positions cannot turn a miss into a success).
//! `tests/realistic.rs` checks this against token-by-token generation with the KV cache.

use super::probs::{CandidateScore, argmax_at};
use crate::backend::Backend;
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// Sequences per forward pass (bounds the logits buffer: rows × vocabulary).
const SEQS_PER_PASS: usize = 48;

/// For each `(prompt, answer)`, whether greedy decoding from `prompt` begins with `answer`.
///
/// # Errors
/// A prompt or answer that encodes to no token, a prompt plus answer longer than the context;
/// backend failures.
pub async fn greedy_says<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    pairs: &[(String, String)],
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(SEQS_PER_PASS) {
        let mut seqs = vec![];
        let mut answers = vec![];
        for (prompt, answer) in chunk {
            let p = tok.encode(prompt)?;
            let t = tok.encode_continuation(&format!(" {}", answer.trim_start()))?;
            if p.is_empty() || t.is_empty() {
                return Err(Error::input(format!(
                    "cannot ask whether the model says {answer:?} after {prompt:?}: one of them \
                     encodes to no token"
                )));
            }
            if p.len() + t.len() > model.config.max_ctx {
                return Err(Error::input(format!(
                    "the prompt {prompt:?} and the answer {answer:?} are longer than the \
                     model's context of {} tokens",
                    model.config.max_ctx
                )));
            }
            let mut seq = p;
            seq.extend_from_slice(&t[..t.len() - 1]);
            seqs.push(seq);
            answers.push(t);
        }
        let mut at = vec![];
        for (s, (seq, t)) in seqs.iter().zip(&answers).enumerate() {
            at.extend((seq.len() - t.len()..seq.len()).map(|i| (s, i)));
        }
        let best = argmax_at(model, &seqs, &at).await?;
        let mut at = 0;
        for t in &answers {
            out.push(best[at..at + t.len()] == t[..]);
            at += t.len();
        }
    }
    Ok(out)
}

/// [`greedy_says`] for pairs that were also scored teacher-forced: `scored[i]` is
/// [`score_candidates`](super::probs::score_candidates)'s score of answer `pairs[i].1` after
/// prompt `pairs[i].0`. Where that pass's input was the prompt's tokens followed by the answer's
/// (`tokens(prompt + " " + answer) == tokens(prompt) ++ tokens(" " + answer)`, the prompt and the
/// answer without trailing spaces), it read the very rows this rule reads, so its `argmax_all`
/// is the answer and no second pass runs. A pair that BPE splits differently across the space,
/// or whose score has a tie at the top of a row (the log-softmax may round two logits
/// together), goes through [`greedy_says`]. On CounterFact every prompt takes the shortcut,
/// which saves a third of the evaluation's forward work.
///
/// # Errors
/// As [`greedy_says`]; `scored` of another length than `pairs`.
pub async fn greedy_says_scored<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    pairs: &[(String, String)],
    scored: &[CandidateScore],
) -> Result<Vec<bool>> {
    if scored.len() != pairs.len() {
        return Err(Error::input(format!(
            "{} teacher-forced scores for {} prompts; give one per prompt",
            scored.len(),
            pairs.len()
        )));
    }
    let mut out: Vec<Option<bool>> = Vec::with_capacity(pairs.len());
    let mut rest = vec![];
    for ((prompt, answer), score) in pairs.iter().zip(scored) {
        let reusable = !score.top_tied
            && prompt.trim_end() == prompt
            && answer.trim() == answer
            && !prompt.is_empty()
            && !answer.is_empty()
            && {
                let mut split = tok.encode(prompt)?;
                split.extend(tok.encode_continuation(&format!(" {answer}"))?);
                tok.encode(&format!("{prompt} {answer}"))? == split
            };
        if reusable {
            out.push(Some(score.argmax_all));
        } else {
            out.push(None);
            rest.push((prompt.clone(), answer.clone()));
        }
    }
    let mut said = greedy_says(model, tok, &rest).await?.into_iter();
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| said.next().expect("one answer per pair left")))
        .collect())
}

/// The fraction of `hits` that are true (0 for none).
pub fn rate(hits: &[bool]) -> f64 {
    if hits.is_empty() {
        return 0.0;
    }
    hits.iter().filter(|&&h| h).count() as f64 / hits.len() as f64
}
