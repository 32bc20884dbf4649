//! The sequential editing benchmark (spec §7 driver + §10 metrics), generic over the backend
//! and free of command-line types so that the CLI (`nse eval`) and the page share it.
//!
//! ```text
//! pre  = evaluate(all N cases, unedited model)                      (the caller, once)
//! for each batch of B cases (file order):  apply_batch
//!     every K batches, and after the last: evaluate(the cases edited so far) + collapse monitor
//! post = the last checkpoint (all N cases, final model)
//! ```
//! Several methods run on the same cases by rewinding the [`EditState`] to its original weights
//! between them (`state.rewind_to(model, 0)`, bit-exact).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::evaluate::{EvalOptions, EvalReport, EvalStep, clock_now, elapsed, evaluate};
use crate::backend::Backend;
use crate::edit::target::Pause;
use crate::edit::{
    BatchOptions, BatchOutcome, Case, EditContext, EditRequest, EditState, Progress, apply_batch,
};
use crate::edit::{MethodKind, target::norm};
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// How the cases are fed to the editor and when the model is evaluated.
#[derive(Clone, Debug)]
pub struct SequentialPlan {
    /// Requests per batch.
    pub batch_size: usize,
    /// Evaluate after every this many batches (and always after the last).
    pub checkpoint_every: usize,
    /// What each evaluation measures.
    pub eval: EvalOptions,
}

impl SequentialPlan {
    /// Checks the plan against `n` cases.
    ///
    /// # Errors
    /// No case, a batch size of 0, or a checkpoint interval of 0.
    pub fn validate(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::input("no case to edit; give at least one"));
        }
        if self.batch_size == 0 {
            return Err(Error::input("the batch size must be at least 1"));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::input(
                "the checkpoint interval must be at least 1 batch",
            ));
        }
        Ok(())
    }
}

/// One layer of one editing round (the golden `batches[].rounds[].layers[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub layer: usize,
    pub n_selected: usize,
    /// `‖ΔW‖_F` of this round's update.
    pub upd_fro: f64,
    /// Mean over edited requests of `‖(z − h)/(E − i)‖`.
    pub resid_mean_norm: f64,
    /// The estimated condition number of the solve's `G` (absent for AlphaEdit, and in reports
    /// written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g_condition: Option<f64>,
}

/// One round: residuals at its start, who was edited, per-layer updates (none in the exit check).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub residual_norms: Vec<f32>,
    /// Positions in the batch.
    pub edited: Vec<usize>,
    pub layers: Vec<LayerSummary>,
}

/// What the optimisation of each request's `z` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZSummary {
    /// `‖δ‖ = ‖z − h_init‖`.
    pub delta_norms: Vec<f32>,
    pub h_init_norms: Vec<f32>,
    /// Forward evaluations of the z loop.
    pub evaluations: Vec<usize>,
    /// Mean target probability at the last evaluation.
    pub final_prob: Vec<f32>,
}

/// One batch, in the layout of the golden `batches[]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub case_ids: Vec<Option<u64>>,
    pub rounds: Vec<RoundSummary>,
    pub seconds: f64,
    /// `‖z − h‖` after the batch (the exit check's residuals).
    pub residual_after: Vec<f32>,
    /// `tr P_l` after the batch, per edited layer (ascending).
    pub cache_c_trace: Vec<f64>,
    /// `‖W_l − W_l^orig‖_F` after the batch, by layer.
    #[serde(rename = "dW_fro_cum")]
    pub dw_fro_cum: BTreeMap<String, f64>,
    pub z: ZSummary,
}

impl BatchRecord {
    /// Summarises a batch outcome.
    pub fn new(
        requests: &[EditRequest],
        out: &BatchOutcome,
        seconds: f64,
        cache_c_trace: Vec<f64>,
        dw_fro_cum: BTreeMap<String, f64>,
    ) -> Self {
        let rounds = out
            .rounds
            .iter()
            .map(|r| RoundSummary {
                residual_norms: r.residual_norms.clone(),
                edited: r.edited_request_positions.clone(),
                layers: r
                    .layers
                    .iter()
                    .map(|l| LayerSummary {
                        layer: l.layer,
                        n_selected: l.n_selected,
                        upd_fro: l.dw_fro,
                        resid_mean_norm: l.resid_norms.iter().sum::<f64>()
                            / l.resid_norms.len().max(1) as f64,
                        g_condition: l.g_condition,
                    })
                    .collect(),
            })
            .collect();
        BatchRecord {
            case_ids: requests.iter().map(|r| r.case_id).collect(),
            rounds,
            seconds,
            residual_after: out
                .rounds
                .last()
                .map(|r| r.residual_norms.clone())
                .unwrap_or_default(),
            cache_c_trace,
            dw_fro_cum,
            z: ZSummary {
                delta_norms: out.z.iter().map(|z| norm(&z.delta)).collect(),
                h_init_norms: out.z.iter().map(|z| norm(&z.h_init)).collect(),
                evaluations: out.z.iter().map(|z| z.steps.len()).collect(),
                final_prob: out
                    .z
                    .iter()
                    .map(|z| z.steps.last().map_or(f32::NAN, |s| s.prob))
                    .collect(),
            },
        }
    }
}

