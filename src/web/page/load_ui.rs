//! The model panel: the default model, the file picker, the backend choice, and the load job
//! (the engine reads the bytes, decodes and uploads them, and restores the saved ledger).

use std::rc::Rc;

use js_sys::Array;
use web_sys::{File, HtmlButtonElement, HtmlInputElement, HtmlOptionElement, HtmlSelectElement};

use super::dom::{self, by_testid};
use super::{App, compare_ui};
use crate::session::protocol::{Backend, Reply, Request, Source};

/// Where the page fetches the default model from, relative to the page (Trunk copies
/// `www/models/` into `dist/models/`).
pub(crate) const DEFAULT_MODEL_URL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// What to load, and on which backend (kept to load it again after a restart of the engine).
#[derive(Clone)]
pub(crate) struct LoadSpec {
    source: Source,
    /// The picked files, for [`Source::Files`].
    files: Vec<File>,
    backend: Backend,
}

impl LoadSpec {
    /// The default model ([`DEFAULT_MODEL_URL`]).
    pub(crate) fn default_model(backend: Backend) -> Self {
        LoadSpec::from_url(DEFAULT_MODEL_URL, backend)
    }

    /// The model at `url` (relative to the page, or absolute: the engine fetches it, and treats
    /// what it gets like any file).
    pub(crate) fn from_url(url: &str, backend: Backend) -> Self {
        LoadSpec {
            source: Source::Url { url: url.into() },
            files: vec![],
            backend,
        }
    }

    /// The address the model was loaded from; `None` for picked files.
    pub(crate) fn url(&self) -> Option<String> {
        match &self.source {
            Source::Url { url } => Some(url.clone()),
            Source::Files { .. } => None,
        }
    }
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
    pub(crate) fn backend(&self) -> Backend {
        Backend::from_id(&self.backend.value())
    }

    /// Selects a backend for the next load.
    pub(crate) fn select_backend(&self, kind: Backend) {
        self.backend.set_value(kind.id());
    }

    /// Selects the cpu backend and disables the WebGPU option.
    pub(crate) fn webgpu_unavailable(&self) {
        self.backend.set_value(Backend::Cpu.id());
        by_testid::<HtmlOptionElement>("backend-option-webgpu").set_disabled(true);
    }
}

/// Wires the model panel's controls.
pub(crate) fn wire(app: &Rc<App>) {
    let a = Rc::clone(app);
    dom::on(&app.loader.default_button, "click", move |_| {
        let a = Rc::clone(&a);
        let spec = LoadSpec::default_model(a.loader.backend());
        wasm_bindgen_futures::spawn_local(async move { load(&a, spec).await });
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
        let spec = LoadSpec {
            source: Source::Files {
                names: files.iter().map(File::name).collect(),
            },
            files,
            backend: a.loader.backend(),
        };
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { load(&a, spec).await });
    });
}

/// Loads a model in the engine and shows it, or shows why not.
///
/// The previous model stays loaded until the new one has decoded, so a bad file leaves the page
/// as it was.
pub(crate) async fn load(app: &Rc<App>, spec: LoadSpec) {
    if !app.begin() {
        return;
    }
    *app.last_load.borrow_mut() = Some(spec.clone());
    let attach = Array::new();
    for f in &spec.files {
        attach.push(f);
    }
    let request = Request::Load {
        source: spec.source,
        backend: spec.backend,
        max_binding: max_binding(),
    };
    let (outcome, _) = app.call_with(request, attach).await;
    match outcome {
        Ok(Reply::Loaded { .. }) => {
            app.loader.model_loaded();
            app.show_model();
            let edited = app.model().is_some_and(|m| !m.entries.is_empty());
            app.end();
            // The model is ready; the restored edit is then compared as a job of its own.
            if edited {
                compare_ui::job(app).await;
            }
        }
        Ok(other) => {
            app.status.show_error(&format!(
                "Could not load the model: unexpected answer {other:?}"
            ));
            app.end();
        }
        Err(f) => {
            app.status
                .show_error(&format!("Could not load the model: {}", f.message));
            app.show_model();
            let label = if app.model().is_some() {
                "The last load failed; the model above is still loaded."
            } else {
                "The last load failed."
            };
            app.status.progress(Some(0.0), label);
            app.end();
        }
    }
}

/// The `?max_binding=N` test hook: the engine refuses tensors over `N` bytes on WebGPU, as if the
/// adapter's `maxStorageBufferBindingSize` were `N`.
fn max_binding() -> Option<u64> {
    dom::query_param("max_binding").and_then(|v| v.trim().parse::<u64>().ok())
}
