//! One batch of edits (spec §6), shared by the three methods.
//!
//! ```text
//! z_i for every request (original or current weights, per method)
//! for round m: residuals ‖z − h‖ on the bare prompts; A = {α < r < U}; stop if empty or last
//!     for each edited layer l (ascending): keys of A, residual (z − h)/(E − i), select,
//!         solve in f64, W_l[:, S] += Δ_S          (the next layer sees the update)
//! P_l += K Kᵀ with the post-batch keys of every request
//! ```
//! A failed batch leaves the model exactly as it was: the edited `down_proj` matrices are
//! snapshotted first and restored on any error, and `P` and the ledger change only at the end.

use serde::Serialize;

use super::check::CheckSpec;
use super::covariance::CovarianceSet;
use super::hparams::Hparams;
use super::keys::{KeyPrompts, keys_and_h, keys_and_h_resumed, keys_at};
use super::method::EditMethod;
use super::request::EditRequest;
use super::solve::{LayerSystem, Solved};
use super::state::{AppliedUpdate, EditState, LedgerEntry, apply_update};
use super::target::{Pause, ZOptions, ZResult, compute_zs, norm};
use super::templates::ContextTemplates;
use crate::backend::Backend;
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// Progress of a batch, for progress bars and the page.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// Optimising `z` for request `request` of `of`: evaluation `step`, loss `loss`.
    Z {
        request: usize,
        of: usize,
        step: usize,
        loss: f32,
    },
    /// Round `round` starts; `edited` requests have `α < ‖z − h‖ < U`.
    Round {
        round: usize,
        edited: usize,
        residuals: Vec<f32>,
    },
    /// Layer `layer` of round `round` updated `n_selected` neurons.
    Layer {
        round: usize,
        layer: usize,
        n_selected: usize,
    },
    /// Updating the past-key statistics.
    PastKeys,
}

/// One layer's update in one round, as the dump records it.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRecord {
    pub layer: usize,
    /// Template-averaged keys of the edited requests, `(|A|, d_ff)`.
    #[serde(skip)]
    pub keys: Vec<f32>,
    /// `Σ |keys|` per neuron, `(d_ff)`.
    pub neuron_scores: Vec<f32>,
    /// Selected neurons in descending-score order.
    pub selected: Vec<u32>,
    pub n_selected: usize,
    /// ‖(z − h)/(E − i)‖ per edited request.
    pub resid_norms: Vec<f64>,
    /// ‖ΔW‖_F of the f32 update.
    pub dw_fro: f64,
    /// The estimated condition number of the solve's `G` (NSE, MEMIT, MEMIT-seq).
    pub g_condition: Option<f64>,
    /// `ΔW[0..5, first 5 selected columns]`.
    pub dw_first5rows_first5selected: Vec<Vec<f32>>,
}

/// One round.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRecord {
    pub round: usize,
    /// ‖z − h‖ of every request of the batch at the start of the round.
    pub residual_norms: Vec<f32>,
    /// Positions (in the batch) of the requests edited in this round.
    pub edited_request_positions: Vec<usize>,
    pub layers: Vec<LayerRecord>,
}

/// Everything a batch did, for reports and dumps. The compact part is the ledger entry.
#[derive(Clone, Debug, Serialize)]
pub struct BatchOutcome {
    pub z: Vec<ZResult>,
    /// Rounds, the last being the exit check (no layers).
    pub rounds: Vec<RoundRecord>,
    #[serde(skip)]
    pub entry: LedgerEntry,
}

/// What the batch procedure needs besides the model.
pub struct EditContext<'a> {
    pub tok: &'a Tokenizer,
    pub hp: &'a Hparams,
    pub templates: &'a ContextTemplates,
    pub cov: &'a CovarianceSet,
    pub method: &'a dyn EditMethod,
}

/// Optional inputs of [`apply_batch`].
#[derive(Default, Clone, Copy)]
pub struct BatchOptions<'a> {
    /// One target `z` per request, computed beforehand.
    pub precomputed_z: Option<&'a [ZResult]>,
    /// Awaited after every progress event.
    pub pause: Option<Pause<'a>>,
    /// Requests whose targets are optimised together (0: the default,
    /// [`super::target::DEFAULT_Z_CHUNK`]).
    pub z_chunk: usize,
}

