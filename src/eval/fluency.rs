//! Fluency (spec §10.2): the n-gram entropy of seeded top-k generations.
//!
//! The reference (`compute_n_gram_entropy` / `n_gram_entropy` of ROME's evaluation) tokenises
//! each generated text with NLTK's `word_tokenize` ([`super::words`] here), takes the Shannon
//! entropy in bits of the bigram and of the trigram frequency distributions, `H2` and `H3`, and
//! scores the text `mean((2/3)·H2, (4/3)·H3) = (H2 + 2·H3)/3`. A text with fewer than `n` words
//! has an empty `n`-gram distribution, whose entropy the reference computes as 0.
//!
//! Generations follow the reference sampler (spec §10.4) for one prompt: top-k with `k = 5`,
//! one token at a time until the sequence (prompt included) holds `max_out_len = 100` tokens,
//! **not** stopping at end-of-sequence (the reference does not), then the full sequence is
//! decoded, NFKD-normalised, `"\n\n"` → `" "` and `<|endoftext|>` removed. Our draws are seeded
//! (SplitMix64 uniforms into [`Backend::sample_top_k`]); the reference's are not, so its fluency
//! is stochastic and ours is reproducible for a given seed.
//!
//! Which prompts: CounterFact in the EasyEdit schema (and the ROME records as this crate reads
//! them) carries no `generation_prompts`, so each case generates once from its own rewrite
//! prompt (the subject filled in). The case's score is that text's entropy; the reported
//! fluency is the mean over the scored cases × 100 (so 632.72 means 6.3272 bits).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokenizers::normalizers::unicode::NFKD;
use tokenizers::{NormalizedString, Normalizer};

use super::words::word_tokenize;
use crate::backend::Backend;
use crate::model::generate::SplitMix64;
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// n-gram orders and their weights in the reference's score.
pub const NGRAM_ORDERS: [usize; 2] = [2, 3];
/// Weights of `H2` and `H3` (their arithmetic mean is the score).
pub const NGRAM_WEIGHTS: [f64; 2] = [2.0 / 3.0, 4.0 / 3.0];

/// How fluency generations are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FluencyOptions {
    /// Score only the first `cases` cases (generation is the expensive part of the evaluation).
    pub cases: usize,
    /// Base seed; case `i` of the dataset samples with [`case_seed`]`(seed, i)`.
    pub seed: u64,
    /// Top-k of the sampler (the reference's 5).
    pub top_k: usize,
    /// Total tokens of a generation, prompt included (the reference's 100).
    pub max_out_len: usize,
}

impl FluencyOptions {
    /// The reference's sampler settings for the first `cases` cases.
    pub fn reference(cases: usize, seed: u64) -> Self {
        FluencyOptions {
            cases,
            seed,
            top_k: 5,
            max_out_len: 100,
        }
    }
}

/// The seed of case `index`'s generation: the same before and after editing, so pre/post
/// fluency compare paired samples.
pub fn case_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64)
}

/// One case's generation and its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FluencyCase {
    pub case_id: Option<u64>,
    pub prompt: String,
    /// The post-processed generation, prompt included.
    pub text: String,
    /// `(H2 + 2·H3)/3` in bits (not × 100).
    pub ngram_entropy: f64,
}

/// Shannon entropy in bits of the `n`-gram frequency distribution of `words` (0 when there is
/// no `n`-gram).
pub fn ngram_entropy_bits(words: &[String], n: usize) -> f64 {
    if n == 0 || words.len() < n {
        return 0.0;
    }
    let mut counts: HashMap<&[String], usize> = HashMap::new();
    for w in words.windows(n) {
        *counts.entry(w).or_default() += 1;
    }
    let total = (words.len() + 1 - n) as f64;
    // Sorted so the f64 sum does not depend on the hash map's iteration order.
    let mut c: Vec<usize> = counts.into_values().collect();
    c.sort_unstable();
    c.iter()
        .map(|&k| {
            let p = k as f64 / total;
            -p * p.log2()
        })
        .sum()
}

/// The reference's `compute_n_gram_entropy` of one text: `mean(w_n · H_n)` over `n ∈ {2, 3}`.
pub fn ngram_entropy(text: &str) -> f64 {
    let words = word_tokenize(text);
    let weighted: f64 = NGRAM_ORDERS
        .iter()
        .zip(NGRAM_WEIGHTS)
        .map(|(&n, w)| w * ngram_entropy_bits(&words, n))
        .sum();
    weighted / NGRAM_ORDERS.len() as f64
}

/// The reference's post-processing of a generated text (NFKD, `"\n\n"` → `" "`, no
/// `<|endoftext|>`).
pub fn postprocess(text: &str) -> Result<String> {
    let mut n = NormalizedString::from(text);
    NFKD.normalize(&mut n)
        .map_err(|e| Error::input(format!("normalising a generation: {e}")))?;
    Ok(n.get().replace("\n\n", " ").replace("<|endoftext|>", ""))
}

