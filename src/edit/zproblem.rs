//! The z problem of a batch of requests (spec §4.2): every request's prompts packed into one
//! batch, blocks `0..=l0` run once, and each request's loss with its gradient available at any
//! `δ`, recomputing only the rows that depend on it.
//!
//! The requests share nothing but the passes: a request's rows attend only to its own prompts,
//! its loss reads only its own rows, and its `δ` is added only at its own subject tokens. So the
//! sum of the losses has, with respect to each request's `δ`, that request's gradient, and one
//! packed forward and backward serve them all. A request that stops early leaves the layout
//! ([`ZProblem::retain`]); the others go on without its rows.
//!
//! The z loop's shared definitions live here too (the KL anchor prompt, the target's tokens,
//! [`ZStep`], [`norm`]); `super::target`, the loop itself, re-exports them.

use std::ops::Range;

use serde::Serialize;

use super::hparams::{Hparams, TargetSpace};
use super::request::EditRequest;
use super::subject::locate_subject;
use super::templates::{ContextTemplates, rewriting_prompts};
use crate::backend::{Backend, TensorInfo};
use crate::model::{BlockActs, BlockRows, ForwardSpec, Model, Packed, PartialKv, Tokenizer};
use crate::{Error, Result};

/// The z problem of a batch of requests: prompts tokenised, blocks `0..=l0` run once, and the
/// loss of spec §4.2 of each request with its gradient available at any `δ`.
pub struct ZProblem<'m, B: Backend> {
    model: &'m Model<B>,
    hp: Hparams,
    /// Block-`l0` output of every row that depends on a `δ` (see [`PartialKv`]), `(D, d)`,
    /// request after request.
    prefix: B::Tensor,
    dep: DepRows,
    /// Keys and values of the rows that do not depend on `δ`, with `rows` the dependent rows of
    /// the current layout.
    fixed: PartialKv<B::Tensor>,
    /// The requests still being optimised, and their rows.
    layout: Layout<B::Tensor>,
    items: Vec<Item>,
    /// Per request, `log p_init` at the KL position, `(1, V)` on the device, set by its first
    /// forward (at `δ = 0`).
    kl_refs: Vec<Option<B::Tensor>>,
    /// The loss rows' labels, weights, KL row indices and KL references for the current
    /// layout: built at its first forward, dropped when the layout changes.
    loss_spec: Option<[B::Tensor; 4]>,
    /// What the last forward left for the backward pass.
    last: Option<Pending<B::Tensor>>,
    /// Bytes of MLP activations a step keeps ([`Z_TAPE_MLP_BUDGET`] unless set).
    mlp_budget: usize,
}

/// One request of the batch.
struct Item {
    /// Its dependent rows, as indices into [`DepRows`].
    dep: Range<usize>,
    /// Where `δ` goes (each prompt's subject-last row) and the loss rows (label rows then the
    /// KL row), as indices into `dep`.
    lookup: Vec<usize>,
    loss: Vec<usize>,
    labels: Vec<u32>,
    n_rewrite: usize,
    t: usize,
    h_init: Vec<f32>,
    h_init_norm: f32,
    prompts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    lookup_idxs: Vec<usize>,
    target_ids: Vec<u32>,
}

/// Per dependent row: its row in the packed layout, its position and attention range.
struct DepRows {
    rows: Vec<u32>,
    positions: Vec<u32>,
    ranges: Vec<u32>,
}

/// The rows of the requests being optimised.
struct Layout<T> {
    requests: Vec<usize>,
    prefix: T,
    positions: T,
    ranges: T,
    /// Every lookup row of those requests, request after request, and the request (its index
    /// into the batch) each belongs to.
    lookup_t: T,
    lookup_req: T,
    /// Every loss row, request after request.
    loss: Vec<u32>,
    loss_t: T,
}

