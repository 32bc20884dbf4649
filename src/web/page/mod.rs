//! The page's role, on the main thread: the DOM and nothing else. The engine runs in a Web
//! Worker ([`client`] starts it and talks to it); the panels read their controls, post a request
//! and show the events and the outcome that come back.
//!
//! - `dom`: element lookup by `data-testid`, listeners, downloads.
//! - `client`: the worker, its requests and its events.
//! - `status`: status line, progress bar, WebGPU notice, error banner.
//! - `load_ui`: the model panel and the load flow.
//! - `edit_ui`: the edit form (checked by the worker as you type) and the dataset import.
//! - `compare_ui`: the original and the edited model side by side.
//! - `ledger_ui`, `neuron_view`, `patch_ui`: the ledger, undo/remove, the neurons that moved,
//!   patch export/import and model export.
//! - `bench_ui`: the sequential benchmark with its live plot.
//! - `generate_ui`: the generate panel (prompt, streamed tokens, top-5 next-token probabilities).
//!
//! The page is built from panels that share one [`App`]. A panel that runs a job calls
//! [`App::begin`], posts its request(s) with [`App::call`] and calls [`App::end`]; while a job
//! runs, every control that starts another is disabled (the worker refuses a second job too).
//! Nothing the engine does runs on this thread, so the page repaints and takes input throughout.

mod bench_ui;
mod compare_ui;
mod dom;
mod edit_ui;
mod generate_ui;
mod ledger_ui;
mod load_ui;
mod neuron_view;
mod patch_ui;
mod share;
mod status;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::Array;

use crate::web::client::{self, Client};
use bench_ui::BenchView;
use compare_ui::CompareView;
use edit_ui::EditView;
use generate_ui::GenerateView;
use ledger_ui::LedgerView;
use load_ui::{LoadControls, LoadSpec};
use patch_ui::PatchView;
use status::{ModelState, StatusView};

use crate::session::protocol::{Backend, Event, ModelView, Outcome, Request, Snapshot};

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
    /// The engine's worker.
    client: Client,
    /// The loaded model and its ledger, as the worker last reported them.
    snapshot: RefCell<Snapshot>,
    /// A job (load, generate, edit…) is running.
    busy: Cell<bool>,
    /// The last model loaded (or being loaded), to load again after a restart of the engine.
    last_load: RefCell<Option<LoadSpec>>,
}

impl App {
    /// Starts a job, or returns `false` when one is already running (or the engine crashed).
    pub(crate) fn begin(&self) -> bool {
        if self.client.crashed() || self.busy.replace(true) {
            return false;
        }
        self.status.clear_error();
        self.set_controls_enabled(false);
        true
    }

    /// Ends the job started by [`App::begin`]; the form is checked again (the model may have
    /// changed, and checks wait while a job runs).
    pub(crate) fn end(self: &Rc<Self>) {
        self.busy.set(false);
        self.set_controls_enabled(!self.client.crashed());
        self.validate_form();
    }

    /// Posts a request to the engine and waits for its outcome (the events on the way are shown
    /// as they come).
    pub(crate) async fn call(&self, request: Request) -> Outcome {
        self.client.call(request, None).await.0
    }

    /// [`App::call`] with files or bytes attached, returning what the engine attached.
    pub(crate) async fn call_with(&self, request: Request, attach: Array) -> (Outcome, Array) {
        self.client.call(request, Some(attach)).await
    }

    /// Posts a request answered at once (cancel, stop) without waiting.
    pub(crate) fn send(&self, request: Request) {
        self.client.send(request);
    }

    fn set_controls_enabled(&self, enabled: bool) {
        let (loaded, editable, entries) = self
            .model()
            .map(|m| (true, m.not_editable.is_none(), m.entries.len()))
            .unwrap_or((false, false, 0));
        self.loader.set_enabled(enabled);
        self.generate.set_enabled(enabled && loaded);
        self.edit
            .set_enabled(enabled && editable, enabled && loaded);
        self.compare.set_enabled(enabled && loaded);
        self.ledger.set_enabled(enabled && editable);
        self.patch.set_enabled(enabled && loaded, editable, entries);
        self.bench.set_enabled(enabled, editable);
        self.status
            .cancel
            .set_disabled(enabled || self.client.crashed());
        let body = dom::document().body().expect("the page has a body");
        dom::set_attr(&body, "data-busy", if enabled { "false" } else { "true" });
    }

    /// The loaded model as the worker last reported it.
    pub(crate) fn model(&self) -> Option<ModelView> {
        self.snapshot.borrow().model.clone()
    }

    /// Checks the edit form (its own rules at once, then the loaded model's tokenizer in the
    /// worker) and keeps the comparison's probes about its subject.
    pub(crate) fn validate_form(self: &Rc<Self>) {
        self.compare.follow_subject(&self.edit.subject());
        edit_ui::validate(self);
    }

