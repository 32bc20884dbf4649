//! The engine's role: the page's dedicated Web Worker. It owns the library's
//! [`crate::session::Session`], the model bytes, IndexedDB and the covariance's sources, and
//! answers the page's [`ToWorker`] messages (see [`crate::session::protocol`]).
//!
//! - `session`: the backends, the pause/cancel hook, the device line.
//! - `loader`, `storage`, `cov`, `webgpu`: model bytes (`fetch`, the Cache API, picked files),
//!   IndexedDB, the covariance statistic, the WebGPU probe.
//! - `load`, `apply`, `compare`, `generate`, `bench`: the jobs, each reporting through a [`Ui`]
//!   that posts [`Event`]s to the page.
//!
//! One job runs at a time. It takes the session out, awaits the session's pause hook between
//! steps (a `setTimeout(0)` turn, in which the worker hears a cancel), puts it back and posts its
//! outcome. A panic posts [`Event::Crashed`] (with the message and stack in the console through
//! `console_error_panic_hook`) and leaves the worker unusable; the page then offers a restart.

mod apply;
mod bench;
mod compare;
mod cov;
mod generate;
mod load;
mod loader;
mod session;
pub mod storage;
mod webgpu;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::edit::Case;
use crate::session::ledger::neuron_norms;
use crate::session::protocol::{
    Body, Checked, EntryView, Event, Failure, FromWorker, Header, ModelView, Outcome,
    PROTOCOL_VERSION, Reply, Request, Snapshot, ToWorker, TokenView, WebGpuSupport, check_version,
};
use session::Session;
use storage::Db;

/// Everything the worker keeps between messages.
pub(crate) struct Worker {
    /// The loaded model; `None` while none is loaded or while a job has taken it out.
    session: RefCell<Option<Session>>,
    /// The running job's name.
    running: Cell<Option<&'static str>>,
    /// IndexedDB, `None` where the browser offers none (or it failed to open).
    db: RefCell<Option<Rc<Db>>>,
    /// The loaded model's bytes came from the browser's cache.
    from_cache: Cell<bool>,
    webgpu: RefCell<WebGpuSupport>,
    /// The cases of the dataset read last.
    dataset: RefCell<Vec<Case>>,
    /// The benchmark's CounterFact cases, downloaded once.
    bench_cases: RefCell<Option<Rc<Vec<Case>>>>,
    /// Ends the running benchmark after its current batch.
    stop_bench: Cell<bool>,
    /// The test hook: the next edit panics at its first z step.
    panic_armed: Cell<bool>,
}

impl Worker {
    fn db(&self) -> Option<Rc<Db>> {
        self.db.borrow().clone()
    }
}

/// Posts what one request's job says to the page.
pub(crate) struct Ui {
    id: u32,
    /// When the last byte-progress event went out (they are thinned to one per 50 ms).
    last_read: Cell<f64>,
}

impl Ui {
    fn new(id: u32) -> Self {
        Ui {
            id,
            last_read: Cell::new(0.0),
        }
    }

    pub(crate) fn send(&self, event: Event) {
        post(self.id, Body::Event { event }, None);
    }

    /// The progress bar (`None`: indeterminate) and its label.
    pub(crate) fn progress(&self, fraction: Option<f64>, label: &str) {
        self.send(Event::Progress {
            fraction,
            label: label.into(),
        });
    }

    /// Like [`Ui::progress`], but at most one event per 50 ms (for byte counts).
    pub(crate) fn progress_thinned(&self, fraction: Option<f64>, label: &str) {
        let now = crate::web::js::now_ms();
        if now - self.last_read.get() >= 50.0 {
            self.last_read.set(now);
            self.progress(fraction, label);
        }
    }

    /// One line of the edit's stage list.
    pub(crate) fn stage(&self, id: &str, state: &str, text: &str) {
        self.send(Event::Stage {
            id: id.into(),
            state: state.into(),
            text: text.into(),
        });
    }

    /// The model status line.
    pub(crate) fn status(&self, state: &str, backend: &str, lines: &[&str]) {
        self.send(Event::Status {
            state: state.into(),
            backend: backend.into(),
            lines: lines.iter().map(|l| l.to_string()).collect(),
        });
    }

    pub(crate) fn saved(&self, text: &str) {
        self.send(Event::Saved { text: text.into() });
    }

    pub(crate) fn warn(&self, text: &str) {
        self.send(Event::Warning { text: text.into() });
    }

    /// The model and its ledger as they now are.
    pub(crate) fn snapshot(&self, w: &Worker, s: Option<&Session>) {
        self.send(Event::Snapshot {
            snapshot: Snapshot {
                model: s.map(|s| model_view(w, s)),
            },
        });
    }
}

