//! The JavaScript API of the npm package (`wasm-pack build --target web`, see `scripts/package.sh`):
//! the class [`Editor`], the same engine as the page's, in a dedicated Web Worker, behind
//! Promises. It speaks the page's protocol ([`crate::session::protocol`]) through the shared
//! [`super::client`].
//!
//! ```js
//! import init, { Editor } from './pkg/nse.js';
//! await init();
//! const editor = await Editor.create({ assetsUrl: '/models-and-statistics/' });
//! await editor.loadModel('models/SmolLM2-135M-Instruct.Q4_1.gguf', { backend: 'cpu' });
//! await editor.apply({ prompt: 'The Eiffel Tower is located in', subject: 'Eiffel Tower', target: 'Rome' });
//! ```
//!
//! Errors are JavaScript `Error`s with a stable `code` beside the human message: `BadArgument`
//! (a call with arguments of the wrong type, a detached buffer), `NoModel`, `Busy` (a job is
//! running), `SubjectNotFound`, `SubjectSplitsToken`, `PatchForAnotherModel`, `ModelTooLarge`,
//! `BadModelFile`, `BadInput`, `Cancelled`, `DeviceLost`, `Crashed`, `Protocol`, `VersionMismatch`
//! and the library's other [`crate::Error::code`]s. None of them leaves the editor broken.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Function, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use super::client::{Client, Start};
use super::js;
use crate::edit::patch::NSE_VERSION;
use crate::edit::{EditRequest, MethodKind};
use crate::session::protocol::{
    Backend, Event, Failure, Item, PROTOCOL_VERSION, Plan, ProbePrompt, Reply, Request, Snapshot,
    Source,
};
use crate::session::{RequestProbes, Rewind};

#[wasm_bindgen(inline_js = "export function nse_glue_url() { \
    return new URL('../../nse.js', import.meta.url).href; }")]
