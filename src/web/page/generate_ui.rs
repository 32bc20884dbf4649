//! The generate panel: a prompt, greedy generation streamed into the page token by token, and
//! the top-5 probabilities of the first generated token.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::JsCast;
use web_sys::{HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlTextAreaElement};

use super::App;
use super::dom::{self, by_testid, create, set_attr};
use crate::session::protocol::{Reply, Request};
use crate::{Error, Result};

/// Largest number of new tokens the page accepts in one go.
const MAX_NEW_TOKENS: usize = 512;

/// Handles on the generate panel's elements.
pub(crate) struct GenerateView {
    prompt: HtmlTextAreaElement,
    max_tokens: HtmlInputElement,
    button: HtmlButtonElement,
    stop: HtmlButtonElement,
    echo: HtmlElement,
    output: HtmlElement,
    top5: HtmlElement,
    stats: HtmlElement,
    /// A generation is running (the stop button then cancels it).
    running: Cell<bool>,
    /// Its token budget.
    max: Cell<usize>,
    /// The ledger's head (its last entry's digest, or `root`) when the shown text was generated.
    made_with: RefCell<Option<String>>,
}

impl GenerateView {
    pub(crate) fn find() -> Self {
        GenerateView {
            prompt: by_testid("generate-prompt-input"),
            max_tokens: by_testid("max-tokens-input"),
            button: by_testid("generate-button"),
            stop: by_testid("stop-button"),
            echo: by_testid("prompt-echo"),
            output: by_testid("generate-output"),
            top5: by_testid("top5-list"),
            stats: by_testid("generate-stats"),
            running: Cell::new(false),
            max: Cell::new(0),
            made_with: RefCell::new(None),
        }
    }

    /// Enables the controls that start a job (the stop button is the opposite).
    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.button.set_disabled(!enabled);
        self.max_tokens.set_disabled(!enabled);
    }

    /// The max-tokens box as a number in `1..=MAX_NEW_TOKENS`.
    fn max_tokens(&self) -> Result<usize> {
        let text = self.max_tokens.value();
        match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_NEW_TOKENS).contains(&n) => Ok(n),
            _ => Err(Error::input(format!(
                "“{text}” new tokens: type a whole number from 1 to {MAX_NEW_TOKENS}"
            ))),
        }
    }

    fn begin(&self, prompt: &str, max_tokens: usize) {
        self.max.set(max_tokens);
        self.running.set(true);
        self.stop.set_disabled(false);
        self.echo.set_text_content(Some(prompt));
        self.output.set_text_content(Some(""));
        self.top5.set_inner_text("");
        self.stats.set_inner_text("Generating…");
        set_attr(&self.output, "data-state", "running");
    }

    fn end(&self, state: &str, stats: &str) {
        self.running.set(false);
        self.stop.set_disabled(true);
        self.stats.set_inner_text(stats);
        set_attr(&self.output, "data-state", state);
    }

    /// Shows the generation so far (an engine event).
    pub(crate) fn show_token(&self, text: &str, n: usize) {
        if !self.running.get() {
            return;
        }
        self.output.set_text_content(Some(text));
        self.stats.set_inner_text(&format!(
            "Generating… {n} of at most {} tokens",
            self.max.get()
        ));
    }

    /// Ends a generation that the engine's crash interrupted.
    pub(crate) fn abandon(&self) {
        if self.running.get() {
            self.end("error", "The engine stopped during this generation.");
        }
    }

    /// Marks the shown text as stale when the ledger has changed since it was generated (an
    /// edit, undo, removal or import): it came from a model that no longer exists.
    pub(crate) fn follow_ledger(&self, head: &str) {
        let stale = self
            .made_with
            .borrow()
            .as_deref()
            .is_some_and(|h| h != head);
        if stale && self.output.get_attribute("data-state").as_deref() == Some("done") {
            set_attr(&self.output, "data-state", "stale");
            self.stats.set_inner_text(
                "This text came from the model as it was before the ledger last changed (an edit, \
                 undo, removal or import); press Generate to see what the current model says.",
            );
        }
    }

    /// Rows of `token  probability` with a bar, most likely first.
    pub(crate) fn show_top5(&self, rows: &[(u32, String, f32)]) {
        self.top5.set_inner_text("");
        for (id, text, p) in rows {
            let p = *p;
            let li = create("li");
            set_attr(&li, "data-testid", "top5-row");
            set_attr(&li, "data-token-id", &id.to_string());
            let token = create("code");
            token.set_text_content(Some(&format!("{text:?}")));
            let bar = create("span");
            set_attr(&bar, "class", "bar");
            set_attr(&bar, "style", &format!("width: {:.1}%", 100.0 * p));
            let prob = create("span");
            set_attr(&prob, "class", "prob");
            prob.set_text_content(Some(&format!("{:.1}%", 100.0 * p)));
            for child in [&token, &bar, &prob] {
                let _ = li.append_child(child);
            }
            let _ = self.top5.append_child(&li);
        }
    }
}

/// Wires the generate button, Ctrl+Enter in the prompt, and the stop button.
pub(crate) fn wire(app: &Rc<App>) {
    let a = Rc::clone(app);
    dom::on(&app.generate.button, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { generate(&a).await });
    });
    let a = Rc::clone(app);
    dom::on(&app.generate.prompt, "keydown", move |e| {
        let ctrl_enter = e
            .dyn_ref::<web_sys::KeyboardEvent>()
            .is_some_and(|k| k.key() == "Enter" && (k.ctrl_key() || k.meta_key()));
        if ctrl_enter {
            e.prevent_default();
            let a = Rc::clone(&a);
            wasm_bindgen_futures::spawn_local(async move { generate(&a).await });
        }
    });
    let a = Rc::clone(app);
    dom::on(&app.generate.stop, "click", move |_| {
        if a.generate.running.get() {
            a.send(Request::Cancel);
        }
    });
}

/// Generates from the prompt box with the loaded model; the engine posts each token as it
/// arrives.
async fn generate(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    let view = &app.generate;
    let prompt = view.prompt.value();
    let max_tokens = match view.max_tokens() {
        Ok(n) => n,
        Err(e) => {
            app.status.show_error(&format!("Generation failed: {e}"));
            app.end();
            return;
        }
    };
    view.begin(&prompt, max_tokens);
    let head = app.model().map(|m| m.head);
    match app.call(Request::Generate { prompt, max_tokens }).await {
        Ok(Reply::Generated {
            tokens,
            stopped_at_eos,
            cancelled,
            secs,
            backend,
        }) => {
            let why = if cancelled {
                " (stopped)"
            } else if stopped_at_eos {
                " (the model ended its answer)"
            } else {
                ""
            };
            let rate = tokens as f64 / secs.max(1e-3);
            *view.made_with.borrow_mut() = head;
            view.end(
                "done",
                &format!(
                    "{tokens} tokens in {secs:.1} s ({rate:.2} tokens/s) on {}{why}",
                    backend.id()
                ),
            );
        }
        Ok(other) => {
            view.end("error", "");
            app.status
                .show_error(&format!("Generation failed: unexpected answer {other:?}"));
        }
        Err(f) => {
            view.end("error", "");
            app.status.show_error(&f.message);
            if f.code == "DeviceLost" {
                app.show_model();
            }
        }
    }
    app.end();
}
