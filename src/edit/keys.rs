//! Keys (spec §3.2): template-averaged `down_proj` inputs at the subject's last token, and the
//! block-`l0` output at the bare prompt's subject-last token, both with the current weights.

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
    let be = model.backend();
    let out = model.forward(
        &kp.packed,
        &ForwardSpec {
            mlp_key: &[key_layer],
            block_out: &[h_layer],
            last_layer: Some(key_layer.max(h_layer)),
            ..Default::default()
        },
    )?;
    let rows = be.upload_u32("key rows", &kp.rows, &[kp.rows.len()])?;
    let all_keys = be
        .read(&be.gather_rows(&out.mlp_key[&key_layer], &rows)?)
        .await?; // (n·T, d_ff)
    let bare = kp.bare_rows();
    let bare_t = be.upload_u32("bare rows", &bare, &[bare.len()])?;
    let h = be
        .read(&be.gather_rows(&out.block_out[&h_layer], &bare_t)?)
        .await?;
    let d_ff = model.config.d_ff;
    Ok(KeysAndH {
        keys: average_keys(&all_keys, d_ff, kp),
        h,
    })
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
