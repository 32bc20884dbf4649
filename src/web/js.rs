//! Helpers both roles use: where the code runs, JavaScript exceptions as [`Error`]s, the clock,
//! and giving the event loop a turn (through the global `setTimeout`, which windows and workers
//! both have).

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::Error;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout, catch)]
    fn set_timeout(f: &js_sys::Function, ms: i32) -> std::result::Result<JsValue, JsValue>;
}

/// A protocol message as a plain JavaScript object (maps as objects, `None` as `null`), as both
/// roles post them.
pub(crate) fn encode<T: serde::Serialize>(msg: &T) -> std::result::Result<JsValue, String> {
    msg.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| e.to_string())
}

/// This code runs in a dedicated Web Worker (the engine's role).
pub(crate) fn in_worker() -> bool {
    js_sys::global()
        .dyn_into::<web_sys::DedicatedWorkerGlobalScope>()
        .is_ok()
}

/// A JavaScript exception (or rejected promise) as an [`Error`], with what we were doing.
pub(crate) fn js_error(doing: &str, e: JsValue) -> Error {
    let text = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    Error::input(format!("{doing}: {text}"))
}

/// Milliseconds since the epoch (for durations shown on the page).
pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Resolves after `ms` milliseconds through `setTimeout`, on a later macrotask.
///
/// Awaiting it hands the event loop back: the page handles input and repaints, the worker hears
/// the page's messages (a cancel) before the next slice of work. `sleep_ms(0)` is the cheapest
/// yield; a frame's worth (16 ms) makes sure a label set just before a long synchronous step is
/// painted first.
pub(crate) async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if set_timeout(&resolve, ms).is_err() {
            // No timer: resolve at once rather than never.
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    // This promise never rejects.
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// A promise that resolves to `value` after `ms` milliseconds.
pub(crate) fn resolve_after(ms: i32, value: &str) -> js_sys::Promise {
    let value = JsValue::from_str(value);
    js_sys::Promise::new(&mut |resolve, _reject| {
        let f = Closure::once_into_js({
            let value = value.clone();
            move || {
                let _ = resolve.call1(&JsValue::NULL, &value);
            }
        });
        let _ = set_timeout(f.unchecked_ref(), ms);
    })
}

/// One turn of the event loop (see [`sleep_ms`]).
pub(crate) async fn yield_now() {
    sleep_ms(0).await;
}
