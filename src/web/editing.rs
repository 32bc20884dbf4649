//! The page's editing work, generic over the backend and free of the DOM: applying a batch,
//! the unedited model's answers, and probing the original and the edited model side by side (the
//! original `down_proj` matrices are swapped in and out: never two copies of the weights).
//! Whole-ledger operations are in `ledger_ops`.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use super::dom;
use super::session::Workbench;
use crate::backend::Backend;
use crate::edit::check::CheckSpec;
use crate::edit::{
    AlphaEdit, BatchOptions, BatchOutcome, ContextTemplates, CovarianceSet, EditContext,
    EditMethod, EditRequest, Hparams, Memit, MemitSeq, MethodKind, Nse, Progress, apply_batch_opts,
};
use crate::eval::score_candidates;
use crate::model::{Model, Tokenizer};
use crate::{Error, Result};

/// Tokens generated for each probe.
pub(crate) const PROBE_TOKENS: usize = 8;

/// Context tokens a request leaves free in the page: room for what the page generates after the
/// prompt (the unedited model's answer, the comparison's continuations).
pub(crate) const FORM_CONTEXT_MARGIN: usize = 16;

/// Everything editing needs besides the model and its [`crate::edit::EditState`].
pub(crate) struct EditSetup {
    pub hp: Hparams,
    /// `None` until sampled from the unedited model (when the hyperparameters fix none).
    pub templates: Option<ContextTemplates>,
    /// `None` until first needed (see `super::cov::obtain`).
    pub cov: Option<CovarianceSet>,
    /// AlphaEdit's null-space projectors, built from `cov` on first use.
    alphaedit: Option<AlphaEdit>,
    /// The page's record of each ledger entry, in ledger order.
    pub meta: Vec<EntryMeta>,
}

/// What the page shows about one ledger entry beyond the [`crate::edit::LedgerEntry`] itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct EntryMeta {
    /// Seconds the batch took.
    pub seconds: f64,
    /// `‖z − h‖` of every request at the start of each round (the last is the exit check).
    pub residuals: Vec<Vec<f32>>,
    /// Rounds that updated weights.
    pub rounds_used: usize,
    /// Probes of each request (from its dataset case, or the compare panel).
    pub probes: Vec<RequestProbes>,
    /// `(P(new), P(true))` of each request on its edit prompt right after the batch.
    pub scores: Vec<Option<(f32, f32)>>,
    /// How the entry came to be, when not from a plain apply ("re-applied after removing …").
    #[serde(default)]
    pub note: String,
}

/// Paraphrase and neighbourhood prompts of one request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RequestProbes {
    pub paraphrase: Vec<String>,
    pub neighborhood: Vec<String>,
}

impl EditSetup {
    /// A setup with the shipped hyperparameters; templates, covariance and projectors come later.
    ///
    /// # Errors
    /// Invalid fixed templates.
    pub(crate) fn new(hp: Hparams) -> Result<Self> {
        let templates = hp
            .context_templates
            .clone()
            .map(ContextTemplates::new)
            .transpose()?;
        Ok(EditSetup {
            hp,
            templates,
            cov: None,
            alphaedit: None,
            meta: vec![],
        })
    }

