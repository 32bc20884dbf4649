//! The page's shared status widgets: the model status line, the progress bar and its label,
//! the WebGPU notice and the error banner.

use web_sys::{HtmlElement, HtmlProgressElement};

use super::dom::{by_testid, set_attr};
use crate::session::protocol::WebGpuSupport;

/// Steps of the progress bar (`<progress max>`).
const PROGRESS_MAX: f64 = 1000.0;

/// What `model-status`'s `data-state` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModelState {
    /// A model is being read, decoded or uploaded.
    Loading,
    /// A model is loaded and idle or generating.
    Ready,
    /// No model is loaded (the last load failed, or the device was lost).
    Empty,
}

impl ModelState {
    /// The state named by an engine's status event.
    pub(crate) fn from_id(id: &str) -> Self {
        match id {
            "loading" => ModelState::Loading,
            "ready" => ModelState::Ready,
            _ => ModelState::Empty,
        }
    }

    fn id(self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Empty => "empty",
        }
    }
}

/// Handles on the status widgets.
pub(crate) struct StatusView {
    status: HtmlElement,
    progress: HtmlProgressElement,
    label: HtmlElement,
    notice: HtmlElement,
    error: HtmlElement,
    /// Stops the running job at its next step (enabled while one runs).
    pub(crate) cancel: web_sys::HtmlButtonElement,
    /// Starts a new engine after a crash (shown only then).
    pub(crate) restart: web_sys::HtmlButtonElement,
    crash: HtmlElement,
    /// The crash box is shown: it is the one message until the restart.
    crashed: std::cell::Cell<bool>,
}

impl StatusView {
    pub(crate) fn find() -> Self {
        let progress: HtmlProgressElement = by_testid("progress");
        progress.set_max(PROGRESS_MAX);
        StatusView {
            status: by_testid("model-status"),
            progress,
            label: by_testid("progress-label"),
            notice: by_testid("webgpu-notice"),
            error: by_testid("error-message"),
            cancel: by_testid("cancel-button"),
            restart: by_testid("restart-engine-button"),
            crash: by_testid("crash-message"),
            crashed: std::cell::Cell::new(false),
        }
    }

    /// Sets the status line; `backend` is `"webgpu"`, `"cpu"` or `""`.
    pub(crate) fn set_model(&self, state: ModelState, backend: &str, lines: &[&str]) {
        set_attr(&self.status, "data-state", state.id());
        set_attr(&self.status, "data-backend", backend);
        // `white-space: pre-line` shows the lines; textContent keeps the newlines for tests.
        self.status.set_text_content(Some(&lines.join("\n")));
    }

    /// Records the engine's memory in bytes as `data-memory` (for the benchmark).
    pub(crate) fn set_memory(&self, bytes: u64) {
        set_attr(&self.status, "data-memory", &bytes.to_string());
    }

    /// Shows `fraction` in `[0, 1]` done (an indeterminate bar for `None`) and a label.
    pub(crate) fn progress(&self, fraction: Option<f64>, label: &str) {
        match fraction {
            Some(f) => self.progress.set_value(f.clamp(0.0, 1.0) * PROGRESS_MAX),
            // A <progress> without a value attribute is indeterminate (an animated bar).
            None => {
                let _ = self.progress.remove_attribute("value");
            }
        }
        self.label.set_inner_text(label);
    }

    /// Shows the error banner (it stays until the next action clears it).
    pub(crate) fn show_error(&self, message: &str) {
        if self.crashed.get() {
            // The failures of the jobs the crash ended say nothing the crash box does not.
            web_sys::console::warn_1(&message.into());
            return;
        }
        self.error.set_inner_text(message);
        self.error.set_hidden(false);
        web_sys::console::warn_1(&message.into());
    }

    /// The error banner's text, when it is shown.
    pub(crate) fn error_text(&self) -> Option<String> {
        (!self.error.hidden()).then(|| self.error.inner_text())
    }

    pub(crate) fn clear_error(&self) {
        self.error.set_inner_text("");
        self.error.set_hidden(true);
    }

    /// Shows that the engine crashed, and the restart button.
    pub(crate) fn show_crash(&self, message: &str) {
        self.crash.set_inner_text(&format!(
            "The engine stopped because of an internal error (a bug in nse; the details are in \
             the browser's console): {message}. The page still works: press “Restart engine” to \
             load the model again with the edits saved in this browser."
        ));
        self.clear_error();
        self.crashed.set(true);
        self.progress(Some(0.0), "The engine stopped.");
        self.crash.set_hidden(false);
        self.restart.set_hidden(false);
        self.restart.set_disabled(false);
        web_sys::console::error_1(&format!("nse: the engine crashed: {message}").into());
    }

    pub(crate) fn hide_crash(&self) {
        self.crashed.set(false);
        self.crash.set_hidden(true);
        self.restart.set_hidden(true);
    }

    /// Shows the notice about missing WebGPU.
    pub(crate) fn show_notice(&self, message: &str) {
        self.notice.set_inner_text(message);
        self.notice.set_hidden(false);
    }
}

/// The plain-words notice for a browser without a usable WebGPU adapter.
pub(crate) fn missing_notice(support: &WebGpuSupport) -> Option<String> {
    let why = match support {
        WebGpuSupport::Adapter { .. } => return None,
        WebGpuSupport::NoApi => "This browser does not offer WebGPU, so the model cannot run on \
                                 your graphics card."
            .to_string(),
        WebGpuSupport::NoAdapter { detail } => format!(
            "This browser has WebGPU, but it found no graphics adapter it is willing to use \
             ({detail})."
        ),
    };
    Some(format!(
        "{why} To use your GPU, open this page in a recent Chrome or Edge (version 113 or newer) \
         and make sure WebGPU is enabled: on Linux, or where it is switched off, turn on \
         chrome://flags/#enable-unsafe-webgpu and restart the browser. Meanwhile the page uses \
         the CPU backend instead: everything works the same, only slower."
    ))
}

/// The plain-words notice for a software WebGPU adapter (a CPU emulation of a GPU), on which the
/// page's own cpu backend is several times faster; `None` for a real GPU.
pub(crate) fn software_notice(support: &WebGpuSupport) -> Option<String> {
    let WebGpuSupport::Adapter { facts } = support else {
        return None;
    };
    let label = facts.label().to_lowercase();
    let software = facts.is_fallback
        || [
            "swiftshader",
            "llvmpipe",
            "lavapipe",
            "software",
            "basic render",
        ]
        .iter()
        .any(|s| label.contains(s));
    software.then(|| {
        format!(
            "This browser's WebGPU runs on a software renderer ({}), not on a graphics card, so \
             the page uses its CPU backend, which is several times faster there. To try WebGPU anyway, choose it under Backend and load the \
             model again.",
            facts.label()
        )
    })
}

/// Shows a panic of the page's own code in the error banner too, so that a bug is not a
/// silently dead page.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!(
            "Internal error (a bug in nse, please report it): {info}. Reload the page to start again."
        );
        // The message with the Rust stack, in the console.
        console_error_panic_hook::hook(info);
        if let Some(el) = super::dom::document()
            .query_selector("[data-testid=\"error-message\"]")
            .ok()
            .flatten()
        {
            el.set_text_content(Some(&message));
            let _ = el.remove_attribute("hidden");
        }
    }));
}
