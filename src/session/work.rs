//! The session's work on the model: generation, scores, the context templates and the
//! covariance, applying requests, and the original against the edited model on the same probes
//! (the original `down_proj` matrices are swapped in and out: never two copies of the weights).

use super::{
    EditSetup, EntryMeta, Hooks, RequestProbes, Session, Workbench, setup_of, setup_of_mut,
};
use crate::backend::Backend;
use crate::edit::covariance::second_moments_with;
use crate::edit::{
    BatchOptions, BatchOutcome, ContextTemplates, CovarianceSet, EditContext, EditRequest,
    Measured, MethodKind, Progress, apply_batch,
};
use crate::eval::{
    CandidateScore, MethodRunner, MethodSoFar, RunEvent, SequentialPlan, new_vs_true,
};
use crate::model::generate::{Generation, Sampling, generate_with};
use crate::model::{Model, Tokenizer};
use crate::{Result, with_bench, with_model};

/// Tokens generated for each probe of a comparison.
pub const PROBE_TOKENS: usize = 8;

/// How one batch is applied.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// How the entry came to be, when not from a plain apply (kept in its [`EntryMeta`]).
    pub note: String,
    /// Requests whose targets are optimised together (0: the library's default).
    pub z_chunk: usize,
}

/// One prompt to compare, with the two targets to score after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub prompt: String,
    pub target_new: String,
    pub target_true: Option<String>,
}

/// What one model says after one probe.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeOut {
    /// Greedy continuation ([`PROBE_TOKENS`] tokens).
    pub text: String,
    pub p_new: f32,
    pub p_true: Option<f32>,
    /// The realistic score's verdict ([`crate::eval::realistic`]): greedy decoding from the
    /// prompt begins with the new target, or with the true one.
    pub says_new: bool,
    pub says_true: Option<bool>,
}

impl Session {
    /// Generates up to `max_tokens` tokens after `prompt` (the text as typed), with `on_token`
    /// seeing the generation so far after each token; a cancelling pause hook ends it early
    /// (see [`generate_with`]).
    ///
    /// # Errors
    /// An empty prompt, one too long for the context with `max_tokens`, a backend failure.
    pub async fn generate(
        &self,
        prompt: &str,
        max_tokens: usize,
        sampling: Sampling,
        on_token: impl FnMut(&Generation),
    ) -> Result<Generation> {
        let ids = self.tokenizer.encode(prompt)?;
        let pause = self.hooks.pause();
        with_model!(&self.engine, m => generate_with(m, &ids, max_tokens, sampling, pause, on_token).await)
    }

    /// `(P(new), P(true))` of each `(prompt, new, true)` on the current model (see
    /// [`new_vs_true`]).
    ///
    /// # Errors
    /// A target that does not tokenise after its prompt, a backend failure.
    pub async fn score(
        &self,
        items: &[(String, String, Option<String>)],
    ) -> Result<Vec<(f32, Option<f32>)>> {
        let scores = with_model!(&self.engine, m => new_vs_true(m, &self.tokenizer, items).await)?;
        Ok(probs(&scores))
    }

    /// Samples the context templates from the original model unless they are fixed or sampled.
    ///
    /// # Errors
    /// Editing unavailable, a backend failure.
    pub async fn ensure_templates(&mut self) -> Result<()> {
        let setup = setup_of_mut(&mut self.editing)?;
        if setup.templates.is_none() {
            let (tok, seed) = (&self.tokenizer, setup.hp.template_seed);
            let t = with_bench!(&mut self.engine, w => {
                with_original(w, async |m| ContextTemplates::sample(m, tok, seed).await).await
            })?;
            setup.templates = Some(t);
        }
        Ok(())
    }

