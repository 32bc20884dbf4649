//! The handle on the engine's worker that the page and the JavaScript API share: starts it from
//! the running wasm binary, posts [`ToWorker`] requests, routes the worker's [`Event`]s to its
//! owner and resolves each request with its [`Outcome`]. A crash of the worker (a panic, an
//! out-of-memory abort, a script that fails to load) ends every pending request with a `Crashed`
//! failure and is reported once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ErrorEvent, Worker, WorkerOptions, WorkerType};

use crate::Result;
use crate::session::protocol::{
    Body, Event, Failure, FromWorker, Outcome, PROTOCOL_VERSION, Reply, Request, ToWorker,
    WebGpuSupport, check_version,
};
use crate::web::js::{self, js_error};

/// How long the worker may take to start (download and compile the wasm, probe WebGPU).
const START_TIMEOUT_MS: i32 = 60_000;

/// What the page does with the worker's events and with a crash.
pub(crate) type EventSink = Rc<dyn Fn(Event)>;

/// How to start the engine.
#[derive(Clone, Debug)]
pub(crate) struct Start {
    /// Run it on this thread instead of a worker (the page's `?engine=main`).
    pub(crate) in_page: bool,
    /// The wasm-bindgen glue (JavaScript module) of the running binary.
    pub(crate) glue: String,
    /// The wasm binary, for a browser that cannot pass the compiled module to a worker; `None`:
    /// beside the glue, where wasm-bindgen's default looks.
    pub(crate) wasm: Option<String>,
    /// The address the engine resolves relative URLs against (the default model, `models/cov/`).
    pub(crate) base: String,
}

/// Where the engine runs.
#[derive(Clone)]
enum Engine {
    /// A dedicated Web Worker (the page's normal mode).
    Worker(Worker),
    /// The page's own thread (`?engine=main`): the same engine and messages without the thread,
    /// for the benchmark's comparison of what the worker costs and gains.
    InPage,
}

/// The running worker and the requests waiting for it.
pub(crate) struct Client {
    worker: RefCell<Option<Engine>>,
    next_id: Cell<u32>,
    /// `resolve` of each pending request's promise, by id.
    pending: Rc<RefCell<HashMap<u32, Function>>>,
    sink: EventSink,
    /// Set once the worker has crashed (until it is restarted).
    crashed: Rc<Cell<bool>>,
    /// The worker's listeners, kept alive with it.
    listeners: RefCell<Vec<Listener>>,
}

/// A JavaScript event listener owned by Rust.
type Listener = Closure<dyn FnMut(JsValue)>;

/// The marker a crashed worker's pending requests resolve with.
const CRASHED: &str = "nse-worker-crashed";

impl Client {
    pub(crate) fn new(sink: EventSink) -> Self {
        Client {
            worker: RefCell::new(None),
            next_id: Cell::new(1),
            pending: Rc::new(RefCell::new(HashMap::new())),
            sink,
            crashed: Rc::new(Cell::new(false)),
            listeners: RefCell::new(vec![]),
        }
    }

    /// Starts a worker (ending any previous one) and waits for it to say it is ready.
    ///
    /// # Errors
    /// The page's script and wasm cannot be found, the browser refused the worker, or it did not
    /// start in time.
    pub(crate) async fn start(&self, how: &Start) -> Result<WebGpuSupport> {
        self.stop("the engine was restarted");
        self.crashed.set(false);
        let ready = Promise::new(&mut |resolve, _| {
            self.pending.borrow_mut().insert(0, resolve);
        });
        if how.in_page {
            let on_message = self.message_handler();
            let deliver: Function = on_message.as_ref().unchecked_ref::<Function>().clone();
            self.listeners.borrow_mut().push(on_message);
            *self.worker.borrow_mut() = Some(Engine::InPage);
            let _ = Reflect::set(
                &js_sys::global(),
                &"NSE_BASE".into(),
                &how.base.as_str().into(),
            );
            crate::web::worker::start_in_page(deliver);
        } else {
            let worker = spawn(how)?;
            self.listen(&worker);
            *self.worker.borrow_mut() = Some(Engine::Worker(worker));
        }
        let timeout = js::resolve_after(START_TIMEOUT_MS, "timeout");
        let first = JsFuture::from(Promise::race(&Array::of2(&ready, &timeout)))
            .await
            .unwrap_or(JsValue::UNDEFINED);
        if first.as_string().as_deref() == Some("timeout") {
            self.stop("it did not start");
            return Err(crate::Error::input(
                "the engine did not start within a minute; reload the page",
            ));
        }
        match decode(&first) {
            Ok(Reply::Ready { version, webgpu }) if version == PROTOCOL_VERSION => Ok(webgpu),
            Ok(Reply::Ready { version, .. }) => {
                self.stop("it speaks another protocol version");
                Err(crate::Error::refused(
                    "VersionMismatch",
                    format!(
                        "the engine speaks protocol version {version} but this code speaks \
                         version {PROTOCOL_VERSION}: its files come from two different builds; \
                         reload the page (and clear its cache if that persists)"
                    ),
                ))
            }
            Ok(other) => Err(crate::Error::input(format!(
                "the engine answered {other:?} instead of starting; reload the page"
            ))),
            Err(f) => Err(crate::Error::input(f.message)),
        }
    }

