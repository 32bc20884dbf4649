//! The jobs that write edits: apply requests in batches (getting the covariance, the templates
//! and AlphaEdit's projectors ready first, with progress through every stage), recompute the
//! covariance, and save the ledger after every batch that fully succeeded.

use std::cell::RefCell;
use std::rc::Rc;

use super::session::{self, Session};
use super::{App, compare_ui, cov, dom, ledger_ui, storage};
use crate::edit::{EditRequest, MethodKind, Progress};
use crate::session::{ApplyOptions, RequestProbes, Rewind};
use crate::{Error, Result};

/// Applies `items` in batches of `batch` with `kind`, then shows the ledger and the comparison.
pub(crate) async fn apply_requests(
    app: &Rc<App>,
    items: Vec<(EditRequest, RequestProbes)>,
    batch: usize,
    kind: MethodKind,
) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    let Some(mut s) = app.take_session() else {
        app.status
            .show_error("No model is loaded yet: wait for it to load, or load one above.");
        app.end();
        return;
    };
    app.edit.reset_stages();
    let t0 = dom::now_ms();
    let n = items.len();
    let start = s.n_entries();
    let mut cancelled = false;
    match apply_in(app, &mut s, items, batch, kind).await {
        Ok(()) => {
            let secs = (dom::now_ms() - t0) / 1000.0;
            let what = if n == 1 {
                "1 edit".to_string()
            } else {
                format!("{n} edits")
            };
            app.status.progress(
                Some(1.0),
                &format!("Applied {what} with {} in {secs:.1} s.", kind.name()),
            );
        }
        Err(Error::Cancelled(_)) => {
            cancelled = true;
            session::clear_cancel();
            match roll_back(app, &mut s, start, kind).await {
                Ok(()) => app.status.progress(
                    Some(0.0),
                    "Cancelled: the model, P and the saved ledger are as they were before this job.",
                ),
                Err(e) => app
                    .status
                    .show_error(&format!("Cancelled, but the rollback failed: {e}")),
            }
        }
        Err(e) => {
            let kept = s.n_entries() - start;
            let text = if kept == 0 {
                format!(
                    "The edit failed and was rolled back (the model, P and the saved ledger are as before it): {e}"
                )
            } else {
                format!(
                    "Batch {} failed and was rolled back; the {kept} batch{} before it stay applied and saved: {e}",
                    kept + 1,
                    if kept == 1 { "" } else { "es" }
                )
            };
            app.status.show_error(&text);
            app.status.progress(Some(0.0), "The edit failed.");
        }
    }
    ledger_ui::render(app, &s);
    if !cancelled {
        // After a cancel the model is as before the job: the comparison shown still holds.
        compare_ui::run(app, &mut s).await;
    }
    app.put_session(s);
    app.end();
}

async fn apply_in(
    app: &App,
    s: &mut Session,
    items: Vec<(EditRequest, RequestProbes)>,
    batch: usize,
    kind: MethodKind,
) -> Result<()> {
    ensure_ready(app, s, kind, false).await?;
    let n_batches = items.len().div_ceil(batch);
    for (b, chunk) in items.chunks(batch).enumerate() {
        let mut requests: Vec<EditRequest> = chunk.iter().map(|(r, _)| r.clone()).collect();
        let probes = chunk.iter().map(|(_, p)| p.clone()).collect();
        let prefix = if n_batches > 1 {
            format!("Batch {} of {n_batches}: ", b + 1)
        } else {
            String::new()
        };
        let base = b as f64 / n_batches as f64;
        let scale = 1.0 / n_batches as f64;
        app.status.progress(
            Some(base),
            &format!("{prefix}finding the unedited model's answers…"),
        );
        s.fill_true_targets(&mut requests).await?;
        let shower = ProgressShower::new(app, prefix, base, scale, requests.len(), &s.setup()?.hp);
        let outcome = s
            .apply(&requests, probes, kind, ApplyOptions::default(), |p| {
                shower.show(&p)
            })
            .await;
        if let Err(e) = outcome {
            shower.failed();
            return Err(e);
        }
        app.edit.stage(
            "keys",
            "done",
            "Past keys: P updated with the post-edit keys.",
        );
        save(app, s, kind).await;
        ledger_ui::render(app, s);
    }
    Ok(())
}

