//! The edit panel: the request form with live validation and the prompt's tokens (the subject's
//! last token marked), the method, "Apply" with its stages, and the dataset import that
//! applies cases in batches.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::JsCast;
use web_sys::{
    HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement,
};

use super::dom::{self, by_testid, child, set_attr};
use super::{App, compare_ui};
use crate::Result;
use crate::edit::{EditRequest, MethodKind};
use crate::session::protocol::{Checked, Item, Plan, Reply, Request, TokenView};

/// Handles on the edit panel.
pub(crate) struct EditView {
    pub(crate) prompt: HtmlInputElement,
    pub(crate) subject: HtmlInputElement,
    pub(crate) target: HtmlInputElement,
    pub(crate) target_true: HtmlInputElement,
    pub(crate) method: HtmlSelectElement,
    validation: HtmlElement,
    tokens: HtmlElement,
    apply: HtmlButtonElement,
    pub(crate) stages: HtmlElement,
    availability: HtmlElement,
    pub(crate) cov_status: HtmlElement,
    pub(crate) cov_budget: HtmlInputElement,
    cov_recompute: HtmlButtonElement,
    dataset_input: HtmlInputElement,
    dataset_n: HtmlInputElement,
    dataset_batch: HtmlInputElement,
    dataset_apply: HtmlButtonElement,
    dataset_status: HtmlElement,
    hparams: HtmlTextAreaElement,
    hparams_apply: HtmlButtonElement,
    hparams_status: HtmlElement,
    /// The hyperparameters last shown (the textarea is refilled only when they change).
    hparams_shown: std::cell::RefCell<Option<String>>,
    /// The form holds a valid request.
    valid: Cell<bool>,
    /// No job is running and a model that can be edited is loaded.
    ready: Cell<bool>,
    /// No job is running and a model is loaded (its hyperparameters can be changed even while
    /// they are what makes editing unavailable).
    idle: Cell<bool>,
    /// Cases of the dataset the engine read last (0: none).
    cases: Cell<usize>,
    /// Counts the form's checks; an answer for an older one is dropped.
    check_seq: Cell<u32>,
    /// The page was opened from a shared link: its edit stays in the form.
    pub(crate) shared: Cell<bool>,
}

impl EditView {
    pub(crate) fn find() -> Self {
        EditView {
            prompt: by_testid("prompt-input"),
            subject: by_testid("subject-input"),
            target: by_testid("target-input"),
            target_true: by_testid("target-true-input"),
            method: by_testid("method-select"),
            validation: by_testid("validation-message"),
            tokens: by_testid("token-view"),
            apply: by_testid("apply-button"),
            stages: by_testid("edit-stages"),
            availability: by_testid("edit-availability"),
            cov_status: by_testid("cov-status"),
            cov_budget: by_testid("cov-budget-input"),
            cov_recompute: by_testid("cov-recompute-button"),
            dataset_input: by_testid("dataset-input"),
            dataset_n: by_testid("dataset-n-input"),
            dataset_batch: by_testid("dataset-batch-input"),
            dataset_apply: by_testid("dataset-apply-button"),
            dataset_status: by_testid("dataset-status"),
            hparams: by_testid("hparams-input"),
            hparams_apply: by_testid("hparams-apply-button"),
            hparams_status: by_testid("hparams-status"),
            hparams_shown: std::cell::RefCell::new(None),
            valid: Cell::new(false),
            ready: Cell::new(false),
            idle: Cell::new(false),
            cases: Cell::new(0),
            check_seq: Cell::new(0),
            shared: Cell::new(false),
        }
    }

    /// `enabled`: no job runs and the loaded model can be edited; `idle`: no job runs and a
    /// model is loaded.
    pub(crate) fn set_enabled(&self, enabled: bool, idle: bool) {
        self.ready.set(enabled);
        self.idle.set(idle);
        self.hparams_apply
            .set_disabled(!idle || self.hparams.disabled());
        self.apply.set_disabled(!(enabled && self.valid.get()));
        self.cov_recompute.set_disabled(!enabled);
        self.dataset_apply
            .set_disabled(!enabled || self.cases.get() == 0);
        self.dataset_input.set_disabled(!enabled);
    }

