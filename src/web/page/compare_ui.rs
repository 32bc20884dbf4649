//! The compare panel: the original and the edited model side by side on the edit prompt, a
//! paraphrase, a neighbourhood prompt and the user's own probes: greedy continuations and
//! P(new), P(true).

use std::cell::RefCell;
use std::rc::Rc;

use web_sys::{HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlTextAreaElement};

use super::App;
use super::dom::{self, by_testid, child, set_attr};
use crate::session::protocol::{Compared, ProbePrompt, Reply, Request};
use crate::session::{ProbeOut, RequestProbes};

/// Handles on the compare panel.
pub(crate) struct CompareView {
    paraphrase: HtmlInputElement,
    neighborhood: HtmlInputElement,
    own: HtmlTextAreaElement,
    button: HtmlButtonElement,
    status: HtmlElement,
    edit_prompt: HtmlElement,
    /// Output, P(new), P(true) and the realistic verdict of each side.
    original: [HtmlElement; 4],
    edited: [HtmlElement; 4],
    rows: HtmlElement,
    /// The comparison in plain words.
    summary: HtmlElement,
    /// The edit prompt's row (the first `compare-row` of the page).
    edit_row: HtmlElement,
    /// The subject the paraphrase and neighbourhood fields were written for (`None` until the
    /// form is first read).
    owner: RefCell<Option<String>>,
    /// Fields set aside per subject `(subject, paraphrase, neighbourhood)`, given back when the
    /// form returns to that subject.
    stash: RefCell<Vec<(String, String, String)>>,
}

impl CompareView {
    pub(crate) fn find() -> Self {
        CompareView {
            paraphrase: by_testid("paraphrase-input"),
            neighborhood: by_testid("neighborhood-input"),
            own: by_testid("probes-input"),
            button: by_testid("compare-button"),
            status: by_testid("compare-status"),
            edit_prompt: by_testid("compare-edit-prompt"),
            original: [
                by_testid("original-output"),
                by_testid("original-p-new"),
                by_testid("original-p-true"),
                by_testid("original-says"),
            ],
            edited: [
                by_testid("edited-output"),
                by_testid("edited-p-new"),
                by_testid("edited-p-true"),
                by_testid("edited-says"),
            ],
            rows: by_testid("compare-probe-rows"),
            summary: by_testid("compare-summary"),
            edit_row: by_testid("compare-row"),
            owner: RefCell::new(None),
            stash: RefCell::new(vec![]),
        }
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.button.set_disabled(!enabled);
    }

    /// The paraphrase and neighbourhood fields, as the probes of a request applied from the form.
    pub(crate) fn form_probes(&self) -> RequestProbes {
        let one = |s: String| {
            Some(s.trim().to_string())
                .filter(|s| !s.is_empty())
                .into_iter()
                .collect()
        };
        RequestProbes {
            paraphrase: one(self.paraphrase.value()),
            neighborhood: one(self.neighborhood.value()),
        }
    }

    /// Puts a request's first paraphrase and neighbourhood prompt into the fields (empty when it
    /// has none), as the probes of `subject`.
    pub(crate) fn fill_probes(&self, subject: &str, p: &RequestProbes) {
        self.paraphrase
            .set_value(p.paraphrase.first().map_or("", String::as_str));
        self.neighborhood
            .set_value(p.neighborhood.first().map_or("", String::as_str));
        *self.owner.borrow_mut() = Some(subject.trim().to_string());
        self.hint(subject.trim());
    }

    /// Keeps the paraphrase and neighbourhood fields about the form's subject: when the subject
    /// changes, the fields written for the old one are set aside (and given back if the form
    /// returns to it) and the new subject's are shown, empty with a hint when it has none. A
    /// paraphrase about another subject would make the comparison meaningless.
    pub(crate) fn follow_subject(&self, subject: &str) {
        let subject = subject.trim();
        let mut owner = self.owner.borrow_mut();
        match owner.as_deref() {
            None => *owner = Some(subject.to_string()),
            Some(o) if o == subject => {}
            Some(o) => {
                let mut stash = self.stash.borrow_mut();
                let (para, neigh) = (self.paraphrase.value(), self.neighborhood.value());
                stash.retain(|(s, _, _)| s != o);
                if !para.trim().is_empty() || !neigh.trim().is_empty() {
                    stash.push((o.to_string(), para, neigh));
                }
                let (para, neigh) = stash
                    .iter()
                    .find(|(s, _, _)| s == subject)
                    .map(|(_, p, n)| (p.clone(), n.clone()))
                    .unwrap_or_default();
                self.paraphrase.set_value(&para);
                self.neighborhood.set_value(&neigh);
                *owner = Some(subject.to_string());
            }
        }
        self.hint(subject);
    }

