//! The editing session every front end drives: a model on either backend with its tokenizer,
//! where it came from, and its editing state (hyperparameters, templates, covariance, the edit
//! state with the ledger, and the front end's record of each ledger entry).
//!
//! The command line and the page are views over it: they parse arguments or read the DOM, call
//! these operations and show what they return. Everything here is backend-independent, free of
//! the DOM and tested natively (`tests/session.rs`).
//!
//! - [`Engine`] is the one dispatch from the two backends to generic code ([`with_model!`],
//!   [`with_bench!`]).
//! - [`setup`]: [`EditSetup`], everything an edit needs besides the model and its state.
//! - `work`: generation, scores, the covariance, applying requests, the original against the
//!   edited model, the sequential benchmark.
//! - `ledger`: undo, remove edit k with replay, patch import and export, model export, the
//!   neurons that moved.
//!
//! Long operations await the session's [`Hooks::pause`] between steps (every generated token,
//! z step, round, layer, probe and covariance window): the page yields to its event loop there,
//! and a hook that returns [`Error::Cancelled`] stops the job at that step. A cancelled or failed
//! edit leaves the weights, `P`, the ledger and the page records exactly as before it.

pub mod ledger;
pub mod protocol;
pub mod setup;
pub mod work;

use std::future::Future;
use std::pin::Pin;

use crate::backend::{Backend, TensorInfo};
use crate::cpu::CpuBackend;
use crate::edit::target::Pause;
use crate::edit::{EditState, Hparams, LedgerEntry};
use crate::gpu::GpuBackend;
use crate::model::{LoadedModel, Model, ModelConfig, ModelSource, Tokenizer};
use crate::{Error, Result};

pub use ledger::Rewind;
pub use setup::{EditSetup, EntryMeta, RequestProbes};
pub use work::{ApplyOptions, Probe, ProbeOut};

/// A model on one backend with its edit state.
pub struct Workbench<B: Backend> {
    pub model: Model<B>,
    /// `None` when editing is unavailable for this model (see [`Session::editing`]) or not
    /// started (the command line's read-only commands).
    pub edits: Option<EditState<B::Tensor>>,
}

/// The model's weights on one of the two backends.
pub enum Engine {
    Cpu(Workbench<CpuBackend>),
    Gpu(Workbench<GpuBackend>),
}

/// Runs `$body` with `$m` bound to the engine's model, whichever the backend: `&mut Model<_>`
/// for `with_model!(&mut engine, m => …)`, else `&Model<_>`.
#[macro_export]
macro_rules! with_model {
    (&mut $engine:expr, $m:ident => $body:expr) => {
        match &mut $engine {
            $crate::session::Engine::Cpu(w) => {
                let $m = &mut w.model;
                $body
            }
            $crate::session::Engine::Gpu(w) => {
                let $m = &mut w.model;
                $body
            }
        }
    };
    ($engine:expr, $m:ident => $body:expr) => {
        match $engine {
            $crate::session::Engine::Cpu(w) => {
                let $m = &w.model;
                $body
            }
            $crate::session::Engine::Gpu(w) => {
                let $m = &w.model;
                $body
            }
        }
    };
}

/// Runs `$body` with `$w` bound to the engine's [`Workbench`] (as `&` or `&mut`, following
/// `$engine`), whichever the backend.
#[macro_export]
macro_rules! with_bench {
    ($engine:expr, $w:ident => $body:expr) => {
        match $engine {
            $crate::session::Engine::Cpu($w) => $body,
            $crate::session::Engine::Gpu($w) => $body,
        }
    };
}

impl Engine {
    /// Bytes of the weights by storage type (`"Q4_1"`, `"F32"`, …), largest first. The gpu backend
    /// holds every weight as f32.
    pub fn weight_bytes_by_type(&self) -> Vec<(String, u64)> {
        let mut by: std::collections::BTreeMap<String, u64> = Default::default();
        match self {
            Engine::Cpu(w) => {
                let ws = &w.model.weights;
                let mut add = |t: &crate::cpu::CpuTensor| {
                    let ty = t
                        .stored_type()
                        .and_then(|ty| ty.name())
                        .unwrap_or("F32")
                        .to_string();
                    *by.entry(ty).or_default() += t.byte_len() as u64;
                };
                ws.tensors().into_iter().for_each(&mut add);
            }
            Engine::Gpu(w) => {
                for t in w.model.weights.tensors() {
                    let (name, bytes) = match t.packing() {
                        Some(p) => (p.format.name(), t.buffer_bytes()),
                        None => ("F32", 4 * t.len() as u64),
                    };
                    *by.entry(name.to_string()).or_default() += bytes;
                }
            }
        }
        let mut v: Vec<(String, u64)> = by.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }

