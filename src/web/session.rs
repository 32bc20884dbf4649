//! The loaded model on one backend, with its tokenizer, where it came from, and its editing
//! state (the original `down_proj` of the edited layers, `P`, the ledger).

use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::edit::check::CheckReport;
use crate::edit::{Case, EditState, Hparams};
use crate::gpu::GpuBackend;
use crate::model::{HostTensor, LoadedModel, Model, ModelConfig, ModelSource, Tokenizer, Weights};
use crate::{Error, Result};

use super::editing::EditSetup;
use super::webgpu::AdapterFacts;

/// Which backend runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendKind {
    /// Browser WebGPU through wgpu and the WGSL kernels.
    WebGpu,
    /// The plain-Rust backend, single-threaded in the page.
    Cpu,
}

impl BackendKind {
    /// The `<select>` value and `data-backend` attribute.
    pub(crate) fn id(self) -> &'static str {
        match self {
            BackendKind::WebGpu => "webgpu",
            BackendKind::Cpu => "cpu",
        }
    }

    pub(crate) fn from_id(id: &str) -> Self {
        if id == "cpu" {
            BackendKind::Cpu
        } else {
            BackendKind::WebGpu
        }
    }
}

/// A model on one backend with its editing state.
pub(crate) struct Workbench<B: Backend> {
    pub model: Model<B>,
    /// `None` when editing is unavailable for this model (see [`Session::editing`]).
    pub edits: Option<EditState<B::Tensor>>,
}

/// The model's weights on a backend.
pub(crate) enum Engine {
    Gpu(Workbench<GpuBackend>),
    Cpu(Workbench<CpuBackend>),
}

/// Runs `$body` with `$m` bound to the engine's `&Model<B>`, whichever the backend.
macro_rules! with_model {
    ($engine:expr, $m:ident => $body:expr) => {
        match $engine {
            $crate::web::session::Engine::Gpu(w) => {
                let $m = &w.model;
                $body
            }
            $crate::web::session::Engine::Cpu(w) => {
                let $m = &w.model;
                $body
            }
        }
    };
}
pub(crate) use with_model;

/// Runs `$body` with `$w` bound to the engine's [`Workbench`] (as `&` or `&mut`, following
/// `$engine`), whichever the backend.
macro_rules! with_bench {
    ($engine:expr, $w:ident => $body:expr) => {
        match $engine {
            $crate::web::session::Engine::Gpu($w) => $body,
            $crate::web::session::Engine::Cpu($w) => $body,
        }
    };
}
pub(crate) use with_bench;

/// A model ready to run.
pub(crate) struct Session {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    pub source: ModelSource,
    /// One line about the device: backend, adapter, limits.
    pub device: String,
    /// The model bytes came from the browser's cache (no download).
    pub from_cache: bool,
    /// Hyperparameters, templates, covariance and the ledger's page-side records; `Err` says
    /// why this model cannot be edited here.
    pub editing: std::result::Result<EditSetup, String>,
}

impl Session {
    /// Uploads a decoded model to the cpu backend (the weights move, nothing is copied).
    pub(crate) fn on_cpu(loaded: LoadedModel, from_cache: bool) -> Result<Session> {
        let model = Model::upload(CpuBackend, loaded.config, loaded.weights)?;
        let (edits, editing) = editing_for(&model, &loaded.source)?;
        Ok(Session {
            device: "CPU backend · single-threaded on the page's main thread (faer GEMM)".into(),
            engine: Engine::Cpu(Workbench { model, edits }),
            tokenizer: loaded.tokenizer,
            source: loaded.source,
            from_cache,
            editing,
        })
    }

    /// Uploads a decoded model to a WebGPU device, then reads a weight back so that the upload
    /// has really finished (and any device error surfaces here, not at the first prompt).
    ///
    /// # Errors
    /// [`Error::BufferTooLarge`] for a tensor over the adapter's limits (with a hint for this
    /// page), a lost device, or any other GPU failure.
    pub(crate) async fn on_gpu(
        loaded: LoadedModel,
        gpu: GpuBackend,
        facts: &AdapterFacts,
        from_cache: bool,
    ) -> Result<Session> {
        let device = gpu_line(&gpu, facts);
        let model = Model::upload(gpu.clone(), loaded.config, loaded.weights).map_err(|e| {
            gpu.destroy();
            page_hint(e)
        })?;
        if let Err(e) = model.backend().read(&model.weights.norm).await {
            gpu.destroy();
            return Err(e);
        }
        let (edits, editing) = match editing_for(&model, &loaded.source) {
            Ok(x) => x,
            Err(e) => {
                gpu.destroy();
                return Err(e);
            }
        };
        Ok(Session {
            engine: Engine::Gpu(Workbench { model, edits }),
            tokenizer: loaded.tokenizer,
            source: loaded.source,
            device,
            from_cache,
            editing,
        })
    }

