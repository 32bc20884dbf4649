//! A model-collapse monitor for sequential editing: perplexity on a fixed slice of held-out
//! Wikipedia text, and per edited layer `‖down_proj‖_F` and `‖W − W_orig‖_F`.
//!
//! Sequential editing fails by degrading the whole model long before the edit metrics say so
//! (the paper's motivation, spec §0); perplexity on ordinary text and the growth of the update
//! norms show it first.
//!
//! The slice ([`PerplexitySlice::wikitext_tail`]): the wikitext-2-raw test split with line
//! endings normalised to `\n` (as the covariance corpus, `src/edit/covariance.rs`), split into
//! its articles at the ` = Title = ` lines, taken **from the last article backwards**, each
//! article tokenised as one string (no BOS) and cut into consecutive 1,024-token windows from its
//! start, until 4,096 tokens are collected (the last window truncated). For SmolLM2 that is the
//! first 4,096 tokens of the final article, ` = The Hustler ( film ) = `, four windows. The
//! covariance statistic uses the *first* 150,000 tokens of the same file, so this text is held
//! out from it. Perplexity is `exp` of the mean NLL over every predicted token (each window
//! predicts all its tokens but the first).

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, TensorInfo};
use crate::edit::EditState;
use crate::edit::covariance::articles;
use crate::model::{ForwardSpec, Model, Packed, Tokenizer};
use crate::{Error, Result};

/// Window length of the perplexity slice.
pub const PPL_WINDOW: usize = 1024;
/// Tokens of the default slice.
pub const PPL_TOKENS: usize = 4096;
/// Rows whose logits are materialised at once (bounds the `(rows, V)` buffer).
const LOGIT_ROWS_PER_PASS: usize = 128;

/// Token windows to measure perplexity on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerplexitySlice {
    #[serde(skip)]
    pub windows: Vec<Vec<u32>>,
    /// Tokens in all windows.
    pub tokens: usize,
    /// Where the text came from and which part of it.
    pub description: String,
}

impl PerplexitySlice {
    /// The slice described in the module docs, `tokens` long, in windows of `window` tokens
    /// ([`PPL_WINDOW`], or the model's context when it is shorter: GPT-2's is 1,024, a small
    /// model's may be less).
    ///
    /// # Errors
    /// A text without any token; `tokens < 2` or `window < 2`.
    pub fn wikitext_tail(
        text: &str,
        tok: &Tokenizer,
        tokens: usize,
        window: usize,
        source: &str,
    ) -> Result<Self> {
        if tokens < 2 || window < 2 {
            return Err(Error::input(
                "the perplexity slice needs at least 2 tokens, in windows of at least 2",
            ));
        }
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let arts = articles(&text);
        // Whole articles from the end until they hold enough tokens, then windows in file order
        // within each article, the last article first.
        let mut windows = vec![];
        let mut total = 0;
        let mut first_title = String::new();
        'outer: for article in arts.iter().rev() {
            if first_title.is_empty() {
                first_title = article.lines().next().unwrap_or("").trim().to_string();
            }
            let ids = tok.encode(article)?;
            for chunk in ids.chunks(window) {
                let take = chunk.len().min(tokens - total);
                if take >= 2 {
                    windows.push(chunk[..take].to_vec());
                    total += take;
                }
                if total == tokens || take < chunk.len() {
                    break 'outer;
                }
            }
        }
        if total == 0 {
            return Err(Error::input("the perplexity text holds no token"));
        }
        Ok(PerplexitySlice {
            windows,
            tokens: total,
            description: format!(
                "{source}: {total} tokens from the last article ({first_title:?}) backwards, windows of {window}"
            ),
        })
    }
}

/// Sum of `−log p(target)` over rows of log-probabilities `(R, V)`, one target per row.
///
/// # Panics
/// When `logp` is not `targets.len() × vocab`.
pub fn nll_sum(logp: &[f32], vocab: usize, targets: &[u32]) -> f64 {
    assert_eq!(
        logp.len(),
        targets.len() * vocab,
        "one log-probability row per target"
    );
    targets
        .iter()
        .enumerate()
        .map(|(r, &t)| -f64::from(logp[r * vocab + t as usize]))
        .sum()
}

