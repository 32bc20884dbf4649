//! The target hidden state `z` (spec §4): a vector `δ` added to block `l0`'s output at the
//! subject's last token, optimised with Adam so that the model says the new target across the
//! context templates, while a KL term on `"{subject} is a"` keeps the subject's other knowledge.
//!
//! Blocks `0..=l0` do not depend on `δ`, so they run once (with the *original* `down_proj` of the
//! edited layers: weights rewinding, spec §4.1); each step runs blocks `l0+1..L` forward with
//! recorded activations, then backward to `δ` (see [`ZProblem`]).

use serde::Serialize;

use super::hparams::Hparams;
use super::request::EditRequest;
use super::templates::ContextTemplates;
pub use super::zproblem::{KL_PROMPT, ZProblem, ZStep, norm, target_ids};
use crate::backend::{Backend, ZAdamState, ZAdamStep};
use crate::model::{Model, Tokenizer};
use crate::ops::adam::step_constants;
use crate::{Error, Result};

/// The result of [`compute_z`], with everything the dump records.
#[derive(Clone, Debug, Serialize)]
pub struct ZResult {
    /// `h_init + δ`, `(d)`.
    pub z: Vec<f32>,
    /// Block-`l0` output at the bare prompt's subject-last token, `(d)`.
    pub h_init: Vec<f32>,
    pub delta: Vec<f32>,
    /// Tokens of the target string.
    pub target_ids: Vec<u32>,
    /// The 6 rewriting prompts and the KL prompt, subject filled in.
    pub prompts: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    /// Subject-last index of each prompt.
    pub lookup_idxs: Vec<usize>,
    /// One entry per forward evaluation (the last is the exit evaluation, with no step after).
    pub steps: Vec<ZStep>,
}

/// Awaited between steps: the page passes a zero-delay timer so that it repaints while an edit
/// runs on a backend that never waits (the cpu backend in wasm). It returns
/// [`crate::Error::Cancelled`] to stop the job at this step (the job then undoes what it did).
pub type Pause<'a> =
    &'a dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::Result<()>>>>;

/// Optimises `z` for one request. `originals` are the original `down_proj` of the edited layers
/// (empty to use the current weights, as MEMIT-seq does). `on_step(i, loss)` reports progress.
///
/// # Errors
/// As [`compute_zs`].
pub async fn compute_z<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    request: &EditRequest,
    templates: &ContextTemplates,
    hp: &Hparams,
    originals: &[(usize, &B::Tensor)],
    mut on_step: impl FnMut(usize, f32),
) -> Result<ZResult> {
    let zs = compute_zs(
        model,
        tok,
        &[request],
        templates,
        hp,
        originals,
        ZOptions::default(),
        |_, step, loss| on_step(step, loss),
    )
    .await?;
    Ok(zs.into_iter().next().expect("one z per request"))
}

/// How [`compute_zs`] runs.
#[derive(Clone, Copy, Default)]
pub struct ZOptions<'a> {
    /// Requests optimised together in one packed pass (0: [`DEFAULT_Z_CHUNK`]).
    pub chunk: usize,
    /// Awaited after every evaluation.
    pub pause: Option<Pause<'a>>,
}

/// Requests whose z are optimised together by default. Past a few hundred dependent rows (about
/// 35 per request) the matrix products gain little, while the recorded activations grow with
/// the chunk (about 15 MiB per request on the default model).
pub const DEFAULT_Z_CHUNK: usize = 16;

/// Optimises `z` for every request, `chunk` requests at a time in one packed forward and
/// backward pass per step ([`ZProblem`]). Each request keeps its own Adam state, early stop and
/// norm clamp, so its `z` is the one [`compute_z`] finds for it alone (up to the rounding of
/// the larger matrix products). `on_step(i, evaluation, loss)` reports request `i`'s progress.
///
/// The loop is the reference's, per request: forward, stop if the loss is below
/// `early_stop_loss` or this is the last evaluation, else backward, an Adam step, and the norm
/// clamp `‖δ‖ ≤ clamp_norm_factor · ‖h_init‖` (spec §4.2, hazard H8).
///
/// # Errors
/// Tokenisation problems, a NaN loss or gradient ([`Error::Numeric`], naming the request),
/// backend failures.
#[allow(clippy::too_many_arguments)]
pub async fn compute_zs<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    requests: &[&EditRequest],
    templates: &ContextTemplates,
    hp: &Hparams,
    originals: &[(usize, &B::Tensor)],
    opts: ZOptions<'_>,
    mut on_step: impl FnMut(usize, usize, f32),
) -> Result<Vec<ZResult>> {
    let chunk = if opts.chunk == 0 {
        DEFAULT_Z_CHUNK
    } else {
        opts.chunk
    };
    let mut out = Vec::with_capacity(requests.len());
    for (c, part) in requests.chunks(chunk).enumerate() {
        let first = c * chunk;
        let zs = optimise(
            model,
            tok,
            part,
            templates,
            hp,
            originals,
            opts.pause,
            |i, s, l| on_step(first + i, s, l),
        )
        .await?;
        out.extend(zs);
    }
    Ok(out)
}

/// Step `it` of Adam for the requests `rows` (indices into the batch) from the gradient at
/// `problem`'s last pass.
fn adam_step<B: Backend>(
    problem: &mut ZProblem<'_, B>,
    state: &mut ZAdamState<B::Tensor>,
    rows: &[usize],
    coef: &B::Tensor,
    hp: &Hparams,
    it: usize,
) -> Result<()> {
    let be = problem.backend();
    let grad = problem.backward()?;
    let rows: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    let rows = be.upload_u32("stepping requests", &rows, &[rows.len()])?;
    // Every request that still steps has stepped at every iteration so far.
    let (step, bc2_sqrt) = step_constants(hp.v_lr, it as i32 + 1);
    be.z_adam(
        state,
        &ZAdamStep {
            grad: &grad,
            rows: &rows,
            coef,
            step,
            bc2_sqrt,
        },
    )
}

