//! The target hidden state `z` (spec §4): a vector `δ` added to block `l0`'s output at the
//! subject's last token, optimised with Adam so that the model says the new target across the
//! context templates, while a KL term on `"{subject} is a"` keeps the subject's other knowledge.
//!
//! Blocks `0..=l0` do not depend on `δ`, so they run once (with the *original* `down_proj` of the
//! edited layers: weights rewinding, spec §4.1); each step runs blocks `l0+1..L` forward with
//! recorded activations, then backward to `δ` (see [`ZProblem`]).

use serde::Serialize;

use super::hparams::{Hparams, TargetSpace};
use super::request::EditRequest;
use super::templates::ContextTemplates;
pub use super::zproblem::ZProblem;
use crate::backend::Backend;
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

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

/// Awaited between steps: the page passes a zero-delay timer so that it repaints while an edit
/// runs on a backend that never waits (the cpu backend in wasm).
pub type Pause<'a> = &'a dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Optimises `z` for one request. `originals` are the original `down_proj` of the edited layers
/// (empty to use the current weights, as MEMIT-seq does). `on_step(i, loss)` reports progress.
///
/// The loop is the reference's: forward, stop if the loss is below `early_stop_loss` or this is
/// the last evaluation, else backward, an Adam step, and the norm clamp
/// `‖δ‖ ≤ clamp_norm_factor · ‖h_init‖` (spec §4.2, hazard H8).
///
/// # Errors
/// Tokenisation problems, a NaN loss or gradient ([`Error::Numeric`]), backend failures.
pub async fn compute_z<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    request: &EditRequest,
    templates: &ContextTemplates,
    hp: &Hparams,
    originals: &[(usize, &B::Tensor)],
    on_step: impl FnMut(usize, f32),
) -> Result<ZResult> {
    compute_z_paused(model, tok, request, templates, hp, originals, on_step, None).await
}

/// [`compute_z`], awaiting `pause` after every step.
#[allow(clippy::too_many_arguments)]
pub async fn compute_z_paused<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    request: &EditRequest,
    templates: &ContextTemplates,
    hp: &Hparams,
    originals: &[(usize, &B::Tensor)],
    mut on_step: impl FnMut(usize, f32),
    pause: Option<Pause<'_>>,
) -> Result<ZResult> {
    let mut problem = ZProblem::new(model, tok, request, templates, hp, originals).await?;
    let d = model.config.d_model;
    let max_norm = hp.clamp_norm_factor * norm(problem.h_init());
    let mut delta = vec![0.0f32; d];
    let mut adam = Adam::new(d, hp.v_lr);
    let mut steps = vec![];
    for it in 0..hp.v_num_grad_steps {
        let step = problem.forward(&delta).await?;
        if !step.loss.is_finite() {
            return Err(Error::Numeric(format!(
                "the z loss is {} at step {it} for {:?} (NaN or infinite activations: the model or the \
                 request produces non-finite values); nothing was edited",
                step.loss,
                request.label()
            )));
        }
        steps.push(step);
        on_step(it, step.loss);
        if let Some(p) = pause {
            p().await;
        }
        if step.loss < hp.early_stop_loss || it + 1 == hp.v_num_grad_steps {
            break;
        }
        let grad = problem.backward().await?;
        if grad.iter().any(|g| !g.is_finite()) {
            return Err(Error::Numeric(format!(
                "NaN in the z gradient at step {it} for {:?}",
                request.label()
            )));
        }
        adam.step(&mut delta, &grad);
        let n = norm(&delta);
        if n > max_norm {
            for x in delta.iter_mut() {
                *x *= max_norm / n;
            }
        }
    }
    let h_init = problem.h_init().to_vec();
    let z: Vec<f32> = h_init.iter().zip(&delta).map(|(h, x)| h + x).collect();
    if z.iter().any(|x| !x.is_finite()) {
        return Err(Error::Numeric(format!(
            "z is not finite for {:?}",
            request.label()
        )));
    }
    let ZProblem {
        target_ids,
        prompts,
        input_ids,
        lookup_idxs,
        ..
    } = problem;
    Ok(ZResult {
        z,
        h_init,
        delta,
        target_ids,
        prompts,
        input_ids,
        lookup_idxs,
        steps,
    })
}

/// Euclidean norm, accumulated in f64.
pub fn norm(v: &[f32]) -> f32 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt() as f32
}

/// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8) and its update arithmetic.
struct Adam {
    lr: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(n: usize, lr: f32) -> Self {
        Adam {
            lr,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    fn step(&mut self, x: &mut [f32], g: &[f32]) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f32 = 1e-8;
        self.t += 1;
        // PyTorch computes the bias corrections and the step size in Python doubles.
        let bc1 = 1.0 - B1.powi(self.t);
        let bc2_sqrt = (1.0 - B2.powi(self.t)).sqrt() as f32;
        let step = (self.lr as f64 / bc1) as f32;
        let (b1, b2) = (B1 as f32, B2 as f32);
        for i in 0..x.len() {
            self.m[i] = self.m[i] * b1 + g[i] * (1.0 - b1);
            self.v[i] = self.v[i] * b2 + (1.0 - b2) * g[i] * g[i];
            let denom = self.v[i].sqrt() / bc2_sqrt + EPS;
            x[i] -= step * (self.m[i] / denom);
        }
    }
}
