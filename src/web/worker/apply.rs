//! The jobs that write edits: apply requests in batches (getting the covariance, the templates
//! and AlphaEdit's projectors ready first, with progress through every stage), read and apply a
//! dataset, recompute the covariance, undo and remove, import and export; and saving the ledger
//! in IndexedDB when such a job has succeeded.
//!
//! The ledger is saved once, at the end of a job: a job that is cancelled, fails or crashes part
//! way leaves the saved ledger as it was before the job.

use std::cell::RefCell;

use js_sys::Array;
use wasm_bindgen::JsCast;

use super::session::{self, FORM_CONTEXT_MARGIN, Session};
use super::{Ui, Worker, cov, loader, storage};
use crate::edit::check::CheckReport;
use crate::edit::dataset::parse_records;
use crate::edit::patch::Patch;
use crate::edit::{Case, EditRequest, MethodKind, Probes, Progress};
use crate::model::export::hf_config_json;
use crate::session::protocol::{Event, Failure, Item, Outcome, Plan, Reply};
use crate::session::{ApplyOptions, RequestProbes, Rewind};
use crate::web::js::{self, now_ms};
use crate::{Error, Result};

/// A job that wrote (or took back) edits ended well: `text` on the bar and in the answer.
fn done(ui: &Ui, text: String) -> Outcome {
    ui.progress(Some(1.0), &text);
    Ok(Reply::Edited {
        text,
        cancelled: false,
    })
}

/// A job was cancelled and what it changed is as before it: `text` says so.
fn cancelled(ui: &Ui, text: &str) -> Outcome {
    session::clear_cancel();
    ui.progress(Some(0.0), text);
    Ok(Reply::Edited {
        text: text.into(),
        cancelled: true,
    })
}

/// Applies `items` as `plan` says, then saves the ledger.
pub(crate) async fn apply_requests(
    w: &Worker,
    ui: &Ui,
    s: &mut Session,
    items: Vec<Item>,
    plan: Plan,
) -> Outcome {
    let kind = plan.method;
    if items.is_empty() || plan.batch == 0 {
        return Err(Failure::from(Error::input(
            "nothing to apply: give at least one request and a batch size of at least 1",
        )));
    }
    // A subject that cannot be placed in its own prompt is refused with its code
    // (`SubjectSplitsToken`) before the batch check folds it into a list.
    for item in &items {
        let r = &item.request;
        crate::edit::subject::locate_subject(&s.tokenizer, &r.prompt, &r.subject)
            .map_err(Failure::from)?;
    }
    ui.send(Event::ClearStages);
    let t0 = now_ms();
    let n = items.len();
    let start = s.n_entries();
    match apply_in(w, ui, s, items, plan).await {
        Ok(()) => {
            save(w, ui, s, kind).await;
            let secs = (now_ms() - t0) / 1000.0;
            let what = if n == 1 {
                "1 edit".to_string()
            } else {
                format!("{n} edits")
            };
            done(
                ui,
                format!("Applied {what} with {} in {secs:.1} s.", kind.name()),
            )
        }
        Err(Error::Cancelled(_)) => {
            session::clear_cancel();
            match roll_back(s, start).await {
                Ok(()) => cancelled(
                    ui,
                    "Cancelled: the model, P and the saved ledger are as they were before this job.",
                ),
                Err(e) => Err(Failure {
                    code: e.code().into(),
                    message: format!("Cancelled, but the rollback failed: {e}"),
                }),
            }
        }
        Err(e) => {
            let kept = s.n_entries() - start;
            let message = if kept == 0 {
                format!(
                    "The edit failed and was rolled back (the model, P and the saved ledger are as before it): {e}"
                )
            } else {
                save(w, ui, s, kind).await;
                format!(
                    "Batch {} failed and was rolled back; the {kept} batch{} before it stay applied and saved: {e}",
                    kept + 1,
                    if kept == 1 { "" } else { "es" }
                )
            };
            ui.progress(Some(0.0), "The edit failed.");
            Err(Failure {
                code: e.code().into(),
                message,
            })
        }
    }
}

