//! The model panel: the default model, the file picker, the backend choice, and the load flow
//! (read bytes → decode → upload) with its progress bar.

use std::rc::Rc;

use web_sys::{File, HtmlButtonElement, HtmlInputElement, HtmlOptionElement, HtmlSelectElement};

use super::dom::{self, by_testid};
use super::loader::{self, Picked};
use super::session::{self, BackendKind, Session, fmt_bytes};
use super::status::ModelState;
use super::webgpu::WebGpuSupport;
use super::{App, compare_ui, dom::now_ms, ledger_ui};
use crate::Result;
use crate::gpu::GpuBackend;
use crate::model::LoadedModel;

/// Where the page fetches the default model from, relative to the page (Trunk copies
/// `www/models/` into `dist/models/`).
pub(crate) const DEFAULT_MODEL_URL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Shares of the progress bar: reading the bytes, then decoding, then uploading.
const READ_SHARE: f64 = 0.75;
const DECODE_DONE: f64 = 0.85;

/// What to load.
pub(crate) enum LoadSource {
    /// [`DEFAULT_MODEL_URL`].
    Default,
    /// Files from the picker.
    Picked(Vec<File>),
}

/// Handles on the model panel's controls.
pub(crate) struct LoadControls {
    default_button: HtmlButtonElement,
    file_input: HtmlInputElement,
    backend: HtmlSelectElement,
}

impl LoadControls {
    pub(crate) fn find() -> Self {
        LoadControls {
            default_button: by_testid("load-default-button"),
            file_input: by_testid("model-file-input"),
            backend: by_testid("backend-select"),
        }
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.default_button.set_disabled(!enabled);
        self.file_input.set_disabled(!enabled);
        self.backend.set_disabled(!enabled);
    }

    /// Once a model is loaded, loading one is no longer the page's main action: the button turns
    /// secondary (the first load leaves it primary until it succeeds).
    pub(crate) fn model_loaded(&self) {
        dom::set_attr(&self.default_button, "class", "secondary");
    }

    /// The backend chosen for the next load.
    pub(crate) fn backend(&self) -> BackendKind {
        BackendKind::from_id(&self.backend.value())
    }

    /// Selects a backend for the next load.
    pub(crate) fn select_backend(&self, kind: BackendKind) {
        self.backend.set_value(kind.id());
    }

    /// Selects the cpu backend and disables the WebGPU option.
    pub(crate) fn webgpu_unavailable(&self) {
        self.backend.set_value(BackendKind::Cpu.id());
        by_testid::<HtmlOptionElement>("backend-option-webgpu").set_disabled(true);
    }
}

/// Wires the model panel's controls.
pub(crate) fn wire(app: &Rc<App>) {
    let a = Rc::clone(app);
    dom::on(&app.loader.default_button, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { load(&a, LoadSource::Default).await });
    });
    let a = Rc::clone(app);
    dom::on(&app.loader.file_input, "change", move |_| {
        let input = &a.loader.file_input;
        let list = input.files();
        let files: Vec<File> = list
            .map(|l| (0..l.length()).filter_map(|i| l.get(i)).collect())
            .unwrap_or_default();
        // Clearing the value lets the same file be picked again after a failure.
        input.set_value("");
        if files.is_empty() {
            return;
        }
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { load(&a, LoadSource::Picked(files)).await });
    });
}

/// Loads a model and makes it the session, or shows why not.
///
/// The previous model stays loaded until the new one has decoded, so a bad file leaves the page
/// as it was; after that the old model is released first (two models rarely fit a GPU at once).
pub(crate) async fn load(app: &Rc<App>, source: LoadSource) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    let kind = app.loader.backend();
    let t0 = now_ms();
    match load_session(app, source, kind).await {
        Ok(mut session) => {
            let secs = (now_ms() - t0) / 1000.0;
            app.status
                .progress(Some(1.0), &format!("Loaded in {secs:.1} s."));
            // The ledger saved for this model (if any) is replayed before the page is handed over.
            ledger_ui::restore(app, &mut session).await;
            ledger_ui::render(app, &session);
            show_last_edit(app, &session);
            app.loader.model_loaded();
            app.edit.validate(Some(&session));
            let edited = session.n_entries() > 0;
            app.put_session(session);
            app.end();
            // The model is ready; the restored edit is then compared as a job of its own.
            if edited {
                compare_ui::job(app).await;
            }
            return;
        }
        Err(e) => {
            app.status
                .show_error(&format!("Could not load the model: {e}"));
            app.show_model();
            let label = if app.has_session() {
                "The last load failed; the model above is still loaded."
            } else {
                "The last load failed."
            };
            app.status.progress(Some(0.0), label);
        }
    }
    app.end();
}