    /// The covariance statistic of the edited layers over `windows` of token ids (the original
    /// model's, whatever the ledger), with `on_progress(tokens done, total)` and the pause hook
    /// after every window. It is not installed: pass it to [`super::EditSetup::set_cov`].
    ///
    /// # Errors
    /// Editing unavailable, too little memory, a backend failure, cancelled.
    pub async fn compute_covariance(
        &mut self,
        windows: &[Vec<u32>],
        corpus: &str,
        on_progress: impl FnMut(usize, usize),
    ) -> Result<CovarianceSet> {
        let layers = self.setup()?.hp.layers.clone();
        let pause = self.hooks.pause();
        let (m, n) = with_bench!(&mut self.engine, w => {
            with_original(w, async |m| second_moments_with(m, windows, &layers, pause, on_progress).await).await
        })?;
        Ok(CovarianceSet::new(m, n, format!("{corpus}, {n} tokens")))
    }

    /// Sets the true target of requests without one to the original model's answer (the first
    /// word of its greedy continuation), unless that is the new target.
    ///
    /// # Errors
    /// A prompt the model cannot take, a backend failure, cancelled.
    pub async fn fill_true_targets(&mut self, requests: &mut [EditRequest]) -> Result<()> {
        if requests.iter().all(|r| r.target_true.is_some()) {
            return Ok(());
        }
        let prompts: Vec<String> = requests.iter().map(EditRequest::sentence).collect();
        let (tok, hooks) = (&self.tokenizer, &self.hooks);
        let answers = with_bench!(&mut self.engine, w => with_original(w, async |m| {
            let mut out = vec![];
            for p in &prompts {
                out.push(first_word(&greedy(m, tok, hooks, p, 4).await?));
            }
            Ok(out)
        }).await)?;
        for (r, a) in requests.iter_mut().zip(answers) {
            if r.target_true.is_none() {
                r.target_true = a.filter(|a| a != &r.target_new);
            }
        }
        Ok(())
    }

    /// Applies one batch with `kind` and records its [`EntryMeta`] (with `probes`, one per
    /// request, padded when shorter). The covariance must be set; the templates and the method
    /// are got ready here when they are not.
    ///
    /// # Errors
    /// As [`apply_batch`], cancellation included; the weights, `P`, the ledger and the
    /// records are then exactly as before.
    pub async fn apply(
        &mut self,
        requests: &[EditRequest],
        mut probes: Vec<RequestProbes>,
        kind: MethodKind,
        opts: ApplyOptions,
        progress: impl FnMut(Progress),
    ) -> Result<BatchOutcome> {
        self.ready_for(kind).await?;
        let ctx = context(&self.tokenizer, setup_of(&self.editing)?, kind)?;
        let t0 = (self.hooks.clock)();
        let bopts = BatchOptions {
            pause: self.hooks.pause(),
            z_chunk: opts.z_chunk,
            ..Default::default()
        };
        let (outcome, scores) = with_bench!(&mut self.engine, w => {
            let state = w.edits.as_mut().expect("editing is available");
            let outcome = apply_batch(&mut w.model, state, &ctx, requests, bopts, progress).await?;
            // Scoring failures leave the edit standing (the scores are then unknown).
            let measured = edit_prompt_scores(&w.model, &self.tokenizer, requests).await;
            let entry = state.ledger.last_mut().expect("the batch was recorded");
            entry.measured = measured.clone();
            (outcome, scores_of(&measured))
        });
        probes.resize_with(requests.len(), RequestProbes::default);
        let seconds = ((self.hooks.clock)() - t0) / 1000.0;
        let meta = entry_meta(&outcome, probes, scores, seconds, opts.note);
        self.setup_mut()?.meta.push(meta);
        Ok(outcome)
    }

