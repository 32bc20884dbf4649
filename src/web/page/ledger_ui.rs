//! The ledger panel: one row per edited request with its success and residuals, "Undo last",
//! "Remove edit k" (rewind, then re-apply the later edits), "Back to the original model",
//! restoring the saved ledger after a load, and the neuron view.

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use web_sys::{HtmlButtonElement, HtmlElement};

use super::dom::{self, by_testid, child, set_attr};
use super::{App, compare_ui, neuron_view};
use crate::edit::MethodKind;
use crate::session::protocol::{EntryView, Reply, Request};
use crate::session::{EntryMeta, Rewind};

/// Handles on the ledger panel.
pub(crate) struct LedgerView {
    status: HtmlElement,
    saved: HtmlElement,
    list: HtmlElement,
    undo: HtmlButtonElement,
    reset: HtmlButtonElement,
    /// Ledger entries shown (buttons that need a non-empty ledger depend on it).
    entries: Cell<usize>,
}

impl LedgerView {
    pub(crate) fn find() -> Self {
        let status: HtmlElement = by_testid("ledger-status");
        let saved = dom::create("span").unchecked_into::<HtmlElement>();
        LedgerView {
            status,
            saved,
            list: by_testid("ledger-list"),
            undo: by_testid("undo-button"),
            reset: by_testid("reset-button"),
            entries: Cell::new(0),
        }
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        let some = enabled && self.entries.get() > 0;
        self.undo.set_disabled(!some);
        self.reset.set_disabled(!some);
        if let Ok(list) = self
            .list
            .query_selector_all("[data-testid=\"ledger-remove-button\"]")
        {
            for i in 0..list.length() {
                if let Some(b) = list
                    .get(i)
                    .and_then(|n| n.dyn_into::<HtmlButtonElement>().ok())
                {
                    b.set_disabled(!enabled);
                }
            }
        }
    }

    /// Records where the ledger was saved (shown after the ledger summary).
    pub(crate) fn set_saved(&self, text: &str) {
        self.saved.set_text_content(Some(text));
    }
}

/// Shows the ledger of the engine's last snapshot, its records and the neurons it moved.
pub(crate) fn render(app: &App) {
    let view = &app.ledger;
    dom::clear(&view.list);
    let Some(m) = app.model() else {
        view.entries.set(0);
        view.status.set_inner_text("No model is loaded.");
        neuron_view::render(None);
        return;
    };
    app.generate.follow_ledger(&m.head);
    if m.not_editable.is_some() {
        view.entries.set(0);
        view.status
            .set_inner_text("Editing is not available for this model.");
        neuron_view::render(None);
        return;
    }
    let ledger: &[EntryView] = &m.entries;
    view.entries.set(ledger.len());
    let n_requests: usize = ledger.iter().map(|e| e.requests.len()).sum();
    let summary = match ledger.len() {
        0 => "No edits yet: the model is the original. ".to_string(),
        1 => format!("{n_requests} request{} in 1 edit. ", plural(n_requests)),
        k => format!("{n_requests} requests in {k} edits (batches). "),
    };
    view.status.set_text_content(Some(&summary));
    let _ = view.status.append_child(&view.saved);
    for (k, entry) in ledger.iter().enumerate() {
        let meta = &entry.meta;
        for (i, r) in entry.requests.iter().enumerate() {
            let li = child(&view.list, "li", Some("ledger-row"), "");
            set_attr(&li, "data-entry", &k.to_string());
            set_attr(&li, "data-request", &i.to_string());
            let score = meta.scores.get(i).copied().flatten();
            let success = score.map(|(n, t)| n > t);
            set_attr(
                &li,
                "data-success",
                match success {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "unknown",
                },
            );
            let head = child(&li, "div", None, "");
            set_attr(
                &child(&head, "span", None, &format!("#{}", k + 1)),
                "class",
                "entry-no",
            );
            child(
                &head,
                "span",
                Some("ledger-request"),
                &format!(
                    " {} → {}{}",
                    r.sentence(),
                    r.target_new,
                    r.target_true
                        .as_ref()
                        .map_or(String::new(), |t| format!(" (was {t})"))
                ),
            );
            let mark = match success {
                Some(true) => "✓ success",
                Some(false) => "✗ not yet",
                None => "? no true target",
            };
            set_attr(
                &child(&head, "span", Some("ledger-success"), &format!(" {mark}")),
                "class",
                "mark",
            );
            child(
                &li,
                "div",
                Some("ledger-details"),
                &details(entry.method, meta, i, score),
            );
            if i == 0 {
                let b = child(
                    &li,
                    "button",
                    Some("ledger-remove-button"),
                    &format!("Remove edit #{}", k + 1),
                );
                set_attr(&b, "type", "button");
                set_attr(&b, "class", "secondary small");
                set_attr(&b, "data-entry", &k.to_string());
                let later = ledger.len() - k - 1;
                set_attr(
                    &b,
                    "title",
                    &format!(
                        "Rewinds to before edit #{} and re-applies the {later} later edit{} with apply_batch (minutes each)",
                        k + 1,
                        plural(later)
                    ),
                );
            }
        }
    }
    neuron_view::render(Some(&m));
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "NSE · P(new) 0.62 vs P(true) 0.03 · rounds 1 · ‖z − h‖ 45.1 → 3.2 · 95 s".
fn details(method: MethodKind, meta: &EntryMeta, i: usize, score: Option<(f32, f32)>) -> String {
    let mut parts = vec![method.name().to_uppercase()];
    if let Some((n, t)) = score {
        parts.push(format!("P(new) {n:.3} vs P(true) {t:.3} after the edit"));
    }
    if !meta.residuals.is_empty() {
        let trail: Vec<String> = meta
            .residuals
            .iter()
            .filter_map(|r| r.get(i))
            .map(|x| format!("{x:.1}"))
            .collect();
        parts.push(format!(
            "rounds used {} · ‖z − h‖ per round {}",
            meta.rounds_used,
            trail.join(" → ")
        ));
    }
    if meta.seconds > 0.0 {
        parts.push(format!("{:.1} s", meta.seconds));
    }
    if !meta.note.is_empty() {
        parts.push(meta.note.clone());
    }
    parts.join(" · ")
}

/// Wires undo, reset and the remove buttons (delegated from the list).
pub(crate) fn wire(app: &Rc<App>) {
    let a = Rc::clone(app);
    dom::on(&app.ledger.undo, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { rewind_job(&a, Rewind::Last).await });
    });
    let a = Rc::clone(app);
    dom::on(&app.ledger.reset, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { rewind_job(&a, Rewind::All).await });
    });
    let a = Rc::clone(app);
    dom::on(&app.ledger.list, "click", move |e| {
        let Some(k) = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .filter(|t| t.get_attribute("data-testid").as_deref() == Some("ledger-remove-button"))
            .and_then(|t| t.get_attribute("data-entry"))
            .and_then(|k| k.parse::<usize>().ok())
        else {
            return;
        };
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { rewind_job(&a, Rewind::Remove(k)).await });
    });
}

async fn rewind_job(app: &Rc<App>, what: Rewind) {
    if !app.begin() {
        return;
    }
    let request = Request::Rewind {
        what,
        method: app.edit.method(),
        cov_budget: app.edit.cov_budget.value().trim().parse().unwrap_or(0),
    };
    match app.call(request).await {
        Ok(Reply::Edited { .. }) => compare_ui::run(app).await,
        Ok(_) => {}
        Err(f) => app.status.show_error(&f.message),
    }
    app.end();
}
