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
    /// Default: $NSE_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Apply this patch (a directory written by `nse edit`, or its patch.nsepatch) to the model
    /// before running.
    #[arg(long)]
    pub patch: Option<PathBuf>,
    /// Most memory one allocation sized by the input may take (8G, 512M, bytes): a model,
    /// table or statistic over it is refused before anything is allocated. Default:
    /// $NSE_MEMORY_BUDGET, else 80% of the available memory.
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub memory_budget: Option<u64>,
}

impl ModelArgs {
    /// The model path: `--model`, else `$NSE_MODEL`, else the default model in `models/` (next
    /// to the working directory or to the source tree).
    pub fn path(&self) -> PathBuf {
        if let Some(p) = &self.model {
            return p.clone();
        }
        if let Some(p) = std::env::var_os("NSE_MODEL") {
            return PathBuf::from(p);
        }
        let local = PathBuf::from("models").join(DEFAULT_MODEL_FILE);
        if local.exists() {
            return local;
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL_FILE)
    }

    /// Reads the model file(s) from disk, under the memory budget of `--memory-budget`.
    pub fn load_host(&self) -> Result<LoadedModel> {
        let budget = match (self.memory_budget, std::env::var("NSE_MEMORY_BUDGET")) {
            (Some(b), _) => Some(b),
            // Parsed here too so that a mistyped variable is an error, not silently ignored.
            (None, Ok(text)) => Some(crate::budget::parse_size(&text)?),
            (None, Err(_)) => None,
        };
        crate::budget::set_limit(budget);
        let path = self.path();
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
