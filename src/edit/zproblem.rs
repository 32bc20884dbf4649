//! The z problem of one request (spec §4.2): the prompts built, blocks `0..=l0` run once, and
//! the loss with its gradient available at any `δ`, recomputing only the rows that depend on it.

use super::hparams::Hparams;
use super::request::EditRequest;
use super::subject::locate_subject;
use super::target::{KL_PROMPT, ZStep, norm, target_ids};
use super::templates::{ContextTemplates, rewriting_prompts};
use crate::backend::{Backend, TensorInfo};
use crate::model::{BlockActs, BlockRows, ForwardSpec, Model, Packed, PartialKv, Tokenizer};
use crate::{Error, Result};

/// The z problem of one request: prompts tokenised, blocks `0..=l0` run once, and the loss of
/// spec §4.2 with its gradient available at any `δ`.
pub struct ZProblem<'m, B: Backend> {
    model: &'m Model<B>,
    hp: Hparams,
    /// Block-`l0` output of the rows that depend on `δ` (see [`PartialKv`]), `(D, d)`.
    prefix: B::Tensor,
    /// Positions and attention ranges of those rows, and their fixed-row keys/values.
    positions: B::Tensor,
    ranges: B::Tensor,
    fixed: PartialKv<B::Tensor>,
    /// Where `δ` goes: each prompt's subject-last row, as an index into the `D` rows.
    lookup_t: B::Tensor,
    n_lookup: usize,
    /// Label rows then the KL row, as indices into the `D` rows.
    loss_rows: Vec<u32>,
    loss_rows_t: B::Tensor,
    labels: Vec<u32>,
    n_rewrite: usize,
    t: usize,
    h_init: Vec<f32>,
    h_init_norm: f32,
    /// `log p_init` at the KL position, set by the first [`ZProblem::forward`].
    kl_init: Option<Vec<f32>>,
    /// What the last forward left for the backward pass.
    last: Option<Pending<B::Tensor>>,
    /// The request's prompts, for the result.
    pub prompts: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub lookup_idxs: Vec<usize>,
    pub target_ids: Vec<u32>,
}

/// The forward pass kept for [`ZProblem::backward`].
struct Pending<T> {
    delta: Vec<f32>,
    tape: Vec<(usize, T, BlockActs<T>)>,
    hidden: T,
    logp: T,
    dlogp: Vec<f32>,
}