    /// Runs `f` with the library's request checks ([`CheckSpec`]) for this model, keeping
    /// [`FORM_CONTEXT_MARGIN`] tokens of the context free. Until the templates are sampled the
    /// bare prompt alone is checked: a template only adds text before the subject, so the subject's
    /// last token is placed the same way in it.
    pub(crate) fn with_check<T>(
        &self,
        tok: &Tokenizer,
        max_ctx: usize,
        f: impl FnOnce(&CheckSpec<'_>) -> T,
    ) -> T {
        let bare;
        let templates = match &self.templates {
            Some(t) => t,
            None => {
                bare = ContextTemplates::new(vec![vec!["{}".into()]]).expect("one template");
                &bare
            }
        };
        f(&CheckSpec {
            tok,
            templates,
            target_space: self.hp.target_space,
            max_ctx: max_ctx.saturating_sub(FORM_CONTEXT_MARGIN),
        })
    }

    /// Builds AlphaEdit's projectors (an eigendecomposition per layer) unless built already.
    ///
    /// # Errors
    /// No covariance yet, or a failed decomposition.
    pub(crate) fn prepare_alphaedit(&mut self, d_ff: usize) -> Result<()> {
        if self.alphaedit.is_none() {
            let cov = self
                .cov
                .as_ref()
                .ok_or_else(|| Error::input("no covariance statistic yet"))?;
            self.alphaedit = Some(AlphaEdit::new(cov.matrices(), d_ff, &self.hp)?);
        }
        Ok(())
    }

    /// The method object; AlphaEdit needs [`EditSetup::prepare_alphaedit`] first.
    pub(crate) fn method(&self, kind: MethodKind) -> &dyn EditMethod {
        match kind {
            MethodKind::Nse => &Nse,
            MethodKind::MemitSeq => &MemitSeq,
            MethodKind::Memit => &Memit,
            MethodKind::Alphaedit => self.alphaedit.as_ref().expect("prepare_alphaedit first"),
        }
    }

    /// Forgets the covariance (and the projectors built from it).
    pub(crate) fn set_cov(&mut self, cov: CovarianceSet) {
        self.cov = Some(cov);
        self.alphaedit = None;
    }
}

/// The yield the batch procedure awaits after every progress event.
pub(crate) fn pause_hook() -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(dom::yield_now())
}

/// Samples the context templates from the unedited model when none are fixed.
pub(crate) async fn ensure_templates<B: Backend>(
    wb: &mut Workbench<B>,
    setup: &mut EditSetup,
    tok: &Tokenizer,
) -> Result<()> {
    if setup.templates.is_none() {
        let t = with_original(wb, async |m| {
            ContextTemplates::sample(m, tok, setup.hp.template_seed).await
        })
        .await?;
        setup.templates = Some(t);
    }
    Ok(())
}

/// Applies one batch with `kind` and records its [`EntryMeta`]; the covariance, the templates
/// and (for AlphaEdit) the projectors must be ready.
///
/// # Errors
/// As [`apply_batch_opts`]; the model, `P` and the ledger are then as before.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply<B: Backend>(
    wb: &mut Workbench<B>,
    setup: &mut EditSetup,
    tok: &Tokenizer,
    requests: &[EditRequest],
    probes: Vec<RequestProbes>,
    kind: MethodKind,
    note: String,
    progress: impl FnMut(Progress),
) -> Result<BatchOutcome> {
    let state = wb.edits.as_mut().expect("editing is available");
    let cov = setup.cov.as_ref().expect("the covariance is ready");
    let templates = setup.templates.as_ref().expect("the templates are ready");
    let ctx = EditContext {
        tok,
        hp: &setup.hp,
        templates,
        cov,
        method: setup.method(kind),
    };
    let t0 = dom::now_ms();
    let pause = pause_hook;
    let opts = BatchOptions {
        pause: Some(&pause),
        ..Default::default()
    };
    let outcome = apply_batch_opts(&mut wb.model, state, &ctx, requests, opts, progress).await?;
    let scores = edit_prompt_scores(&wb.model, tok, requests).await;
    setup.meta.push(EntryMeta {
        seconds: (dom::now_ms() - t0) / 1000.0,
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
    });
    Ok(outcome)
}

/// `(P(new), P(true))` of each request on its own prompt; `None` without a true target or
/// when scoring fails (the edit itself stands).
async fn edit_prompt_scores<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    requests: &[EditRequest],
) -> Vec<Option<(f32, f32)>> {
    let mut out = vec![];
    for r in requests {
        let score = match &r.target_true {
            Some(t) => pair_probs(model, tok, &r.sentence(), &r.target_new, t)
                .await
                .ok(),
            None => None,
        };
        out.push(score);
    }
    out
}