/// The size of this module's WebAssembly memory (it grows and never shrinks).
fn wasm_memory_bytes() -> u64 {
    use wasm_bindgen::JsCast;
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map_or(0, |m| {
            m.buffer()
                .dyn_into::<js_sys::ArrayBuffer>()
                .map_or(0, |b| b.byte_length() as u64)
        })
}

/// What the page shows about `s`.
fn model_view(w: &Worker, s: &Session) -> ModelView {
    let c = s.config();
    let (layers, metas) = match &s.editing {
        Ok(setup) => (setup.hp.layers.clone(), setup.meta.as_slice()),
        Err(_) => (vec![], &[][..]),
    };
    let ledger = s.ledger();
    let name = s.source.name.clone();
    let stem = name
        .rsplit_once('.')
        .map_or(name.as_str(), |(a, _)| a)
        .to_string();
    let neurons = if ledger.is_empty() {
        vec![]
    } else {
        neuron_norms(ledger, &layers, c.d_model, c.d_ff)
            .into_iter()
            .collect()
    };
    ModelView {
        stem,
        name,
        sha256: s.source.sha256.clone(),
        line: s.model_line(),
        device: s.device.clone(),
        backend: session::backend_of(s),
        from_cache: w.from_cache.get(),
        not_editable: s.editing.as_ref().err().cloned(),
        hparams: s
            .setup()
            .ok()
            .map(|setup| &setup.hp)
            .or(s.proposed_hparams.as_ref())
            .map(|hp| serde_json::to_string_pretty(hp).expect("hyperparameters serialise")),
        layers,
        d_model: c.d_model,
        d_ff: c.d_ff,
        entries: ledger
            .iter()
            .enumerate()
            .map(|(k, e)| EntryView {
                method: e.method,
                requests: e.requests.clone(),
                meta: metas.get(k).cloned().unwrap_or_default(),
            })
            .collect(),
        head: ledger
            .last()
            .map_or_else(|| crate::edit::ROOT_DIGEST.to_string(), |e| e.digest()),
        neurons,
        weight_bytes: s.engine.weight_bytes_by_type(),
        wasm_memory_bytes: Some(wasm_memory_bytes()),
    }
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

thread_local! {
    /// The worker's role has started (the page's binary starts it from its entry point, the npm
    /// package's worker script through `nse_worker_start`).
    static STARTED: Cell<bool> = const { Cell::new(false) };
    /// The engine on the page's own thread (`?engine=main`): the page's message handler, called
    /// with `{data}` where a worker would `postMessage`, and the engine's state.
    static IN_PAGE: RefCell<Option<(js_sys::Function, Rc<Worker>)>> = const { RefCell::new(None) };
}

/// Posts a message to the page, with `attach` (byte arrays, handed over, not copied).
fn post(id: u32, body: Body, attach: Option<Array>) {
    let msg = FromWorker {
        v: PROTOCOL_VERSION,
        id,
        body,
    };
    let value = match crate::web::js::encode(&msg) {
        Ok(v) => v,
        Err(e) => {
            web_sys::console::error_1(&format!("nse worker: cannot encode a message: {e}").into());
            return;
        }
    };
    let transfer = Array::new();
    if let Some(attach) = attach {
        for item in attach.iter() {
            if let Some(bytes) = item.dyn_ref::<Uint8Array>() {
                transfer.push(&bytes.buffer());
            }
        }
        let _ = Reflect::set(&value, &"attach".into(), &attach);
    }
    let in_page = IN_PAGE.with(|p| p.borrow().as_ref().map(|(f, _)| f.clone()));
    if let Some(deliver) = in_page {
        let event = js_sys::Object::new();
        let _ = Reflect::set(&event, &"data".into(), &value);
        let _ = deliver.call1(&JsValue::NULL, &event);
    } else if let Err(e) = scope().post_message_with_transfer(&value, &transfer) {
        web_sys::console::error_1(&e);
    }
}

fn reply(id: u32, outcome: Outcome, attach: Option<Array>) {
    post(id, Body::Done { outcome }, attach);
}

/// Starts the worker: the panic hook, the message handler, then the WebGPU probe and IndexedDB;
/// posts [`Reply::Ready`] (id 0) when it can take requests.
pub(crate) fn start() {
    if STARTED.with(|s| s.replace(true)) {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        let message = format!("{info}");
        post(
            0,
            Body::Event {
                event: Event::Crashed { message },
            },
            None,
        );
    }));
    let w = new_worker();
    let handler = {
        let w = Rc::clone(&w);
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| on_message(&w, e.data()))
    };
    scope().set_onmessage(Some(handler.as_ref().unchecked_ref()));
    // The worker lives as long as its handler.
    handler.forget();
    get_ready(w);
}

