//! The browser page's glue (wasm32 only): the only module that touches wasm-bindgen, web-sys
//! and js-sys. The engine below it never sees the browser.
//!
//! - `dom`: element lookup by `data-testid`, listeners, yielding to the event loop.
//! - `webgpu`: does the browser have WebGPU, and what is its adapter?
//! - `loader`: model bytes from `fetch` (with byte progress) or the file picker.
//! - `session`: the loaded model on the WebGPU or cpu backend.
//! - `status`: status line, progress bar, WebGPU notice, error banner.
//! - `load_ui`: the model panel (default model, file picker, backend choice) and the load flow.
//! - `generate_ui`: the generate panel (prompt, streamed tokens, top-5 next-token probabilities).
//!
//! Everything runs on the page's main thread: there is no Web Worker. Long work is cut into
//! steps with a yield to the event loop between them (every downloaded chunk, every generated
//! token, before and after decoding and uploading), so the page repaints and stays responsive.
//! The one step that cannot be cut is decoding the weights (`load_gguf` / `load_safetensors`,
//! a few seconds for the default model), which the page announces before it starts. A worker
//! would remove that pause, but the engine, its GPU device and the loaded weights would then
//! live in the worker behind a message protocol, which this page does not need yet.
//!
//! The page is built from panels that share one [`App`]: the model panel and the generate
//! panel now, the edit panel next. A panel that runs a job calls [`App::begin`], takes the
//! session out with [`App::take_session`], works on it (mutably if it edits weights), puts it
//! back and calls [`App::end`]; while a job runs, every control that starts another is disabled.

mod dom;
mod generate_ui;
mod load_ui;
mod loader;
pub(crate) mod session;
mod status;
mod webgpu;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use generate_ui::GenerateView;
use load_ui::{LoadControls, LoadSource};
use session::Session;
use status::{ModelState, StatusView};
use webgpu::WebGpuSupport;

/// Everything the page's panels share.
pub(crate) struct App {
    pub(crate) status: StatusView,
    pub(crate) loader: LoadControls,
    pub(crate) generate: GenerateView,
    /// The loaded model; `None` while none is loaded or while a job has taken it out.
    session: RefCell<Option<Session>>,
    /// A job (load, generate) is running.
    busy: Cell<bool>,
    /// What the browser offers, probed once at start-up.
    webgpu: RefCell<WebGpuSupport>,
}

impl App {
    /// Starts a job, or returns `false` when one is already running.
    pub(crate) fn begin(&self) -> bool {
        if self.busy.replace(true) {
            return false;
        }
        self.set_controls_enabled(false);
        true
    }

    /// Ends the job started by [`App::begin`].
    pub(crate) fn end(&self) {
        self.busy.set(false);
        self.set_controls_enabled(true);
    }

    fn set_controls_enabled(&self, enabled: bool) {
        self.loader.set_enabled(enabled);
        self.generate.set_enabled(enabled);
        let body = dom::document().body().expect("the page has a body");
        dom::set_attr(&body, "data-busy", if enabled { "false" } else { "true" });
    }

    /// Takes the session out for the duration of a job.
    pub(crate) fn take_session(&self) -> Option<Session> {
        self.session.borrow_mut().take()
    }

    /// Puts a session (back) in and shows it in the status line.
    pub(crate) fn put_session(&self, session: Session) {
        *self.session.borrow_mut() = Some(session);
        self.show_model();
    }

    /// A session is loaded and not taken out by a job.
    pub(crate) fn has_session(&self) -> bool {
        self.session.borrow().is_some()
    }

    /// Shows the session in the status line, or that none is loaded.
    pub(crate) fn show_model(&self) {
        match &*self.session.borrow() {
            Some(s) => self.status.set_model(
                ModelState::Ready,
                s.kind().id(),
                &[&format!("Ready: {}", s.model_line()), &s.device],
            ),
            None => self.status.set_model(
                ModelState::Empty,
                "",
                &["No model loaded: load the default model or pick a model file."],
            ),
        }
    }

    pub(crate) fn webgpu(&self) -> WebGpuSupport {
        self.webgpu.borrow().clone()
    }
}

/// The page's entry point (called by `src/bin/nse-web.rs`): finds the page's elements, wires
/// the controls, probes WebGPU and loads the default model.
pub fn start() {
    status::install_panic_hook();
    let app = Rc::new(App {
        status: StatusView::find(),
        loader: LoadControls::find(),
        generate: GenerateView::find(),
        session: RefCell::new(None),
        busy: Cell::new(false),
        webgpu: RefCell::new(WebGpuSupport::NoApi),
    });
    load_ui::wire(&app);
    generate_ui::wire(&app);
    wasm_bindgen_futures::spawn_local(async move {
        app.status
            .set_model(ModelState::Loading, "", &["Looking for WebGPU…"]);
        let support = webgpu::probe().await;
        if let Some(notice) = webgpu::missing_notice(&support) {
            app.status.show_notice(&notice);
            app.loader.webgpu_unavailable();
        }
        *app.webgpu.borrow_mut() = support;
        load_ui::load(&app, LoadSource::Default).await;
    });
}