    /// Shows the model in the status line, or that none is loaded.
    pub(crate) fn show_model(&self) {
        if self.client.crashed() {
            // The status line says to restart the engine until it is.
            return;
        }
        match self.model() {
            Some(m) => {
                let bytes = if m.from_cache {
                    "Model bytes: from cache (this browser's Cache Storage; nothing was downloaded)"
                } else {
                    "Model bytes: downloaded or read from a file"
                };
                let mib = |b: u64| b as f64 / 1048576.0;
                let weights: Vec<String> = m
                    .weight_bytes
                    .iter()
                    .map(|(t, b)| format!("{t} {:.1} MiB", mib(*b)))
                    .collect();
                let mut memory = format!(
                    "Weights in memory: {:.0} MiB ({})",
                    mib(m.weight_bytes.iter().map(|(_, b)| b).sum()),
                    weights.join(", ")
                );
                if let Some(w) = m.wasm_memory_bytes {
                    memory += &format!(" · engine memory so far: {:.0} MiB", mib(w));
                    self.status.set_memory(w);
                }
                self.status.set_model(
                    ModelState::Ready,
                    m.backend.id(),
                    &[&format!("Ready: {}", m.line), &m.device, &memory, bytes],
                );
                self.edit.show_availability(m.not_editable.as_deref());
                self.edit
                    .show_hparams(m.hparams.as_deref(), m.entries.len());
            }
            None => {
                self.status.set_model(
                    ModelState::Empty,
                    "",
                    &["No model loaded: load the default model or pick a model file."],
                );
                self.edit.show_hparams(None, 0);
            }
        }
    }

    /// Starts the engine (in its worker, or on this thread with `?engine=main`) from the files
    /// Trunk preloads for the page, found through their `<link>`s.
    async fn start_engine(&self) -> crate::Result<crate::session::protocol::WebGpuSupport> {
        let doc = dom::document();
        let base = doc
            .base_uri()
            .ok()
            .flatten()
            .unwrap_or_else(|| dom::window().location().href().unwrap_or_default());
        let href = |selector: &str, what: &str| -> crate::Result<String> {
            let href = doc
                .query_selector(selector)
                .ok()
                .flatten()
                .and_then(|l| l.get_attribute("href"))
                .ok_or_else(|| {
                    crate::Error::input(format!(
                        "the page has no {what} to start its engine from (a <link> {selector}); \
                         rebuild it with `trunk build --release`"
                    ))
                })?;
            web_sys::Url::new_with_base(&href, &base)
                .map(|u| u.href())
                .map_err(|e| dom::js_error("a bad script address", e))
        };
        let how = client::Start {
            in_page: dom::query_param("engine").as_deref() == Some("main"),
            glue: href("link[rel=modulepreload][href$='.js']", "script")?,
            wasm: Some(href("link[rel=preload][href$='.wasm']", "wasm binary")?),
            base,
        };
        let support = self.client.start(&how).await?;
        if dom::query_param("expose_engine").as_deref() == Some("1") {
            // Test hook: the e2e test posts raw messages (another version, an unknown kind, a
            // second job) to the worker and reads its answers.
            if let Some(w) = self.client.worker() {
                let _ = js_sys::Reflect::set(&dom::window(), &"nseEngine".into(), &w);
            }
        }
        Ok(support)
    }

    /// Shows one of the engine's events.
    fn on_event(self: &Rc<Self>, event: Event) {
        match event {
            Event::Progress { fraction, label } => self.status.progress(fraction, &label),
            Event::Stage { id, state, text } => self.edit.stage(&id, &state, &text),
            Event::ClearStages => self.edit.reset_stages(),
            Event::Status {
                state,
                backend,
                lines,
            } => {
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                self.status
                    .set_model(ModelState::from_id(&state), &backend, &lines);
            }
            Event::Snapshot { snapshot } => {
                *self.snapshot.borrow_mut() = snapshot;
                // The engine's memory as of this snapshot (after each job), for the benchmarks.
                if let Some(w) = self.model().and_then(|m| m.wasm_memory_bytes) {
                    self.status.set_memory(w);
                }
                ledger_ui::render(self);
                let (hparams, entries) = self
                    .model()
                    .map_or((None, 0), |m| (m.hparams, m.entries.len()));
                self.edit.show_hparams(hparams.as_deref(), entries);
            }
            Event::Saved { text } => self.ledger.set_saved(&text),
            Event::Covariance { text } => self.edit.cov_status.set_inner_text(&text),
            Event::Token { text, n } => self.generate.show_token(&text, n),
            Event::Top5 { rows } => self.generate.show_top5(&rows),
            Event::FillForm {
                request,
                probes,
                method,
            } => {
                // A shared link's edit stays in the form (the restored ledger is shown below).
                if !self.edit.shared.get() {
                    self.edit.fill_request(&request);
                    if let Some(m) = method {
                        self.edit.method.set_value(m.name());
                    }
                    self.compare.fill_probes(&request.subject, &probes);
                }
            }
            Event::BenchStatus { text } => self.bench.set_status(&text),
            Event::BenchPoint { edits, rates } => self.bench.add_point(edits, rates),
            Event::Warning { text } => self.status.show_error(&text),
            Event::Crashed { message } => self.crashed(&message),
        }
    }