/// Applies one batch of requests to `model` and records it in `state`, with `opts` (targets
/// computed beforehand, the pause hook, the z chunk; `BatchOptions::default()` for none).
///
/// With precomputed targets (one `z` per request, in order), as the reference driver does for
/// NSE: they depend only on the original weights, so they can be computed once and reused across
/// runs and methods that share them.
///
/// # Errors
/// Invalid requests, numerical failures, backend failures, a cancelling pause hook, precomputed
/// targets that do not hold one `z` per request. On error the model's weights, `P` and the
/// ledger are exactly as before the call.
pub async fn apply_batch<B: Backend>(
    model: &mut Model<B>,
    state: &mut EditState<B::Tensor>,
    ctx: &EditContext<'_>,
    requests: &[EditRequest],
    opts: BatchOptions<'_>,
    mut progress: impl FnMut(Progress),
) -> Result<BatchOutcome> {
    let precomputed = opts.precomputed_z;
    if let Some(zs) = precomputed
        && (zs.len() != requests.len() || zs.iter().any(|z| z.z.len() != model.config.d_model))
    {
        return Err(Error::input(format!(
            "{} precomputed targets for {} requests",
            zs.len(),
            requests.len()
        )));
    }
    ctx.hp.check_batch(&model.config)?;
    // Every request can be placed (shape, target tokens, the subject's last token in every
    // prompt, the context) before any work: a bad request must not fail the batch half-way.
    CheckSpec {
        tok: ctx.tok,
        templates: ctx.templates,
        target_space: ctx.hp.target_space,
        max_ctx: model.config.max_ctx,
    }
    .check_batch(requests)?;
    match run_batch(model, state, ctx, requests, opts, &mut progress).await {
        Ok(outcome) => match state.add_to_p(&outcome.entry.p_keys) {
            Ok(()) => {
                state.ledger.push(outcome.entry.clone());
                Ok(outcome)
            }
            Err(e) => undo(model, state, e),
        },
        Err(e) => undo(model, state, e),
    }
}

/// All or nothing: after a batch fails, its partial updates are undone by rebuilding the
/// weights from the originals and the ledger (no copy of them is held while the batch runs:
/// 17.7 MB for the default model, 335 MB for a model with d_ff 8,192), and `e` is returned.
fn undo<B: Backend>(
    model: &mut Model<B>,
    state: &EditState<B::Tensor>,
    e: Error,
) -> Result<BatchOutcome> {
    match state.rebuild_weights(model, state.ledger.len()) {
        Ok(()) => Err(e),
        Err(undo) => Err(Error::Refused {
            code: undo.code(),
            msg: format!(
                "{e}; then undoing the batch's partial updates failed too ({undo}): the model's \
                 weights are not to be trusted, reload the model and its edits"
            ),
        }),
    }
}