    /// Shows the hyperparameters in use, or the ones that make editing unavailable (`None`:
    /// editing unavailable for another reason); they can be changed only while the ledger is
    /// empty.
    pub(crate) fn show_hparams(&self, json: Option<&str>, entries: usize) {
        let shown = json.map(str::to_string);
        if *self.hparams_shown.borrow() != shown {
            self.hparams.set_value(json.unwrap_or(""));
            *self.hparams_shown.borrow_mut() = shown;
        }
        let locked = json.is_none() || entries > 0;
        self.hparams.set_disabled(locked);
        if entries > 0 {
            self.hparams_status.set_inner_text(
                "These made the edits in the ledger; undo them all to change the hyperparameters.",
            );
        }
        self.hparams_apply.set_disabled(locked || !self.idle.get());
    }

    /// Says why editing is unavailable (or hides the note).
    pub(crate) fn show_availability(&self, why: Option<&str>) {
        self.availability.set_hidden(why.is_none());
        self.availability.set_inner_text(why.unwrap_or(""));
    }

    /// The method chosen in the form.
    pub(crate) fn method(&self) -> MethodKind {
        MethodKind::parse(&self.method.value()).unwrap_or(MethodKind::Nse)
    }

    /// The request in the form, checked against the form's own rules (the engine checks it
    /// against the model).
    pub(crate) fn request(&self) -> Result<EditRequest> {
        let truth = self.target_true.value();
        let truth = Some(truth.trim()).filter(|t| !t.is_empty());
        EditRequest::from_sentence(
            &self.prompt.value(),
            &self.subject.value(),
            &self.target.value(),
            truth,
        )
    }

    /// Shows the verdict: `state` is `ok`, `error` or `checking`.
    fn verdict(&self, state: &str, text: &str) {
        self.valid.set(state == "ok");
        set_attr(&self.validation, "data-state", state);
        self.validation.set_inner_text(text);
        self.set_enabled(self.ready.get(), self.idle.get());
    }

    /// "Ready: …" for a request the engine can place.
    fn ready_text(r: &EditRequest) -> String {
        let truth = r
            .target_true
            .as_deref()
            .map_or("the unedited model's answer".to_string(), |t| {
                format!("{t:?}")
            });
        format!(
            "Ready: “{}” → {:?} (true target: {truth}).",
            r.sentence(),
            r.target_new
        )
    }

    /// The prompt's tokens; the subject's tokens are marked, its last one strongly.
    fn show_tokens(&self, tokens: &[TokenView], first: usize, last: usize) {
        dom::clear(&self.tokens);
        for (i, t) in tokens.iter().enumerate() {
            let span = child(
                &self.tokens,
                "span",
                Some("token"),
                &t.text.replace(' ', "·"),
            );
            set_attr(&span, "data-index", &i.to_string());
            set_attr(&span, "title", &format!("token {i}: id {}", t.id));
            if (first..=last).contains(&i) {
                set_attr(
                    &span,
                    "class",
                    if i == last {
                        "subject subject-last"
                    } else {
                        "subject"
                    },
                );
            }
            if i == last {
                set_attr(&span, "data-subject-last", "true");
            }
        }
        let note = child(&self.tokens, "span", Some("subject-last-note"), "");
        set_attr(&note, "class", "hint");
        note.set_text_content(Some(&format!(
            "  {} tokens; the subject's last token is #{last}: the edit writes at that position.",
            tokens.len()
        )));
    }

    /// Shows a stage: `state` is `pending`, `active`, `done` or `failed`.
    pub(crate) fn stage(&self, id: &str, state: &str, text: &str) {
        let li = match self
            .stages
            .query_selector(&format!("[data-stage=\"{id}\"]"))
            .ok()
            .flatten()
        {
            Some(li) => li,
            None => {
                let li = child(&self.stages, "li", Some("edit-stage"), "");
                set_attr(&li, "data-stage", id);
                li
            }
        };
        set_attr(&li, "data-state", state);
        li.set_text_content(Some(text));
    }

    /// Clears the stage list for a new job.
    pub(crate) fn reset_stages(&self) {
        dom::clear(&self.stages);
    }

    /// The subject as typed.
    pub(crate) fn subject(&self) -> String {
        self.subject.value()
    }

