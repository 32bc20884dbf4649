//! Teacher-forced candidate scores (spec §10.1): the mean token NLL of `" " + candidate` after a
//! prefix, and whether every candidate token is the argmax.
//!
//! As the reference does, the input is the tokens of `prefix + " " + candidate`, the targets are
//! the tokens of `" " + candidate` tokenised on their own, and they are read at positions
//! `len(tokens(prefix)) + j − 1`. For a model that prepends a BOS, the input and the prefix
//! carry it (it is part of the context) and the targets do not (it is not a candidate token).

use crate::backend::Backend;
use crate::model::{ForwardSpec, LogitRows, Model, Packed, Tokenizer};
use crate::{Error, Result};

/// Sequences per forward pass (bounds the logits buffer: rows × vocabulary).
const SEQS_PER_PASS: usize = 48;

/// The score of one candidate after one prefix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CandidateScore {
    /// Mean over the candidate's tokens of `−log p(token | prefix, earlier tokens)`.
    pub nll: f32,
    /// Every candidate token is the argmax at its position.
    pub argmax_all: bool,
    /// At some candidate position another token shares the largest log-probability, so which
    /// one is "the argmax" rests on tie-breaking (the log-softmax may also round two distinct
    /// logits together). [`crate::eval::realistic::greedy_says_scored`] does not reuse such a
    /// score.
    pub top_tied: bool,
}

impl CandidateScore {
    /// `exp(−NLL)`, the geometric-mean token probability.
    pub fn prob(&self) -> f32 {
        (-self.nll).exp()
    }
}

/// Scores every `(prefix, candidate)` pair.
///
/// # Errors
/// An empty candidate, or a prefix whose tokenisation is not a prefix of the full input's in
/// length (the reference would index out of bounds there).
pub async fn score_candidates<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    pairs: &[(String, String)],
) -> Result<Vec<CandidateScore>> {
    let be = model.backend();
    let vocab = model.config.vocab_size;
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(SEQS_PER_PASS) {
        let mut seqs = vec![];
        let mut targets = vec![];
        let mut starts = vec![];
        for (prefix, cand) in chunk {
            let full = tok.encode(&format!("{prefix} {cand}"))?;
            let target = tok.encode_continuation(&format!(" {cand}"))?;
            let prefix_len = tok.encode(prefix)?.len();
            if target.is_empty() || prefix_len == 0 || prefix_len + target.len() > full.len() {
                return Err(Error::input(format!(
                    "cannot score {cand:?} after {prefix:?}: the candidate does not tokenise after the prefix"
                )));
            }
            seqs.push(full);
            targets.push(target);
            starts.push(prefix_len);
        }
        let packed = Packed::new(&seqs);
        let mut rows = vec![];
        for (s, (target, &start)) in targets.iter().zip(&starts).enumerate() {
            for j in 0..target.len() {
                rows.push(packed.row(s, start + j - 1) as u32);
            }
        }
        let logits = logits_at(model, &packed, rows)?;
        let logp = be.read(&be.log_softmax(&logits)?).await?;
        let mut r = 0;
        for target in &targets {
            let mut nll = 0.0f32;
            let mut argmax_all = true;
            let mut top_tied = false;
            for &t in target {
                let row = &logp[r * vocab..(r + 1) * vocab];
                nll -= row[t as usize];
                let best = crate::ops::softmax::argmax_forward(row, vocab)[0];
                argmax_all &= best == t;
                let top = row[best as usize];
                top_tied |= row.iter().filter(|&&x| x == top).count() > 1;
                r += 1;
            }
            out.push(CandidateScore {
                nll: nll / target.len() as f32,
                argmax_all,
                top_tied,
            });
        }
    }
    Ok(out)
}

/// The argmax token at each `(sequence, position)` of `at`, from one packed pass over `seqs`.
///
/// # Errors
/// Backend failures.
pub async fn argmax_at<B: Backend>(
    model: &Model<B>,
    seqs: &[Vec<u32>],
    at: &[(usize, usize)],
) -> Result<Vec<u32>> {
    let be = model.backend();
    let packed = Packed::new(seqs);
    let rows = at.iter().map(|&(s, i)| packed.row(s, i) as u32).collect();
    let logits = logits_at(model, &packed, rows)?;
    be.read_u32(&be.argmax(&logits)?).await
}

/// The logits `(rows, V)` at the given rows of one packed forward pass.
fn logits_at<B: Backend>(model: &Model<B>, packed: &Packed, rows: Vec<u32>) -> Result<B::Tensor> {
    let fwd = model.forward(
        packed,
        &ForwardSpec {
            logits: LogitRows::Rows(rows),
            ..Default::default()
        },
    )?;
    Ok(fwd.logits.expect("logits were requested"))
}

/// The scores of each `(prompt, new, true)` item after its prompt: the new target's and, when
/// there is a true target, the true one's ([`score_candidates`], one packed pass for all; use
/// [`CandidateScore::prob`] for P = exp(−mean token NLL)). The one place that compares a new
/// target with the true one on a prompt: CounterFact's metrics, the command line's efficacy, the
/// session's scores, comparison and success rates.
///
/// # Errors
/// As [`score_candidates`].
pub async fn new_vs_true<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    items: &[(String, String, Option<String>)],
) -> Result<Vec<(CandidateScore, Option<CandidateScore>)>> {
    let mut pairs = vec![];
    for (prompt, new, truth) in items {
        let prompt = prompt.trim_end().to_string();
        pairs.push((prompt.clone(), new.trim().to_string()));
        if let Some(t) = truth {
            pairs.push((prompt, t.trim().to_string()));
        }
    }
    let mut scores = score_candidates(model, tok, &pairs).await?.into_iter();
    Ok(items
        .iter()
        .map(|(_, _, truth)| {
            let new = scores.next().expect("one score per pair");
            (
                new,
                truth
                    .as_ref()
                    .map(|_| scores.next().expect("one score per pair")),
            )
        })
        .collect())
}
