//! The page's shared status widgets: the model status line, the progress bar and its label,
//! the WebGPU notice and the error banner.

use web_sys::{HtmlElement, HtmlProgressElement};

use super::dom::{by_testid, set_attr};

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
        }
    }

    /// Sets the status line; `backend` is `"webgpu"`, `"cpu"` or `""`.
    pub(crate) fn set_model(&self, state: ModelState, backend: &str, lines: &[&str]) {
        set_attr(&self.status, "data-state", state.id());
        set_attr(&self.status, "data-backend", backend);
        // `white-space: pre-line` shows the lines; textContent keeps the newlines for tests.
        self.status.set_text_content(Some(&lines.join("\n")));
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
        self.error.set_inner_text(message);
        self.error.set_hidden(false);
        web_sys::console::warn_1(&message.into());
    }

    pub(crate) fn clear_error(&self) {
        self.error.set_inner_text("");
        self.error.set_hidden(true);
    }

    /// Shows the notice about missing WebGPU.
    pub(crate) fn show_notice(&self, message: &str) {
        self.notice.set_inner_text(message);
        self.notice.set_hidden(false);
    }
}

/// Shows a panic in the error banner too, so that a bug is not a silently dead page.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!(
            "Internal error (a bug in nse, please report it): {info}. Reload the page to start again."
        );
        web_sys::console::error_1(&message.clone().into());
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