async fn load_session(app: &App, source: LoadSource, kind: BackendKind) -> Result<Session> {
    let status = &app.status;
    let loading = |what: &str| status.set_model(ModelState::Loading, kind.id(), &[what]);
    app.set_from_cache(false);
    let loaded = match source {
        LoadSource::Default => {
            loading(&format!("Loading {DEFAULT_MODEL_URL}…"));
            let (bytes, cached) = loader::fetch_cached(DEFAULT_MODEL_URL, |done, total, cached| {
                let what = if cached {
                    "Reading the default model from cache"
                } else {
                    "Downloading the default model"
                };
                show_read(app, what, done, total)
            })
            .await?;
            app.set_from_cache(cached);
            decode(app, || {
                crate::model::load::load_gguf(&bytes, default_model_name())
            })
            .await?
        }
        LoadSource::Picked(files) => {
            let picked = Picked::classify(files)?;
            loading(&format!("Loading {}…", picked.name()));
            let total: u64 = picked.files().iter().map(|f| f.size() as u64).sum();
            let mut bytes = Vec::new();
            let mut before = 0;
            for file in picked.files() {
                let what = format!("Reading {}", file.name());
                let data = loader::read_file(file, |done, _| {
                    show_read(app, &what, before + done, Some(total))
                })
                .await?;
                before += data.len() as u64;
                bytes.push(data);
            }
            decode(app, || loader::decode_picked(&picked, &bytes)).await?
        }
    };
    let cap = max_binding();
    if let (BackendKind::WebGpu, Some(cap)) = (kind, cap) {
        session::check_binding_cap(&loaded.weights, cap)?;
    }
    if let Some(old) = app.take_session() {
        old.release();
    }
    loading(&format!("Loading {}…", loaded.source.name));
    let weights_bytes = 4 * loaded.config.n_params() as u64;
    match kind {
        BackendKind::Cpu => session::on_cpu(loaded),
        BackendKind::WebGpu => {
            status.progress(Some(DECODE_DONE), "Opening the WebGPU device…");
            let gpu = GpuBackend::new().await?;
            status.progress(
                Some(DECODE_DONE + 0.05),
                &format!(
                    "Uploading {} of weights to the GPU…",
                    fmt_bytes(weights_bytes)
                ),
            );
            dom::let_paint().await;
            let facts = match app.webgpu() {
                WebGpuSupport::Adapter(facts) => facts,
                _ => Default::default(),
            };
            let mut session = session::on_gpu(loaded, gpu, &facts).await?;
            if let Some(cap) = cap {
                session
                    .device
                    .push_str(&format!(" · page limit {} (?max_binding)", fmt_bytes(cap)));
            }
            Ok(session)
        }
    }
}

/// After a restore, the form and the comparison's probes show the ledger's last request, so that
/// the comparison that follows is about the user's own edit, not the page's example.
fn show_last_edit(app: &App, s: &Session) {
    let Some(entry) = s.ledger().last() else {
        return;
    };
    let Some(r) = entry.requests.last() else {
        return;
    };
    let probes = s
        .setup()
        .ok()
        .and_then(|setup| setup.meta.get(s.n_entries() - 1))
        .and_then(|m| m.probes.last().cloned())
        .unwrap_or_default();
    app.edit.fill_request(r);
    app.compare.fill_probes(&r.subject, &probes);
}

/// The byte-progress part of the bar.
fn show_read(app: &App, what: &str, done: u64, total: Option<u64>) {
    let (fraction, label) = match total {
        Some(t) if t > 0 => (
            Some(READ_SHARE * done as f64 / t as f64),
            format!("{what}: {} of {}", fmt_bytes(done), fmt_bytes(t)),
        ),
        _ => (None, format!("{what}: {}", fmt_bytes(done))),
    };
    app.status.progress(fraction, &label);
}

/// Runs the (synchronous, seconds-long) decode after letting the page paint its label.
async fn decode(app: &App, f: impl FnOnce() -> Result<LoadedModel>) -> Result<LoadedModel> {
    app.status.progress(
        Some(READ_SHARE),
        "Decoding the weights and the tokenizer (the page pauses for a few seconds)…",
    );
    dom::let_paint().await;
    let loaded = f()?;
    app.status.progress(Some(DECODE_DONE), "Decoded.");
    dom::yield_now().await;
    Ok(loaded)
}

/// The `?max_binding=N` test hook: the page refuses tensors over `N` bytes on WebGPU, as if the
/// adapter's `maxStorageBufferBindingSize` were `N`.
pub(crate) fn max_binding() -> Option<u64> {
    dom::query_param("max_binding").and_then(|v| v.trim().parse::<u64>().ok())
}

/// The default model's file name (the last part of its URL).
fn default_model_name() -> &'static str {
    DEFAULT_MODEL_URL
        .rsplit('/')
        .next()
        .unwrap_or(DEFAULT_MODEL_URL)
}