impl<T: TensorInfo> Layout<T> {
    /// The layout of `requests` (ascending indices into `items`), and the packed rows it
    /// recomputes (for [`PartialKv::rows`]).
    fn new<B: Backend<Tensor = T>>(
        be: &B,
        requests: &[usize],
        items: &[Item],
        prefix: &T,
        dep: &DepRows,
    ) -> Result<(Self, T)> {
        let mut sel = vec![];
        let (mut lookup, mut loss) = (vec![], vec![]);
        let mut lookup_req = vec![];
        for &i in requests {
            let it = &items[i];
            let base = sel.len() as u32;
            lookup.extend(it.lookup.iter().map(|&r| base + r as u32));
            lookup_req.extend(it.lookup.iter().map(|_| i as u32));
            loss.extend(it.loss.iter().map(|&r| base + r as u32));
            sel.extend(it.dep.start as u32..it.dep.end as u32);
        }
        let pos: Vec<u32> = sel.iter().map(|&i| dep.positions[i as usize]).collect();
        let rng: Vec<u32> = sel
            .iter()
            .flat_map(|&i| [dep.ranges[2 * i as usize], dep.ranges[2 * i as usize + 1]])
            .collect();
        let rows: Vec<u32> = sel.iter().map(|&i| dep.rows[i as usize]).collect();
        let sel_t = be.upload_u32("active rows", &sel, &[sel.len()])?;
        let layout = Layout {
            requests: requests.to_vec(),
            prefix: be.gather_rows(prefix, &sel_t)?,
            positions: be.upload_u32("positions", &pos, &[pos.len()])?,
            ranges: be.upload_u32("ranges", &rng, &[pos.len(), 2])?,
            lookup_t: be.upload_u32("lookup rows", &lookup, &[lookup.len()])?,
            lookup_req: be.upload_u32("lookup requests", &lookup_req, &[lookup_req.len()])?,
            loss_t: be.upload_u32("loss rows", &loss, &[loss.len()])?,
            loss,
        };
        let rows = be.upload_u32("dependent rows", &rows, &[rows.len()])?;
        Ok((layout, rows))
    }
}

/// The forward pass kept for [`ZProblem::backward`].
struct Pending<T> {
    tape: Vec<(usize, T, BlockActs<T>)>,
    hidden: T,
    /// The loss's gradient with respect to the logits.
    dlogits: T,
}

/// What a request contributes to the packed batch, before anything runs.
pub(super) struct Prompts {
    pub prompts: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub lookup_idxs: Vec<usize>,
    pub target_ids: Vec<u32>,
    pub n_rewrite: usize,
}

/// The rewriting prompts of `request` (every template, the target minus its last token
/// appended) and the KL prompt, tokenised, with the subject's last token located in each.
///
/// # Errors
/// A target that encodes to no token, a subject that cannot be located, a rewriting prompt
/// shorter than the target.
pub(super) fn prompts(
    tok: &Tokenizer,
    request: &EditRequest,
    templates: &ContextTemplates,
    hp: &Hparams,
) -> Result<Prompts> {
    let target = target_ids(tok, request, hp.target_space)?;
    let t = target.len();
    let suffix = tok.decode(&target[..t - 1])?;
    let mut shaped = rewriting_prompts(templates, request, &suffix);
    let n_rewrite = shaped.len();
    shaped.push(KL_PROMPT.to_string());
    let mut out = Prompts {
        prompts: vec![],
        input_ids: vec![],
        lookup_idxs: vec![],
        target_ids: target,
        n_rewrite,
    };
    for (s, template) in shaped.iter().enumerate() {
        let located = locate_subject(tok, template, &request.subject)?;
        // Only the rewriting prompts carry the target (their last t positions are label rows);
        // the KL prompt is read at its subject-last token alone, so it may be shorter.
        if s < n_rewrite && located.ids.len() < t {
            return Err(Error::input(format!(
                "rewriting prompt {:?} has {} tokens, fewer than its target's {t}",
                located.text,
                located.ids.len()
            )));
        }
        out.lookup_idxs.push(located.last);
        out.prompts.push(located.text);
        out.input_ids.push(located.ids);
    }
    Ok(out)
}

