//! Does this browser have WebGPU, and what does it say about its adapter?
//!
//! wgpu's `AdapterInfo` is mostly empty on the web (the name is `""`), so the browser's own
//! `GPUAdapter.info` (vendor, architecture, description, fallback flag) is read here through
//! reflection, which also works on browsers whose WebGPU IDL web-sys does not know.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::dom;

/// What the browser offers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum WebGpuSupport {
    /// `navigator.gpu` is undefined: no WebGPU in this browser, or it is switched off.
    NoApi,
    /// WebGPU exists but gave no adapter (a blocklisted GPU, or headless without
    /// `--enable-unsafe-webgpu`); the text says what the browser reported.
    NoAdapter(String),
    /// An adapter is available.
    Adapter(AdapterFacts),
}

/// The browser's description of its adapter.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AdapterFacts {
    pub vendor: String,
    pub architecture: String,
    pub description: String,
    /// A software fallback such as SwiftShader: correct, but far slower than a real GPU.
    pub is_fallback: bool,
}

impl AdapterFacts {
    /// "google swiftshader (software fallback adapter)", or "unnamed adapter".
    pub(crate) fn label(&self) -> String {
        let mut parts: Vec<&str> = [&self.vendor, &self.architecture, &self.description]
            .into_iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        parts.dedup();
        let mut label = if parts.is_empty() {
            "unnamed adapter".to_string()
        } else {
            parts.join(" ")
        };
        if self.is_fallback {
            label.push_str(" (software fallback adapter)");
        }
        label
    }
}

/// Asks `navigator.gpu` for an adapter and reads its info.
pub(crate) async fn probe() -> WebGpuSupport {
    let navigator = dom::window().navigator();
    let gpu = get(&navigator, "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return WebGpuSupport::NoApi;
    }
    let Some(request) = get(&gpu, "requestAdapter").dyn_into::<Function>().ok() else {
        return WebGpuSupport::NoApi;
    };
    let adapter = match request.call0(&gpu).map(|p| p.dyn_into::<Promise>()) {
        Ok(Ok(promise)) => JsFuture::from(promise).await,
        Ok(Err(v)) | Err(v) => Err(v),
    };
    let adapter = match adapter {
        Ok(a) if !a.is_null() && !a.is_undefined() => a,
        Ok(_) => {
            return WebGpuSupport::NoAdapter(
                "navigator.gpu.requestAdapter() returned no adapter".into(),
            );
        }
        Err(e) => {
            let e = dom::js_error("navigator.gpu.requestAdapter() failed", e);
            return WebGpuSupport::NoAdapter(e.to_string());
        }
    };
    // `GPUAdapter.info` (Chrome 127+); `isFallbackAdapter` moved from the adapter to the info.
    let info = get(&adapter, "info");
    let text = |key: &str| get(&info, key).as_string().unwrap_or_default();
    let flag = |obj: &JsValue| get(obj, "isFallbackAdapter").as_bool();
    WebGpuSupport::Adapter(AdapterFacts {
        vendor: text("vendor"),
        architecture: text("architecture"),
        description: text("description"),
        is_fallback: flag(&info).or_else(|| flag(&adapter)).unwrap_or(false),
    })
}

/// `obj[key]`, `undefined` when absent or `obj` is not an object.
fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// The plain-words notice for a browser without a usable WebGPU adapter.
pub(crate) fn missing_notice(support: &WebGpuSupport) -> Option<String> {
    let why = match support {
        WebGpuSupport::Adapter(_) => return None,
        WebGpuSupport::NoApi => "This browser does not offer WebGPU, so the model cannot run on \
                                 your graphics card."
            .to_string(),
        WebGpuSupport::NoAdapter(detail) => format!(
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