    /// The engine crashed: say so, keep the page usable, offer a restart.
    fn crashed(self: &Rc<Self>, message: &str) {
        self.client.stop("it crashed");
        *self.snapshot.borrow_mut() = Snapshot::default();
        ledger_ui::render(self);
        self.status.show_crash(message);
        self.status.set_model(
            ModelState::Empty,
            "",
            &["The engine stopped: press “Restart engine” to load the model again."],
        );
        self.generate.abandon();
        self.set_controls_enabled(false);
    }

    /// Starts a new engine, loads the last model again (from the browser's cache) and restores
    /// the ledger saved in IndexedDB.
    async fn restart(self: &Rc<Self>) {
        self.status.hide_crash();
        self.status.clear_error();
        self.busy.set(false);
        self.status
            .set_model(ModelState::Loading, "", &["Restarting the engine…"]);
        match self.start_engine().await {
            Ok(_) => {}
            Err(e) => {
                self.status
                    .show_error(&format!("The engine did not start: {e}"));
                return;
            }
        }
        let last = self.last_load.borrow().clone();
        match last {
            Some(spec) => load_ui::load(self, spec).await,
            None => {
                self.show_model();
                self.end();
            }
        }
    }
}

/// The page's entry point: finds the page's elements, wires the controls, starts the engine's
/// worker and loads the default model.
pub(crate) fn start() {
    status::install_panic_hook();
    let app = Rc::new_cyclic(|weak: &std::rc::Weak<App>| {
        let weak = weak.clone();
        let sink: client::EventSink = Rc::new(move |event| {
            if let Some(app) = weak.upgrade() {
                app.on_event(event);
            }
        });
        App {
            status: StatusView::find(),
            loader: LoadControls::find(),
            generate: GenerateView::find(),
            edit: EditView::find(),
            compare: CompareView::find(),
            ledger: LedgerView::find(),
            patch: PatchView::find(),
            bench: BenchView::find(),
            client: Client::new(sink),
            snapshot: RefCell::new(Snapshot::default()),
            busy: Cell::new(true),
            last_load: RefCell::new(None),
        }
    });
    let a = Rc::clone(&app);
    dom::on(&app.status.cancel, "click", move |_| {
        a.send(Request::Cancel)
    });
    let a = Rc::clone(&app);
    dom::on(&app.status.restart, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { a.restart().await });
    });
    load_ui::wire(&app);
    generate_ui::wire(&app);
    edit_ui::wire(&app);
    compare_ui::wire(&app);
    ledger_ui::wire(&app);
    patch_ui::wire(&app);
    bench_ui::wire(&app);
    share::wire(&app);
    let shared = share::open_shared(&app);
    app.edit.shared.set(shared);
    app.set_controls_enabled(false);
    app.validate_form();
    wasm_bindgen_futures::spawn_local(async move {
        app.status
            .set_model(ModelState::Loading, "", &["Starting the engine…"]);
        let support = match app.start_engine().await {
            Ok(s) => s,
            Err(e) => {
                app.status
                    .show_error(&format!("The engine did not start: {e}"));
                app.status.set_model(
                    ModelState::Empty,
                    "",
                    &["The engine did not start: reload the page."],
                );
                return;
            }
        };
        // The page has booted (its own layout, script and wasm compile are done) and the engine
        // runs in its worker: from here on the main thread only shows what the engine reports.
        // The e2e test bounds its tasks from this mark on.
        if let Some(perf) = dom::window().performance() {
            let _ = perf.mark("nse-engine-started");
        }
        // A browser whose window has no WebGPU API has none in its workers either (and a page
        // that hides it, as the e2e test does, means it).
        let window_gpu = js_sys::Reflect::get(&dom::window().navigator(), &"gpu".into())
            .map(|g| !g.is_undefined() && !g.is_null())
            .unwrap_or(false);
        let support = if window_gpu {
            support
        } else {
            crate::session::protocol::WebGpuSupport::NoApi
        };
        let asked = dom::query_param("backend");
        if let Some(notice) = status::missing_notice(&support) {
            app.status.show_notice(&notice);
            app.loader.webgpu_unavailable();
        } else if let Some(notice) = status::software_notice(&support) {
            // A software adapter (SwiftShader, llvmpipe) is far slower than the page's own cpu
            // backend: that one is the default there, unless the address asks for WebGPU.
            if asked.as_deref() != Some("webgpu") {
                app.status.show_notice(&notice);
                app.loader.select_backend(Backend::Cpu);
            }
        }
        match asked.as_deref() {
            Some("cpu") => app.loader.select_backend(Backend::Cpu),
            Some("webgpu") if status::missing_notice(&support).is_none() => {
                app.loader.select_backend(Backend::Webgpu)
            }
            _ => {}
        }
        if dom::query_param("test_panic").as_deref() == Some("edit") {
            app.send(Request::ArmPanic);
        }
        app.busy.set(false);
        // A shared link names its model (`?model=`); the default model otherwise.
        let backend = app.loader.backend();
        let spec = match dom::query_param("model").filter(|u| !u.trim().is_empty()) {
            Some(url) => LoadSpec::from_url(&url, backend),
            None => LoadSpec::default_model(backend),
        };
        load_ui::load(&app, spec).await;
    });
}