impl<'m, B: Backend> ZProblem<'m, B> {
    /// Builds every request's prompts and runs blocks `0..=l0` on all of them at once (with
    /// `originals` as the edited layers' `down_proj`: weights rewinding; empty for the current
    /// weights).
    ///
    /// # Errors
    /// As [`prompts`] for any request (the message names it), an empty batch, backend failures.
    pub async fn new(
        model: &'m Model<B>,
        tok: &Tokenizer,
        requests: &[&EditRequest],
        templates: &ContextTemplates,
        hp: &Hparams,
        originals: &[(usize, &B::Tensor)],
    ) -> Result<Self> {
        if requests.is_empty() {
            return Err(Error::input("no request to optimise a target for"));
        }
        let be = model.backend();
        let d = model.config.d_model;
        let l0 = hp.z_layer();
        let mut built = Vec::with_capacity(requests.len());
        for r in requests {
            built.push(prompts(tok, r, templates, hp)?);
        }
        let packed = Packed::new(
            &built
                .iter()
                .flat_map(|p| p.input_ids.iter())
                .collect::<Vec<_>>(),
        );

        // Only rows from the subject's last token on depend on δ (causality): a few per prompt.
        // The others keep the keys and values of one full pass at δ = 0, and each step recomputes
        // the dependent rows alone (spec §4.2's loss is unchanged; the work drops ~7×).
        let mut dep_rows: Vec<u32> = vec![];
        let mut index_in_dep = vec![u32::MAX; packed.n_rows()];
        let mut items = Vec::with_capacity(requests.len());
        let mut seq = 0;
        for p in built {
            let start = dep_rows.len();
            let first_seq = seq;
            for (s, &lookup) in p.lookup_idxs.iter().enumerate() {
                let first = if s < p.n_rewrite {
                    packed.len_of(seq) - p.target_ids.len()
                } else {
                    lookup
                };
                let (from, to) = (packed.row(seq, lookup.min(first)), packed.last_row(seq));
                for (row, slot) in (from..=to).zip(&mut index_in_dep[from..=to]) {
                    *slot = (dep_rows.len() - start) as u32;
                    dep_rows.push(row as u32);
                }
                seq += 1;
            }
            let at = |s: usize, pos: usize| index_in_dep[packed.row(first_seq + s, pos)] as usize;
            let lookup: Vec<usize> = p
                .lookup_idxs
                .iter()
                .enumerate()
                .map(|(s, &i)| at(s, i))
                .collect();
            // Label rows: the last t positions of each rewriting prompt predict the target.
            let t = p.target_ids.len();
            let (mut loss, mut labels) = (vec![], vec![]);
            for s in 0..p.n_rewrite {
                let n = packed.len_of(first_seq + s);
                for (j, &id) in p.target_ids.iter().enumerate() {
                    loss.push(at(s, n - t + j));
                    labels.push(id);
                }
            }
            loss.push(lookup[p.n_rewrite]);
            items.push(Item {
                dep: start..dep_rows.len(),
                lookup,
                loss,
                labels,
                n_rewrite: p.n_rewrite,
                t,
                h_init: vec![],
                h_init_norm: 0.0,
                prompts: p.prompts,
                input_ids: p.input_ids,
                lookup_idxs: p.lookup_idxs,
                target_ids: p.target_ids,
            });
        }

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
        let dep_t = be.upload_u32("dependent rows", &dep_rows, &[dep_rows.len()])?;
        // Every later block's keys and values, with the dependent rows (those δ changes) zeroed:
        // they are recomputed each step (on the device, with no readback).
        let (mut k_fixed, mut v_fixed) = (vec![], vec![]);
        let mut h = be.copy(&full)?;
        for l in 0..model.config.n_layers {
            if l <= l0 {
                k_fixed.push(None);
                v_fixed.push(None);
                continue;
            }
            let (out, acts, _) = model.block_packed(l, &h, &bt, None)?;
            let (mut k, mut v) = (acts.k, acts.v);
            be.zero_rows(&mut k, &dep_t)?;
            be.zero_rows(&mut v, &dep_t)?;
            k_fixed.push(Some(k));
            v_fixed.push(Some(v));
            h = out;
        }
        let prefix = be.gather_rows(&full, &dep_t)?;
        // h_init: block l0's output at the bare prompt's (the first prompt's) subject-last row.
        let firsts: Vec<u32> = items
            .iter()
            .map(|it| (it.dep.start + it.lookup[0]) as u32)
            .collect();
        let firsts_t = be.upload_u32("first lookup rows", &firsts, &[firsts.len()])?;
        let h_inits = be.read(&be.gather_rows(&prefix, &firsts_t)?).await?;
        for (it, h) in items.iter_mut().zip(h_inits.chunks(d)) {
            it.h_init = h.to_vec();
            it.h_init_norm = norm(h);
        }
        let dep_positions = dep_rows
            .iter()
            .map(|&r| packed.positions[r as usize])
            .collect();
        let dep_ranges = dep_rows
            .iter()
            .flat_map(|&r| {
                [
                    packed.ranges[2 * r as usize],
                    packed.ranges[2 * r as usize + 1],
                ]
            })
            .collect();
        let dep = DepRows {
            rows: dep_rows,
            positions: dep_positions,
            ranges: dep_ranges,
        };
        let all: Vec<usize> = (0..items.len()).collect();
        let (layout, active_rows) = Layout::new(be, &all, &items, &prefix, &dep)?;
        Ok(ZProblem {
            model,
            hp: hp.clone(),
            prefix,
            dep,
            fixed: PartialKv {
                k: k_fixed,
                v: v_fixed,
                rows: active_rows,
            },
            layout,
            kl_refs: (0..items.len()).map(|_| None).collect(),
            loss_spec: None,
            items,
            last: None,
            mlp_budget: Z_TAPE_MLP_BUDGET,
        })
    }

