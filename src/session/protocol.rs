//! The page's protocol between its main thread (the DOM) and the engine in a Web Worker.
//!
//! The page posts a [`ToWorker`] for each user action; the worker answers with any number of
//! [`Event`]s (progress, stages, streamed tokens, the ledger as it now is) and one final
//! [`Outcome`] under the same `id`. Messages cross `postMessage` as plain JavaScript objects made
//! by `serde-wasm-bindgen` from these types; files and byte buffers travel beside them, in the
//! envelope's `attach` array (a picked `File` in, an exported patch or model out), so that they
//! are handed over rather than copied through serde.
//!
//! Every message carries [`PROTOCOL_VERSION`]. A message of another version (a page and a worker
//! from two different builds, after an upgrade) or of an unknown kind is refused with a
//! [`Failure`] that says to reload; it never reaches the engine. One job runs at a time: a job
//! posted while another runs is refused with [`Failure::busy`]. [`Request::Cancel`],
//! [`Request::StopBench`] and [`Request::Check`] are not jobs and are answered at once (the worker
//! hears them between the running job's steps).
//!
//! The types are target-independent, so that their wire form is tested natively
//! (`tests/protocol.rs`).

use serde::{Deserialize, Serialize};

use super::{EntryMeta, ProbeOut, RequestProbes, Rewind};
use crate::Error;
use crate::edit::{EditRequest, MethodKind};

/// Bumped whenever a type below changes its wire form.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message from the page to the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToWorker {
    /// [`PROTOCOL_VERSION`] of the page that sent it.
    pub v: u32,
    /// Chosen by the page; the worker's events and outcome for it carry the same id.
    pub id: u32,
    pub request: Request,
}

/// The part of a message that every version shares: read first, so that a message of another
/// version or an unknown kind can still be answered under its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub v: u32,
    pub id: u32,
}

/// A message from the worker to the page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FromWorker {
    pub v: u32,
    /// The request this belongs to; 0 for what the worker says unasked ([`Event::Crashed`]).
    pub id: u32,
    pub body: Body,
}

/// An event while the job runs, or its outcome (the last message for that id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Event { event: Event },
    Done { outcome: Outcome },
}

/// How a request ended.
pub type Outcome = std::result::Result<Reply, Failure>;

/// What the page asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// The first message: the worker answers [`Reply::Ready`] with what the browser offers.
    Hello,
    /// Stops the running job at its next step; what it was changing is as before it.
    Cancel,
    /// Ends the running benchmark after its current batch (its results so far are kept).
    StopBench,
    /// Checks a request from the edit form against the loaded model's tokenizer and
    /// hyperparameters; answered at once ([`Checked::Busy`] while a job runs).
    Check { request: EditRequest },
    /// Loads a model (the previous one stays until the new one has decoded), then restores the
    /// ledger saved for it in this browser.
    Load {
        source: Source,
        backend: Backend,
        /// The `?max_binding=N` test hook: refuse tensors over `N` bytes on WebGPU.
        max_binding: Option<u64>,
    },
    /// Greedy generation, streamed as [`Event::Token`]s.
    Generate { prompt: String, max_tokens: usize },
    /// Applies requests in batches of `batch` (getting the covariance, the templates and the
    /// method's projectors ready first), then saves the ledger in this browser.
    Apply {
        items: Vec<Item>,
        #[serde(flatten)]
        plan: Plan,
    },
    /// Reads a dataset file (attached) and checks every record against the loaded model; the
    /// worker keeps its cases for [`Request::ApplyDataset`].
    ReadDataset { name: String },
    /// Applies the first `n` cases of the dataset read last, in batches of `batch`.
    ApplyDataset {
        n: usize,
        #[serde(flatten)]
        plan: Plan,
    },
    /// Recomputes the covariance statistic in the page over `budget` tokens.
    Covariance { budget: usize },
    /// Undo, back to the original, or remove edit k (re-applying the later ones).
    Rewind {
        what: Rewind,
        /// The method selected in the form, saved with the ledger.
        method: MethodKind,
        cov_budget: usize,
    },
    /// The original against the edited model: the form's request when it is valid (else the
    /// ledger's last one) and the page's probes.
    Compare {
        request: Option<EditRequest>,
        probes: Vec<ProbePrompt>,
    },
    /// The ledger as a `.nsepatch` (attached to the reply).
    ExportPatch,
    /// Replays a patch file (attached) onto the original weights, replacing the ledger.
    ImportPatch {
        name: String,
        /// The method selected in the form, saved with the ledger.
        method: MethodKind,
    },
    /// The edited model as safetensors (attached to the reply), with its config and tokenizer.
    ExportModel,
    /// Edits with these hyperparameters (a JSON hyperparameter file) from now on; refused once
    /// the ledger holds an edit. Answered [`Reply::Edited`].
    SetHparams { json: String },
    /// The sequential benchmark on the shipped CounterFact cases, from the original model; the
    /// user's ledger is set aside and given back bit for bit.
    Bench {
        n: usize,
        #[serde(flatten)]
        plan: Plan,
    },
    /// Test hook (the page's `?test_panic=edit`): the next edit panics at its first z step, as
    /// a bug in the engine would.
    ArmPanic,
}