    /// The handler of the engine's messages (a `MessageEvent`, or `{data}` in the page).
    fn message_handler(&self) -> Listener {
        let pending = Rc::clone(&self.pending);
        let sink = Rc::clone(&self.sink);
        let crashed = Rc::clone(&self.crashed);
        Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let data = Reflect::get(&e, &"data".into()).unwrap_or(JsValue::UNDEFINED);
            let msg: FromWorker = match serde_wasm_bindgen::from_value(data.clone()) {
                Ok(m) => m,
                Err(err) => {
                    web_sys::console::error_1(
                        &format!("nse: a message from the engine cannot be read: {err}").into(),
                    );
                    return;
                }
            };
            if let Err(f) = check_version(msg.v) {
                crash(&pending, &sink, &crashed, &f.message);
                return;
            }
            match msg.body {
                Body::Event {
                    event: Event::Crashed { message },
                } => crash(&pending, &sink, &crashed, &message),
                Body::Event { event } => sink(event),
                Body::Done { .. } => {
                    let resolve = pending.borrow_mut().remove(&msg.id);
                    if let Some(resolve) = resolve {
                        let _ = resolve.call1(&JsValue::NULL, &data);
                    }
                }
            }
        })
    }

    fn listen(&self, worker: &Worker) {
        let on_message = self.message_handler();
        let pending = Rc::clone(&self.pending);
        let sink = Rc::clone(&self.sink);
        let crashed = Rc::clone(&self.crashed);
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let text = e
                .dyn_ref::<ErrorEvent>()
                .map(|e| e.message())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "the engine's script failed".into());
            if let Some(e) = e.dyn_ref::<web_sys::Event>() {
                // Handled here: shown in the page, not reported again as an uncaught error.
                e.prevent_default();
            }
            crash(&pending, &sink, &crashed, &text);
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let mut listeners = self.listeners.borrow_mut();
        listeners.clear();
        listeners.push(on_message);
        listeners.push(on_error);
    }

    /// Ends the worker, failing its pending requests with `why`.
    pub(crate) fn stop(&self, why: &str) {
        if let Some(Engine::Worker(w)) = self.worker.borrow_mut().take() {
            w.terminate();
        }
        fail_pending(&self.pending, why);
    }

    /// The running worker (`None` on the page's thread or when stopped), for test hooks.
    pub(crate) fn worker(&self) -> Option<Worker> {
        match &*self.worker.borrow() {
            Some(Engine::Worker(w)) => Some(w.clone()),
            _ => None,
        }
    }

    /// The worker has crashed and not been restarted.
    pub(crate) fn crashed(&self) -> bool {
        self.crashed.get()
    }

    /// Posts `request` with `attach` (files, bytes) and waits for its outcome; returns it with
    /// what the worker attached.
    pub(crate) async fn call(&self, request: Request, attach: Option<Array>) -> (Outcome, Array) {
        let Some(worker) = self.worker.borrow().clone() else {
            return (
                Err(crashed_failure("the engine is not running")),
                Array::new(),
            );
        };
        let (id, value) = match self.encode(request) {
            Ok(x) => x,
            Err(f) => return (Err(f), Array::new()),
        };
        if let Some(attach) = attach {
            let _ = Reflect::set(&value, &"attach".into(), &attach);
        }
        let done = Promise::new(&mut |resolve, _| {
            self.pending.borrow_mut().insert(id, resolve);
        });
        if let Err(e) = deliver(&worker, &value) {
            self.pending.borrow_mut().remove(&id);
            let e = js_error("cannot send the request to the engine", e);
            return (Err(Failure::from(e)), Array::new());
        }
        let data = JsFuture::from(done).await.unwrap_or(JsValue::UNDEFINED);
        let attach = Reflect::get(&data, &"attach".into())
            .ok()
            .and_then(|a| a.dyn_into::<Array>().ok())
            .unwrap_or_default();
        (decode(&data), attach)
    }

    /// A request as a message with a new id.
    fn encode(&self, request: Request) -> std::result::Result<(u32, JsValue), Failure> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        let msg = ToWorker {
            v: PROTOCOL_VERSION,
            id,
            request,
        };
        crate::web::js::encode(&msg)
            .map(|v| (id, v))
            .map_err(|e| Failure::protocol(&format!("cannot encode a request: {e}")))
    }

    /// Posts a request that is answered at once (cancel, a check) without waiting for it.
    pub(crate) fn send(&self, request: Request) {
        let Some(worker) = self.worker.borrow().clone() else {
            return;
        };
        if let Ok((_, value)) = self.encode(request) {
            let _ = deliver(&worker, &value);
        }
    }
}