    /// A sequential run of `cases` (the benchmark, [`crate::eval::sequential`]) from the current
    /// ledger, which must be empty: set the user's ledger aside first.
    ///
    /// # Errors
    /// Editing unavailable, an invalid plan, edits in the ledger.
    pub fn sequential<'c>(
        &self,
        cases: &'c [crate::edit::Case],
        plan: &'c SequentialPlan,
    ) -> Result<MethodRunner<'c>> {
        self.setup()?;
        with_bench!(&self.engine, w => MethodRunner::new(
            cases, plan, MethodSoFar::default(), w.edits.as_ref().expect("editing is available")
        ))
    }

    /// The next batch of `runner` with `kind` (and its evaluation when a checkpoint falls after
    /// it), with the session's pause hook. Returns whether batches remain.
    ///
    /// # Errors
    /// As [`MethodRunner::step`]; cancellation included (the batch is then rolled back).
    pub async fn sequential_step(
        &mut self,
        runner: &mut MethodRunner<'_>,
        kind: MethodKind,
        mut on_event: impl FnMut(RunEvent),
    ) -> Result<bool> {
        self.ready_for(kind).await?;
        let ctx = context(&self.tokenizer, setup_of(&self.editing)?, kind)?;
        let pause = self.hooks.pause();
        let tok = &self.tokenizer;
        with_bench!(&mut self.engine, w => {
            let state = w.edits.as_mut().expect("editing is available");
            runner.step(&mut w.model, state, tok, &ctx, pause, &mut on_event).await
        })
    }

    /// The original and the edited model on the same probes: `(original, edited)`. Without
    /// edits the two are the same model and it runs once.
    ///
    /// # Errors
    /// A probe the model cannot take, a backend failure, cancelled.
    pub async fn compare(&mut self, probes: &[Probe]) -> Result<(Vec<ProbeOut>, Vec<ProbeOut>)> {
        let (tok, hooks) = (&self.tokenizer, &self.hooks);
        with_bench!(&mut self.engine, w => {
            let edited = run_probes(&w.model, tok, hooks, probes).await?;
            if w.edits.as_ref().is_none_or(|s| s.ledger.is_empty()) {
                return Ok((edited.clone(), edited));
            }
            let original = with_original(w, async |m| run_probes(m, tok, hooks, probes).await).await?;
            Ok((original, edited))
        })
    }
}

impl Session {
    /// Gets `kind` ready: the templates sampled, AlphaEdit's projectors built.
    pub(crate) async fn ready_for(&mut self, kind: MethodKind) -> Result<()> {
        self.ensure_templates().await?;
        let d_ff = self.config().d_ff;
        self.setup_mut()?.prepare_method(kind, d_ff)
    }
}

/// The edit context of `kind` over a ready `setup` (see [`Session::ready_for`]).
pub(crate) fn context<'a>(
    tok: &'a Tokenizer,
    setup: &'a EditSetup,
    kind: MethodKind,
) -> Result<EditContext<'a>> {
    Ok(EditContext {
        tok,
        hp: &setup.hp,
        templates: setup.templates()?,
        cov: setup.cov()?,
        method: setup.method(kind)?,
    })
}

/// `(P(new), P(true))` of [`new_vs_true`]'s scores.
pub(crate) fn probs(
    scores: &[(CandidateScore, Option<CandidateScore>)],
) -> Vec<(f32, Option<f32>)> {
    scores
        .iter()
        .map(|(n, t)| (n.prob(), t.as_ref().map(CandidateScore::prob)))
        .collect()
}

/// The record of a batch just applied.
pub(crate) fn entry_meta(
    outcome: &BatchOutcome,
    probes: Vec<RequestProbes>,
    scores: Vec<Option<(f32, f32)>>,
    seconds: f64,
    note: String,
) -> EntryMeta {
    EntryMeta {
        seconds,
        residuals: outcome
            .rounds
            .iter()
            .map(|r| r.residual_norms.clone())
            .collect(),
        rounds_used: outcome
            .rounds
            .iter()
            .filter(|r| !r.layers.is_empty())
            .count(),
        probes,
        scores,
        note,
    }
}