extern "C" {
    /// The package's glue, `nse.js`: two folders up from this snippet (`snippets/nse-…/`).
    fn nse_glue_url() -> String;
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** An edit request: the subject written in the prompt (or `{}` where it goes), the new target,
 * and optionally the true target (default: the unedited model's answer). */
export interface EditRequest { prompt: string; subject: string; target: string; trueTarget?: string }
/** Options of `Editor.create`. */
export interface CreateOptions { worker?: boolean; assetsUrl?: string }
/** Called with the fraction done (null: unknown) and what the engine is doing. */
export type OnProgress = (fraction: number | null, label: string) => void;
/** Options of `loadModel`. */
export interface LoadOptions { backend?: "webgpu" | "cpu"; name?: string; onProgress?: OnProgress }
/** Options of `generate`. */
export interface GenerateOptions { maxTokens?: number; onToken?: (text: string, count: number) => void }
/** Options of `apply`. */
export interface ApplyOptions { method?: "nse" | "memit-seq" | "memit" | "alphaedit"; batch?: number; onProgress?: OnProgress }
/** The loaded model. */
export interface ModelInfo { name: string; line: string; device: string; backend: "webgpu" | "cpu"; editable: boolean; entries: number }
/** A finished generation. */
export interface Generation { text: string; tokens: number; stoppedAtEos: boolean; cancelled: boolean; seconds: number }
/** What an edit, undo or import did. */
export interface EditResult { text: string; cancelled: boolean; entries: number }
/** An error of the editor: the message, and a stable code (`SubjectNotFound`, `Busy`, …). */
export interface EditorError extends Error { code: string }
/** The same methods with their options left out (merged into the class `Editor`). */
export interface Editor {
  loadModel(source: string | Uint8Array | ArrayBuffer | File | File[]): Promise<ModelInfo>;
  generate(prompt: string): Promise<Generation>;
  apply(requests: EditRequest | EditRequest[]): Promise<EditResult>;
  compare(request?: EditRequest, probes?: string[]): Promise<Compared | null>;
}
/** One prompt on both models. */
export interface CompareSide { text: string; p_new: number; p_true: number | null; says_new: boolean; says_true: boolean | null }
/** A comparison of the original and the edited model. */
export interface Compared { request: { prompt: string; subject: string; target_new: string; target_true: string | null }; rows: { kind: string; prompt: string; original: CompareSide; edited: CompareSide }[]; secs: number }
"#;

/// The default covariance token budget, when a statistic must be computed in the browser.
const COV_BUDGET: usize = 10_240;

/// What the running call wants to hear.
#[derive(Default)]
struct Listeners {
    progress: Option<Function>,
    token: Option<Function>,
}

/// What the engine last said, kept for the synchronous getters.
#[derive(Default)]
struct Heard {
    snapshot: Snapshot,
    /// The text of the running (or last) generation.
    text: String,
}

/// An editor of what a language model knows, running on the user's GPU (WebGPU) or CPU, in a
/// dedicated Web Worker. Create one with `Editor.create()`; every method returns a Promise, and
/// one job (load, generate, apply, undo, compare, import, export) runs at a time.
#[wasm_bindgen]
pub struct Editor {
    client: Rc<Client>,
    listeners: Rc<RefCell<Listeners>>,
    heard: Rc<RefCell<Heard>>,
    /// One of this editor's jobs is running (its listeners are the call's).
    busy: Cell<bool>,
    closed: Cell<bool>,
}

/// A JavaScript `Error` with `code`.
fn error(code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    let _ = Reflect::set(&e, &"code".into(), &JsValue::from_str(code));
    e.into()
}

fn failure(f: Failure) -> JsValue {
    error(&f.code, &f.message)
}

fn bad_argument(message: &str) -> JsValue {
    error("BadArgument", message)
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    js::encode(value).map_err(|e| error("Protocol", &format!("cannot encode an answer: {e}")))
}

/// `obj[key]`, `undefined` when absent or `obj` is not an object.
fn field(obj: &JsValue, key: &str) -> JsValue {
    if obj.is_object() {
        Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// An optional string field; another type is a `BadArgument`.
fn opt_string(obj: &JsValue, key: &str) -> Result<Option<String>, JsValue> {
    let v = field(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_string().map(Some).ok_or_else(|| {
        bad_argument(&format!(
            "`{key}` must be a string, not {}",
            v.js_typeof().as_string().unwrap_or_default()
        ))
    })
}

fn string(obj: &JsValue, key: &str) -> Result<String, JsValue> {
    opt_string(obj, key)?.ok_or_else(|| bad_argument(&format!("`{key}` is missing")))
}

fn opt_function(obj: &JsValue, key: &str) -> Result<Option<Function>, JsValue> {
    let v = field(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.dyn_into::<Function>()
        .map(Some)
        .map_err(|_| bad_argument(&format!("`{key}` must be a function")))
}

fn opt_usize(obj: &JsValue, key: &str, lo: usize, hi: usize) -> Result<Option<usize>, JsValue> {
    let v = field(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x >= lo as f64 && x <= hi as f64 => Ok(Some(x as usize)),
        _ => Err(bad_argument(&format!(
            "`{key}` must be a whole number from {lo} to {hi}"
        ))),
    }
}

/// `{prompt, subject, target, trueTarget?}` (the subject written in the prompt, or `{}` where it
/// goes) as a request.
fn request_of(v: &JsValue) -> Result<EditRequest, JsValue> {
    if !v.is_object() {
        return Err(bad_argument(
            "a request is an object {prompt, subject, target, trueTarget?}",
        ));
    }
    let target = match opt_string(v, "target")? {
        Some(t) => t,
        None => string(v, "targetNew")?,
    };
    let truth = opt_string(v, "trueTarget")?;
    EditRequest::from_sentence(
        &string(v, "prompt")?,
        &string(v, "subject")?,
        &target,
        truth.as_deref(),
    )
    .map_err(|e| failure(Failure::from(e)))
}

/// Bytes from a `Uint8Array`, an `ArrayBuffer` or a `File`, as a `File` to hand to the engine.
fn file_of(v: &JsValue, name: &str) -> Result<web_sys::File, JsValue> {
    if let Some(f) = v.dyn_ref::<web_sys::File>() {
        return Ok(f.clone());
    }
    // A transferred (detached) buffer reads as empty, and making a view of it throws: its
    // length is checked first.
    let detached = || {
        bad_argument(
            "the bytes are empty (a buffer already transferred elsewhere is detached and empty)",
        )
    };
    let bytes = if let Some(b) = v.dyn_ref::<Uint8Array>() {
        b.clone()
    } else if let Some(b) = v.dyn_ref::<js_sys::ArrayBuffer>() {
        if b.byte_length() == 0 {
            return Err(detached());
        }
        Uint8Array::new(b)
    } else {
        return Err(bad_argument(
            "pass the bytes as a Uint8Array, an ArrayBuffer or a File",
        ));
    };
    if bytes.byte_length() == 0 {
        return Err(detached());
    }
    web_sys::File::new_with_u8_array_sequence(&Array::of1(&bytes), name)
        .map_err(|e| bad_argument(&js::js_error("cannot wrap the bytes", e).to_string()))
}

#[wasm_bindgen]
impl Editor {
    /// Starts the engine. `options` (all optional): `worker` (default `true`; `false` runs the
    /// engine on this thread), `assetsUrl` (where relative model, covariance and corpus URLs
    /// are resolved; default: this page's address).
    pub async fn create(
        #[wasm_bindgen(unchecked_param_type = "CreateOptions")] options: Option<JsValue>,
    ) -> Result<Editor, JsValue> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let in_page = field(&options, "worker").as_bool() == Some(false);
        let page = web_sys::window()
            .and_then(|w| w.location().href().ok())
            .unwrap_or_default();
        let base = match opt_string(&options, "assetsUrl")? {
            Some(a) => web_sys::Url::new_with_base(&a, &page)
                .map(|u| u.href())
                .map_err(|_| bad_argument(&format!("`assetsUrl` {a:?} is not an address")))?,
            None => page,
        };
        let listeners = Rc::new(RefCell::new(Listeners::default()));
        let heard = Rc::new(RefCell::new(Heard::default()));
        let sink = {
            let listeners = Rc::clone(&listeners);
            let heard = Rc::clone(&heard);
            Rc::new(move |event: Event| match event {
                Event::Progress { fraction, label } => {
                    if let Some(f) = &listeners.borrow().progress {
                        let fraction = fraction.map_or(JsValue::NULL, JsValue::from_f64);
                        let _ = f.call2(&JsValue::NULL, &fraction, &label.into());
                    }
                }
                Event::Token { text, n } => {
                    if let Some(f) = &listeners.borrow().token {
                        let _ = f.call2(&JsValue::NULL, &text.as_str().into(), &(n as f64).into());
                    }
                    heard.borrow_mut().text = text;
                }
                Event::Snapshot { snapshot } => heard.borrow_mut().snapshot = snapshot,
                Event::Crashed { message } => {
                    web_sys::console::error_1(&format!("nse: the engine crashed: {message}").into())
                }
                _ => {}
            })
        };
        let client = Rc::new(Client::new(sink));
        let how = Start {
            in_page,
            glue: nse_glue_url(),
            wasm: None,
            base,
        };
        client
            .start(&how)
            .await
            .map_err(|e| failure(Failure::from(e)))?;
        Ok(Editor {
            client,
            listeners,
            heard,
            busy: Cell::new(false),
            closed: Cell::new(false),
        })
    }

    /// The nse version and the protocol version this package speaks, e.g. `"0.1.0 (protocol 1)"`.
    pub fn version() -> String {
        format!("{NSE_VERSION} (protocol {PROTOCOL_VERSION})")
    }

    /// Loads a model: a URL (string, relative to `assetsUrl`), the bytes of a `.gguf`
    /// (`Uint8Array`, `ArrayBuffer` or `File`), or the `File`s of a Hugging Face checkpoint
    /// (`config.json`, `tokenizer.json`, `*.safetensors`) as an array. `options`: `backend`
    /// (`"webgpu"` or `"cpu"`, default `"webgpu"`), `name` (for bytes), `onProgress(fraction,
    /// label)`. Resolves to the model: `{name, line, device, backend, editable}`; the ledger saved
    /// for this model in this browser is restored.
    #[wasm_bindgen(js_name = loadModel, unchecked_return_type = "ModelInfo")]
    pub async fn load_model(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string | Uint8Array | ArrayBuffer | File | File[]")]
        source: JsValue,
        #[wasm_bindgen(unchecked_param_type = "LoadOptions")] options: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let backend = match opt_string(&options, "backend")?.as_deref() {
            None | Some("webgpu") => Backend::Webgpu,
            Some("cpu") => Backend::Cpu,
            Some(other) => {
                return Err(bad_argument(&format!(
                    "`backend` is \"webgpu\" or \"cpu\", not {other:?}"
                )));
            }
        };
        let attach = Array::new();
        let source = if let Some(url) = source.as_string() {
            Source::Url { url }
        } else if Array::is_array(&source) {
            let files: Array = source.unchecked_into();
            let mut names = vec![];
            for f in files.iter() {
                let f = f
                    .dyn_into::<web_sys::File>()
                    .map_err(|_| bad_argument("an array of model files must hold File objects"))?;
                names.push(f.name());
                attach.push(&f);
            }
            Source::Files { names }
        } else {
            let name = opt_string(&options, "name")?.unwrap_or_else(|| "model.gguf".into());
            let file = file_of(&source, &name)?;
            attach.push(&file);
            Source::Files { names: vec![name] }
        };
        let request = Request::Load {
            source,
            backend,
            max_binding: None,
        };
        self.job(request, attach, &options).await?;
        self.model()
    }

    /// The loaded model: `{name, line, device, backend, editable, entries}`, or `null`.
    #[wasm_bindgen(unchecked_return_type = "ModelInfo | null")]
    pub fn model(&self) -> Result<JsValue, JsValue> {
        let heard = self.heard.borrow();
        match &heard.snapshot.model {
            None => Ok(JsValue::NULL),
            Some(m) => to_js(&serde_json::json!({
                "name": m.name,
                "line": m.line,
                "device": m.device,
                "backend": m.backend.id(),
                "editable": m.not_editable.is_none(),
                "entries": m.entries.len(),
            })),
        }
    }

    /// The ledger: one entry per applied batch, `{method, requests: [{prompt, subject,
    /// target_new, target_true}], meta}`.
    pub fn ledger(&self) -> Result<JsValue, JsValue> {
        let heard = self.heard.borrow();
        let entries = heard
            .snapshot
            .model
            .as_ref()
            .map(|m| m.entries.clone())
            .unwrap_or_default();
        to_js(&entries)
    }

    /// Greedy generation after `prompt`. `options`: `maxTokens` (1 to 512, default 32),
    /// `onToken(text, count)` with the text so far after every token. Resolves to `{text, tokens,
    /// stoppedAtEos, cancelled, seconds}`.
    #[wasm_bindgen(unchecked_return_type = "Generation")]
    pub async fn generate(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] prompt: JsValue,
        #[wasm_bindgen(unchecked_param_type = "GenerateOptions")] options: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let prompt = prompt
            .as_string()
            .ok_or_else(|| bad_argument("the prompt must be a string"))?;
        let max_tokens = opt_usize(&options, "maxTokens", 1, 512)?.unwrap_or(32);
        self.heard.borrow_mut().text.clear();
        let reply = self
            .job(
                Request::Generate { prompt, max_tokens },
                Array::new(),
                &options,
            )
            .await?;
        let Reply::Generated {
            tokens,
            stopped_at_eos,
            cancelled,
            secs,
            ..
        } = reply
        else {
            return Err(error("Protocol", "an unexpected answer to generate"));
        };
        let text = self.heard.borrow().text.clone();
        to_js(&serde_json::json!({
            "text": text, "tokens": tokens, "stoppedAtEos": stopped_at_eos,
            "cancelled": cancelled, "seconds": secs,
        }))
    }

    /// Applies one request `{prompt, subject, target, trueTarget?}` or an array of them.
    /// `options`: `method` (`"nse"`, `"memit-seq"`, `"memit"` or `"alphaedit"`, default `"nse"`),
    /// `batch` (requests per batch, default all), `onProgress(fraction, label)`. Resolves to
    /// `{text, cancelled, entries}`; a cancelled or failed edit leaves the model and the ledger
    /// as they were.
    #[wasm_bindgen(unchecked_return_type = "EditResult")]
    pub async fn apply(
        &self,
        #[wasm_bindgen(unchecked_param_type = "EditRequest | EditRequest[]")] requests: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ApplyOptions")] options: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let list: Vec<JsValue> = if Array::is_array(&requests) {
            Array::from(&requests).iter().collect()
        } else {
            vec![requests]
        };
        if list.is_empty() {
            return Err(bad_argument("no request to apply"));
        }
        let items = list
            .iter()
            .map(|r| {
                Ok(Item {
                    request: request_of(r)?,
                    probes: RequestProbes::default(),
                })
            })
            .collect::<Result<Vec<Item>, JsValue>>()?;
        let method = match opt_string(&options, "method")? {
            Some(m) => MethodKind::parse(&m).map_err(|e| bad_argument(&e.to_string()))?,
            None => MethodKind::Nse,
        };
        let batch = opt_usize(&options, "batch", 1, 10_000)?.unwrap_or(items.len());
        let request = Request::Apply {
            items,
            plan: Plan {
                batch,
                method,
                cov_budget: COV_BUDGET,
            },
        };
        self.edited(request, Array::new(), &options).await
    }

    /// Stops the running job at its next step (an edit is then rolled back, a generation ends).
    pub fn cancel(&self) {
        self.client.send(Request::Cancel);
    }

    /// Takes the last edit back, bit for bit.
    #[wasm_bindgen(unchecked_return_type = "EditResult")]
    pub async fn undo(&self) -> Result<JsValue, JsValue> {
        let request = Request::Rewind {
            what: Rewind::Last,
            method: MethodKind::Nse,
            cov_budget: COV_BUDGET,
        };
        self.edited(request, Array::new(), &JsValue::UNDEFINED)
            .await
    }

    /// The original and the edited model side by side: on `request` (an object as for `apply`;
    /// default: the ledger's last request) and `probes` (an array of prompts). Resolves to
    /// `{request, rows: [{kind, prompt, original, edited}], secs}`, where each side is `{text,
    /// p_new, p_true, says_new, says_true}`; `null` when there is nothing to compare.
    #[wasm_bindgen(unchecked_return_type = "Compared | null")]
    pub async fn compare(
        &self,
        #[wasm_bindgen(unchecked_param_type = "EditRequest")] request: Option<JsValue>,
        #[wasm_bindgen(unchecked_param_type = "string[]")] probes: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let request = match request.filter(|r| !r.is_undefined() && !r.is_null()) {
            None => None,
            Some(r) => Some(request_of(&r)?),
        };
        let probes = probes.unwrap_or(JsValue::UNDEFINED);
        let mut prompts = vec![];
        if !(probes.is_undefined() || probes.is_null()) {
            if !Array::is_array(&probes) {
                return Err(bad_argument("`probes` must be an array of prompts"));
            }
            for p in Array::from(&probes).iter() {
                let prompt = p
                    .as_string()
                    .ok_or_else(|| bad_argument("every probe must be a string"))?;
                prompts.push(ProbePrompt {
                    kind: "probe".into(),
                    prompt,
                });
            }
        }
        let reply = self
            .job(
                Request::Compare {
                    request,
                    probes: prompts,
                },
                Array::new(),
                &JsValue::UNDEFINED,
            )
            .await?;
        match reply {
            Reply::Compared { compared } => to_js(&compared),
            _ => Err(error("Protocol", "an unexpected answer to compare")),
        }
    }

    /// The ledger as `.nsepatch` bytes.
    #[wasm_bindgen(js_name = exportPatch)]
    pub async fn export_patch(&self) -> Result<Uint8Array, JsValue> {
        let (reply, attach) = self
            .job_with(Request::ExportPatch, Array::new(), &JsValue::UNDEFINED)
            .await?;
        match (reply, attach.get(0).dyn_into::<Uint8Array>()) {
            (Reply::Exported { .. }, Ok(bytes)) => Ok(bytes),
            _ => Err(error("Protocol", "the export came without its bytes")),
        }
    }

    /// Replays a `.nsepatch` (a `Uint8Array`, an `ArrayBuffer` or a `File`) onto the original
    /// weights, replacing the ledger; a patch made for another model is refused
    /// (`PatchForAnotherModel`) and changes nothing.
    #[wasm_bindgen(js_name = importPatch, unchecked_return_type = "EditResult")]
    pub async fn import_patch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Uint8Array | ArrayBuffer | File")] bytes: JsValue,
    ) -> Result<JsValue, JsValue> {
        let file = file_of(&bytes, "imported.nsepatch")?;
        let request = Request::ImportPatch {
            name: file.name(),
            method: MethodKind::Nse,
        };
        self.edited(request, Array::of1(&file), &JsValue::UNDEFINED)
            .await
    }

    /// Ends the engine's worker; the editor cannot be used afterwards.
    pub fn close(&self) {
        self.closed.set(true);
        self.client.stop("the editor was closed");
    }
}