    /// Placeholders that say what belongs in the empty fields.
    fn hint(&self, subject: &str) {
        let about = if subject.is_empty() {
            "the subject".to_string()
        } else {
            format!("“{subject}”")
        };
        self.paraphrase.set_placeholder(&format!(
            "Optional: your prompt about {about} in other words"
        ));
        self.neighborhood.set_placeholder(&format!(
            "Optional: a prompt about another subject with the same true answer (not about {about})"
        ));
    }

    fn set_state(&self, state: &str, text: &str) {
        set_attr(&self.status, "data-state", state);
        self.status.set_inner_text(text);
    }
}

/// Wires the compare button.
pub(crate) fn wire(app: &Rc<App>) {
    let a = Rc::clone(app);
    dom::on(&app.compare.button, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { job(&a).await });
    });
}

/// The comparison as a job of its own.
pub(crate) async fn job(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    run(app).await;
    app.end();
}

/// The probes below the edit prompt: the paraphrase, the neighbourhood prompt, the user's own.
fn probes(view: &CompareView) -> Vec<ProbePrompt> {
    let p = view.form_probes();
    let mut out: Vec<ProbePrompt> = vec![];
    let mut add = |kind: &str, prompt: String| {
        out.push(ProbePrompt {
            kind: kind.into(),
            prompt,
        })
    };
    p.paraphrase.into_iter().for_each(|x| add("paraphrase", x));
    p.neighborhood
        .into_iter()
        .for_each(|x| add("neighborhood", x));
    view.own
        .value()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .for_each(|l| add("probe", l.to_string()));
    out
}

/// Runs the comparison (as part of the caller's job) and shows it: the form's request when the
/// engine can place it, else the ledger's last request.
pub(crate) async fn run(app: &App) {
    let view = &app.compare;
    view.set_state("running", "Comparing the original and the edited model…");
    let request = Request::Compare {
        request: app.edit.request().ok(),
        probes: probes(view),
    };
    match app.call(request).await {
        Ok(Reply::Compared { compared: Some(c) }) => {
            show(view, &c);
            let edited = app.model().is_some_and(|m| !m.entries.is_empty());
            view.summary.set_inner_text(&summary(&c, edited));
            view.set_state(
                "done",
                &format!(
                    "Compared {} prompts on both models in {:.1} s.",
                    c.rows.len(),
                    c.secs
                ),
            );
        }
        Ok(Reply::Compared { compared: None }) => {
            view.summary.set_inner_text("");
            view.set_state("idle", "Nothing to compare yet: type a valid edit above.");
        }
        Ok(other) => view.set_state("error", &format!("unexpected answer {other:?}")),
        Err(f) => {
            view.set_state("error", &f.message);
            app.status.show_error(&f.message);
        }
    }
}