    /// Uploads host weights to `gpu`, or to the cpu backend when `gpu` is `None`.
    ///
    /// # Errors
    /// A tensor over the adapter's limits, or another backend failure.
    pub fn upload(
        config: ModelConfig,
        weights: crate::model::Weights<crate::model::HostTensor>,
        gpu: Option<GpuBackend>,
    ) -> Result<Engine> {
        Ok(match gpu {
            Some(g) => Engine::Gpu(Workbench {
                model: Model::upload(g, config, weights)?,
                edits: None,
            }),
            None => Engine::Cpu(Workbench {
                model: Model::upload(CpuBackend, config, weights)?,
                edits: None,
            }),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        with_model!(self, m => &m.config)
    }

    /// True on the GPU backend.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Engine::Gpu(_))
    }

    /// The ledger (empty when editing has not started).
    pub fn ledger(&self) -> &[LedgerEntry] {
        with_bench!(self, w => w.edits.as_ref().map_or(&[][..], |s| s.ledger.as_slice()))
    }

    /// One line about the backend (adapter, driver; threads for the cpu backend).
    pub fn describe(&self) -> String {
        with_model!(self, m => m.backend().describe())
    }
}

/// The pause hook a front end installs (see the module documentation).
pub type PauseFn = dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>>>>;

/// What the session asks of its front end.
pub struct Hooks {
    /// Awaited between steps; `None` never pauses or cancels.
    pub pause: Option<Box<PauseFn>>,
    /// Milliseconds since some fixed point (the page's `Date.now()`; an `Instant` natively).
    pub clock: fn() -> f64,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pause: None,
            clock: default_clock,
        }
    }
}

