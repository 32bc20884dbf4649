//! Does this browser have WebGPU, and what does it say about its adapter?
//!
//! wgpu's `AdapterInfo` is mostly empty on the web (the name is `""`), so the browser's own
//! `GPUAdapter.info` (vendor, architecture, description, fallback flag) is read here through
//! reflection, which also works on browsers whose WebGPU IDL web-sys does not know.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::session::protocol::{AdapterFacts, WebGpuSupport};
use crate::web::js;

/// Asks `navigator.gpu` for an adapter and reads its info.
pub(crate) async fn probe() -> WebGpuSupport {
    // `navigator` is the worker's `WorkerNavigator` here (Chromium exposes WebGPU to dedicated
    // workers); read by reflection, as it is on a window.
    let navigator = get(&js_sys::global(), "navigator");
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
            return WebGpuSupport::NoAdapter {
                detail: "navigator.gpu.requestAdapter() returned no adapter".into(),
            };
        }
        Err(e) => {
            let e = js::js_error("navigator.gpu.requestAdapter() failed", e);
            return WebGpuSupport::NoAdapter {
                detail: e.to_string(),
            };
        }
    };
    // `GPUAdapter.info` (Chrome 127+); `isFallbackAdapter` moved from the adapter to the info.
    let info = get(&adapter, "info");
    let text = |key: &str| get(&info, key).as_string().unwrap_or_default();
    let flag = |obj: &JsValue| get(obj, "isFallbackAdapter").as_bool();
    WebGpuSupport::Adapter {
        facts: AdapterFacts {
            vendor: text("vendor"),
            architecture: text("architecture"),
            description: text("description"),
            is_fallback: flag(&info).or_else(|| flag(&adapter)).unwrap_or(false),
        },
    }
}

/// `obj[key]`, `undefined` when absent or `obj` is not an object.
fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}