/// Takes back the batches a cancelled job applied (each bit-exact) and saves the ledger as it
/// was before the job.
async fn roll_back(app: &App, s: &mut Session, start: usize, kind: MethodKind) -> Result<()> {
    while s.n_entries() > start {
        s.rewind(Rewind::Last, |_, _| {}).await?;
    }
    save(app, s, kind).await;
    Ok(())
}

/// Gets the covariance (stored, shipped or computed), the templates and, for AlphaEdit, the
/// projectors; `force_cov` recomputes the covariance in the page.
pub(crate) async fn ensure_ready(
    app: &App,
    s: &mut Session,
    kind: MethodKind,
    force_cov: bool,
) -> Result<()> {
    let setup = s.setup()?;
    if setup.cov.is_none() || force_cov {
        let budget = dom::int_input(
            &app.edit.cov_budget,
            "covariance token budget",
            256,
            150_000,
        )?;
        app.edit.stage("cov", "active", "Covariance: starting…");
        let report = |f: f64, what: &str| {
            app.status.progress(Some(f), what);
            app.edit.stage("cov", "active", what);
        };
        let db = app.db();
        let hp = setup.hp.clone();
        let compute = if force_cov {
            cov::Compute::Now { budget }
        } else {
            cov::Compute::IfMissing { budget }
        };
        let set = cov::obtain(s, db.as_deref(), compute, &report).await;
        let set = match set {
            Ok(set) => set,
            Err(e) => {
                app.edit.stage("cov", "failed", &format!("Covariance: {e}"));
                return Err(e);
            }
        };
        let text = format!("Covariance: {}; layers {:?}.", set.source, hp.layers);
        app.edit.stage("cov", "done", &text);
        app.edit.cov_status.set_inner_text(&text);
        s.setup_mut()?.set_cov(set);
    } else {
        app.edit
            .stage("cov", "done", "Covariance: ready (loaded earlier).");
    }
    if s.setup()?.templates.is_none() {
        app.status.progress(
            None,
            "Sampling the context templates from the unedited model…",
        );
        s.ensure_templates().await?;
    }
    if kind == MethodKind::Alphaedit {
        app.edit.stage(
            "projectors",
            "active",
            "AlphaEdit: null-space projectors (an eigendecomposition per layer; the page pauses)…",
        );
        app.status
            .progress(None, "AlphaEdit: building the null-space projectors…");
        dom::let_paint().await;
        let d_ff = s.config().d_ff;
        s.setup_mut()?.prepare_method(kind, d_ff)?;
        app.edit
            .stage("projectors", "done", "AlphaEdit: projectors ready.");
    }
    Ok(())
}

/// Recomputes the covariance in the page with the chosen budget (the "recompute" button).
pub(crate) async fn recompute_cov(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    if let Some(mut s) = app.take_session() {
        app.edit.reset_stages();
        match ensure_ready(app, &mut s, MethodKind::Nse, true).await {
            Ok(()) => app.status.progress(
                Some(1.0),
                "Covariance recomputed and saved in this browser.",
            ),
            Err(e) => app
                .status
                .show_error(&format!("Could not compute the covariance: {e}")),
        }
        app.put_session(s);
    }
    app.end();
}

/// Saves the ledger (or forgets it when empty) under the model's sha256 and shows the outcome.
/// A failure leaves the previously saved ledger in place and says so.
pub(crate) async fn save(app: &App, s: &Session, kind: MethodKind) {
    let Some(db) = app.db() else {
        app.ledger
            .set_saved("Not saved: this browser offers no IndexedDB.");
        return;
    };
    let Ok(setup) = &s.editing else { return };
    let result = match s.ledger_patch() {
        Ok(p) if p.entries.is_empty() => storage::clear_ledger(&db, &s.source.sha256).await,
        Ok(patch) => {
            let record = storage::LedgerRecord {
                patch: patch.to_bytes(),
                meta: serde_json::to_string(&setup.meta).expect("ledger records serialise"),
                method: kind.name().into(),
            };
            storage::save_ledger(&db, &s.source.sha256, &record).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => app.ledger.set_saved(&format!(
            "Saved in this browser (IndexedDB, key {}…) at {}.",
            &s.source.sha256[..12.min(s.source.sha256.len())],
            clock()
        )),
        Err(e) => app.ledger.set_saved(&format!(
            "Not saved ({e}); the previously saved ledger is unchanged."
        )),
    }
}

/// `HH:MM:SS` now.
fn clock() -> String {
    let d = js_sys::Date::new_0();
    format!(
        "{:02}:{:02}:{:02}",
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds()
    )
}

/// Shows the batch procedure's progress events on the bar and in the stage list.
struct ProgressShower<'a> {
    app: &'a App,
    prefix: String,
    base: f64,
    scale: f64,
    n: usize,
    steps: usize,
    layer_events: usize,
    losses: RefCell<Vec<f32>>,
    layers_done: RefCell<usize>,
}