/// Samples one text from `prompt` as the reference's sampler does (see the module docs) and
/// returns it post-processed, prompt included.
///
/// # Errors
/// An empty prompt, `top_k = 0`, `max_out_len` beyond the model's context, backend failures.
pub async fn sample_text<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    prompt: &str,
    opts: &FluencyOptions,
    seed: u64,
) -> Result<String> {
    if opts.top_k == 0 {
        return Err(Error::input("fluency sampling needs top_k >= 1"));
    }
    let mut ids = tok.encode(prompt)?;
    if ids.is_empty() {
        return Err(Error::input(format!(
            "the generation prompt {prompt:?} encodes to no token"
        )));
    }
    if opts.max_out_len > model.config.max_ctx {
        return Err(Error::input(format!(
            "fluency generations of {} tokens exceed the model's context of {} tokens",
            opts.max_out_len, model.config.max_ctx
        )));
    }
    let be = model.backend();
    let mut rng = SplitMix64::new(seed);
    let mut cache = model.new_cache(opts.max_out_len.max(ids.len()))?;
    let mut input = ids.clone();
    while ids.len() < opts.max_out_len {
        let logits = model.forward_cached(&mut cache, &input)?; // (1, V)
        let u = be.upload("uniform", &[rng.next_f32()], &[1])?;
        let next = be
            .read_u32(&be.sample_top_k(&logits, opts.top_k, &u)?)
            .await?[0];
        ids.push(next);
        input = vec![next];
    }
    postprocess(&tok.decode(&ids)?)
}

/// Generates and scores one text per prompt; `seeds[i]` seeds prompt `i`, and `on_done(i)`
/// reports progress.
pub async fn fluency_cases<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    prompts: &[(Option<u64>, String)],
    seeds: &[u64],
    opts: &FluencyOptions,
    mut on_done: impl FnMut(usize),
) -> Result<Vec<FluencyCase>> {
    assert_eq!(prompts.len(), seeds.len(), "one seed per prompt");
    let mut out = Vec::with_capacity(prompts.len());
    for (i, ((case_id, prompt), &seed)) in prompts.iter().zip(seeds).enumerate() {
        let text = sample_text(model, tok, prompt, opts, seed).await?;
        out.push(FluencyCase {
            case_id: *case_id,
            prompt: prompt.clone(),
            ngram_entropy: ngram_entropy(&text),
            text,
        });
        on_done(i);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn weights_average_to_h2_plus_2h3_over_3() {
        let (h2, h3) = (3.7_f64, 4.1_f64);
        let mean = (NGRAM_WEIGHTS[0] * h2 + NGRAM_WEIGHTS[1] * h3) / 2.0;
        assert!((mean - (h2 + 2.0 * h3) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn all_distinct_ngrams() {
        // 6 words: 5 distinct bigrams, 4 distinct trigrams (uniform distributions).
        let text = "alpha beta gamma delta epsilon zeta";
        let want = (5f64.log2() + 2.0 * 4f64.log2()) / 3.0;
        assert!(
            (ngram_entropy(text) - want).abs() < 1e-12,
            "{}",
            ngram_entropy(text)
        );
    }

    #[test]
    fn repeated_ngrams_by_hand() {
        // "a b a b a": bigrams ab, ba, ab, ba → H2 = 1 bit; trigrams aba, bab, aba → p = 2/3, 1/3.
        let w = words("a b a b a");
        assert!((ngram_entropy_bits(&w, 2) - 1.0).abs() < 1e-12);
        let h3 = -(2.0 / 3.0) * (2.0f64 / 3.0).log2() - (1.0 / 3.0) * (1.0f64 / 3.0).log2();
        assert!((ngram_entropy_bits(&w, 3) - h3).abs() < 1e-12);
        assert!((ngram_entropy("a b a b a") - (1.0 + 2.0 * h3) / 3.0).abs() < 1e-12);
        // A degenerate generation ("the the the …") has zero entropy.
        assert_eq!(ngram_entropy(&"the ".repeat(50)), 0.0);
    }

    #[test]
    fn short_texts_score_zero_for_missing_orders() {
        assert_eq!(ngram_entropy(""), 0.0);
        assert_eq!(ngram_entropy("one"), 0.0);
        // Two words: one bigram (H2 = 0), no trigram.
        assert_eq!(ngram_entropy("one two"), 0.0);
        // Punctuation counts as a word: "Hi there ." has 2 distinct bigrams (H2 = 1) and one
        // trigram (H3 = 0).
        assert_eq!(word_tokenize("Hi there."), ["Hi", "there", "."]);
        assert!((ngram_entropy("Hi there.") - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn postprocess_matches_the_reference() {
        assert_eq!(postprocess("A\n\nB<|endoftext|> ﬁne").unwrap(), "A B fine");
        assert_eq!(postprocess("keep <|im_end|>").unwrap(), "keep <|im_end|>");
    }

    #[test]
    fn case_seeds_differ_per_case() {
        assert_ne!(case_seed(0, 0), case_seed(0, 1));
        assert_ne!(case_seed(1, 0), case_seed(2, 0));
    }
}