impl<'m, B: Backend> ZProblem<'m, B> {
    /// Builds the prompts and runs blocks `0..=l0` (with `originals` as the edited layers'
    /// `down_proj`: weights rewinding; empty for the current weights).
    pub async fn new(
        model: &'m Model<B>,
        tok: &Tokenizer,
        request: &EditRequest,
        templates: &ContextTemplates,
        hp: &Hparams,
        originals: &[(usize, &B::Tensor)],
    ) -> Result<Self> {
        let be = model.backend();
        let d = model.config.d_model;
        let l0 = hp.z_layer();
        let target = target_ids(tok, request, hp.target_space)?;
        let t = target.len();
        // The rewriting prompts (every template, target minus its last token appended) and the
        // KL prompt.
        let suffix = tok.decode(&target[..t - 1])?;
        let mut shaped = rewriting_prompts(templates, request, &suffix);
        let n_rewrite = shaped.len();
        shaped.push(KL_PROMPT.to_string());
        let mut prompts = vec![];
        let mut input_ids = vec![];
        let mut lookup_idxs = vec![];
        for (s, template) in shaped.iter().enumerate() {
            let located = locate_subject(tok, template, &request.subject)?;
            // Only the rewriting prompts carry the target (their last t positions are label
            // rows); the KL prompt is read at its subject-last token alone, so it may be shorter.
            if s < n_rewrite && located.ids.len() < t {
                return Err(Error::input(format!(
                    "rewriting prompt {:?} has {} tokens, fewer than its target's {t}",
                    located.text,
                    located.ids.len()
                )));
            }
            lookup_idxs.push(located.last);
            prompts.push(located.text);
            input_ids.push(located.ids);
        }
        let packed = Packed::new(&input_ids);
        let lookup_rows: Vec<u32> = lookup_idxs
            .iter()
            .enumerate()
            .map(|(s, &i)| packed.row(s, i) as u32)
            .collect();
        // Label rows: the last t positions of each rewriting prompt predict the target tokens.
        let mut loss_rows = vec![];
        let mut labels = vec![];
        for s in 0..n_rewrite {
            let n = packed.len_of(s);
            for (j, &id) in target.iter().enumerate() {
                loss_rows.push(packed.row(s, n - t + j) as u32);
                labels.push(id);
            }
        }
        loss_rows.push(lookup_rows[n_rewrite]);

        // Only rows from the subject's last token on depend on δ (causality): a few per prompt.
        // The others keep the keys and values of one full pass at δ = 0, and each step recomputes
        // the dependent rows alone (spec §4.2's loss is unchanged; the work drops ~7×).
        let mut dep = vec![];
        for (s, &lookup) in lookup_idxs.iter().enumerate() {
            let first_label = if s < n_rewrite {
                packed.len_of(s) - t
            } else {
                lookup
            };
            dep.extend(packed.row(s, lookup.min(first_label))..=packed.last_row(s));
        }
        let dep: Vec<u32> = dep.into_iter().map(|r| r as u32).collect();
        let index_in_dep =
            |row: u32| dep.iter().position(|&r| r == row).expect("a dependent row") as u32;
        let lookup_in_dep: Vec<u32> = lookup_rows.iter().map(|&r| index_in_dep(r)).collect();
        let loss_in_dep: Vec<u32> = loss_rows.iter().map(|&r| index_in_dep(r)).collect();

        let full = model
            .forward(
                &packed,
                &ForwardSpec {
                    down_proj_override: originals,
                    last_layer: Some(l0),
                    ..Default::default()
                },
            )?
            .hidden;
        let bt = model.upload_batch(&packed)?;
        let dep_t = be.upload_u32("dependent rows", &dep, &[dep.len()])?;
        let (mut k_fixed, mut v_fixed) = (vec![], vec![]);
        let mut h = be.copy(&full)?;
        for l in 0..model.config.n_layers {
            if l <= l0 {
                k_fixed.push(None);
                v_fixed.push(None);
                continue;
            }
            let (out, acts) = model.block_packed(l, &h, &bt, None)?;
            k_fixed.push(Some(zero_rows(be, &acts.k, &dep).await?));
            v_fixed.push(Some(zero_rows(be, &acts.v, &dep).await?));
            h = out;
        }
        let pos: Vec<u32> = dep.iter().map(|&r| packed.positions[r as usize]).collect();
        let rng: Vec<u32> = dep
            .iter()
            .flat_map(|&r| {
                [
                    packed.ranges[2 * r as usize],
                    packed.ranges[2 * r as usize + 1],
                ]
            })
            .collect();
        let prefix = be.gather_rows(&full, &dep_t)?;
        let lookup_t = be.upload_u32("lookup rows", &lookup_in_dep, &[lookup_in_dep.len()])?;
        let loss_rows_t = be.upload_u32("loss rows", &loss_in_dep, &[loss_in_dep.len()])?;
        let h_init = be.read(&be.gather_rows(&prefix, &lookup_t)?).await?[..d].to_vec();
        let h_init_norm = norm(&h_init);
        Ok(ZProblem {
            model,
            hp: hp.clone(),
            prefix,
            positions: be.upload_u32("positions", &pos, &[pos.len()])?,
            ranges: be.upload_u32("ranges", &rng, &[pos.len(), 2])?,
            fixed: PartialKv {
                k: k_fixed,
                v: v_fixed,
                rows: dep_t,
            },
            lookup_t,
            n_lookup: lookup_rows.len(),
            loss_rows: loss_in_dep,
            loss_rows_t,
            labels,
            n_rewrite,
            t,
            h_init,
            h_init_norm,
            kl_init: None,
            last: None,
            prompts,
            input_ids,
            lookup_idxs,
            target_ids: target,
        })
    }

    /// `h_init`: block `l0`'s output at the bare prompt's subject-last token, `(d)`.
    pub fn h_init(&self) -> &[f32] {
        &self.h_init
    }

