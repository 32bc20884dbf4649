//! Keys (spec §3.2): template-averaged `down_proj` inputs at the subject's last token, and the
//! block-`l0` output at the bare prompt's subject-last token, both with the current weights.

use std::collections::BTreeMap;

use super::request::EditRequest;
use super::subject::locate_subject;
use super::templates::{ContextTemplates, rewriting_prompts};
use crate::Result;
use crate::backend::Backend;
use crate::model::{ForwardSpec, Model, Packed, Tokenizer};

/// The `requests × templates` key prompts of a batch, tokenised and packed once.
#[derive(Clone, Debug)]
pub struct KeyPrompts {
    /// Request-major: sequence `r · n_templates + t`.
    pub packed: Packed,
    /// Texts, same order.
    pub texts: Vec<String>,
    /// Packed row of each sequence's subject-last token.
    pub rows: Vec<u32>,
    /// Subject-last index inside each sequence.
    pub subject_last: Vec<usize>,
    pub n_requests: usize,
    /// Number of templates in each group ([`ContextTemplates::groups`]).
    pub group_lens: Vec<usize>,
}

impl KeyPrompts {
    /// Builds the prompts of `requests` under `templates`.
    pub fn new(
        tok: &Tokenizer,
        templates: &ContextTemplates,
        requests: &[&EditRequest],
    ) -> Result<Self> {
        let mut seqs = vec![];
        let mut texts = vec![];
        let mut subject_last = vec![];
        for r in requests {
            for template in rewriting_prompts(templates, r, "") {
                let located = locate_subject(tok, &template, &r.subject)?;
                seqs.push(located.ids);
                texts.push(located.text);
                subject_last.push(located.last);
            }
        }
        let packed = Packed::new(&seqs);
        let rows = subject_last
            .iter()
            .enumerate()
            .map(|(s, &i)| packed.row(s, i) as u32)
            .collect();
        let group_lens = templates.groups.iter().map(Vec::len).collect();
        Ok(KeyPrompts {
            packed,
            texts,
            rows,
            subject_last,
            n_requests: requests.len(),
            group_lens,
        })
    }

    /// Number of templates per request.
    pub fn n_templates(&self) -> usize {
        self.group_lens.iter().sum()
    }

    /// Packed rows of the bare prompts (template 0 of each request).
    pub fn bare_rows(&self) -> Vec<u32> {
        (0..self.n_requests)
            .map(|r| self.rows[r * self.n_templates()])
            .collect()
    }
}

/// What one prefix pass gives: template-averaged keys at `key_layer` and the bare-prompt hidden
/// state at `h_layer`.
pub struct KeysAndH {
    /// `(n, d_ff)`, request-major, f32.
    pub keys: Vec<f32>,
    /// `(n, d)`: the block-`h_layer` output at each bare prompt's subject-last token.
    pub h: Vec<f32>,
}

/// Runs blocks `0..=max(key_layer, h_layer)` over the key prompts with the current weights.
///
/// The average is computed as the reference does: the mean within each template group, then
/// the mean of the group means.
pub async fn keys_and_h<B: Backend>(
    model: &Model<B>,
    kp: &KeyPrompts,
    key_layer: usize,
    h_layer: usize,
) -> Result<KeysAndH> {
    keys_and_h_resumed(model, kp, key_layer, h_layer, &mut None).await
}

/// The input of some block over a batch's key prompts, kept between passes by
/// [`keys_and_h_resumed`]: `(block, residual stream (N, d))`.
pub type BlockInput<T> = Option<(usize, T)>;