impl<'a> ProgressShower<'a> {
    fn new(
        app: &'a App,
        prefix: String,
        base: f64,
        scale: f64,
        n: usize,
        hp: &crate::edit::Hparams,
    ) -> Self {
        app.edit.stage("z", "pending", "Target z: waiting.");
        app.edit.stage("rounds", "pending", "Rounds: waiting.");
        app.edit.stage("keys", "pending", "Past keys: waiting.");
        ProgressShower {
            app,
            prefix,
            base,
            scale,
            n,
            steps: hp.v_num_grad_steps.max(1),
            layer_events: hp.layers.len() * (hp.max_iterations.max(2) - 1),
            losses: RefCell::new(vec![]),
            layers_done: RefCell::new(0),
        }
    }

    fn bar(&self, f: f64, label: &str) {
        self.app.status.progress(
            Some(self.base + self.scale * f.clamp(0.0, 1.0)),
            &format!("{}{label}", self.prefix),
        );
    }

    fn show(&self, p: &Progress) {
        let edit = &self.app.edit;
        match p {
            Progress::Z {
                request,
                of,
                step,
                loss,
            } => {
                let mut losses = self.losses.borrow_mut();
                if *step == 0 {
                    losses.clear();
                }
                losses.push(*loss);
                let trail: Vec<String> = losses.iter().map(|l| format!("{l:.3}")).collect();
                let text = format!(
                    "Target z, request {} of {of}: step {} of at most {}, loss {loss:.3} (losses {})",
                    request + 1,
                    step + 1,
                    self.steps,
                    trail.join(" → ")
                );
                edit.stage("z", "active", &text);
                let f = (*request as f64 + (*step + 1) as f64 / self.steps as f64) / *of as f64;
                self.bar(
                    0.55 * f,
                    &format!("z {}/{of}: step {}, loss {loss:.3}", request + 1, step + 1),
                );
            }
            Progress::Round {
                round,
                edited,
                residuals,
            } => {
                edit.stage(
                    "z",
                    "done",
                    &format!("Target z: done ({} requests).", self.n),
                );
                let norms: Vec<String> = residuals.iter().map(|r| format!("{r:.1}")).collect();
                let text = if *edited == 0
                    || *round > 0 && self.layer_events == *self.layers_done.borrow()
                {
                    format!(
                        "Round {}: exit check, ‖z − h‖ = [{}].",
                        round + 1,
                        norms.join(", ")
                    )
                } else {
                    format!(
                        "Round {}: {edited} of {} requests to edit, ‖z − h‖ = [{}].",
                        round + 1,
                        self.n,
                        norms.join(", ")
                    )
                };
                edit.stage("rounds", "active", &text);
                self.bar(0.55 + 0.4 * self.layer_fraction(), &text);
            }
            Progress::Layer {
                round,
                layer,
                n_selected,
            } => {
                *self.layers_done.borrow_mut() += 1;
                let text = format!(
                    "Round {}, layer {layer}: {n_selected} neurons updated.",
                    round + 1
                );
                edit.stage("rounds", "active", &text);
                self.bar(0.55 + 0.4 * self.layer_fraction(), &text);
            }
            Progress::PastKeys => {
                edit.stage(
                    "rounds",
                    "done",
                    &format!(
                        "Rounds: done ({} layer updates).",
                        self.layers_done.borrow()
                    ),
                );
                edit.stage(
                    "keys",
                    "active",
                    "Past keys: adding the post-edit keys to P…",
                );
                self.bar(0.97, "updating the past-key statistics P…");
            }
        }
    }

    fn layer_fraction(&self) -> f64 {
        *self.layers_done.borrow() as f64 / self.layer_events.max(1) as f64
    }

    fn failed(&self) {
        for id in ["z", "rounds", "keys"] {
            let li = self
                .app
                .edit
                .stages
                .query_selector(&format!("[data-stage=\"{id}\"][data-state=\"active\"]"));
            if let Ok(Some(li)) = li {
                let _ = li.set_attribute("data-state", "failed");
            }
        }
    }
}