/// [`compute_zs`] for one packed chunk.
#[allow(clippy::too_many_arguments)]
async fn optimise<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    requests: &[&EditRequest],
    templates: &ContextTemplates,
    hp: &Hparams,
    originals: &[(usize, &B::Tensor)],
    pause: Option<Pause<'_>>,
    mut on_step: impl FnMut(usize, usize, f32),
) -> Result<Vec<ZResult>> {
    let mut problem = ZProblem::new(model, tok, requests, templates, hp, originals).await?;
    let be = model.backend();
    let (n, d) = (requests.len(), model.config.d_model);
    // Per request: the weight decay's factor wd / ‖h‖² and the largest ‖δ‖.
    let coef: Vec<f32> = (0..n)
        .flat_map(|i| {
            let h = norm(problem.h_init(i));
            [hp.v_weight_decay / (h * h), hp.clamp_norm_factor * h]
        })
        .collect();
    let coef = be.upload_owned("z constants", coef, &[n, 2])?;
    // δ, Adam's moments and ‖δ‖ stay on the device; each step reads back the loss terms and
    // the norms, in one transfer.
    let mut state = ZAdamState {
        delta: be.zeros(&[n, d])?,
        m: be.zeros(&[n, d])?,
        v: be.zeros(&[n, d])?,
        norms: be.zeros(&[n])?,
    };
    let mut steps = vec![vec![]; n];
    // Where the device runs on while the host waits (the gpu backend), each step's loss terms
    // are read while the device runs that step's backward pass and Adam update, enqueued
    // before the terms are known: the host never waits for a drained device. A request whose
    // terms then say it is done keeps the δ it was evaluated at, copied before the update, as
    // if the update had not run: the result is the plain loop's, bit for bit.
    let overlap = be.reads_overlap();
    let mut done: Vec<(Vec<usize>, B::Tensor)> = vec![];
    for it in 0..hp.v_num_grad_steps {
        let active = problem.active().to_vec();
        let terms = problem.enqueue_forward(&state.delta)?;
        let norms_then = be.copy(&state.norms)?;
        let pair = [&terms, &norms_then];
        let read = be.read_many(&pair);
        let last_step = it + 1 == hp.v_num_grad_steps;
        let before = if overlap && !last_step {
            let before = be.copy(&state.delta)?;
            adam_step(&mut problem, &mut state, &active, &coef, hp, it)?;
            be.submit();
            Some(before)
        } else {
            None
        };
        let mut read = read.await?.into_iter();
        let (values, norms) = (
            read.next().unwrap_or_default(),
            read.next().unwrap_or_default(),
        );
        let evaluated = problem.steps(&values, &norms);
        let mut going = vec![];
        for (&i, step) in active.iter().zip(evaluated) {
            // ‖δ‖ is not finite only when the last step's gradient was not.
            if !norms[i].is_finite() {
                return Err(Error::Numeric(format!(
                    "NaN in the z gradient at step {} for {:?}",
                    it.saturating_sub(1),
                    requests[i].label()
                )));
            }
            if !step.loss.is_finite() {
                return Err(Error::Numeric(format!(
                    "the z loss is {} at step {it} for {:?} (NaN or infinite activations: the \
                     model or the request produces non-finite values); nothing was edited",
                    step.loss,
                    requests[i].label()
                )));
            }
            steps[i].push(step);
            on_step(i, it, step.loss);
            if !(step.loss < hp.early_stop_loss || last_step) {
                going.push(i);
            }
        }
        if let Some(before) = before
            && going.len() < active.len()
        {
            let stopped = active.iter().copied().filter(|i| !going.contains(i));
            done.push((stopped.collect(), before));
        }
        if let Some(p) = pause {
            p().await?;
        }
        if going.is_empty() {
            break;
        }
        if !overlap {
            adam_step(&mut problem, &mut state, &going, &coef, hp, it)?;
        }
        if going.len() < active.len() {
            problem.retain(&going)?;
        }
    }
    // δ as each request finished: the last update's for those that ran every step, the copy
    // taken before the update that followed their last evaluation for the others.
    let mut finals: Vec<&B::Tensor> = vec![&state.delta];
    finals.extend(done.iter().map(|(_, t)| t));
    let mut read = be.read_many(&finals).await?.into_iter();
    let mut flat = read.next().unwrap_or_default();
    for ((stopped, _), before) in done.iter().zip(read) {
        for &i in stopped {
            flat[i * d..(i + 1) * d].copy_from_slice(&before[i * d..(i + 1) * d]);
        }
    }
    let deltas: Vec<Vec<f32>> = flat.chunks(d.max(1)).map(<[f32]>::to_vec).collect();
    let mut out = Vec::with_capacity(n);
    for (i, (delta, steps)) in deltas.into_iter().zip(steps).enumerate() {
        let h_init = problem.h_init(i).to_vec();
        let z: Vec<f32> = h_init.iter().zip(&delta).map(|(h, x)| h + x).collect();
        if z.iter().any(|x| !x.is_finite()) {
            return Err(Error::Numeric(format!(
                "z is not finite for {:?}",
                requests[i].label()
            )));
        }
        let (prompts, input_ids, lookup_idxs, target_ids) = problem.describe(i);
        out.push(ZResult {
            z,
            h_init,
            delta,
            target_ids: target_ids.to_vec(),
            prompts: prompts.to_vec(),
            input_ids: input_ids.to_vec(),
            lookup_idxs: lookup_idxs.to_vec(),
            steps,
        });
    }
    Ok(out)
}