/// [`keys_and_h`] for a round that updates the layers in ascending order: `cache` holds the
/// input of the last key layer from the previous call over the same `kp`, and only the blocks
/// from there on run again (the blocks below it are unchanged since: a round only updates the
/// layer whose keys it took, and each later key layer is higher). Gives the same values as
/// [`keys_and_h`] bit for bit; `cache` then holds the input of `key_layer`.
pub async fn keys_and_h_resumed<B: Backend>(
    model: &Model<B>,
    kp: &KeyPrompts,
    key_layer: usize,
    h_layer: usize,
    cache: &mut BlockInput<B::Tensor>,
) -> Result<KeysAndH> {
    let be = model.backend();
    let last = key_layer.max(h_layer);
    let start = cache.take().filter(|(k, _)| *k <= key_layer);
    let keep: Vec<usize> = match key_layer.checked_sub(1) {
        Some(before) if start.as_ref().is_none_or(|(k, _)| *k <= before) => vec![h_layer, before],
        _ => vec![h_layer],
    };
    let out = model.forward(
        &kp.packed,
        &ForwardSpec {
            mlp_key: &[key_layer],
            block_out: &keep,
            last_layer: Some(last),
            start: start.as_ref().map(|(k, h)| (*k, h)),
            ..Default::default()
        },
    )?;
    let input = match key_layer.checked_sub(1) {
        Some(before) => out.block_out.get(&before).map(|h| be.copy(h)).transpose()?,
        None => None,
    };
    *cache = match input {
        Some(h) => Some((key_layer, h)),
        None => start.filter(|(k, _)| *k == key_layer),
    };
    let keys = averaged_keys(model, kp, &out.mlp_key[&key_layer]).await?;
    let bare = kp.bare_rows();
    let bare_t = be.upload_u32("bare rows", &bare, &[bare.len()])?;
    let h = be
        .read(&be.gather_rows(&out.block_out[&h_layer], &bare_t)?)
        .await?;
    Ok(KeysAndH { keys, h })
}

/// The template-averaged keys at every layer of `layers`, from one pass over the key prompts
/// with the current weights: `(n, d_ff)` per layer.
pub async fn keys_at<B: Backend>(
    model: &Model<B>,
    kp: &KeyPrompts,
    layers: &[usize],
) -> Result<BTreeMap<usize, Vec<f32>>> {
    let Some(&last) = layers.iter().max() else {
        return Ok(BTreeMap::new());
    };
    let out = model.forward(
        &kp.packed,
        &ForwardSpec {
            mlp_key: layers,
            last_layer: Some(last),
            ..Default::default()
        },
    )?;
    let mut keys = BTreeMap::new();
    for &l in layers {
        keys.insert(l, averaged_keys(model, kp, &out.mlp_key[&l]).await?);
    }
    Ok(keys)
}

/// The keys at the key prompts' subject-last rows of one layer's `down_proj` inputs
/// `(N, d_ff)`, template-averaged: `(n, d_ff)`.
async fn averaged_keys<B: Backend>(
    model: &Model<B>,
    kp: &KeyPrompts,
    mlp_key: &B::Tensor,
) -> Result<Vec<f32>> {
    let be = model.backend();
    let rows = be.upload_u32("key rows", &kp.rows, &[kp.rows.len()])?;
    let all = be.read(&be.gather_rows(mlp_key, &rows)?).await?; // (n·T, d_ff)
    Ok(average_keys(&all, model.config.d_ff, kp))
}

/// Group-mean then mean of groups, per request. `all (n·T, d_ff)` → `(n, d_ff)`.
pub fn average_keys(all: &[f32], d_ff: usize, kp: &KeyPrompts) -> Vec<f32> {
    let t = kp.n_templates();
    let n_groups = kp.group_lens.len() as f32;
    let mut out = vec![0.0f32; kp.n_requests * d_ff];
    for (r, key) in out.chunks_mut(d_ff).enumerate() {
        for (j, k) in key.iter_mut().enumerate() {
            let mut start = 0;
            let mut sum_of_means = 0.0f32;
            for &len in &kp.group_lens {
                let s: f32 = (start..start + len)
                    .map(|i| all[(r * t + i) * d_ff + j])
                    .sum();
                sum_of_means += s / len as f32;
                start += len;
            }
            *k = sum_of_means / n_groups;
        }
    }
    out
}
