//! The generate panel: a prompt, greedy generation streamed into the page token by token, and
//! the top-5 probabilities of the first generated token.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::JsCast;
use web_sys::{HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlTextAreaElement};

use super::App;
use super::dom::{self, by_testid, create, now_ms, set_attr};
use super::session::{self, BackendKind, Session};
use crate::model::Tokenizer;
use crate::model::generate::Sampling;
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
    /// The ledger's head (its last entry's digest, or `root`) when the shown text was generated.
    made_with: RefCell<Option<String>>,
}

/// How a generation ended.
struct Summary {
    tokens: usize,
    stopped_at_eos: bool,
    cancelled: bool,
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

    fn begin(&self, prompt: &str) {
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
    fn show_top5(&self, tok: &Tokenizer, rows: &[(u32, f32)]) {
        self.top5.set_inner_text("");
        for &(id, p) in rows {
            let li = create("li");
            set_attr(&li, "data-testid", "top5-row");
            set_attr(&li, "data-token-id", &id.to_string());
            let token = create("code");
            token.set_text_content(Some(&format!(
                "{:?}",
                tok.token_str(id).unwrap_or_default()
            )));
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
            session::request_cancel();
        }
    });
}

/// Generates from the prompt box with the loaded model.
async fn generate(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    let view = &app.generate;
    let Some(session) = app.take_session() else {
        app.status
            .show_error("No model is loaded yet: wait for it to load, or load one above.");
        app.end();
        return;
    };
    let prompt = view.prompt.value();
    view.begin(&prompt);
    let t0 = now_ms();
    let result = match view.max_tokens() {
        Ok(max) => run(&session, &prompt, max, view).await,
        Err(e) => Err(e),
    };
    let secs = (now_ms() - t0) / 1000.0;
    match result {
        Ok(s) => {
            let why = if s.cancelled {
                " (stopped)"
            } else if s.stopped_at_eos {
                " (the model ended its answer)"
            } else {
                ""
            };
            let rate = s.tokens as f64 / secs.max(1e-3);
            *view.made_with.borrow_mut() = Some(ledger_head(&session));
            view.end(
                "done",
                &format!(
                    "{} tokens in {secs:.1} s ({rate:.2} tokens/s) on {}{why}",
                    s.tokens,
                    BackendKind::of(&session).id()
                ),
            );
            app.put_session(session);
        }
        Err(e) => {
            view.end("error", "");
            app.status.show_error(&format!("Generation failed: {e}"));
            if matches!(e, Error::DeviceLost(_)) {
                // The weights were on the lost device: nothing is left to run.
                session.release();
                app.show_model();
            } else {
                app.put_session(session);
            }
        }
    }
    app.end();
}

/// Greedy decoding with the session (the library's decoder), showing each token as it arrives;
/// the session's pause hook yields to the event loop between tokens, so the page repaints even on
/// the cpu backend, and the stop button is heard there.
async fn run(
    session: &Session,
    prompt: &str,
    max_tokens: usize,
    view: &GenerateView,
) -> Result<Summary> {
    dom::let_paint().await;
    let tok = &session.tokenizer;
    let eos = session.config().eos_id;
    let g = session
        .generate(prompt, max_tokens, Sampling::Greedy, |g| {
            if g.ids.len() == 1 {
                view.show_top5(tok, &g.top5_first);
            }
            let text: Vec<u32> = g.ids.iter().copied().filter(|&t| Some(t) != eos).collect();
            if let Ok(text) = tok.decode(&text) {
                view.output.set_text_content(Some(&text));
            }
            view.stats.set_inner_text(&format!(
                "Generating… {} of at most {max_tokens} tokens",
                g.ids.len()
            ));
        })
        .await?;
    Ok(Summary {
        tokens: g.ids.len(),
        stopped_at_eos: g.stopped_at_eos,
        cancelled: g.cancelled,
    })
}

/// The ledger's head: its last entry's digest, or `root` for the original model.
pub(crate) fn ledger_head(s: &Session) -> String {
    s.ledger()
        .last()
        .map_or_else(|| crate::edit::ROOT_DIGEST.to_string(), |e| e.digest())
}