/// An evaluation during the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Batches applied so far.
    pub batches: usize,
    /// Requests edited so far (the cases evaluated here).
    pub edits: usize,
    pub eval: EvalReport,
}

/// Wall-clock seconds of a run's parts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodTiming {
    /// Per batch, `z` included.
    pub edit_seconds: Vec<f64>,
    /// Per checkpoint.
    pub checkpoint_seconds: Vec<f64>,
    pub total_seconds: f64,
}

/// Everything one method's run produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodRun {
    pub method: MethodKind,
    pub batches: Vec<BatchRecord>,
    pub checkpoints: Vec<Checkpoint>,
    /// All cases on the final model (the last checkpoint).
    pub post: EvalReport,
    pub timing: MethodTiming,
}

/// Progress of a run.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    /// Inside batch `batch` (0-based) of `of`.
    Edit {
        batch: usize,
        of: usize,
        progress: Progress,
    },
    /// Batch `batch` finished in `seconds`; `residual_after_mean` is the mean `‖z − h‖` left.
    BatchDone {
        batch: usize,
        of: usize,
        seconds: f64,
        residual_after_mean: f32,
    },
    /// The checkpoint after `edits` requests is evaluating.
    Evaluating { edits: usize, step: EvalStep },
    /// That checkpoint finished.
    CheckpointDone { edits: usize, seconds: f64 },
}

/// `tr P_l` per edited layer.
fn p_traces<T>(state: &EditState<T>) -> Vec<f64> {
    state.p.values().map(|p| p.trace()).collect()
}

/// A method's run up to some batch: what [`MethodRunner`] has done, and all it needs to go on
/// (with the model and edit state that replaying those batches gives).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodSoFar {
    pub batches: Vec<BatchRecord>,
    pub checkpoints: Vec<Checkpoint>,
    pub timing: MethodTiming,
}

/// Applies `cases` to `model` in batches with `ctx`'s method, evaluating at the checkpoints.
///
/// `state` must hold no edit yet (a fresh [`EditState`], or one rewound to 0); on return it holds
/// this run's edits, and the model its weights.
///
/// # Errors
/// An invalid plan, a batch that fails (the model then holds the batches before it), an
/// evaluation failure.
pub async fn run_method<B: Backend>(
    model: &mut Model<B>,
    state: &mut EditState<B::Tensor>,
    tok: &Tokenizer,
    cases: &[Case],
    ctx: &EditContext<'_>,
    plan: &SequentialPlan,
    mut on_event: impl FnMut(RunEvent),
) -> Result<MethodRun> {
    let mut runner = MethodRunner::new(cases, plan, MethodSoFar::default(), state)?;
    while runner
        .step(model, state, tok, ctx, None, &mut on_event)
        .await?
    {}
    runner.finish(ctx.method.kind())
}

/// A method's run one batch at a time, so that the caller can save it between batches and
/// continue it later from what it saved ([`MethodSoFar`]).
pub struct MethodRunner<'c> {
    cases: &'c [Case],
    plan: &'c SequentialPlan,
    done: MethodSoFar,
}

impl<'c> MethodRunner<'c> {
    /// Starts or continues a run. `done` is what was saved (empty to start), and `state` must
    /// hold exactly its batches.
    ///
    /// # Errors
    /// An invalid plan; a `state` whose edits are not `done`'s batches; more batches done than
    /// the cases make.
    pub fn new<T>(
        cases: &'c [Case],
        plan: &'c SequentialPlan,
        done: MethodSoFar,
        state: &EditState<T>,
    ) -> Result<Self> {
        plan.validate(cases.len())?;
        let of = cases.len().div_ceil(plan.batch_size);
        if done.batches.len() > of || state.ledger.len() != done.batches.len() {
            return Err(Error::input(format!(
                "cannot continue a run of {of} batches from {} batches done with {} applied",
                done.batches.len(),
                state.ledger.len()
            )));
        }
        Ok(MethodRunner { cases, plan, done })
    }

    /// What is done so far.
    pub fn done(&self) -> &MethodSoFar {
        &self.done
    }