/// Perplexity of `model` on the slice: `exp(Σ NLL / predicted tokens)`.
///
/// # Errors
/// Backend failures; a window longer than the model's context.
pub async fn perplexity<B: Backend>(model: &Model<B>, slice: &PerplexitySlice) -> Result<f64> {
    let be = model.backend();
    let vocab = model.config.vocab_size;
    let (mut nll, mut count) = (0.0f64, 0usize);
    for w in &slice.windows {
        let fwd = model.forward(&Packed::new(&[w]), &ForwardSpec::default())?;
        // Row r predicts token r + 1.
        let rows: Vec<u32> = (0..w.len() as u32 - 1).collect();
        for chunk in rows.chunks(LOGIT_ROWS_PER_PASS) {
            let logits = model.logits_at(&fwd.hidden, chunk)?;
            let logp = be.read(&be.log_softmax(&logits)?).await?;
            let targets: Vec<u32> = chunk.iter().map(|&r| w[r as usize + 1]).collect();
            nll += nll_sum(&logp, vocab, &targets);
            count += targets.len();
        }
    }
    Ok((nll / count.max(1) as f64).exp())
}

/// The norms of one edited layer's `down_proj`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerNorms {
    pub layer: usize,
    /// `‖W_l‖_F` now.
    pub down_proj_fro: f64,
    /// `‖W_l − W_l^orig‖_F`, the accumulated update (the golden files' `dW_fro_cum`).
    pub dw_fro: f64,
}

/// `‖x‖` in f64.
fn fro(x: impl Iterator<Item = f32>) -> f64 {
    x.map(|v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
}

/// Norms of every edited layer, against the originals kept in `state`.
///
/// # Errors
/// Backend failures.
pub async fn layer_norms<B: Backend>(
    model: &Model<B>,
    state: &EditState<B::Tensor>,
) -> Result<Vec<LayerNorms>> {
    let be = model.backend();
    let mut out = vec![];
    for (&layer, orig) in &state.originals {
        let w_t = &model.weights.layers[layer].down_proj;
        assert_eq!(
            w_t.shape(),
            orig.shape(),
            "original of layer {layer} has another shape"
        );
        let w = be.read(w_t).await?;
        let w0 = be.read(orig).await?;
        out.push(LayerNorms {
            layer,
            down_proj_fro: fro(w.iter().copied()),
            dw_fro: fro(w.iter().zip(&w0).map(|(a, b)| a - b)),
        });
    }
    Ok(out)
}

/// The monitor's reading at one point of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollapseReport {
    /// Perplexity on the slice, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wikitext_ppl: Option<f64>,
    pub layers: Vec<LayerNorms>,
}

/// Reads the monitor: perplexity (if `slice` is given) and the layer norms.
pub async fn collapse_report<B: Backend>(
    model: &Model<B>,
    state: &EditState<B::Tensor>,
    slice: Option<&PerplexitySlice>,
) -> Result<CollapseReport> {
    let wikitext_ppl = match slice {
        Some(s) => Some(perplexity(model, s).await?),
        None => None,
    };
    Ok(CollapseReport {
        wikitext_ppl,
        layers: layer_norms(model, state).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_of_a_uniform_distribution_is_the_vocabulary() {
        // Two rows over 4 tokens, uniform: NLL = ln 4 per token, perplexity 4.
        let logp = vec![-(4f32.ln()); 8];
        let nll = nll_sum(&logp, 4, &[1, 3]);
        assert!(((nll / 2.0).exp() - 4.0).abs() < 1e-5);
    }

    #[test]
    fn perplexity_of_a_hand_made_distribution() {
        // p(target) = 1/2 then 1/8: mean NLL = (ln 2 + ln 8)/2 = ln 4, perplexity 4.
        let row = |p: f32| {
            let rest = (1.0 - p) / 3.0;
            vec![p.ln(), rest.ln(), rest.ln(), rest.ln()]
        };
        let mut logp = row(0.5);
        let mut second = row(0.125);
        second.rotate_right(2); // the target (id 2) holds 1/8
        logp.extend(second);
        let ppl = (nll_sum(&logp, 4, &[0, 2]) / 2.0).exp();
        assert!((ppl - 4.0).abs() < 1e-5, "{ppl}");
    }

    #[test]
    fn frobenius_norm() {
        assert!((fro([3.0f32, 4.0].into_iter()) - 5.0).abs() < 1e-12);
    }
}
