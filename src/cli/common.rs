//! What the commands share: the `--model` and `--backend` arguments and model loading.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::Result;
use crate::cpu::CpuBackend;
use crate::gpu::GpuBackend;
use crate::model::Model;
use crate::model::load::{LoadedModel, load_path};

/// File name of the default model inside `models/` (fetched by `scripts/setup.sh`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Which backend runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The GPU when a hardware adapter exists, else the cpu backend.
    Auto,
    /// Plain Rust on the CPU.
    Cpu,
    /// wgpu + WGSL on any adapter, software ones (lavapipe) included.
    Gpu,
}

/// `--model` and `--backend`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file, or a directory with config.json, tokenizer.json and *.safetensors.
    /// Default: $NSE_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf in the current
    /// directory or in the checkout (beside the data directory).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Apply this patch (a directory written by `nse edit`, or its patch.nsepatch) to the model
    /// before running.
    #[arg(long)]
    pub patch: Option<PathBuf>,
}

impl ModelArgs {
    /// The model path: `--model`, else `$NSE_MODEL`, else the default model in `models/` (in
    /// the working directory or the checkout, see [`super::data::default_model`]).
    pub fn path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.model {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("NSE_MODEL") {
            return Ok(PathBuf::from(p));
        }
        super::data::default_model(DEFAULT_MODEL_FILE)
    }

    /// Reads the model file(s) from disk.
    pub fn load_host(&self) -> Result<LoadedModel> {
        let path = self.path()?;
        if !path.exists() {
            return Err(crate::Error::input(format!(
                "model not found at {}; run scripts/setup.sh to fetch the default model, or pass --model PATH",
                path.display()
            )));
        }
        load_path(&path)
    }
}

/// A model on one of the two backends, so that commands can be written once, generically.
pub enum AnyModel {
    Cpu(Model<CpuBackend>),
    Gpu(Model<GpuBackend>),
}

/// Runs `$body` with `$m` bound to the concrete `Model<_>` inside an [`AnyModel`].
#[macro_export]
#[doc(hidden)]
macro_rules! with_model {
    ($any:expr, $m:ident => $body:expr) => {
        match $any {
            $crate::cli::common::AnyModel::Cpu($m) => $body,
            $crate::cli::common::AnyModel::Gpu($m) => $body,
        }
    };
}

/// The loaded model plus facts about the load.
pub struct Loaded {
    pub model: AnyModel,
    pub tokenizer: crate::model::Tokenizer,
    pub source: crate::model::ModelSource,
    /// Seconds from reading the file to weights ready on the backend.
    pub load_seconds: f64,
}

/// Loads the model named by `args` onto the chosen backend.
pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let t0 = Instant::now();
    let host = args.load_host()?;
    let LoadedModel {
        config,
        weights,
        tokenizer,
        source,
    } = host;
    let gpu = match args.backend {
        BackendChoice::Cpu => None,
        BackendChoice::Gpu => Some(pollster::block_on(GpuBackend::new())?),
        BackendChoice::Auto => pollster::block_on(GpuBackend::new())
            .ok()
            .filter(|g| !g.is_software()),
    };
    let mut model = match gpu {
        Some(g) => AnyModel::Gpu(Model::upload(g, config, weights)?),
        None => AnyModel::Cpu(Model::upload(CpuBackend, config, weights)?),
    };
    if let Some(path) = &args.patch {
        let n = crate::with_model!(&mut model, m => apply_patch(m, path, &source.sha256))?;
        eprintln!("applied patch {} ({n} edits)", path.display());
    }
    let load_seconds = t0.elapsed().as_secs_f64();
    Ok(Loaded {
        model,
        tokenizer,
        source,
        load_seconds,
    })
}

/// Reads a patch (a directory holding `patch.nsepatch`, or the file) and replays it on `model`.
/// Returns the number of edited requests.
fn apply_patch<B: crate::Backend>(
    model: &mut Model<B>,
    path: &std::path::Path,
    sha256: &str,
) -> Result<usize> {
    let file = if path.is_dir() {
        path.join(super::edit::PATCH_FILE)
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| crate::Error::io(&file, e))?;
    let patch = crate::edit::patch::Patch::from_bytes(&bytes, &file.display().to_string())?;
    let mut state = crate::edit::EditState::new(model, &patch.hparams.layers)?;
    patch.apply(model, &mut state, sha256)?;
    Ok(state.n_requests())
}