/// P(new) and P(true) of each request on its own prompt, as a patch records them: P(true) `None`
/// without a true target, NaN when scoring fails (the edit itself stands).
pub(crate) async fn edit_prompt_scores<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    requests: &[EditRequest],
) -> Vec<Measured> {
    let items: Vec<(String, String, Option<String>)> = requests
        .iter()
        .map(|r| (r.sentence(), r.target_new.clone(), r.target_true.clone()))
        .collect();
    match new_vs_true(model, tok, &items).await {
        Ok(s) => probs(&s)
            .into_iter()
            .map(|(p_new, p_true)| Measured { p_new, p_true })
            .collect(),
        Err(_) => vec![
            Measured {
                p_new: f32::NAN,
                p_true: None
            };
            requests.len()
        ],
    }
}

/// The records' `(P(new), P(true))`: known only with a true target and a finite score.
pub(crate) fn scores_of(measured: &[Measured]) -> Vec<Option<(f32, f32)>> {
    measured
        .iter()
        .map(|m| {
            m.p_true
                .filter(|_| m.p_new.is_finite())
                .map(|t| (m.p_new, t))
        })
        .collect()
}

/// Runs `f` on the original model: the original `down_proj` matrices are swapped in (O(1), no
/// copy) and always swapped back, whatever `f` returns.
pub(crate) async fn with_original<B: Backend, T>(
    wb: &mut Workbench<B>,
    f: impl AsyncFnOnce(&Model<B>) -> Result<T>,
) -> Result<T> {
    let edited = wb.edits.as_ref().is_some_and(|s| !s.ledger.is_empty());
    if !edited {
        return f(&wb.model).await;
    }
    let state = wb.edits.as_mut().expect("checked above");
    state.swap_originals(&mut wb.model);
    let out = f(&wb.model).await;
    state.swap_originals(&mut wb.model);
    out
}

/// Greedy continuation of `prompt` (at most `n` tokens, without the end-of-sequence token),
/// pausing between tokens. A cancellation is an error here: a half continuation is no answer.
async fn greedy<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    hooks: &Hooks,
    prompt: &str,
    n: usize,
) -> Result<String> {
    let ids = tok.encode(prompt.trim_end())?;
    let g = generate_with(model, &ids, n, Sampling::Greedy, hooks.pause(), |_| {}).await?;
    if g.cancelled {
        return Err(crate::Error::Cancelled("stopped while generating".into()));
    }
    let eos = model.config.eos_id;
    let out: Vec<u32> = g.ids.into_iter().filter(|&t| Some(t) != eos).collect();
    tok.decode(&out)
}

/// The first word of a continuation (`" Paris, France"` → `"Paris"`): the answer a model gives.
fn first_word(text: &str) -> Option<String> {
    let w: String = text
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_string();
    (!w.is_empty()).then_some(w)
}

async fn run_probes<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    hooks: &Hooks,
    probes: &[Probe],
) -> Result<Vec<ProbeOut>> {
    let mut out = vec![];
    for p in probes {
        let text = greedy(model, tok, hooks, &p.prompt, PROBE_TOKENS).await?;
        let truth = p
            .target_true
            .clone()
            .unwrap_or_else(|| p.target_new.clone());
        let scores = new_vs_true(
            model,
            tok,
            &[(p.prompt.clone(), p.target_new.clone(), Some(truth.clone()))],
        )
        .await?;
        let (p_new, p_true) = probs(&scores)[0];
        let p_true = p_true.expect("a truth was given");
        let prompt = p.prompt.trim_end().to_string();
        let says = crate::eval::realistic::greedy_says(
            model,
            tok,
            &[
                (prompt.clone(), p.target_new.trim().to_string()),
                (prompt, truth.trim().to_string()),
            ],
        )
        .await?;
        out.push(ProbeOut {
            text,
            p_new,
            p_true: p.target_true.as_ref().map(|_| p_true),
            says_new: says[0],
            says_true: p.target_true.as_ref().map(|_| says[1]),
        });
        hooks.step().await?;
    }
    Ok(out)
}