    /// The library's check of dataset records (`CheckSpec::check_records`, probes included)
    /// against this model; the schema alone when the model cannot be edited here.
    pub(crate) fn check_records(
        &self,
        records: &[std::result::Result<Case, String>],
        batch: Option<usize>,
    ) -> CheckReport {
        match &self.editing {
            Ok(setup) => setup.with_check(&self.tokenizer, self.config().max_ctx, |spec| {
                spec.check_records(records, batch, true)
            }),
            Err(_) => CheckReport::schema(records, batch),
        }
    }

    pub(crate) fn config(&self) -> &ModelConfig {
        with_model!(&self.engine, m => &m.config)
    }

    /// Edited requests in the ledger (0 when editing is unavailable).
    pub(crate) fn n_entries(&self) -> usize {
        with_bench!(&self.engine, w => w.edits.as_ref().map_or(0, |s| s.ledger.len()))
    }

    pub(crate) fn kind(&self) -> BackendKind {
        match self.engine {
            Engine::Gpu(_) => BackendKind::WebGpu,
            Engine::Cpu(_) => BackendKind::Cpu,
        }
    }

    /// One line about the model: name, format, size, parameters, shape.
    pub(crate) fn model_line(&self) -> String {
        let c = self.config();
        format!(
            "{} ({}, {}, {} parameters: {} layer{}, d {}, vocabulary {})",
            self.source.name,
            self.source.format.to_uppercase(),
            fmt_bytes(self.source.bytes),
            fmt_count(c.n_params() as u64),
            c.n_layers,
            if c.n_layers == 1 { "" } else { "s" },
            c.d_model,
            c.vocab_size
        )
    }

    /// Frees the model now: a GPU device is destroyed at once rather than when the browser's
    /// garbage collector gets to it.
    pub(crate) fn release(self) {
        if let Engine::Gpu(w) = &self.engine {
            w.model.backend().destroy();
        }
    }
}

/// The editing state of a freshly uploaded model: the shipped hyperparameters for its name
/// (`Err` with the reason when none ship or they do not fit), and an empty ledger.
///
/// # Errors
/// Only a backend failure while copying the original `down_proj` matrices.
#[allow(clippy::type_complexity)]
fn editing_for<B: Backend>(
    model: &Model<B>,
    source: &ModelSource,
) -> Result<(
    Option<EditState<B::Tensor>>,
    std::result::Result<EditSetup, String>,
)> {
    let hp = Hparams::for_model(&source.name).and_then(|hp| {
        hp.check_model(&model.config)?;
        Ok(hp)
    });
    let setup = match hp.and_then(EditSetup::new) {
        Ok(setup) => setup,
        Err(e) => {
            let why = format!("editing is not available for this model: {e}");
            return Ok((None, Err(why)));
        }
    };
    let state = EditState::new(model, &setup.hp.layers)?;
    Ok((Some(state), Ok(setup)))
}

/// Refuses a model with a tensor over `cap` bytes, as the GPU backend refuses one over the
/// adapter's binding limit, before anything is uploaded (the `?max_binding=N` test hook).
///
/// # Errors
/// [`Error::BufferTooLarge`] naming the first such tensor, with the page's way out.
pub(crate) fn check_binding_cap(weights: &Weights<HostTensor>, cap: u64) -> Result<()> {
    let mut all: Vec<&HostTensor> = vec![&weights.embed_tokens, &weights.norm];
    for l in &weights.layers {
        all.extend([
            &l.input_layernorm,
            &l.q_proj,
            &l.k_proj,
            &l.v_proj,
            &l.o_proj,
            &l.post_attention_layernorm,
            &l.gate_proj,
            &l.up_proj,
            &l.down_proj,
        ]);
    }
    all.extend(weights.lm_head.as_ref());
    match all.into_iter().find(|t| 4 * t.data.len() as u64 > cap) {
        Some(t) => Err(page_hint(Error::BufferTooLarge {
            name: t.name.clone(),
            bytes: 4 * t.data.len() as u64,
            limit: cap,
        })),
        None => Ok(()),
    }
}

/// "WebGPU on google swiftshader · maxStorageBufferBindingSize 1 GiB · maxBufferSize 1 GiB".
fn gpu_line(gpu: &GpuBackend, facts: &AdapterFacts) -> String {
    let limits = gpu.limits();
    let adapter = if facts == &AdapterFacts::default() {
        gpu.describe_adapter()
    } else {
        facts.label()
    };
    format!(
        "WebGPU on {adapter} · maxStorageBufferBindingSize {} · maxBufferSize {}",
        fmt_bytes(limits.max_storage_buffer_binding_size),
        fmt_bytes(limits.max_buffer_size)
    )
}

/// Library errors phrased for the command line get the page's way out added.
fn page_hint(e: Error) -> Error {
    match e {
        Error::BufferTooLarge { .. } => Error::input(format!(
            "{e}. In this page: choose “CPU” under Backend and load the model again."
        )),
        e => e,
    }
}

/// `93.4 MB`, `1 GiB` for exact powers of two (adapter limits), `512 B`.
pub(crate) fn fmt_bytes(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1_000_000_000 {
        format!("{:.2} GB", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else {
        format!("{n} B")
    }
}

/// `134.5 M`, `1.24 B`.
fn fmt_count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}