    /// Number of requests in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty (never: [`ZProblem::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `h_init` of request `i`: block `l0`'s output at the bare prompt's subject-last token.
    pub fn h_init(&self, i: usize) -> &[f32] {
        &self.items[i].h_init
    }

    /// Sets the bytes of MLP activations a step keeps for its backward pass (the other blocks'
    /// are recomputed there, with the same result): [`Z_TAPE_MLP_BUDGET`] by default.
    pub fn set_mlp_tape_budget(&mut self, bytes: usize) {
        self.mlp_budget = bytes;
    }

    /// The backend the problem runs on.
    pub fn backend(&self) -> &'m B {
        self.model.backend()
    }

    /// The requests [`ZProblem::forward`] evaluates, in order.
    pub fn active(&self) -> &[usize] {
        &self.layout.requests
    }

    /// Keeps only `requests` (ascending indices into the batch) in the passes from now on.
    ///
    /// # Errors
    /// Backend failures.
    pub fn retain(&mut self, requests: &[usize]) -> Result<()> {
        let be = self.model.backend();
        let (layout, rows) = Layout::new(be, requests, &self.items, &self.prefix, &self.dep)?;
        self.layout = layout;
        self.fixed.rows = rows;
        self.last = None;
        self.loss_spec = None;
        Ok(())
    }

    /// The loss terms of every active request at its `δ` (row `i` of `delta` for request
    /// `i`, whose norm is `norms[i]`), and `norms` read back with them in one transfer. A
    /// request's first evaluation fixes its KL reference distribution (the optimisation makes
    /// it at `δ = 0`).
    ///
    /// # Shapes
    /// `delta (N, d)`, `norms (N)` for the `N` requests of the batch.
    pub async fn forward(
        &mut self,
        delta: &B::Tensor,
        norms: &B::Tensor,
    ) -> Result<(Vec<ZStep>, Vec<f32>)> {
        let terms = self.enqueue_forward(delta)?;
        let mut read = self
            .model
            .backend()
            .read_many(&[&terms, norms])
            .await?
            .into_iter();
        let (values, norms) = (
            read.next().unwrap_or_default(),
            read.next().unwrap_or_default(),
        );
        Ok((self.steps(&values, &norms), norms))
    }

    /// [`ZProblem::forward`] without the readback: enqueues the pass and returns the loss
    /// terms on the device, one float per loss row, for [`ZProblem::steps`]. The z loop reads
    /// them while the device runs the step's backward pass and Adam update.
    ///
    /// # Shapes
    /// `delta (N, d)` → `(R)` for the `R` loss rows.
    pub fn enqueue_forward(&mut self, delta: &B::Tensor) -> Result<B::Tensor> {
        let (model, hp) = (self.model, &self.hp);
        let be = model.backend();
        let vocab = model.config.vocab_size;
        let lay = &self.layout;
        let mut h = be.copy(&lay.prefix)?;
        // δ of each request at each of its lookup rows, gathered on the device.
        let shift = be.gather_rows(delta, &lay.lookup_req)?;
        be.add_rows(&mut h, &lay.lookup_t, &shift)?;
        let n_blocks = model.config.n_layers - hp.z_layer() - 1;
        let mut tape = Vec::with_capacity(n_blocks);
        // The tape keeps the MLP activations of the blocks that fit in the budget; the backward
        // pass recomputes the others' (the same ops on the same rows: the same result, bit for
        // bit).
        let mlp_bytes = 8 * lay.positions.len() * model.config.d_ff;
        let mut kept_bytes = 0;
        for l in hp.z_layer() + 1..model.config.n_layers {
            let (out, mut acts, _) =
                model.block_partial(l, &h, &lay.positions, &lay.ranges, &self.fixed)?;
            if kept_bytes + mlp_bytes <= self.mlp_budget {
                kept_bytes += mlp_bytes;
            } else {
                acts.forget_mlp();
            }
            tape.push((l, std::mem::replace(&mut h, out), acts));
        }
        let logp_t = be.log_softmax_into(model.logits_at(&h, &lay.loss)?)?; // (R, V)

        // A request's first evaluation (at δ = 0) fixes its KL reference: its KL row, kept on
        // the device.
        let mut row0 = 0;
        for &i in &lay.requests {
            let n = self.items[i].loss.len();
            if self.kl_refs[i].is_none() {
                let at = be.upload_u32("KL row", &[(row0 + n - 1) as u32], &[1])?;
                self.kl_refs[i] = Some(be.gather_rows(&logp_t, &at)?);
            }
            row0 += n;
        }
        // The loss rows' kinds (a target row's label and weight, or a KL row and its
        // reference), once per layout, and the terms and d loss / d logits computed on the
        // device: only the terms, one float per row, come back.
        if self.loss_spec.is_none() {
            let (mut labels, mut weights, mut kl_rows) = (vec![], vec![], vec![]);
            let mut refs = be.zeros(&[lay.requests.len(), vocab])?;
            for (k, &i) in lay.requests.iter().enumerate() {
                let it = &self.items[i];
                let weight = -1.0 / (it.t * it.n_rewrite) as f32;
                for &label in &it.labels[..it.n_rewrite * it.t] {
                    labels.push(label);
                    weights.push(weight);
                    kl_rows.push(0);
                }
                labels.push(crate::ops::softmax::KL_ROW);
                weights.push(0.0);
                kl_rows.push(k as u32);
                let reference = self.kl_refs[i].as_ref().expect("set above");
                be.write_rows(&mut refs, k, reference)?;
            }
            let r = labels.len();
            self.loss_spec = Some([
                be.upload_u32("z loss labels", &labels, &[r])?,
                be.upload_owned("z loss weights", weights, &[r])?,
                be.upload_u32("z loss KL rows", &kl_rows, &[r])?,
                refs,
            ]);
        }
        let [labels, weights, kl_rows, refs] = self.loss_spec.as_ref().expect("built above");
        let (dlogits, values_t) =
            be.z_loss(logp_t, labels, weights, refs, kl_rows, hp.kl_factor)?;
        self.last = Some(Pending {
            tape,
            hidden: h,
            dlogits,
        });
        Ok(values_t)
    }

    /// Each active request's loss and its parts, from the terms of
    /// [`ZProblem::enqueue_forward`] read back (`values`) and every request's `‖δ‖` (`norms`).
    pub fn steps(&self, values: &[f32], norms: &[f32]) -> Vec<ZStep> {
        let (hp, lay) = (&self.hp, &self.layout);
        // The loss terms, request after request (the sums in the reference's order).
        let mut steps = Vec::with_capacity(lay.requests.len());
        let mut row0 = 0;
        for &i in &lay.requests {
            let it = &self.items[i];
            let (t, n_rewrite) = (it.t, it.n_rewrite);
            let terms = &values[row0..row0 + it.loss.len()];
            row0 += it.loss.len();
            let (mut nll, mut prob) = (0.0f32, 0.0f32);
            for s in 0..n_rewrite {
                let mut nll_s = 0.0f32;
                for j in 0..t {
                    nll_s -= terms[s * t + j];
                }
                nll_s /= t as f32;
                nll += nll_s / n_rewrite as f32;
                prob += (-nll_s).exp() / n_rewrite as f32;
            }
            // KL(p_cur ‖ p_init) at the KL prompt's subject-last token.
            let kl = hp.kl_factor * terms[n_rewrite * t];
            let wd = hp.v_weight_decay * norms[i] / (it.h_init_norm * it.h_init_norm);
            steps.push(ZStep {
                loss: nll + kl + wd,
                nll,
                kl,
                wd,
                prob,
            });
        }
        steps
    }

    /// The gradient of each active request's loss terms with respect to its `δ`, at the last
    /// pass ([`ZProblem::forward`] or [`ZProblem::enqueue_forward`]), on the device: row `i` for request `i` (zero for the others).
    /// The weight decay's gradient is [`Backend::z_adam`]'s.
    ///
    /// # Shapes
    /// `(N, d)` for the `N` requests of the batch.
    pub fn backward(&mut self) -> Result<B::Tensor> {
        let model = self.model;
        let be = model.backend();
        let d = model.config.d_model;
        let p = self.last.take().expect("backward follows forward");
        let lay = &self.layout;
        let mut dh = model.head_backward(&p.hidden, &lay.loss_t, &p.dlogits)?;
        for (l, h_in, acts) in p.tape.iter().rev() {
            let rows = BlockRows::Partial {
                positions: &lay.positions,
                ranges: &lay.ranges,
                part: &self.fixed,
            };
            dh = model.block_backward(*l, h_in, acts, rows, None, &dh)?;
        }
        // δ is added at every lookup row of its request: its gradient is the sum over them,
        // added in order (`add_rows`).
        let dh_rows = be.gather_rows(&dh, &lay.lookup_t)?;
        let mut grad = be.zeros(&[self.items.len(), d])?;
        be.add_rows(&mut grad, &lay.lookup_req, &dh_rows)?;
        Ok(grad)
    }

    /// Request `i`'s prompts, their tokens and subject-last indices, and its target's tokens,
    /// for the result.
    pub fn describe(&self, i: usize) -> Described<'_> {
        let it = &self.items[i];
        (&it.prompts, &it.input_ids, &it.lookup_idxs, &it.target_ids)
    }
}