/// Starts the engine on the page's own thread (`?engine=main`, the benchmark's comparison):
/// the same engine and messages, with `deliver` called where a worker would post to the page.
pub(crate) fn start_in_page(deliver: js_sys::Function) {
    let w = new_worker();
    IN_PAGE.with(|p| *p.borrow_mut() = Some((deliver, Rc::clone(&w))));
    get_ready(w);
}

/// A message from the page to the engine on the page's own thread.
pub(crate) fn receive_in_page(data: JsValue) {
    let w = IN_PAGE.with(|p| p.borrow().as_ref().map(|(_, w)| Rc::clone(w)));
    if let Some(w) = w {
        on_message(&w, data);
    }
}

fn new_worker() -> Rc<Worker> {
    Rc::new(Worker {
        session: RefCell::new(None),
        running: Cell::new(Some("starting")),
        db: RefCell::new(None),
        from_cache: Cell::new(false),
        webgpu: RefCell::new(WebGpuSupport::NoApi),
        dataset: RefCell::new(vec![]),
        bench_cases: RefCell::new(None),
        stop_bench: Cell::new(false),
        panic_armed: Cell::new(false),
    })
}

/// Probes WebGPU and opens IndexedDB, then says the engine is ready.
fn get_ready(w: Rc<Worker>) {
    wasm_bindgen_futures::spawn_local(async move {
        *w.webgpu.borrow_mut() = webgpu::probe().await;
        match Db::open(storage::DB_NAME).await {
            Ok(db) => *w.db.borrow_mut() = Some(Rc::new(db)),
            Err(e) => web_sys::console::warn_1(&e.to_string().into()),
        }
        w.running.set(None);
        let webgpu = w.webgpu.borrow().clone();
        reply(
            0,
            Ok(Reply::Ready {
                version: PROTOCOL_VERSION,
                webgpu,
            }),
            None,
        );
    });
}

/// Decodes a message and answers it, or starts its job.
fn on_message(w: &Rc<Worker>, data: JsValue) {
    let header: Header = match serde_wasm_bindgen::from_value(data.clone()) {
        Ok(h) => h,
        Err(e) => {
            return reply(
                0,
                Err(Failure::protocol(&format!(
                    "a message without version and id: {e}"
                ))),
                None,
            );
        }
    };
    if let Err(f) = check_version(header.v) {
        return reply(header.id, Err(f), None);
    }
    let msg: ToWorker = match serde_wasm_bindgen::from_value(data.clone()) {
        Ok(m) => m,
        Err(e) => {
            return reply(
                header.id,
                Err(Failure::protocol(&format!(
                    "a request this engine does not know: {e}"
                ))),
                None,
            );
        }
    };
    let attach = Reflect::get(&data, &"attach".into())
        .ok()
        .and_then(|a| a.dyn_into::<Array>().ok())
        .unwrap_or_default();
    let id = msg.id;
    match msg.request {
        Request::Hello => {
            let webgpu = w.webgpu.borrow().clone();
            reply(
                id,
                Ok(Reply::Ready {
                    version: PROTOCOL_VERSION,
                    webgpu,
                }),
                None,
            )
        }
        Request::Cancel => {
            session::request_cancel();
            reply(id, Ok(Reply::Ok), None);
        }
        Request::StopBench => {
            w.stop_bench.set(true);
            reply(id, Ok(Reply::Ok), None);
        }
        Request::ArmPanic => {
            w.panic_armed.set(true);
            reply(id, Ok(Reply::Ok), None);
        }
        Request::Check { request } => {
            let checked = check(w, &request);
            reply(id, Ok(Reply::Checked { checked }), None);
        }
        job => {
            if let Some(running) = w.running.get() {
                return reply(id, Err(Failure::busy(running)), None);
            }
            w.running.set(Some(job_name(&job)));
            session::clear_cancel();
            w.stop_bench.set(false);
            let w = Rc::clone(w);
            wasm_bindgen_futures::spawn_local(async move {
                let ui = Ui::new(id);
                let (outcome, out) = run_job(&w, &ui, job, attach).await;
                w.running.set(None);
                reply(id, outcome, out);
            });
        }
    }
}