    /// Fills the form with a request.
    pub(crate) fn fill_request(&self, r: &EditRequest) {
        self.prompt.set_value(&r.sentence());
        self.subject.set_value(&r.subject);
        self.target.set_value(&r.target_new);
        self.target_true
            .set_value(r.target_true.as_deref().unwrap_or(""));
    }
}

/// Checks the form: its own rules at once, then (when a model is loaded and idle) the engine's
/// check against the tokenizer and the hyperparameters. Until the engine has answered, the
/// request is not ready.
pub(crate) fn validate(app: &Rc<App>) {
    let v = &app.edit;
    let seq = v.check_seq.get().wrapping_add(1);
    v.check_seq.set(seq);
    let r = match v.request() {
        Ok(r) => r,
        Err(e) => {
            dom::clear(&v.tokens);
            return v.verdict("error", &e.to_string());
        }
    };
    if app.model().is_none() {
        return v.verdict("ok", &EditView::ready_text(&r));
    }
    if app.busy.get() {
        return v.verdict(
            "checking",
            "Checked against the model when the running job ends.",
        );
    }
    v.verdict("checking", "Checking against the model's tokenizer…");
    let a = Rc::clone(app);
    wasm_bindgen_futures::spawn_local(async move {
        let outcome = a.call(Request::Check { request: r.clone() }).await;
        let v = &a.edit;
        if v.check_seq.get() != seq {
            return;
        }
        match outcome {
            Ok(Reply::Checked {
                checked:
                    Checked::Ok {
                        tokens,
                        first,
                        last,
                    },
            }) => {
                v.show_tokens(&tokens, first, last);
                v.verdict("ok", &EditView::ready_text(&r));
            }
            Ok(Reply::Checked {
                checked: Checked::Refused { message },
            }) => {
                dom::clear(&v.tokens);
                v.verdict("error", &message);
            }
            Ok(Reply::Checked {
                checked: Checked::NoModel,
            }) => v.verdict("ok", &EditView::ready_text(&r)),
            Ok(Reply::Checked {
                checked: Checked::Busy,
            }) => v.verdict(
                "checking",
                "Checked against the model when the running job ends.",
            ),
            Ok(other) => v.verdict("error", &format!("unexpected answer {other:?}")),
            Err(f) => v.verdict("error", &f.message),
        }
    });
}

/// Wires the form, the apply button, the covariance button and the dataset import.
pub(crate) fn wire(app: &Rc<App>) {
    let v = &app.edit;
    for input in [&v.prompt, &v.subject, &v.target, &v.target_true] {
        let a = Rc::clone(app);
        dom::on(input, "input", move |_| a.validate_form());
    }
    let a = Rc::clone(app);
    dom::on(&v.apply, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { apply_form(&a).await });
    });
    for input in [&v.prompt, &v.subject, &v.target, &v.target_true] {
        let a = Rc::clone(app);
        dom::on(input, "keydown", move |e| {
            let enter = e
                .dyn_ref::<web_sys::KeyboardEvent>()
                .is_some_and(|k| k.key() == "Enter");
            if enter && !a.edit.apply.disabled() {
                let a = Rc::clone(&a);
                wasm_bindgen_futures::spawn_local(async move { apply_form(&a).await });
            }
        });
    }
    let a = Rc::clone(app);
    dom::on(&v.cov_recompute, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { recompute_cov(&a).await });
    });
    let a = Rc::clone(app);
    dom::on(&v.hparams_apply, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { set_hparams(&a).await });
    });
    let a = Rc::clone(app);
    dom::on(&v.dataset_input, "change", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { read_dataset(&a).await });
    });
    let a = Rc::clone(app);
    dom::on(&v.dataset_apply, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { apply_dataset(&a).await });
    });
}

/// The cov budget box, checked by the engine when it computes.
fn cov_budget(app: &App) -> usize {
    app.edit.cov_budget.value().trim().parse().unwrap_or(0)
}

/// Applies the request in the form, then compares.
async fn apply_form(app: &Rc<App>) {
    let request = match app.edit.request() {
        Ok(r) => r,
        Err(e) => {
            app.status.show_error(&format!("Cannot apply: {e}"));
            return;
        }
    };
    let probes = app.compare.form_probes();
    let request = Request::Apply {
        items: vec![Item { request, probes }],
        plan: Plan {
            batch: 1,
            method: app.edit.method(),
            cov_budget: cov_budget(app),
        },
    };
    apply_job(app, request).await;
}