/// A request's prompts, their tokens, their subject-last indices and its target's tokens.
pub type Described<'a> = (&'a [String], &'a [Vec<u32>], &'a [usize], &'a [u32]);

/// Bytes of MLP activations (`gate` and `up` in f32 at every recomputed row) that one z step
/// keeps for its backward pass, from the lowest block up; the backward pass recomputes the
/// other blocks' from the residual after attention, two more matmuls per block. One or two
/// requests fit (the page's edits: ~7 MB for one request of the default model); a batch of 10
/// (252 rows, 3.1 MB per block, 68 MB in all) keeps 8 of its 22 blocks': `nse edit` of 10
/// requests peaks at 342 MiB instead of 378, for 5 % more CPU time.
pub const Z_TAPE_MLP_BUDGET: usize = 24 << 20;

/// The KL anchor prompt.
pub const KL_PROMPT: &str = "{} is a";

/// One forward evaluation of the z loop.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ZStep {
    pub loss: f32,
    pub nll: f32,
    pub kl: f32,
    pub wd: f32,
    /// Mean over the rewriting prompts of `exp(−NLL)`.
    pub prob: f32,
}

/// Tokens of the target string under the hazard-H1 policy (leading BOS stripped).
pub fn target_ids(tok: &Tokenizer, request: &EditRequest, space: TargetSpace) -> Result<Vec<u32>> {
    let text = match space {
        TargetSpace::Space if !request.target_new.starts_with(' ') => {
            format!(" {}", request.target_new)
        }
        _ => request.target_new.clone(),
    };
    let mut ids = tok.encode(&text)?;
    if tok.bos_id().is_some() && ids.first().copied() == tok.bos_id() {
        ids.remove(0);
    }
    if ids.is_empty() {
        return Err(Error::input(format!(
            "the target {:?} encodes to no token; type a non-empty target",
            request.target_new
        )));
    }
    Ok(ids)
}

pub use crate::ops::adam::norm;