async fn apply_in(
    w: &Worker,
    ui: &Ui,
    s: &mut Session,
    items: Vec<Item>,
    plan: Plan,
) -> Result<()> {
    let (batch, kind) = (plan.batch, plan.method);
    ensure_ready(w, ui, s, kind, false, plan.cov_budget).await?;
    let n_batches = items.len().div_ceil(batch);
    for (b, chunk) in items.chunks(batch).enumerate() {
        let mut requests: Vec<EditRequest> = chunk.iter().map(|i| i.request.clone()).collect();
        let probes = chunk.iter().map(|i| i.probes.clone()).collect();
        let prefix = if n_batches > 1 {
            format!("Batch {} of {n_batches}: ", b + 1)
        } else {
            String::new()
        };
        let base = b as f64 / n_batches as f64;
        let scale = 1.0 / n_batches as f64;
        ui.progress(
            Some(base),
            &format!("{prefix}finding the unedited model's answers…"),
        );
        s.fill_true_targets(&mut requests).await?;
        let shower = ProgressShower::new(ui, prefix, base, scale, requests.len(), &s.setup()?.hp);
        let armed = w.panic_armed.replace(false);
        let outcome = s
            .apply(&requests, probes, kind, ApplyOptions::default(), |p| {
                if armed && matches!(p, Progress::Z { .. }) {
                    panic!(
                        "test hook (?test_panic=edit): the engine panics in the middle of an edit"
                    );
                }
                shower.show(&p)
            })
            .await;
        if let Err(e) = outcome {
            shower.failed();
            return Err(e);
        }
        ui.stage(
            "keys",
            "done",
            "Past keys: P updated with the post-edit keys.",
        );
        ui.snapshot(w, Some(s));
    }
    Ok(())
}

/// Takes back the batches a cancelled job applied (each bit-exact); the saved ledger was not
/// touched by the job.
async fn roll_back(s: &mut Session, start: usize) -> Result<()> {
    while s.n_entries() > start {
        s.rewind(Rewind::Last, |_, _| {}).await?;
    }
    Ok(())
}

/// Gets the covariance (stored, shipped or computed), the templates and, for AlphaEdit, the
/// projectors; `force_cov` recomputes the covariance in the page over `budget` tokens.
pub(crate) async fn ensure_ready(
    w: &Worker,
    ui: &Ui,
    s: &mut Session,
    kind: MethodKind,
    force_cov: bool,
    budget: usize,
) -> Result<()> {
    let setup = s.setup()?;
    if setup.cov.is_none() || force_cov {
        if !(256..=150_000).contains(&budget) {
            return Err(Error::input(format!(
                "covariance token budget: “{budget}” is not a whole number from 256 to 150000"
            )));
        }
        ui.stage("cov", "active", "Covariance: starting…");
        let report = |f: f64, what: &str| {
            ui.progress(Some(f), what);
            ui.stage("cov", "active", what);
        };
        let db = w.db();
        let hp = setup.hp.clone();
        let compute = if force_cov {
            cov::Compute::Now { budget }
        } else {
            cov::Compute::IfMissing { budget }
        };
        let set = match cov::obtain(s, db.as_deref(), compute, &report).await {
            Ok(set) => set,
            Err(e) => {
                ui.stage("cov", "failed", &format!("Covariance: {e}"));
                return Err(e);
            }
        };
        let text = format!("Covariance: {}; layers {:?}.", set.source, hp.layers);
        ui.stage("cov", "done", &text);
        ui.send(Event::Covariance { text });
        s.setup_mut()?.set_cov(set);
    } else {
        ui.stage("cov", "done", "Covariance: ready (loaded earlier).");
    }
    if s.setup()?.templates.is_none() {
        ui.progress(
            None,
            "Sampling the context templates from the unedited model…",
        );
        s.ensure_templates().await?;
    }
    if kind == MethodKind::Alphaedit {
        ui.stage(
            "projectors",
            "active",
            "AlphaEdit: null-space projectors (an eigendecomposition per layer)…",
        );
        ui.progress(None, "AlphaEdit: building the null-space projectors…");
        js::yield_now().await;
        let d_ff = s.config().d_ff;
        s.setup_mut()?.prepare_method(kind, d_ff)?;
        ui.stage("projectors", "done", "AlphaEdit: projectors ready.");
    }
    Ok(())
}

/// Recomputes the covariance in the page with the chosen budget (the "recompute" button).
pub(crate) async fn recompute_cov(w: &Worker, ui: &Ui, s: &mut Session, budget: usize) -> Outcome {
    ui.send(Event::ClearStages);
    match ensure_ready(w, ui, s, MethodKind::Nse, true, budget).await {
        Ok(()) => done(
            ui,
            "Covariance recomputed and saved in this browser.".into(),
        ),
        Err(Error::Cancelled(_)) => cancelled(
            ui,
            "Cancelled: the covariance statistic in use is unchanged.",
        ),
        Err(e) => Err(Failure {
            code: e.code().into(),
            message: format!("Could not compute the covariance: {e}"),
        }),
    }
}