fn job_name(r: &Request) -> &'static str {
    match r {
        Request::Load { .. } => "loading a model",
        Request::Generate { .. } => "generating",
        Request::Apply { .. } | Request::ApplyDataset { .. } => "an edit",
        Request::ReadDataset { .. } => "reading a dataset",
        Request::Covariance { .. } => "computing the covariance",
        Request::Rewind { .. } => "an undo or removal",
        Request::Compare { .. } => "a comparison",
        Request::ExportPatch | Request::ExportModel => "an export",
        Request::ImportPatch { .. } => "an import",
        Request::Bench { .. } => "the benchmark",
        Request::SetHparams { .. } => "changing the hyperparameters",
        _ => "a request",
    }
}

/// Runs one job; returns its outcome and what to attach to it.
async fn run_job(
    w: &Rc<Worker>,
    ui: &Ui,
    request: Request,
    attach: Array,
) -> (Outcome, Option<Array>) {
    if let Request::Load {
        source,
        backend,
        max_binding,
    } = request
    {
        return (
            load::load(w, ui, source, backend, max_binding, attach).await,
            None,
        );
    }
    let Some(mut s) = w.session.borrow_mut().take() else {
        return (Err(Failure::no_model()), None);
    };
    let mut out = None;
    let outcome = match request {
        Request::Generate { prompt, max_tokens } => {
            generate::generate(ui, &mut s, &prompt, max_tokens).await
        }
        Request::Apply { items, plan } => apply::apply_requests(w, ui, &mut s, items, plan).await,
        Request::ReadDataset { name } => apply::read_dataset(w, &s, &name, &attach).await,
        Request::ApplyDataset { n, plan } => apply::apply_dataset(w, ui, &mut s, n, plan).await,
        Request::Covariance { budget } => apply::recompute_cov(w, ui, &mut s, budget).await,
        Request::Rewind {
            what,
            method,
            cov_budget,
        } => apply::rewind(w, ui, &mut s, what, method, cov_budget).await,
        Request::Compare { request, probes } => compare::compare(ui, &mut s, request, probes).await,
        Request::ExportPatch => match apply::export_patch(&s).await {
            Ok((reply, bytes)) => {
                out = Some(Array::of1(&Uint8Array::from(bytes.as_slice())));
                Ok(reply)
            }
            Err(e) => Err(e),
        },
        Request::ImportPatch { name, method } => {
            apply::import_patch(w, ui, &mut s, &name, method, &attach).await
        }
        Request::ExportModel => match apply::export_model(ui, &s).await {
            Ok((reply, bytes)) => {
                out = Some(Array::of1(&Uint8Array::from(bytes.as_slice())));
                Ok(reply)
            }
            Err(e) => Err(e),
        },
        Request::Bench { n, plan } => bench::run(w, ui, &mut s, n, plan).await,
        Request::SetHparams { json } => apply::set_hparams(ui, &mut s, &json),
        other => Err(Failure::protocol(&format!(
            "{} is not a job",
            job_name(&other)
        ))),
    };
    if matches!(&outcome, Err(f) if f.code == "DeviceLost") {
        // The weights were on the lost device: nothing is left to run.
        s.release();
        ui.snapshot(w, None);
        ui.status(
            "empty",
            "",
            &["The GPU device was lost: load the model again."],
        );
    } else {
        ui.snapshot(w, Some(&s));
        *w.session.borrow_mut() = Some(s);
    }
    (outcome, out)
}

/// The edit form's request against the loaded model (when one is idle).
fn check(w: &Worker, r: &crate::edit::EditRequest) -> Checked {
    if w.running.get().is_some() {
        return Checked::Busy;
    }
    let session = w.session.borrow();
    let Some(s) = session.as_ref() else {
        return Checked::NoModel;
    };
    let placed = s.setup().and_then(|setup| {
        setup.with_check(
            &s.tokenizer,
            s.config().max_ctx,
            session::FORM_CONTEXT_MARGIN,
            |spec| spec.check_request(r),
        )
    });
    if let Err(e) = placed {
        return Checked::Refused {
            message: e.to_string(),
        };
    }
    let tok = &s.tokenizer;
    match crate::edit::subject::locate_subject(tok, &r.prompt, &r.subject) {
        Ok(st) => {
            let first = r
                .prompt
                .find("{}")
                .and_then(|at| tok.encode(&r.prompt[..at]).ok())
                .map_or(0, |p| p.len());
            Checked::Ok {
                tokens: st
                    .ids
                    .iter()
                    .map(|&id| TokenView {
                        id,
                        text: tok.decode(&[id]).unwrap_or_default(),
                    })
                    .collect(),
                first,
                last: st.last,
            }
        }
        Err(e) => Checked::Refused {
            message: e.to_string(),
        },
    }
}