/// Runs an apply request as a job and shows the comparison after it.
async fn apply_job(app: &Rc<App>, request: Request) {
    if !app.begin() {
        return;
    }
    app.edit.reset_stages();
    match app.call(request).await {
        Ok(Reply::Edited { cancelled, .. }) => {
            if !cancelled {
                // After a cancel the model is as before the job: the comparison shown holds.
                compare_ui::run(app).await;
            }
        }
        Ok(_) => {}
        Err(f) => {
            app.status.show_error(&f.message);
            if f.code != "Crashed" {
                compare_ui::run(app).await;
            }
        }
    }
    app.end();
}

/// Recomputes the covariance (the "recompute" button).
async fn recompute_cov(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    app.edit.reset_stages();
    let budget = cov_budget(app);
    if let Err(f) = app.call(Request::Covariance { budget }).await {
        app.status.show_error(&f.message);
    }
    app.end();
}

/// Sends the edited hyperparameter file to the engine, which takes it before the first edit.
async fn set_hparams(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    let json = app.edit.hparams.value();
    match app.call(Request::SetHparams { json }).await {
        Ok(Reply::Edited { text, .. }) => {
            app.edit.hparams_status.set_inner_text(&text);
            // The status line says which hyperparameters editing uses.
            app.show_model();
        }
        Ok(other) => app
            .status
            .show_error(&format!("unexpected answer {other:?}")),
        Err(f) => {
            app.edit.hparams_status.set_inner_text(&f.message);
            app.status.show_error(&f.message);
        }
    }
    app.end();
    // The form's check depends on the hyperparameters (the templates, the context).
    app.validate_form();
}

/// Hands the picked dataset file to the engine, which reads it and checks every record against
/// the loaded model.
async fn read_dataset(app: &Rc<App>) {
    let v = &app.edit;
    let Some(file) = v.dataset_input.files().and_then(|l| l.get(0)) else {
        return;
    };
    v.dataset_input.set_value("");
    if !app.begin() {
        return;
    }
    let name = file.name();
    let (outcome, _) = app
        .call_with(
            Request::ReadDataset { name: name.clone() },
            Array::of1(&file),
        )
        .await;
    match outcome {
        Ok(Reply::Dataset { name, cases, first }) => {
            v.dataset_status.set_inner_text(&format!(
                "{name}: {cases} cases. The form shows the first; “Apply in batches” edits the first N."
            ));
            v.dataset_n.set_value(&cases.min(4).to_string());
            if let Ok(Some(details)) = v.dataset_input.closest("details") {
                dom::set_attr(&details, "open", "");
            }
            v.fill_request(&first.request);
            app.compare
                .fill_probes(&first.request.subject, &first.probes);
            v.cases.set(cases);
        }
        Ok(other) => app
            .status
            .show_error(&format!("unexpected answer {other:?}")),
        Err(f) => {
            v.cases.set(0);
            v.dataset_status
                .set_inner_text(&format!("Not loaded: {}", f.message));
            app.status
                .show_error(&format!("Could not read the dataset: {}", f.message));
        }
    }
    app.end();
}

/// Applies the first N cases of the dataset in batches (the engine checks those N in those
/// batches first, duplicates within a batch included).
async fn apply_dataset(app: &Rc<App>) {
    let v = &app.edit;
    let n = match dom::int_input(&v.dataset_n, "cases to apply", 1, v.cases.get().max(1)) {
        Ok(n) => n,
        Err(e) => return app.status.show_error(&e.to_string()),
    };
    let batch = match dom::int_input(&v.dataset_batch, "batch size", 1, 64) {
        Ok(b) => b,
        Err(e) => return app.status.show_error(&e.to_string()),
    };
    let request = Request::ApplyDataset {
        n,
        plan: Plan {
            batch,
            method: v.method(),
            cov_budget: cov_budget(app),
        },
    };
    apply_job(app, request).await;
    if let Some(e) = app.status.error_text() {
        v.dataset_status
            .set_inner_text(&format!("Not applied: {e}"));
    }
}