impl Hooks {
    pub(crate) fn pause(&self) -> Option<Pause<'_>> {
        self.pause.as_deref()
    }

    /// Awaits the pause hook, if any.
    pub(crate) async fn step(&self) -> Result<()> {
        match &self.pause {
            Some(p) => p().await,
            None => Ok(()),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn default_clock() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1000.0
}

/// `Instant` panics in wasm32-unknown-unknown: the page installs `Date.now()`.
#[cfg(target_arch = "wasm32")]
fn default_clock() -> f64 {
    0.0
}

/// A model ready to run and edit.
pub struct Session {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    pub source: ModelSource,
    /// One line about the device: backend, adapter, limits.
    pub device: String,
    /// Hyperparameters, templates, covariance and the front end's records of the ledger; `Err`
    /// says why this model cannot be edited.
    pub editing: std::result::Result<EditSetup, String>,
    /// The hyperparameters this model would edit with, while they are what makes editing
    /// unavailable (too many layers for the memory budget, say): the page shows them to be
    /// changed ([`Session::set_hparams`] then starts editing).
    pub proposed_hparams: Option<Hparams>,
    pub hooks: Hooks,
}

impl Session {
    /// A session over an uploaded engine, with the shipped hyperparameters for the model's name,
    /// else defaults derived from its shape ([`Hparams::derived`]; editing is unavailable, with
    /// the reason, when they do not fit) and an empty ledger.
    ///
    /// # Errors
    /// Only a backend failure while copying the original `down_proj` matrices.
    pub fn new(
        engine: Engine,
        tokenizer: Tokenizer,
        source: ModelSource,
        device: String,
    ) -> Result<Session> {
        let (hp, _) = Hparams::for_model_or_derived(engine.config(), &source.name);
        let proposed = hp.clone();
        let checked = hp.check_model(engine.config());
        let unfit = checked.is_err();
        let setup = checked
            .map(|()| hp)
            .and_then(EditSetup::new)
            .map_err(|e| format!("editing is not available for this model: {e}"));
        let mut s = Session::with_editing(engine, tokenizer, source, device, setup)?;
        if unfit {
            s.proposed_hparams = Some(proposed);
        }
        Ok(s)
    }

    /// A session editing with `setup` (the command line's, from its arguments), or not at all
    /// (`Err` with the reason), with an empty ledger.
    ///
    /// # Errors
    /// Layers the model does not have, too little memory for `P`, a backend failure.
    pub fn with_editing(
        engine: Engine,
        tokenizer: Tokenizer,
        source: ModelSource,
        device: String,
        setup: std::result::Result<EditSetup, String>,
    ) -> Result<Session> {
        let mut s = Session {
            engine,
            tokenizer,
            source,
            device,
            editing: Err(String::new()),
            proposed_hparams: None,
            hooks: Hooks::default(),
        };
        match setup {
            Ok(setup) => s.start_editing(setup)?,
            Err(why) => s.editing = Err(why),
        }
        Ok(s)
    }

    /// Uploads a decoded model to the cpu backend (the weights move, nothing is copied).
    ///
    /// # Errors
    /// As [`Session::new`].
    pub fn on_cpu(loaded: LoadedModel, device: String) -> Result<Session> {
        let engine = Engine::upload(loaded.config, loaded.weights, None)?;
        Session::new(engine, loaded.tokenizer, loaded.source, device)
    }

    /// Uploads a decoded model to `gpu`, then reads a weight back so that the upload has really
    /// finished (and a device error surfaces here, not at the first prompt). The device is
    /// destroyed on failure.
    ///
    /// # Errors
    /// [`Error::BufferTooLarge`] for a tensor over the adapter's limits, a lost device, or any
    /// other GPU failure.
    pub async fn on_gpu(loaded: LoadedModel, gpu: GpuBackend, device: String) -> Result<Session> {
        let engine = match Engine::upload(loaded.config, loaded.weights, Some(gpu.clone())) {
            Ok(e) => e,
            Err(e) => {
                gpu.destroy();
                return Err(e);
            }
        };
        let check = with_model!(&engine, m => m.backend().read(&m.weights.norm).await.map(|_| ()));
        let session =
            check.and_then(|()| Session::new(engine, loaded.tokenizer, loaded.source, device));
        if session.is_err() {
            gpu.destroy();
        }
        session
    }

    /// Uses `setup` for editing from now on, with a fresh edit state (an empty ledger) on the
    /// current weights, which must be the original model's.
    ///
    /// # Errors
    /// Layers the model does not have, too little memory for `P`, a backend failure.
    pub fn start_editing(&mut self, setup: EditSetup) -> Result<()> {
        setup.hp.check_model(self.engine.config())?;
        with_bench!(&mut self.engine, w => {
            w.edits = Some(EditState::new(&w.model, &setup.hp.layers)?);
        });
        self.editing = Ok(setup);
        Ok(())
    }

    /// Edits with `hp` from now on (the page's hyperparameter editor). Only before the first
    /// edit: a ledger's edits share one set of hyperparameters, which its patch records. The
    /// covariance statistic is kept when `hp` asks for the same one (layers, corpus, tokens,
    /// window), and the templates when it fixes the same ones; the others are computed at the
    /// next edit.
    ///
    /// # Errors
    /// A ledger that is not empty; hyperparameters that do not fit the model
    /// ([`Hparams::check_model`]). The session is then as before.
    pub fn set_hparams(&mut self, hp: Hparams) -> Result<()> {
        if self.n_entries() > 0 {
            return Err(Error::input(format!(
                "the hyperparameters can only change before the first edit ({} edits are in the \
                 ledger, made with the current ones); undo them all first",
                self.n_entries()
            )));
        }
        hp.check_model(self.engine.config())?;
        let mut setup = EditSetup::new(hp)?;
        // The new (empty) edit state first: if it cannot be made, nothing has changed.
        with_bench!(&mut self.engine, w => {
            w.edits = Some(EditState::new(&w.model, &setup.hp.layers)?);
        });
        if let Ok(old) = &mut self.editing {
            let same_cov = |a: &Hparams, b: &Hparams| {
                (&a.layers, &a.mom2_dataset, a.mom2_n_samples, a.mom2_window)
                    == (&b.layers, &b.mom2_dataset, b.mom2_n_samples, b.mom2_window)
            };
            if same_cov(&old.hp, &setup.hp)
                && let Some(cov) = old.cov.take()
            {
                setup.set_cov(cov);
            }
            let same_templates = (&old.hp.context_templates, old.hp.template_seed)
                == (&setup.hp.context_templates, setup.hp.template_seed);
            if same_templates && setup.templates.is_none() {
                setup.templates = old.templates.take();
            }
        }
        self.editing = Ok(setup);
        self.proposed_hparams = None;
        Ok(())
    }

    pub fn config(&self) -> &ModelConfig {
        self.engine.config()
    }

    /// The ledger (empty when editing is unavailable).
    pub fn ledger(&self) -> &[LedgerEntry] {
        self.engine.ledger()
    }

    /// Edits (batches) in the ledger.
    pub fn n_entries(&self) -> usize {
        self.ledger().len()
    }

    /// The editing setup, or why this model cannot be edited.
    ///
    /// # Errors
    /// [`Error::Input`] with the reason editing is unavailable.
    pub fn setup(&self) -> Result<&EditSetup> {
        setup_of(&self.editing)
    }

    /// [`Session::setup`], mutably.
    ///
    /// # Errors
    /// As [`Session::setup`].
    pub fn setup_mut(&mut self) -> Result<&mut EditSetup> {
        setup_of_mut(&mut self.editing)
    }

    /// The library's check of dataset records (`CheckSpec::check_records`, probes included)
    /// against this model, keeping `margin` tokens of the context free; the schema alone when
    /// the model cannot be edited.
    pub fn check_records(
        &self,
        records: &[std::result::Result<crate::edit::Case, String>],
        batch: Option<usize>,
        margin: usize,
    ) -> crate::edit::check::CheckReport {
        match &self.editing {
            Ok(setup) => setup.with_check(&self.tokenizer, self.config().max_ctx, margin, |spec| {
                spec.check_records(records, batch, true)
            }),
            Err(_) => crate::edit::check::CheckReport::schema(records, batch),
        }
    }

    /// One line about the model: name, format, size, parameters, shape.
    pub fn model_line(&self) -> String {
        let c = self.config();
        let stored: Vec<String> = self
            .source
            .tensor_types
            .iter()
            .map(|(t, n)| format!("{t} ×{n}"))
            .collect();
        let mut line = format!(
            "{} ({}, {}, {}, {} parameters: {} layer{}, d {}, vocabulary {}; tensors stored as {})",
            self.source.name,
            self.source.format.to_uppercase(),
            fmt_bytes(self.source.bytes),
            c.arch.name(),
            fmt_count(c.n_params() as u64),
            c.n_layers,
            if c.n_layers == 1 { "" } else { "s" },
            c.d_model,
            c.vocab_size,
            stored.join(", ")
        );
        if let Ok(setup) = &self.editing
            && Hparams::for_model(&self.source.name).is_err()
        {
            let which = if setup.hp == Hparams::derived(c, &self.source.name) {
                "defaults derived from its shape"
            } else {
                "hyperparameters set for it here"
            };
            line += &format!(
                "; no hyperparameter file ships for it, so editing uses {which} (layers {}–{})",
                setup.hp.layers.first().copied().unwrap_or(0),
                setup.hp.z_layer()
            );
        }
        line
    }

    /// Frees the model now: a GPU device is destroyed at once rather than when the last handle
    /// is dropped (in a browser, whenever the garbage collector gets to it).
    pub fn release(self) {
        if let Engine::Gpu(w) = &self.engine {
            w.model.backend().destroy();
        }
    }
}

/// [`Session::setup`] on the field alone, so that a method can borrow the session's other
/// fields (the engine, the tokenizer) beside it.
pub(crate) fn setup_of(editing: &std::result::Result<EditSetup, String>) -> Result<&EditSetup> {
    editing.as_ref().map_err(|why| Error::input(why.clone()))
}

/// [`Session::setup_mut`] on the field alone (see [`setup_of`]).
pub(crate) fn setup_of_mut(
    editing: &mut std::result::Result<EditSetup, String>,
) -> Result<&mut EditSetup> {
    editing.as_mut().map_err(|why| Error::input(why.clone()))
}

/// `93.4 MB`, `1 GiB` for exact powers of two (adapter limits), `512 B`.
pub fn fmt_bytes(n: u64) -> String {
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