/// A probability in words: "99.5 %", "less than 0.1 %".
fn percent(p: f32) -> String {
    if p < 0.0005 {
        "less than 0.1 %".into()
    } else {
        format!("{:.1} %", 100.0 * p)
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The comparison in plain words, leading with what a newcomer asks: does the model now say the
/// new target, and did anything else change? (The numbers stay in the table below.)
pub(crate) fn summary(c: &Compared, edited: bool) -> String {
    let Some(first) = c.rows.first() else {
        return String::new();
    };
    let target = c.request.target_new.trim();
    if !edited {
        return format!(
            "Nothing is edited yet: both sides are the same model. It gives “{target}” a \
             probability of {} after the prompt.",
            percent(first.edited.p_new)
        );
    }
    let mut out = format!(
        "After the prompt, the edited model gives “{target}” a probability of {} (the original: \
         {}), ",
        percent(first.edited.p_new),
        percent(first.original.p_new)
    );
    out.push_str(&if first.edited.says_new {
        format!("and it says “{target}” when it writes freely.")
    } else {
        format!(
            "but when it writes freely it does not say “{target}” yet: it writes “{}”.",
            first.edited.text.trim()
        )
    });
    let paraphrases: Vec<_> = c.rows.iter().filter(|r| r.kind == "paraphrase").collect();
    if !paraphrases.is_empty() {
        let says = paraphrases.iter().filter(|r| r.edited.says_new).count();
        out.push_str(&format!(
            " Asked in other words, it says “{target}” after {says} of {}.",
            count(paraphrases.len(), "paraphrase", "paraphrases"),
        ));
    }
    let others: Vec<_> = c
        .rows
        .iter()
        .filter(|r| r.kind == "neighborhood" || r.kind == "probe")
        .collect();
    if !others.is_empty() {
        let same = others
            .iter()
            .filter(|r| r.original.text == r.edited.text)
            .count();
        out.push_str(&if same == others.len() {
            match others.len() {
                1 => " The prompt about something else is unchanged.".to_string(),
                n => format!(" The {n} prompts about other things are unchanged."),
            }
        } else {
            format!(
                " Of {} about other things, {} unchanged and {} changed (see below).",
                count(others.len(), "prompt", "prompts"),
                same,
                others.len() - same
            )
        });
    }
    out
}

fn show(view: &CompareView, c: &Compared) {
    let r = &c.request;
    view.edit_prompt.set_inner_text(&format!(
        "{} → new {:?}, true {:?}",
        r.sentence(),
        r.target_new,
        r.target_true.as_deref().unwrap_or("?")
    ));
    let Some(first) = c.rows.first() else { return };
    show_cells(&view.original, &first.original);
    show_cells(&view.edited, &first.edited);
    let changed = first.original.text != first.edited.text;
    set_attr(
        &view.edit_row,
        "data-changed",
        if changed { "true" } else { "false" },
    );
    dom::clear(&view.rows);
    for row in c.rows.iter().skip(1) {
        let tr = child(&view.rows, "tr", Some("compare-row"), "");
        set_attr(&tr, "data-kind", &row.kind);
        let th = child(&tr, "th", None, "");
        set_attr(&th, "scope", "row");
        set_attr(
            &child(&th, "span", None, kind_label(&row.kind)),
            "class",
            "kind",
        );
        child(
            &th,
            "span",
            Some("compare-prompt"),
            &format!(" {}", row.prompt),
        );
        for (side, out) in [("original", &row.original), ("edited", &row.edited)] {
            let td = child(&tr, "td", None, "");
            set_attr(
                &child(&td, "div", Some(&format!("compare-{side}")), &out.text),
                "class",
                "out",
            );
            let probs = child(
                &td,
                "div",
                Some(&format!("compare-{side}-p")),
                &probs_text(out),
            );
            set_attr(&probs, "class", "probs");
        }
        let changed = row.original.text != row.edited.text;
        set_attr(&tr, "data-changed", if changed { "true" } else { "false" });
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "paraphrase" => "paraphrase",
        "neighborhood" => "neighbourhood",
        _ => "your probe",
    }
}

fn fmt_p(p: f32) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

fn probs_text(o: &ProbeOut) -> String {
    format!(
        "P(new) {} · P(true) {} · {}",
        fmt_p(o.p_new),
        o.p_true.map_or("–".into(), fmt_p),
        says_text(o)
    )
}

/// The realistic verdict in words: which target greedy decoding actually says.
fn says_text(o: &ProbeOut) -> &'static str {
    match (o.says_new, o.says_true) {
        (true, _) => "says the new target",
        (false, Some(true)) => "says the true target",
        _ => "says neither",
    }
}

fn show_cells(cells: &[HtmlElement; 4], o: &ProbeOut) {
    cells[0].set_text_content(Some(&o.text));
    cells[1].set_inner_text(&fmt_p(o.p_new));
    cells[2].set_inner_text(&o.p_true.map_or("–".into(), fmt_p));
    cells[3].set_inner_text(says_text(o));
    let wins = o.p_true.is_some_and(|t| o.p_new > t);
    set_attr(
        &cells[0],
        "data-new-wins",
        if wins { "true" } else { "false" },
    );
}