async fn run_batch<B: Backend>(
    model: &mut Model<B>,
    state: &EditState<B::Tensor>,
    ctx: &EditContext<'_>,
    requests: &[EditRequest],
    opts: BatchOptions<'_>,
    progress: &mut impl FnMut(Progress),
) -> Result<BatchOutcome> {
    let hp = ctx.hp;
    let pause = || async {
        match opts.pause {
            Some(p) => p().await,
            None => Ok(()),
        }
    };
    let (d, d_ff) = (model.config.d_model, model.config.d_ff);
    let l0 = hp.z_layer();
    let n_layers_edited = hp.layers.len();

    // Targets z, with the original weights (NSE) or the current ones.
    let mut zs = opts
        .precomputed_z
        .map(<[ZResult]>::to_vec)
        .unwrap_or_default();
    if zs.len() < requests.len() {
        let overrides = if ctx.method.rewinds() {
            state.original_overrides()
        } else {
            vec![]
        };
        let todo: Vec<&EditRequest> = requests[zs.len()..].iter().collect();
        let (first, of) = (zs.len(), requests.len());
        let on_step = |i, step, loss| {
            progress(Progress::Z {
                request: first + i,
                of,
                step,
                loss,
            })
        };
        let z_opts = ZOptions {
            chunk: opts.z_chunk,
            pause: opts.pause,
        };
        zs.extend(
            compute_zs(
                model,
                ctx.tok,
                &todo,
                ctx.templates,
                hp,
                &overrides,
                z_opts,
                on_step,
            )
            .await?,
        );
    }

    let policy = ctx.method.rounds(hp);
    let all: Vec<&EditRequest> = requests.iter().collect();
    let kp_all = KeyPrompts::new(ctx.tok, ctx.templates, &all)?;
    let mut rounds = vec![];
    let mut updates = vec![];
    for m in 0..policy.max_iterations {
        let h = keys_and_h(model, &kp_all, l0, l0).await?.h;
        let residuals: Vec<f32> = (0..requests.len())
            .map(|j| distance(&zs[j].z, &h[j * d..(j + 1) * d]))
            .collect();
        let edited: Vec<usize> = (0..requests.len())
            .filter(|&j| policy.alpha < residuals[j] && residuals[j] < policy.upper_bound)
            .collect();
        progress(Progress::Round {
            round: m,
            edited: edited.len(),
            residuals: residuals.clone(),
        });
        pause().await?;
        let mut record = RoundRecord {
            round: m,
            residual_norms: residuals,
            edited_request_positions: edited.clone(),
            layers: vec![],
        };
        if edited.is_empty() || m + 1 == policy.max_iterations {
            rounds.push(record);
            break;
        }
        let subset: Vec<&EditRequest> = edited.iter().map(|&j| &requests[j]).collect();
        let kp = KeyPrompts::new(ctx.tok, ctx.templates, &subset)?;
        // Each layer's pass re-runs only the blocks from the layer updated before it.
        let mut cache = None;
        for (i, &l) in hp.layers.iter().enumerate() {
            let kh = keys_and_h_resumed(model, &kp, l, l0, &mut cache).await?;
            if kh.keys.iter().chain(&kh.h).any(|x| !x.is_finite()) {
                return Err(Error::Numeric(format!(
                    "layer {l}, round {m}: the keys or hidden states are not finite (NaN or \
                     infinity: the weights no longer give finite activations)"
                )));
            }
            let spread = (n_layers_edited - i) as f64;
            let mut resid = vec![0.0f64; edited.len() * d];
            for (a, &j) in edited.iter().enumerate() {
                for c in 0..d {
                    resid[a * d + c] = (zs[j].z[c] as f64 - kh.h[a * d + c] as f64) / spread;
                }
            }
            let selection = ctx.method.select(&kh.keys, d_ff, hp);
            let sys = LayerSystem {
                c: ctx.cov.layer(l)?,
                p: &state.p[&l],
                d_ff,
                keys: &kh.keys,
                resid: &resid,
                d,
                n: edited.len(),
            };
            let Solved { update, condition } =
                ctx.method
                    .solve(l, &sys, &selection, hp)
                    .map_err(|e| match e {
                        Error::Numeric(msg) => {
                            Error::Numeric(format!("layer {l}, round {m}: {msg}"))
                        }
                        e => e,
                    })?;
            let dw = update.expand();
            if dw.iter().any(|x| !x.is_finite()) {
                return Err(Error::Numeric(format!(
                    "layer {l}, round {m}: the update is not finite"
                )));
            }
            let s = update.cols.len();
            let (be, weights) = model.parts_mut();
            apply_update(be, &mut weights.layers[l].down_proj, &update)?;
            progress(Progress::Layer {
                round: m,
                layer: l,
                n_selected: s,
            });
            pause().await?;
            record.layers.push(LayerRecord {
                layer: l,
                keys: kh.keys,
                neuron_scores: selection.scores,
                selected: update.cols.clone(),
                n_selected: s,
                resid_norms: resid
                    .chunks(d)
                    .map(|r| r.iter().map(|x| x * x).sum::<f64>().sqrt())
                    .collect(),
                dw_fro: dw
                    .iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum::<f64>()
                    .sqrt(),
                g_condition: condition,
                dw_first5rows_first5selected: (0..5.min(d))
                    .map(|r| dw[r * s..r * s + 5.min(s)].to_vec())
                    .collect(),
            });
            updates.push(AppliedUpdate {
                round: m,
                layer: l,
                update,
            });
        }
        rounds.push(record);
    }

    // P_l += K Kᵀ with the post-batch keys of every request (spec §5.2): one pass, all layers.
    progress(Progress::PastKeys);
    pause().await?;
    let p_keys = keys_at(model, &kp_all, &hp.layers).await?;
    if let Some(l) = p_keys
        .iter()
        .find(|(_, k)| k.iter().any(|x| !x.is_finite()))
        .map(|(l, _)| *l)
    {
        return Err(Error::Numeric(format!(
            "layer {l}: the post-edit keys are not finite; the edit was rolled back"
        )));
    }
    let entry = LedgerEntry {
        method: ctx.method.kind(),
        requests: requests.to_vec(),
        updates,
        p_keys,
        parent: state.head(),
        measured: vec![],
    };
    Ok(BatchOutcome {
        z: zs,
        rounds,
        entry,
    })
}

/// `‖z − h‖`.
fn distance(z: &[f32], h: &[f32]) -> f32 {
    let diff: Vec<f32> = z.iter().zip(h).map(|(a, b)| a - b).collect();
    norm(&diff)
}
