//! What the commands share: the `--model` and `--backend` arguments and model loading.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::Result;
use crate::edit::EditState;
use crate::edit::patch::Patch;
use crate::gpu::GpuBackend;
use crate::model::load::{LoadedModel, load_path};
use crate::model::synthetic;
use crate::session::Engine;

/// File name of the patch inside `nse edit --out`.
pub const PATCH_FILE: &str = "patch.nsepatch";

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

/// How the weights are held in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum WeightStorage {
    /// Each weight matrix stays in its file's storage type (f16, bf16, Q8_0, Q4_0, Q4_1, …) on
    /// the cpu backend and is decoded slice by slice inside the matmul; on the gpu backend it
    /// is repacked once into a compact layout its kernels decode (f16/bf16 pairs, 8- or 4-bit
    /// codes with per-group scales). An edited `down_proj` becomes f32 at its first edit.
    #[default]
    Compact,
    /// Every weight widened to f32 at load (the design before compact weights; for comparison).
    F32,
}

/// `--model` and `--backend`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file, or a directory with config.json, tokenizer.json and *.safetensors; or
    /// synthetic:<shape>[:<seed>] for random weights of a real model's shape (benchmarks
    /// without a model file; shapes smollm2-135m, smollm2-360m, llama-3.2-1b).
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
    /// Most memory one allocation sized by the input may take (8G, 512M, bytes): a model,
    /// table or statistic over it is refused before anything is allocated. Default:
    /// $NSE_MEMORY_BUDGET, else 80% of the available memory.
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub memory_budget: Option<u64>,
    /// For a synthetic model (`--model synthetic:smollm2-135m`, random weights of a real
    /// model's shape, for benchmarks): the tokenizer, from a .gguf or a tokenizer.json. Default:
    /// the default model's when it is on disk, else one token per byte.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// How the weights are held: compact (each in its file's storage type, or a compact
    /// layout of it on the gpu, decoded inside the matmuls) or f32 (all widened at load).
    #[arg(long, value_enum, default_value_t = WeightStorage::Compact)]
    pub weights: WeightStorage,
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

    /// Reads the model file(s) from disk, under the memory budget of `--memory-budget`.
    pub fn load_host(&self) -> Result<LoadedModel> {
        let budget = match (self.memory_budget, std::env::var("NSE_MEMORY_BUDGET")) {
            (Some(b), _) => Some(b),
            // Parsed here too so that a mistyped variable is an error, not silently ignored.
            (None, Ok(text)) => Some(crate::budget::parse_size(&text)?),
            (None, Err(_)) => None,
        };
        crate::budget::set_limit(budget);
        let path = self.path()?;
        if let Some(spec) = path.to_str().filter(|p| synthetic::parse(p).is_some()) {
            return synthetic::load(spec, self.synthetic_tokenizer()?);
        }
        if let Some(t) = &self.tokenizer {
            return Err(crate::Error::input(format!(
                "--tokenizer {} is only for synthetic models (--model synthetic:<shape>); a \
                 model file brings its own tokenizer",
                t.display()
            )));
        }
        if !path.exists() {
            return Err(crate::Error::input(format!(
                "model not found at {}; run scripts/setup.sh to fetch the default model, or pass --model PATH",
                path.display()
            )));
        }
        load_path(&path)
    }
}

impl ModelArgs {
    /// The tokenizer of a synthetic model: `--tokenizer`, else the default model's when it is on
    /// disk, else `None` (one token per byte).
    fn synthetic_tokenizer(&self) -> Result<Option<crate::model::Tokenizer>> {
        let path = match &self.tokenizer {
            Some(p) => p.clone(),
            None => match super::data::default_model(DEFAULT_MODEL_FILE) {
                Ok(p) => p,
                Err(_) => return Ok(None),
            },
        };
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
            let tok = crate::model::Tokenizer::from_json(&text, &path.display().to_string())?;
            return Ok(Some(tok));
        }
        // A GGUF's tokenizer is in its metadata: no tensor is decoded.
        let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
        let gguf = crate::model::gguf::GgufFile::parse(&bytes, &path.display().to_string())?;
        Ok(Some(crate::model::Tokenizer::from_gguf(&gguf)?))
    }
}

