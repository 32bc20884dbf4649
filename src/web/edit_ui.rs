//! The edit panel: the request form with live validation and the prompt's tokens (the subject's
//! last token marked), the method, "Apply" with its stages, and the dataset import that
//! applies cases in batches.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::JsCast;
use web_sys::{HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlSelectElement};

use super::dom::{self, by_testid, child, set_attr};
use super::session::{FORM_CONTEXT_MARGIN, Session};
use super::{App, apply_flow};
use crate::Result;
use crate::edit::check::CheckReport;
use crate::edit::dataset::parse_records;
use crate::edit::subject::{SubjectTokens, locate_subject};
use crate::edit::{Case, EditRequest, MethodKind, Probes};
use crate::session::RequestProbes;

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
    /// The form holds a valid request.
    valid: Cell<bool>,
    /// No job is running and a model that can be edited is loaded.
    ready: Cell<bool>,
    /// Cases of the imported dataset.
    cases: RefCell<Vec<Case>>,
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
            valid: Cell::new(false),
            ready: Cell::new(false),
            cases: RefCell::new(vec![]),
        }
    }

    /// `enabled`: no job runs and the loaded model can be edited.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.ready.set(enabled);
        self.apply.set_disabled(!(enabled && self.valid.get()));
        self.cov_recompute.set_disabled(!enabled);
        self.dataset_apply
            .set_disabled(!enabled || self.cases.borrow().is_empty());
        self.dataset_input.set_disabled(!enabled);
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

    /// The request in the form, checked against the tokenizer and the hyperparameters when a
    /// session is given.
    pub(crate) fn request(&self, session: Option<&Session>) -> Result<EditRequest> {
        let truth = self.target_true.value();
        let truth = Some(truth.trim()).filter(|t| !t.is_empty());
        let r = EditRequest::from_sentence(
            &self.prompt.value(),
            &self.subject.value(),
            &self.target.value(),
            truth,
        )?;
        if let Some(s) = session {
            s.setup()?.with_check(
                &s.tokenizer,
                s.config().max_ctx,
                FORM_CONTEXT_MARGIN,
                |spec| spec.check_request(&r),
            )?;
        }
        Ok(r)
    }

    /// Validates the form and shows the verdict and the tokens.
    pub(crate) fn validate(&self, session: Option<&Session>) {
        let result = self.request(session);
        self.valid.set(result.is_ok());
        match &result {
            Ok(r) => {
                set_attr(&self.validation, "data-state", "ok");
                let truth = r
                    .target_true
                    .as_deref()
                    .map_or("the unedited model's answer".to_string(), |t| {
                        format!("{t:?}")
                    });
                self.validation.set_inner_text(&format!(
                    "Ready: “{}” → {:?} (true target: {truth}).",
                    r.sentence(),
                    r.target_new
                ));
            }
            Err(e) => {
                set_attr(&self.validation, "data-state", "error");
                self.validation.set_inner_text(&e.to_string());
            }
        }
        if let (Ok(r), Some(s)) = (&result, session) {
            self.show_tokens(r, s);
        } else if result.is_err() {
            dom::clear(&self.tokens);
        }
        self.set_enabled(self.ready.get());
    }

    /// The prompt's tokens; the subject's tokens are marked, its last one strongly.
    fn show_tokens(&self, r: &EditRequest, s: &Session) {
        dom::clear(&self.tokens);
        let tok = &s.tokenizer;
        let Ok(SubjectTokens { ids, last, .. }) = locate_subject(tok, &r.prompt, &r.subject) else {
            return;
        };
        let first = r
            .prompt
            .find("{}")
            .and_then(|at| tok.encode(&r.prompt[..at]).ok())
            .map_or(0, |p| p.len());
        for (i, &id) in ids.iter().enumerate() {
            let text = tok.decode(&[id]).unwrap_or_default();
            let span = child(&self.tokens, "span", Some("token"), &text.replace(' ', "·"));
            set_attr(&span, "data-index", &i.to_string());
            set_attr(&span, "title", &format!("token {i}: id {id}"));
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
            ids.len()
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

    /// Fills the form from a dataset case.
    fn fill_from(&self, case: &Case) {
        self.fill_request(&case.request);
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

/// The probes a dataset case brings.
pub(crate) fn case_probes(case: &Case) -> RequestProbes {
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
        wasm_bindgen_futures::spawn_local(async move { apply_flow::recompute_cov(&a).await });
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

/// Applies the request in the form.
async fn apply_form(app: &Rc<App>) {
    let request = match app.edit.request(None) {
        Ok(r) => r,
        Err(e) => {
            app.status.show_error(&format!("Cannot apply: {e}"));
            return;
        }
    };
    let probes = app.compare.form_probes();
    let kind = app.edit.method();
    apply_flow::apply_requests(app, vec![(request, probes)], 1, kind).await;
}

/// Reads the picked dataset file and checks every record with the library's check (against
/// the loaded model when one is idle, else the schema alone; "Apply" checks again).
async fn read_dataset(app: &Rc<App>) {
    let v = &app.edit;
    let Some(file) = v.dataset_input.files().and_then(|l| l.get(0)) else {
        return;
    };
    v.dataset_input.set_value("");
    let name = file.name();
    let parsed = super::loader::read_file(&file, |_, _| {})
        .await
        .and_then(|bytes| parse_records(&String::from_utf8_lossy(&bytes), &name))
        .and_then(|records| {
            app.with_session(|s| s.check_records(&records, None, FORM_CONTEXT_MARGIN))
                .unwrap_or_else(|| CheckReport::schema(&records, None))
                .into_result()?;
            Ok(records.into_iter().flatten().collect::<Vec<Case>>())
        });
    match parsed {
        Ok(cases) => {
            v.dataset_status.set_inner_text(&format!(
                "{name}: {} cases. The form shows the first; “Apply in batches” edits the first N.",
                cases.len()
            ));
            v.dataset_n.set_value(&cases.len().min(4).to_string());
            if let Ok(Some(details)) = v.dataset_input.closest("details") {
                dom::set_attr(&details, "open", "");
            }
            v.fill_from(&cases[0]);
            app.compare
                .fill_probes(&cases[0].request.subject, &case_probes(&cases[0]));
            *v.cases.borrow_mut() = cases;
            app.validate_form();
        }
        Err(e) => {
            v.cases.borrow_mut().clear();
            v.dataset_status.set_inner_text(&format!("Not loaded: {e}"));
            app.status
                .show_error(&format!("Could not read the dataset: {e}"));
            v.set_enabled(v.ready.get());
        }
    }
}

/// Applies the first N imported cases in batches, after the library's check of those N in
/// those batches (duplicates within a batch included).
async fn apply_dataset(app: &Rc<App>) {
    let v = &app.edit;
    let cases = v.cases.borrow().clone();
    let n = match dom::int_input(&v.dataset_n, "cases to apply", 1, cases.len().max(1)) {
        Ok(n) => n,
        Err(e) => return app.status.show_error(&e.to_string()),
    };
    let batch = match dom::int_input(&v.dataset_batch, "batch size", 1, 64) {
        Ok(b) => b,
        Err(e) => return app.status.show_error(&e.to_string()),
    };
    let records: Vec<_> = cases[..n].iter().cloned().map(Ok).collect();
    let checked = app
        .with_session(|s| s.check_records(&records, Some(batch), FORM_CONTEXT_MARGIN))
        .map(|report| report.into_result());
    if let Some(Err(e)) = checked {
        v.dataset_status
            .set_inner_text(&format!("Not applied: {e}"));
        return app.status.show_error(&format!("Cannot apply: {e}"));
    }
    let items = cases[..n]
        .iter()
        .map(|c| (c.request.clone(), case_probes(c)))
        .collect();
    apply_flow::apply_requests(app, items, batch, v.method()).await;
}