impl Request {
    /// Whether the request is a job (one at a time), rather than answered at once.
    pub fn is_job(&self) -> bool {
        !matches!(
            self,
            Request::Hello
                | Request::Cancel
                | Request::StopBench
                | Request::Check { .. }
                | Request::ArmPanic
        )
    }
}

/// How requests are applied: in batches of `batch` with `method`; the covariance, when the page
/// has to compute it, over `cov_budget` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub batch: usize,
    pub method: MethodKind,
    pub cov_budget: usize,
}

/// One request to apply with the prompts it is compared on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub request: EditRequest,
    pub probes: RequestProbes,
}

/// A prompt of the comparison beside the edit prompt itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePrompt {
    /// `paraphrase`, `neighborhood` or `probe` (the user's own).
    pub kind: String,
    pub prompt: String,
}

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Source {
    /// A URL relative to the page (the default model), kept in the browser's Cache API.
    Url { url: String },
    /// Files the user picked, attached in this order.
    Files { names: Vec<String> },
}

/// Which backend runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Browser WebGPU through wgpu and the WGSL kernels.
    Webgpu,
    /// The plain-Rust backend, single-threaded in the worker.
    Cpu,
}

impl Backend {
    /// The `<select>` value and `data-backend` attribute.
    pub fn id(self) -> &'static str {
        match self {
            Backend::Webgpu => "webgpu",
            Backend::Cpu => "cpu",
        }
    }

    /// The backend named by a `<select>` value (WebGPU unless `cpu`).
    pub fn from_id(id: &str) -> Self {
        if id == "cpu" {
            Backend::Cpu
        } else {
            Backend::Webgpu
        }
    }
}

/// What the browser offers for WebGPU (probed in the worker, where the model runs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "support", rename_all = "snake_case")]
pub enum WebGpuSupport {
    /// `navigator.gpu` is undefined: no WebGPU in this browser, or it is switched off.
    NoApi,
    /// WebGPU exists but gave no adapter; the text says what the browser reported.
    NoAdapter { detail: String },
    /// An adapter is available.
    Adapter { facts: AdapterFacts },
}

/// The browser's description of its adapter (`GPUAdapter.info`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterFacts {
    pub vendor: String,
    pub architecture: String,
    pub description: String,
    /// A software fallback such as SwiftShader: correct, but far slower than a real GPU.
    pub is_fallback: bool,
}

impl AdapterFacts {
    /// "google swiftshader (software fallback adapter)", or "unnamed adapter".
    pub fn label(&self) -> String {
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

/// What the worker says while a job runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The progress bar (`None`: indeterminate) and its label.
    Progress {
        fraction: Option<f64>,
        label: String,
    },
    /// One line of the edit's stage list: `state` is `pending`, `active`, `done` or `failed`.
    Stage {
        id: String,
        state: String,
        text: String,
    },
    /// Clears the stage list for a new job.
    ClearStages,
    /// The model status line: `state` is `loading`, `ready` or `empty`.
    Status {
        state: String,
        backend: String,
        lines: Vec<String>,
    },
    /// The loaded model and its ledger as they now are.
    Snapshot { snapshot: Snapshot },
    /// Where the ledger was saved, or why not.
    Saved { text: String },
    /// The covariance statistic in use.
    Covariance { text: String },
    /// The generation so far: its text and token count.
    Token { text: String, n: usize },
    /// The top-5 next-token probabilities of the first generated token: id, token, probability.
    Top5 { rows: Vec<(u32, String, f32)> },
    /// Puts a request into the edit form, with its probes (after a restore, the ledger's last).
    FillForm {
        request: EditRequest,
        probes: RequestProbes,
        method: Option<MethodKind>,
    },
    /// The benchmark's status line.
    BenchStatus { text: String },
    /// The benchmark measured the cases edited so far: rewrite, paraphrase, neighbourhood (%).
    BenchPoint {
        edits: usize,
        rates: [Option<f64>; 3],
    },
    /// A problem that did not end the job (a saved ledger that cannot be restored).
    Warning { text: String },
    /// The engine panicked: the worker is unusable (the page offers a restart).
    Crashed { message: String },
}

/// The loaded model and its ledger, as the page shows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `None` while no model is loaded.
    pub model: Option<ModelView>,
}