/// The loaded model plus facts about the load.
pub struct Loaded {
    /// The model on its backend (no edit state: editing commands make a session of it).
    pub model: Engine,
    pub tokenizer: crate::model::Tokenizer,
    pub source: crate::model::ModelSource,
    /// Seconds from reading the file to weights ready on the backend.
    pub load_seconds: f64,
}

/// Loads the model named by `args` onto the chosen backend, with `--patch` applied (for the
/// commands that only run the model; editing commands continue a patch with
/// [`load_unpatched`] and an editing session instead).
pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let t0 = Instant::now();
    let (mut loaded, patch) = load_unpatched(args)?;
    if let Some(patch) = patch {
        crate::with_model!(&mut loaded.model, m => {
            patch.hparams.check_model(&m.config)?; // layers and the memory P needs, before allocating it
                let mut state = EditState::new(m, &patch.hparams.layers)?;
            pollster::block_on(patch.apply(m, &mut state, &loaded.source.sha256))
        })?;
        eprintln!(
            "applied patch {} ({} edits, weights {})",
            args.patch.as_ref().expect("a patch was read").display(),
            patch.n_requests(),
            if patch.weights_sha256.is_some() {
                "verified"
            } else {
                "not recorded"
            }
        );
    }
    loaded.load_seconds = t0.elapsed().as_secs_f64();
    Ok(loaded)
}

/// Loads the model named by `args` onto the chosen backend and reads `--patch` (checked, not
/// applied).
pub fn load_unpatched(args: &ModelArgs) -> Result<(Loaded, Option<Patch>)> {
    let t0 = Instant::now();
    let patch = args.patch.as_deref().map(read_patch).transpose()?;
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
        BackendChoice::Auto => match pollster::block_on(GpuBackend::new()) {
            Ok(g) if !g.is_software() => Some(g),
            Ok(g) => {
                eprintln!(
                    "backend: cpu (the only GPU adapter, {}, is a software rasterizer and slower \
                     than the cpu backend; --backend gpu uses it anyway)",
                    g.describe_adapter()
                );
                None
            }
            Err(_) => {
                eprintln!("backend: cpu (no GPU adapter found)");
                None
            }
        },
    };
    let weights = match args.weights {
        WeightStorage::Compact => weights,
        WeightStorage::F32 => {
            // The loaders budgeted the weights as kept; widened they take 4 bytes each.
            config.check_memory(u64::MAX)?;
            weights.try_map(|t| Ok::<_, crate::Error>(t.widened()))?
        }
    };
    let model = Engine::upload(config, weights, gpu)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    Ok((
        Loaded {
            model,
            tokenizer,
            source,
            load_seconds,
        },
        patch,
    ))
}

/// Refuses `--patch` for a command that must start from the base model (`why`).
pub fn refuse_patch(args: &ModelArgs, why: &str) -> Result<()> {
    match &args.patch {
        Some(p) => Err(crate::Error::input(format!(
            "--patch {} cannot be used here: {why}; continue a patch with `nse edit --patch`",
            p.display()
        ))),
        None => Ok(()),
    }
}

/// Reads a patch: a directory holding `patch.nsepatch`, or the file itself.
pub fn read_patch(path: &Path) -> Result<Patch> {
    let file = patch_file(path);
    let bytes = std::fs::read(&file).map_err(|e| crate::Error::io(&file, e))?;
    Patch::from_bytes(&bytes, &file.display().to_string())
}

/// The patch file that `path` names: `path/patch.nsepatch` for a directory (or a path without
/// the `.nsepatch` extension, which `nse edit --out` makes a directory), else `path`.
pub fn patch_file(path: &Path) -> PathBuf {
    if path.is_dir() || path.extension().is_none_or(|e| e != "nsepatch") {
        path.join(PATCH_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Writes `patch` where `out` says (see [`patch_file`]), creating the directory; returns the file.
pub fn write_patch(out: &Path, patch: &Patch) -> Result<(PathBuf, usize)> {
    let file = patch_file(out);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    }
    let bytes = patch.to_bytes();
    std::fs::write(&file, &bytes).map_err(|e| crate::Error::io(&file, e))?;
    Ok((file, bytes.len()))
}

/// Writes pretty JSON, creating the parent directory.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    std::fs::write(path, text).map_err(|e| crate::Error::io(path, e))
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