/// Edits with the hyperparameters of the page's editor (JSON) from now on; only before the
/// first edit (see [`Session::set_hparams`]).
pub(crate) fn set_hparams(ui: &Ui, s: &mut Session, json: &str) -> Outcome {
    let failure = |e: Error| Failure {
        code: e.code().into(),
        message: format!("These hyperparameters were not taken: {e}"),
    };
    let hp = crate::edit::Hparams::parse(json, "the hyperparameters").map_err(failure)?;
    s.set_hparams(hp).map_err(failure)?;
    let hp = &s.setup().map_err(failure)?.hp;
    done(
        ui,
        format!(
            "Editing now uses these hyperparameters: layers {}–{}, λ = {}, neurons covering p = {}, \
             {} z steps. The covariance statistic is computed again at the next edit if the layers \
             or its corpus changed.",
            hp.layers.first().copied().unwrap_or(0),
            hp.z_layer(),
            hp.mom2_update_weight,
            hp.neuron_threshold,
            hp.v_num_grad_steps
        ),
    )
}

/// Saves the ledger (or forgets it when empty) under the model's sha256 and says so. A failure
/// leaves the previously saved ledger in place and says so.
pub(crate) async fn save(w: &Worker, ui: &Ui, s: &Session, kind: MethodKind) {
    let Some(db) = w.db() else {
        ui.saved("Not saved: this browser offers no IndexedDB.");
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
        Ok(()) => ui.saved(&format!(
            "Saved in this browser (IndexedDB, key {}…) at {}.",
            &s.source.sha256[..12.min(s.source.sha256.len())],
            clock()
        )),
        Err(e) => ui.saved(&format!(
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

/// The probes a dataset case brings.
fn case_probes(case: &Case) -> RequestProbes {
    match &case.probes {
        Probes::CounterFact {
            paraphrase,
            neighborhood,
        } => RequestProbes {
            paraphrase: paraphrase.clone(),
            neighborhood: neighborhood.clone(),
        },
        Probes::Zsre {
            paraphrase, loc, ..
        } => RequestProbes {
            paraphrase: paraphrase.clone(),
            neighborhood: vec![loc.clone()],
        },
        Probes::None => RequestProbes::default(),
    }
}

fn item(case: &Case) -> Item {
    Item {
        request: case.request.clone(),
        probes: case_probes(case),
    }
}

/// The first picked file of a request's attachments.
fn attached_file(attach: &Array) -> Result<web_sys::File> {
    attach
        .get(0)
        .dyn_into::<web_sys::File>()
        .map_err(|_| Error::input("no file came with the request: pick the file again"))
}

/// Reads a dataset file and checks every record with the library's check against the loaded
/// model; keeps its cases for [`apply_dataset`].
pub(crate) async fn read_dataset(w: &Worker, s: &Session, name: &str, attach: &Array) -> Outcome {
    let parsed = async {
        let file = attached_file(attach)?;
        let bytes = loader::read_file(&file, |_, _| {}).await?;
        let records = parse_records(&String::from_utf8_lossy(&bytes), name)?;
        s.check_records(&records, None, FORM_CONTEXT_MARGIN)
            .into_result()?;
        Ok::<_, Error>(records.into_iter().flatten().collect::<Vec<Case>>())
    }
    .await;
    match parsed {
        Ok(cases) if !cases.is_empty() => {
            let reply = Reply::Dataset {
                name: name.into(),
                cases: cases.len(),
                first: item(&cases[0]),
            };
            *w.dataset.borrow_mut() = cases;
            Ok(reply)
        }
        Ok(_) => {
            w.dataset.borrow_mut().clear();
            Err(Failure::from(Error::input(format!(
                "{name} holds no cases"
            ))))
        }
        Err(e) => {
            w.dataset.borrow_mut().clear();
            Err(Failure::from(e))
        }
    }
}

/// Applies the first `n` cases of the dataset read last in batches, after the library's check
/// of those `n` in those batches (duplicates within a batch included).
pub(crate) async fn apply_dataset(
    w: &Worker,
    ui: &Ui,
    s: &mut Session,
    n: usize,
    plan: Plan,
) -> Outcome {
    let cases = w.dataset.borrow().clone();
    if n == 0 || n > cases.len() {
        return Err(Failure::from(Error::input(format!(
            "cases to apply: {n} is not a whole number from 1 to {} (the dataset read last)",
            cases.len()
        ))));
    }
    let records: Vec<_> = cases[..n].iter().cloned().map(Ok).collect();
    let report: CheckReport = s.check_records(&records, Some(plan.batch), FORM_CONTEXT_MARGIN);
    report.into_result().map_err(Failure::from)?;
    let items = cases[..n].iter().map(item).collect();
    apply_requests(w, ui, s, items, plan).await
}

/// Undo, back to the original, or remove edit k; a removal first gets every method of the
/// later edits ready (the covariance may not be loaded yet after a reload).
pub(crate) async fn rewind(
    w: &Worker,
    ui: &Ui,
    s: &mut Session,
    what: Rewind,
    method: MethodKind,
    cov_budget: usize,
) -> Outcome {
    let t0 = now_ms();
    let rewound = async {
        if let Rewind::Remove(k) = what {
            let mut kinds: Vec<MethodKind> =
                s.ledger().iter().skip(k + 1).map(|e| e.method).collect();
            kinds.dedup();
            for kind in kinds {
                ensure_ready(w, ui, s, kind, false, cov_budget).await?;
            }
        }
        s.rewind(what, |j, count| {
            let Rewind::Remove(k) = what else { return };
            ui.progress(
                Some(j as f64 / count.max(1) as f64),
                &format!(
                    "Re-applying edit {} of {count} after removing #{}…",
                    j + 1,
                    k + 1
                ),
            );
        })
        .await
    }
    .await;
    match rewound {
        Ok(text) => {
            save(w, ui, s, method).await;
            let secs = (now_ms() - t0) / 1000.0;
            done(ui, format!("{text} ({secs:.1} s)."))
        }
        Err(Error::Cancelled(_)) => cancelled(ui, "Cancelled: the ledger is as it was before."),
        Err(e) => Err(Failure::from(e)),
    }
}

/// The ledger as a patch, with the digest of the edited weights recorded so that the command
/// line (or another page) can prove its replay reproduced them.
pub(crate) async fn export_patch(s: &Session) -> std::result::Result<(Reply, Vec<u8>), Failure> {
    let patch = s.export_patch().await?;
    let bytes = patch.to_bytes();
    let stem = s
        .source
        .name
        .rsplit_once('.')
        .map_or(s.source.name.as_str(), |(a, _)| a);
    let name = format!("{stem}-{}-edits.nsepatch", patch.entries.len());
    let reply = Reply::Exported {
        name,
        bytes: bytes.len(),
        config: None,
        tokenizer: None,
    };
    Ok((reply, bytes))
}

/// Replays a patch file onto the original weights, replacing the ledger, then saves it.
pub(crate) async fn import_patch(
    w: &Worker,
    ui: &Ui,
    s: &mut Session,
    name: &str,
    method: MethodKind,
    attach: &Array,
) -> Outcome {
    let result = async {
        let file = attached_file(attach)?;
        let bytes = loader::read_file(&file, |_, _| {}).await?;
        let patch = Patch::from_bytes(&bytes, name)?;
        let before = s.n_entries();
        s.import_patch(&patch, &format!("imported from {name}"))
            .await?;
        Ok::<_, Error>((patch.entries.len(), before))
    }
    .await;
    match result {
        Ok((n, before)) => {
            let replaced = if before > 0 {
                format!(", replacing the {before} edit(s) that were here")
            } else {
                String::new()
            };
            save(w, ui, s, method).await;
            done(
                ui,
                format!(
                    "Imported {n} edit(s) from {name}{replaced}: replayed bit for bit on the original weights."
                ),
            )
        }
        Err(e) => Err(Failure {
            code: e.code().into(),
            message: format!("Import refused, the ledger is unchanged: {e}"),
        }),
    }
}

/// The edited model as safetensors, with its `config.json` and `tokenizer.json`.
pub(crate) async fn export_model(
    ui: &Ui,
    s: &Session,
) -> std::result::Result<(Reply, Vec<u8>), Failure> {
    ui.progress(
        None,
        "Reading the weights back and writing model.safetensors (F32)…",
    );
    let bytes = s.export_model().await?;
    let stem = s
        .source
        .name
        .rsplit_once('.')
        .map_or(s.source.name.as_str(), |(a, _)| a);
    let reply = Reply::Exported {
        name: format!("{stem}-edited.safetensors"),
        bytes: bytes.len(),
        config: Some(hf_config_json(s.config())?),
        tokenizer: Some(s.tokenizer.to_json()?),
    };
    ui.progress(Some(1.0), "Exported the edited model.");
    Ok((reply, bytes))
}

/// Shows the batch procedure's progress events on the bar and in the stage list.
struct ProgressShower<'a> {
    ui: &'a Ui,
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
        ui: &'a Ui,
        prefix: String,
        base: f64,
        scale: f64,
        n: usize,
        hp: &crate::edit::Hparams,
    ) -> Self {
        ui.stage("z", "pending", "Target z: waiting.");
        ui.stage("rounds", "pending", "Rounds: waiting.");
        ui.stage("keys", "pending", "Past keys: waiting.");
        ProgressShower {
            ui,
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
        self.ui.progress(
            Some(self.base + self.scale * f.clamp(0.0, 1.0)),
            &format!("{}{label}", self.prefix),
        );
    }

    fn show(&self, p: &Progress) {
        let edit = self.ui;
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

    /// Marks the active stages as failed.
    fn failed(&self) {
        for id in ["z", "rounds", "keys"] {
            self.ui.send(Event::Stage {
                id: id.into(),
                state: "failed-if-active".into(),
                text: String::new(),
            });
        }
    }
}