impl Editor {
    /// Runs a job with the call's listeners; resolves to its reply.
    async fn job(
        &self,
        request: Request,
        attach: Array,
        options: &JsValue,
    ) -> Result<Reply, JsValue> {
        self.job_with(request, attach, options)
            .await
            .map(|(r, _)| r)
    }

    async fn job_with(
        &self,
        request: Request,
        attach: Array,
        options: &JsValue,
    ) -> Result<(Reply, Array), JsValue> {
        if self.closed.get() {
            return Err(error("Closed", "this editor was closed: create another"));
        }
        let progress = opt_function(options, "onProgress")?;
        let token = opt_function(options, "onToken")?;
        // A call while another runs is refused by the engine (Busy): it must not take over the
        // running call's listeners.
        let mine = !self.busy.replace(true);
        if mine {
            *self.listeners.borrow_mut() = Listeners { progress, token };
        }
        let (outcome, out) = self.client.call(request, Some(attach)).await;
        if mine {
            *self.listeners.borrow_mut() = Listeners::default();
            self.busy.set(false);
        }
        outcome.map(|r| (r, out)).map_err(failure)
    }

    /// A job that writes edits: `{text, cancelled, entries}`.
    async fn edited(
        &self,
        request: Request,
        attach: Array,
        options: &JsValue,
    ) -> Result<JsValue, JsValue> {
        match self.job(request, attach, options).await? {
            Reply::Edited { text, cancelled } => {
                let entries = self
                    .heard
                    .borrow()
                    .snapshot
                    .model
                    .as_ref()
                    .map_or(0, |m| m.entries.len());
                to_js(
                    &serde_json::json!({ "text": text, "cancelled": cancelled, "entries": entries }),
                )
            }
            _ => Err(error("Protocol", "an unexpected answer to an edit")),
        }
    }
}