/// Hands a message to the engine.
fn deliver(engine: &Engine, value: &JsValue) -> std::result::Result<(), JsValue> {
    match engine {
        Engine::Worker(w) => w.post_message(value),
        Engine::InPage => {
            crate::web::worker::receive_in_page(value.clone());
            Ok(())
        }
    }
}

/// The outcome in a `Done` message, or the crash marker's failure.
fn decode(data: &JsValue) -> Outcome {
    if let Some(why) = data.as_string() {
        return Err(crashed_failure(why.strip_prefix(CRASHED).unwrap_or(&why)));
    }
    match serde_wasm_bindgen::from_value::<FromWorker>(data.clone()) {
        Ok(FromWorker {
            body: Body::Done { outcome },
            ..
        }) => outcome,
        Ok(_) => Err(Failure::protocol("an event where an answer was expected")),
        Err(e) => Err(Failure::protocol(&format!("an unreadable answer: {e}"))),
    }
}

fn crashed_failure(why: &str) -> Failure {
    Failure {
        code: "Crashed".into(),
        message: format!("the engine stopped ({})", why.trim_start_matches(": ")),
    }
}

fn fail_pending(pending: &RefCell<HashMap<u32, Function>>, why: &str) {
    let waiting: Vec<Function> = pending.borrow_mut().drain().map(|(_, f)| f).collect();
    for resolve in waiting {
        let _ = resolve.call1(
            &JsValue::NULL,
            &JsValue::from_str(&format!("{CRASHED}: {why}")),
        );
    }
}

/// Reports a crash once and ends the requests that were waiting.
fn crash(
    pending: &RefCell<HashMap<u32, Function>>,
    sink: &EventSink,
    crashed: &Cell<bool>,
    message: &str,
) {
    if crashed.replace(true) {
        return;
    }
    fail_pending(pending, message);
    sink(Event::Crashed {
        message: message.to_string(),
    });
}

/// Starts the engine's worker: a small module script (from a `blob:` URL) that imports the
/// running binary's wasm-bindgen glue and instantiates the running wasm module (posted to it,
/// already compiled); `nse_worker_start` then starts the engine's role there (the page's binary
/// has already started it from its entry point, which sees it runs in a worker).
fn spawn(how: &Start) -> Result<Worker> {
    let lit = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let fallback = how.wasm.as_deref().map_or("undefined".to_string(), lit);
    let script = format!(
        "globalThis.NSE_BASE = {};\nimport init, * as nse from {};\n\
         self.onmessage = async (e) => {{\n  self.onmessage = null;\n  \
         const module = e.data instanceof WebAssembly.Module ? e.data : {fallback};\n  \
         await init({{ module_or_path: module }});\n  \
         if (typeof nse.nse_worker_start === 'function') nse.nse_worker_start();\n}};\n",
        lit(&how.base),
        lit(&how.glue),
    );
    let parts = Array::of1(&JsValue::from_str(&script));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options)
        .map_err(|e| js_error("cannot make the engine's script", e))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)
        .map_err(|e| js_error("cannot make the engine's script address", e))?;
    let opts = WorkerOptions::new();
    opts.set_type(WorkerType::Module);
    opts.set_name("nse-engine");
    // The URL stays valid for the life of the page: the worker may fetch it after this returns.
    let worker = Worker::new_with_options(&url, &opts)
        .map_err(|e| js_error("the browser refused to start the engine's worker", e))?;
    // Queued until the worker's script has run and set its handler.
    worker
        .post_message(&wasm_bindgen::module())
        .map_err(|e| js_error("cannot hand the engine its code", e))?;
    Ok(worker)
}
