//! The browser page (wasm32 only): the only module that touches wasm-bindgen, web-sys and
//! js-sys. The engine below it never sees the browser.
//!
//! One wasm binary plays two roles, chosen by where it starts ([`start`]):
//!
//! - [`page`], on the main thread: the DOM and nothing else. Every panel reads its controls,
//!   posts a request to the worker and shows the events and the outcome that come back.
//! - [`worker`], in a dedicated Web Worker that the page starts from the same binary: the
//!   library's [`crate::session::Session`] (the model on WebGPU or the cpu backend, the editing
//!   state, the ledger), the model bytes (`fetch` and the Cache API), IndexedDB (the ledger, the
//!   covariance statistics) and the covariance's sources.
//!
//! - [`api`]: the same engine for other pages, as the JavaScript class `Editor` of the npm
//!   package (`wasm-pack build`), over the shared [`client`].
//!
//! The two speak the typed, versioned protocol of [`crate::session::protocol`]. A panic or an
//! out-of-memory abort in the worker ends the worker only: the page shows it and offers to
//! restart the engine, which reloads the model from the browser's cache and restores the ledger
//! from IndexedDB.

mod api;
mod client;
mod js;
mod page;
mod worker;

pub use worker::storage;

/// The entry point of both roles (called by `src/bin/nse-web.rs`): the engine when running in a
/// dedicated worker, the page otherwise.
pub fn start() {
    if js::in_worker() {
        worker::start();
    } else {
        page::start();
    }
}

/// Starts the engine's role in a worker that instantiated the library without an entry point
/// (the npm package's worker script calls it); does nothing where it already runs.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn nse_worker_start() {
    if js::in_worker() {
        worker::start();
    }
}
