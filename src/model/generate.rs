//! Text generation with the KV cache: greedy or seeded top-k, stopping at end-of-sequence.

use super::forward::Model;
use crate::backend::Backend;
use crate::edit::target::Pause;
use crate::{Error, Result};

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Always the most likely token.
    Greedy,
    /// Seeded top-k sampling (see [`Backend::sample_top_k`]).
    TopK { k: usize, seed: u64 },
}

/// The result of [`generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Generated token ids (the eos token included when it ended the generation).
    pub ids: Vec<u32>,
    /// The top-5 `(id, probability)` of the first generated position.
    pub top5_first: Vec<(u32, f32)>,
    /// True when generation stopped at the end-of-sequence token.
    pub stopped_at_eos: bool,
    /// True when the pause hook cancelled it (see [`generate_with`]).
    pub cancelled: bool,
}

/// A small seeded generator (SplitMix64) for sampling: reproducible on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)` with 24 random bits (exact in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Generates up to `max_tokens` tokens after `prompt`, calling `on_token` as each arrives.
///
/// # Errors
/// An empty prompt, a prompt plus `max_tokens` longer than the context, or a backend failure.
pub async fn generate<B: Backend>(
    model: &Model<B>,
    prompt: &[u32],
    max_tokens: usize,
    sampling: Sampling,
    mut on_token: impl FnMut(u32),
) -> Result<Generation> {
    let step = |g: &Generation| on_token(*g.ids.last().expect("a token arrived"));
    generate_with(model, prompt, max_tokens, sampling, None, step).await
}

/// [`generate`] for interactive front ends: `on_token` sees the generation so far after each
/// token (its ids, and the first position's top 5 from the first token on), and `pause` is
/// awaited between tokens. When `pause` says [`Error::Cancelled`] (a stop button), generation
/// ends there and what was generated is returned, with `cancelled` set.
///
/// # Errors
/// As [`generate`]; a pause error other than a cancellation.
pub async fn generate_with<B: Backend>(
    model: &Model<B>,
    prompt: &[u32],
    max_tokens: usize,
    sampling: Sampling,
    pause: Option<Pause<'_>>,
    mut on_token: impl FnMut(&Generation),
) -> Result<Generation> {
    model.check_tokens(prompt, "prompt")?;
    let ctx = model.config.max_ctx;
    if prompt.len() + max_tokens > ctx {
        return Err(Error::input(format!(
            "prompt of {} tokens + {max_tokens} new tokens exceeds the context of {ctx} tokens; \
             shorten the prompt or ask for fewer new tokens (--max-tokens)",
            prompt.len()
        )));
    }
    if let Sampling::TopK { k: 0, .. } = sampling {
        return Err(Error::input("top-k sampling needs k >= 1"));
    }
    let be = model.backend();
    let mut cache = model.new_cache(prompt.len() + max_tokens)?;
    let mut rng = match sampling {
        Sampling::TopK { seed, .. } => SplitMix64::new(seed),
        Sampling::Greedy => SplitMix64::new(0),
    };
    let mut out = Generation {
        ids: vec![],
        top5_first: vec![],
        stopped_at_eos: false,
        cancelled: false,
    };
    // Each token is picked on the device, and the next token's pass reads it there
    // (`forward_cached_ids`): the pass is queued before the token is read back, so the device
    // works while the host waits for the round trip and reports the token. A stop at the end
    // of text leaves that one queued pass unused.
    let mut pick = |logits: &B::Tensor| -> Result<B::Tensor> {
        match sampling {
            Sampling::Greedy => be.argmax(logits),
            Sampling::TopK { k, .. } => {
                let u = be.upload("uniform", &[rng.next_f32()], &[1])?;
                be.sample_top_k(logits, k, &u)
            }
        }
    };
    let mut queued: Option<B::Tensor> = None;
    for step in 0..max_tokens {
        if let Some(p) = pause {
            match p().await {
                Ok(()) => {}
                Err(Error::Cancelled(_)) => {
                    out.cancelled = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let token = match queued.take() {
            Some(t) => t,
            None => {
                let logits = model.forward_cached(&mut cache, prompt)?; // (1, V)
                out.top5_first = top5(&be.read(&be.log_softmax(&logits)?).await?);
                pick(&logits)?
            }
        };
        let read = be.read_u32(&token);
        if step + 1 < max_tokens {
            queued = Some(pick(&model.forward_cached_ids(&mut cache, &token)?)?);
            be.submit();
        }
        let next = read.await?[0];
        out.ids.push(next);
        on_token(&out);
        if Some(next) == model.config.eos_id {
            out.stopped_at_eos = true;
            break;
        }
    }
    Ok(out)
}

/// The five most likely tokens of a log-probability row.
fn top5(logp: &[f32]) -> Vec<(u32, f32)> {
    crate::ops::softmax::top_k(logp, 5)
        .into_iter()
        .map(|j| (j as u32, logp[j].exp()))
        .collect()
}