    /// Applies the next batch, and evaluates the cases edited so far when a checkpoint falls
    /// after it; `pause` is the batch's pause hook (see [`apply_batch`]). Returns whether batches
    /// remain.
    ///
    /// # Errors
    /// A batch that fails (the model then holds the batches before it), an evaluation failure.
    pub async fn step<B: Backend>(
        &mut self,
        model: &mut Model<B>,
        state: &mut EditState<B::Tensor>,
        tok: &Tokenizer,
        ctx: &EditContext<'_>,
        pause: Option<Pause<'_>>,
        on_event: &mut impl FnMut(RunEvent),
    ) -> Result<bool> {
        let (plan, cases) = (self.plan, self.cases);
        let of = cases.len().div_ceil(plan.batch_size);
        let b = self.done.batches.len();
        if b == of {
            return Ok(false);
        }
        let chunk = &cases[b * plan.batch_size..((b + 1) * plan.batch_size).min(cases.len())];
        let requests: Vec<EditRequest> = chunk.iter().map(|c| c.request.clone()).collect();
        let t = clock_now();
        let opts = BatchOptions {
            pause,
            ..Default::default()
        };
        let out = apply_batch(model, state, ctx, &requests, opts, |progress| {
            on_event(RunEvent::Edit {
                batch: b,
                of,
                progress,
            })
        })
        .await
        .map_err(|e| match e {
            Error::Numeric(msg) => Error::Numeric(format!(
                "batch {} of {of}: {msg}; the run stopped there, with the {b} batches before it \
                 kept (nse eval --resume continues from them)",
                b + 1
            )),
            e => e,
        })?;
        let seconds = elapsed(t).as_secs_f64();
        let norms = super::collapse::layer_norms(model, state).await?;
        let dw = norms
            .iter()
            .map(|l| (l.layer.to_string(), l.dw_fro))
            .collect();
        let record = BatchRecord::new(&requests, &out, seconds, p_traces(state), dw);
        let after = &record.residual_after;
        on_event(RunEvent::BatchDone {
            batch: b,
            of,
            seconds,
            residual_after_mean: after.iter().sum::<f32>() / after.len().max(1) as f32,
        });
        let timing = &mut self.done.timing;
        timing.edit_seconds.push(seconds);
        timing.total_seconds += seconds;
        self.done.batches.push(record);

        if (b + 1).is_multiple_of(plan.checkpoint_every) || b + 1 == of {
            let edits = state.n_requests();
            let t = clock_now();
            let eval = evaluate(model, tok, &cases[..edits], state, &plan.eval, |step| {
                on_event(RunEvent::Evaluating { edits, step })
            })
            .await?;
            let seconds = elapsed(t).as_secs_f64();
            on_event(RunEvent::CheckpointDone { edits, seconds });
            let timing = &mut self.done.timing;
            timing.checkpoint_seconds.push(seconds);
            timing.total_seconds += seconds;
            self.done.checkpoints.push(Checkpoint {
                batches: b + 1,
                edits,
                eval,
            });
        }
        Ok(b + 1 < of)
    }

    /// The finished run.
    ///
    /// # Errors
    /// Batches remain.
    pub fn finish(self, method: MethodKind) -> Result<MethodRun> {
        let of = self.cases.len().div_ceil(self.plan.batch_size);
        let MethodSoFar {
            batches,
            checkpoints,
            timing,
        } = self.done;
        if batches.len() < of {
            return Err(Error::input(format!(
                "the run has done {} of its {of} batches",
                batches.len()
            )));
        }
        let post = checkpoints
            .last()
            .expect("the last batch is always a checkpoint")
            .eval
            .clone();
        Ok(MethodRun {
            method,
            batches,
            checkpoints,
            post,
            timing,
        })
    }
}

/// One metric of one method against the number of edits (x = 0 is the unedited model on all
/// cases; later points are the cases edited so far).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub metric: String,
    pub method: String,
    /// `(edits, value)`.
    pub points: Vec<(usize, f64)>,
}

/// Every metric of every run as curves, metric by metric in [`EvalReport::metrics`] order.
pub fn curves(pre: &EvalReport, runs: &[MethodRun]) -> Vec<Curve> {
    let pre_m = pre.metrics();
    let mut out = vec![];
    for (name, v0) in &pre_m {
        for run in runs {
            let mut points = vec![(0, *v0)];
            for c in &run.checkpoints {
                if let Some((_, v)) = c.eval.metrics().into_iter().find(|(n, _)| n == name) {
                    points.push((c.edits, v));
                }
            }
            out.push(Curve {
                metric: name.clone(),
                method: run.method.name().to_string(),
                points,
            });
        }
    }
    out
}
