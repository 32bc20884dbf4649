//! The browser page's glue (wasm32 only): the only module that touches wasm-bindgen, web-sys
//! and js-sys. The engine below it never sees the browser.
//!
//! - `dom`: element lookup by `data-testid`, listeners, downloads, yielding to the event loop.
//! - `webgpu`: does the browser have WebGPU, and what is its adapter?
//! - `loader`: model bytes from `fetch` (kept in the Cache API) or the file picker.
//! - [`storage`]: IndexedDB (the ledger, the covariance statistics).
//! - `session`: the page's side of the library's [`crate::session::Session`] (the model on the
//!   WebGPU or cpu backend with its editing state): the device line, the pause/cancel hook.
//! - `status`: status line, progress bar, WebGPU notice, error banner.
//! - `load_ui`: the model panel and the load flow (which also restores the saved ledger).
//! - [`cov`]: the covariance statistic: stored, shipped, or computed in the page.
//! - `edit_ui`, `apply_flow`: the edit form and the jobs that apply edits and save the ledger.
//! - `compare_ui`: the original and the edited model side by side.
//! - `ledger_ui`, `neuron_view`, `patch_ui`: the ledger, undo/remove, the neurons that moved,
//!   patch export/import and model export.
//! - `bench_ui`: the sequential benchmark with its live plot.
//! - `generate_ui`: the generate panel (prompt, streamed tokens, top-5 next-token probabilities).
//!
//! The engine work goes through the library's [`crate::session::Session`]; this module is the
//! DOM, the browser's storage and the covariance's sources. Everything still runs on the page's
//! main thread (moving the session into a Web Worker is issue 11's next step). Long work is cut
//! into steps with a yield to the event loop between them (every downloaded chunk, and through
//! the session's pause hook every generated token, z step, round and layer of an edit, probe and
//! covariance window), so the page repaints and its stop buttons are heard. On the WebGPU backend
//! the arithmetic runs in the GPU process and the main thread mostly waits; on the cpu backend
//! one step (a z step, a layer's f64 solve) runs for up to a few seconds without a repaint.
//! Decoding the weights (a few seconds) is the other pause, announced before it starts.
//!
//! The page is built from panels that share one [`App`]. A panel that runs a job calls
//! [`App::begin`], takes the session out with [`App::take_session`], works on it (mutably if
//! it edits weights), puts it back and calls [`App::end`]; while a job runs, every control that
//! starts another is disabled.

mod apply_flow;
mod bench_ui;
mod compare_ui;
pub mod cov;
mod dom;
mod edit_ui;
mod generate_ui;
mod ledger_ui;
mod load_ui;
mod loader;
mod neuron_view;
mod patch_ui;
pub(crate) mod session;
mod status;
pub mod storage;
mod webgpu;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bench_ui::BenchView;
use compare_ui::CompareView;
use edit_ui::EditView;
use generate_ui::GenerateView;
use ledger_ui::LedgerView;
use load_ui::{LoadControls, LoadSource};
use patch_ui::PatchView;
use session::Session;
use status::{ModelState, StatusView};
use storage::Db;
use webgpu::WebGpuSupport;

/// Everything the page's panels share.
pub(crate) struct App {
    pub(crate) status: StatusView,
    pub(crate) loader: LoadControls,
    pub(crate) generate: GenerateView,
    pub(crate) edit: EditView,
    pub(crate) compare: CompareView,
    pub(crate) ledger: LedgerView,
    pub(crate) patch: PatchView,
    pub(crate) bench: BenchView,
    /// The page's IndexedDB, `None` where the browser offers none.
    db: RefCell<Option<Rc<Db>>>,
    /// The loaded model; `None` while none is loaded or while a job has taken it out.
    session: RefCell<Option<Session>>,
    /// The loaded model's bytes came from the browser's cache (no download).
    from_cache: Cell<bool>,
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
        session::clear_cancel();
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
        let (loaded, editable, entries) = self
            .with_session(|s| (true, s.editing.is_ok(), s.n_entries()))
            .unwrap_or((false, false, 0));
        self.edit.set_enabled(enabled && editable);
        self.compare.set_enabled(enabled && loaded);
        self.ledger.set_enabled(enabled && editable);
        self.patch.set_enabled(enabled && loaded, editable, entries);
        self.bench.set_enabled(enabled, editable);
        self.status.cancel.set_disabled(enabled);
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

    /// Runs `f` on the session, unless none is loaded or a job has taken it out.
    pub(crate) fn with_session<R>(&self, f: impl FnOnce(&Session) -> R) -> Option<R> {
        self.session.borrow().as_ref().map(f)
    }

    /// The page's IndexedDB, if the browser has one.
    pub(crate) fn db(&self) -> Option<Rc<Db>> {
        self.db.borrow().clone()
    }

    /// Validates the edit form against the loaded model (tokens, targets) when one is idle.
    pub(crate) fn validate_form(&self) {
        self.compare.follow_subject(&self.edit.subject());
        let session = self.session.borrow();
        self.edit.validate(session.as_ref());
    }

    /// Shows the session in the status line, or that none is loaded.
    pub(crate) fn show_model(&self) {
        match &*self.session.borrow() {
            Some(s) => {
                let bytes = if self.from_cache.get() {
                    "Model bytes: from cache (this browser's Cache Storage; nothing was downloaded)"
                } else {
                    "Model bytes: downloaded or read from a file"
                };
                self.status.set_model(
                    ModelState::Ready,
                    session::BackendKind::of(s).id(),
                    &[&format!("Ready: {}", s.model_line()), &s.device, bytes],
                );
                self.edit
                    .show_availability(s.editing.as_ref().err().map(String::as_str));
            }
            None => self.status.set_model(
                ModelState::Empty,
                "",
                &["No model loaded: load the default model or pick a model file."],
            ),
        }
    }

    /// Records whether the model being loaded came from the browser's cache.
    pub(crate) fn set_from_cache(&self, cached: bool) {
        self.from_cache.set(cached);
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
        edit: EditView::find(),
        compare: CompareView::find(),
        ledger: LedgerView::find(),
        patch: PatchView::find(),
        bench: BenchView::find(),
        db: RefCell::new(None),
        session: RefCell::new(None),
        from_cache: Cell::new(false),
        busy: Cell::new(false),
        webgpu: RefCell::new(WebGpuSupport::NoApi),
    });
    dom::on(&app.status.cancel, "click", |_| session::request_cancel());
    load_ui::wire(&app);
    generate_ui::wire(&app);
    edit_ui::wire(&app);
    compare_ui::wire(&app);
    ledger_ui::wire(&app);
    patch_ui::wire(&app);
    bench_ui::wire(&app);
    app.validate_form();
    wasm_bindgen_futures::spawn_local(async move {
        match Db::open(storage::DB_NAME).await {
            Ok(db) => *app.db.borrow_mut() = Some(Rc::new(db)),
            Err(e) => {
                app.ledger
                    .set_saved(&format!("Edits cannot be saved in this browser: {e}"));
                web_sys::console::warn_1(&e.to_string().into());
            }
        }
        app.status
            .set_model(ModelState::Loading, "", &["Looking for WebGPU…"]);
        let support = webgpu::probe().await;
        if let Some(notice) = webgpu::missing_notice(&support) {
            app.status.show_notice(&notice);
            app.loader.webgpu_unavailable();
        }
        *app.webgpu.borrow_mut() = support;
        if dom::query_param("backend").as_deref() == Some("cpu") {
            app.loader.select_backend(session::BackendKind::Cpu);
        }
        load_ui::load(&app, LoadSource::Default).await;
    });
}