    /// The loss terms at `delta`. The first call fixes the KL reference distribution (the
    /// optimisation makes it at `δ = 0`).
    pub async fn forward(&mut self, delta: &[f32]) -> Result<ZStep> {
        let (model, hp) = (self.model, &self.hp);
        let be = model.backend();
        let (d, vocab) = (model.config.d_model, model.config.vocab_size);
        let mut h = be.copy(&self.prefix)?;
        let shift = be.upload("delta", &delta.repeat(self.n_lookup), &[self.n_lookup, d])?;
        be.add_rows(&mut h, &self.lookup_t, &shift)?;
        let mut tape = Vec::with_capacity(model.config.n_layers - hp.z_layer() - 1);
        for l in hp.z_layer() + 1..model.config.n_layers {
            let (out, acts) =
                model.block_partial(l, &h, &self.positions, &self.ranges, &self.fixed)?;
            tape.push((l, std::mem::replace(&mut h, out), acts));
        }
        let logp_t = be.log_softmax(&model.logits_at(&h, &self.loss_rows)?)?; // (R, V)
        let logp = be.read(&logp_t).await?;

        // Loss terms, and d loss / d logp on the host.
        let (t, n_rewrite) = (self.t, self.n_rewrite);
        let mut dlogp = vec![0.0f32; logp.len()];
        let (mut nll, mut prob) = (0.0f32, 0.0f32);
        for s in 0..n_rewrite {
            let mut nll_s = 0.0f32;
            for j in 0..t {
                let r = s * t + j;
                let at = r * vocab + self.labels[r] as usize;
                nll_s -= logp[at];
                dlogp[at] = -1.0 / (t * n_rewrite) as f32;
            }
            nll_s /= t as f32;
            nll += nll_s / n_rewrite as f32;
            prob += (-nll_s).exp() / n_rewrite as f32;
        }
        // KL(p_cur ‖ p_init) at the KL prompt's subject-last token; d/d log p_cur = p (Δ + 1).
        let kl_off = n_rewrite * t * vocab;
        let kl_cur = &logp[kl_off..kl_off + vocab];
        let kl_ref = self.kl_init.get_or_insert_with(|| kl_cur.to_vec());
        let mut kl = 0.0f64;
        for v in 0..vocab {
            let p = kl_cur[v].exp();
            kl += p as f64 * (kl_cur[v] - kl_ref[v]) as f64;
            dlogp[kl_off + v] = hp.kl_factor * p * (kl_cur[v] - kl_ref[v] + 1.0);
        }
        let kl = hp.kl_factor * kl as f32;
        let wd = hp.v_weight_decay * norm(delta) / (self.h_init_norm * self.h_init_norm);
        let step = ZStep {
            loss: nll + kl + wd,
            nll,
            kl,
            wd,
            prob,
        };
        self.last = Some(Pending {
            delta: delta.to_vec(),
            tape,
            hidden: h,
            logp: logp_t,
            dlogp,
        });
        Ok(step)
    }

    /// The gradient of the loss with respect to `δ` at the last [`ZProblem::forward`].
    pub async fn backward(&mut self) -> Result<Vec<f32>> {
        let model = self.model;
        let be = model.backend();
        let (d, vocab) = (model.config.d_model, model.config.vocab_size);
        let p = self.last.take().expect("backward follows forward");
        let dlogp = be.upload("d logp", &p.dlogp, &[self.loss_rows.len(), vocab])?;
        let dlogits = be.log_softmax_backward(&p.logp, &dlogp)?;
        let mut dh = model.head_backward(&p.hidden, &self.loss_rows_t, &dlogits)?;
        for (l, h_in, acts) in p.tape.iter().rev() {
            let rows = BlockRows::Partial {
                positions: &self.positions,
                ranges: &self.ranges,
                kv_rows: &self.fixed.rows,
            };
            dh = model.block_backward(*l, h_in, acts, rows, None, &dh)?;
        }
        // δ is added at every lookup row: its gradient is the sum over them.
        let dh_rows = be.read(&be.gather_rows(&dh, &self.lookup_t)?).await?;
        let mut grad = vec![0.0f32; d];
        for row in dh_rows.chunks(d) {
            for (g, x) in grad.iter_mut().zip(row) {
                *g += x;
            }
        }
        // d ‖δ‖ / dδ = δ / ‖δ‖, taken as 0 at δ = 0 (PyTorch's convention).
        let delta_norm = norm(&p.delta);
        if delta_norm > 0.0 {
            let c = self.hp.v_weight_decay / (self.h_init_norm * self.h_init_norm) / delta_norm;
            for (g, x) in grad.iter_mut().zip(&p.delta) {
                *g += c * x;
            }
        }
        Ok(grad)
    }
}

/// `t` with the given rows set to zero (read back and re-uploaded: done once per request).
async fn zero_rows<B: Backend>(be: &B, t: &B::Tensor, rows: &[u32]) -> Result<B::Tensor> {
    let width = *t.shape().last().expect("a matrix");
    let mut v = be.read(t).await?;
    for &r in rows {
        v[r as usize * width..(r as usize + 1) * width].fill(0.0);
    }
    be.upload_owned("fixed keys/values", v, t.shape())
}