/// What the page shows about the loaded model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelView {
    /// The file name, and the name without its extension (for download names).
    pub name: String,
    pub stem: String,
    pub sha256: String,
    /// "SmolLM2-135M-Instruct.Q4_1.gguf · llama · 30 layers · …".
    pub line: String,
    /// The device line.
    pub device: String,
    pub backend: Backend,
    /// The model's bytes came from the browser's cache (nothing was downloaded).
    pub from_cache: bool,
    /// Why editing is unavailable, `None` when it is available.
    pub not_editable: Option<String>,
    /// The hyperparameters edits use, as a JSON file; while editing is unavailable, the ones
    /// that made it so, to be changed (`Session::proposed_hparams`), else `None`.
    #[serde(default)]
    pub hparams: Option<String>,
    /// The edited layers, `d_model` and `d_ff`.
    pub layers: Vec<usize>,
    pub d_model: usize,
    pub d_ff: usize,
    pub entries: Vec<EntryView>,
    /// The last entry's digest, or `root` for the original model.
    pub head: String,
    /// Per edited layer, `‖ΔW[:, j]‖` over the `d_ff` neurons (empty for an empty ledger).
    pub neurons: Vec<(usize, Vec<f32>)>,
    /// Bytes of the weights by storage type (`"Q4_1"`, `"F32"`, …), largest first.
    #[serde(default)]
    pub weight_bytes: Vec<(String, u64)>,
    /// The engine's WebAssembly memory when the view was made, which never shrinks: the most
    /// the engine has held so far (`None` outside a browser).
    #[serde(default)]
    pub wasm_memory_bytes: Option<u64>,
}

/// One ledger entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryView {
    pub method: MethodKind,
    pub requests: Vec<EditRequest>,
    pub meta: EntryMeta,
}

/// The final answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// To [`Request::Hello`].
    Ready {
        version: u32,
        webgpu: WebGpuSupport,
    },
    /// Done, nothing to return.
    Ok,
    Checked {
        checked: Checked,
    },
    /// Loaded in `secs`.
    Loaded {
        secs: f64,
    },
    Generated {
        tokens: usize,
        stopped_at_eos: bool,
        cancelled: bool,
        secs: f64,
        backend: Backend,
    },
    /// An apply, rewind or import finished: `text` says what was done; `cancelled` when a cancel
    /// rolled it back (the comparison shown then still holds).
    Edited {
        text: String,
        cancelled: bool,
    },
    /// A dataset was read: its case count and first case.
    Dataset {
        name: String,
        cases: usize,
        first: Item,
    },
    Compared {
        compared: Option<Compared>,
    },
    /// A patch or model export: the file name and size; the bytes are attached.
    Exported {
        name: String,
        bytes: usize,
        /// A model export's `config.json` and `tokenizer.json`.
        config: Option<String>,
        tokenizer: Option<String>,
    },
    /// The benchmark ended after `edits` edits.
    Bench {
        edits: usize,
        secs: f64,
    },
}

/// The verdict on the edit form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Checked {
    /// No model is loaded: only the form's own rules were checked.
    NoModel,
    /// A job runs: the check waits for it.
    Busy,
    /// The request can be placed: the prompt's tokens, the subject's first and last token.
    Ok {
        tokens: Vec<TokenView>,
        first: usize,
        last: usize,
    },
    /// Why it cannot.
    Refused { message: String },
}

/// One token of the prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: u32,
    pub text: String,
}

/// A comparison of the original and the edited model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    /// The request compared, with the true target it was scored against.
    pub request: EditRequest,
    /// The edit prompt first, then the probes in the order asked.
    pub rows: Vec<CompareRow>,
    pub secs: f64,
}

/// One prompt on both models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    /// `edit`, `paraphrase`, `neighborhood` or `probe`.
    pub kind: String,
    pub prompt: String,
    pub original: ProbeOut,
    pub edited: ProbeOut,
}

/// Why a request failed: a stable code and the human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    /// A job posted while another runs.
    pub fn busy(running: &str) -> Self {
        Failure {
            code: "Busy".into(),
            message: format!(
                "another job is running ({running}): wait for it to finish, or press Cancel"
            ),
        }
    }

    /// A message the worker cannot read: another version, or an unknown kind.
    pub fn protocol(detail: &str) -> Self {
        Failure {
            code: "Protocol".into(),
            message: format!(
                "the page and its engine are out of step ({detail}); reload the page (an update \
                 may have arrived while it was open)"
            ),
        }
    }

    /// A request that needs a model, with none loaded.
    pub fn no_model() -> Self {
        Failure {
            code: "NoModel".into(),
            message: "no model is loaded yet: wait for it to load, or load one above".into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: e.code().into(),
            message: e.to_string(),
        }
    }
}

/// Checks the version of an incoming message's [`Header`].
///
/// # Errors
/// A [`Failure::protocol`] naming both versions.
pub fn check_version(v: u32) -> std::result::Result<(), Failure> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Failure::protocol(&format!(
            "message version {v}, this engine speaks version {PROTOCOL_VERSION}"
        )))
    }
}