/// `(P(new), P(true))` after `prompt`, as `exp(−mean token NLL)`.
pub(crate) async fn pair_probs<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    prompt: &str,
    new: &str,
    truth: &str,
) -> Result<(f32, f32)> {
    let prompt = prompt.trim_end().to_string();
    let pairs = [
        (prompt.clone(), new.trim().to_string()),
        (prompt, truth.trim().to_string()),
    ];
    let s = score_candidates(model, tok, &pairs).await?;
    Ok((s[0].prob(), s[1].prob()))
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

/// Greedy continuation of `prompt` (at most `n` tokens, stopping at end-of-sequence), with a
/// yield to the event loop after every token.
pub(crate) async fn greedy<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
) -> Result<String> {
    let ids = tok.encode(prompt.trim_end())?;
    model.check_tokens(&ids, "prompt")?;
    if ids.len() + n > model.config.max_ctx {
        return Err(Error::input(format!(
            "the prompt's {} tokens + {n} new tokens exceed the model's context of {} tokens",
            ids.len(),
            model.config.max_ctx
        )));
    }
    let be = model.backend();
    let mut cache = model.new_cache(ids.len() + n)?;
    let mut input = ids;
    let mut out = vec![];
    for _ in 0..n {
        let logits = model.forward_cached(&mut cache, &input)?;
        let next = be.read_u32(&be.argmax(&logits)?).await?[0];
        if Some(next) == model.config.eos_id {
            break;
        }
        out.push(next);
        input = vec![next];
        dom::yield_now().await;
    }
    tok.decode(&out)
}

/// The first word of a continuation (`" Paris, France"` → `"Paris"`): the answer a model gives.
pub(crate) fn first_word(text: &str) -> Option<String> {
    let w: String = text
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_string();
    (!w.is_empty()).then_some(w)
}

/// Sets the true target of requests without one to the unedited model's answer.
pub(crate) async fn fill_true_targets<B: Backend>(
    wb: &mut Workbench<B>,
    tok: &Tokenizer,
    requests: &mut [EditRequest],
) -> Result<()> {
    if requests.iter().all(|r| r.target_true.is_some()) {
        return Ok(());
    }
    let prompts: Vec<String> = requests.iter().map(EditRequest::sentence).collect();
    let answers = with_original(wb, async |m| {
        let mut out = vec![];
        for p in &prompts {
            out.push(first_word(&greedy(m, tok, p, 4).await?));
        }
        Ok(out)
    })
    .await?;
    for (r, a) in requests.iter_mut().zip(answers) {
        if r.target_true.is_none() {
            r.target_true = a.filter(|a| a != &r.target_new);
        }
    }
    Ok(())
}

/// One prompt to compare, with the two targets to score after it.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub prompt: String,
    pub target_new: String,
    pub target_true: Option<String>,
}

/// What one model says after one probe.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProbeOut {
    /// Greedy continuation ([`PROBE_TOKENS`] tokens).
    pub text: String,
    pub p_new: f32,
    pub p_true: Option<f32>,
    /// The realistic score's verdict ([`crate::eval::realistic`]): greedy decoding from the
    /// prompt begins with the new target, or with the true one.
    pub says_new: bool,
    pub says_true: Option<bool>,
}

async fn run_probes<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    probes: &[Probe],
) -> Result<Vec<ProbeOut>> {
    let mut out = vec![];
    for p in probes {
        let text = greedy(model, tok, &p.prompt, PROBE_TOKENS).await?;
        let truth = p
            .target_true
            .clone()
            .unwrap_or_else(|| p.target_new.clone());
        let (p_new, p_true) = pair_probs(model, tok, &p.prompt, &p.target_new, &truth).await?;
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
        dom::yield_now().await;
    }
    Ok(out)
}

/// The original and the edited model on the same probes: `(original, edited)`. Without edits
/// the two are the same model and it runs once.
pub(crate) async fn compare<B: Backend>(
    wb: &mut Workbench<B>,
    tok: &Tokenizer,
    probes: &[Probe],
) -> Result<(Vec<ProbeOut>, Vec<ProbeOut>)> {
    let edited = run_probes(&wb.model, tok, probes).await?;
    if wb.edits.as_ref().is_none_or(|s| s.ledger.is_empty()) {
        return Ok((edited.clone(), edited));
    }
    let original = with_original(wb, async |m| run_probes(m, tok, probes).await).await?;
    Ok((original, edited))
}
