//! Helpers shared by the integration tests: where the default model, the data (`data/`), the
//! golden files (`tests/golden/`) and setup's covariance statistic (`www/models/cov/`) live.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// File name of the default model (fetched by `scripts/setup.sh`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The default model: `$NSE_MODEL` when set, else `models/SmolLM2-135M-Instruct.Q4_1.gguf` in
/// the crate root.
///
/// # Panics
/// When the file is missing: tests that need the model fail rather than skip, so a CI without
/// the model cannot pass by accident.
pub fn model_path() -> PathBuf {
    let path = match std::env::var_os("NSE_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL_FILE),
    };
    assert!(
        path.is_file(),
        "the default model is missing at {}: run `bash scripts/setup.sh` to download it (or set \
         NSE_MODEL to a copy of {DEFAULT_MODEL_FILE})",
        path.display()
    );
    path
}

/// The bytes of the default model, read once per test binary.
pub fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = model_path();
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    })
}

/// `tests/golden/`: the reference runs' outputs (see its README).
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A golden JSON file, parsed.
pub fn golden_json(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read golden file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The default model loaded from disk (dequantised, host tensors, tokenizer).
pub fn load_default_model() -> nse::model::LoadedModel {
    nse::model::load::load_gguf(model_bytes(), DEFAULT_MODEL_FILE)
        .unwrap_or_else(|e| panic!("loading the default model: {e}"))
}

/// A file of the committed run-time data, `data/{rel}` (see `data/README.md`).
pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(rel)
}

/// The text of `data/{rel}`.
pub fn data_text(rel: &str) -> String {
    let path = data(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (it is committed: `git checkout -- data/{rel}` restores it)",
            path.display()
        )
    })
}

/// The wikitext-2-raw test split, `data/wikitext/wikitext-2-raw_wiki.test.raw`.
pub fn wikitext() -> String {
    data_text("wikitext/wikitext-2-raw_wiki.test.raw")
}

// ---- Seeded random inputs, `assert_close` with named tolerances, and the shared GPU ----

pub mod gpu_vs_cpu;
pub mod stored;
pub mod tiny;

/// A tiny deterministic PRNG (SplitMix64): the same inputs on every machine and every run.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, with 24 random bits (exact in f32).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }

    /// `n` values uniform in `[-1, 1)`.
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.range(-1.0, 1.0)).collect()
    }

    /// `n` values uniform in `0..bound`.
    pub fn vec_below(&mut self, n: usize, bound: u32) -> Vec<u32> {
        (0..n).map(|_| self.below(bound)).collect()
    }
}

/// How far `got` may be from `want`: `|got − want| ≤ abs + rel·|want| + rel_of_max·max|want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
    pub rel_of_max: f32,
}

impl Tol {
    /// An absolute bound.
    pub const fn abs(abs: f32) -> Tol {
        Tol {
            abs,
            rel: 0.0,
            rel_of_max: 0.0,
        }
    }

    /// A bound relative to each expected value.
    pub const fn rel(rel: f32) -> Tol {
        Tol {
            abs: 0.0,
            rel,
            rel_of_max: 0.0,
        }
    }

    /// A bound relative to the largest expected magnitude.
    pub const fn rel_of_max(rel_of_max: f32) -> Tol {
        Tol {
            abs: 0.0,
            rel: 0.0,
            rel_of_max,
        }
    }
}

/// Bit-for-bit equal (copies, gathers, sums of two numbers in the same order).
pub const TOL_EXACT: Tol = Tol::abs(0.0);
/// Elementwise maths whose `exp`/`sqrt`/fused multiply-adds differ by a few ulp between the GPU
/// and the host.
pub const TOL_F32_ELEMENTWISE: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
    rel_of_max: 0.0,
};
/// f32 reductions (dot products, row sums, softmax normalisers) summed in another order than
/// the reference, which also sums some of them in f64.
pub const TOL_F32_REDUCTION: Tol = Tol {
    abs: 1e-6,
    rel: 1e-4,
    rel_of_max: 1e-5,
};

/// The largest errors [`assert_close`] saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Errors {
    pub max_abs: f32,
    pub max_rel: f32,
}

/// Panics unless every `got[i]` is within `tol` of `want[i]` (NaN only matches NaN), naming
/// `what`, the worst index, both values there, and the largest absolute and relative errors.
pub fn assert_close(got: &[f32], want: &[f32], tol: Tol, what: &str) -> Errors {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let max_want = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    let mut errors = Errors::default();
    let mut worst: Option<(usize, f32)> = None; // (index, excess over the bound)
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() {
            continue;
        }
        let err = (g - w).abs();
        let rel = if w != 0.0 { err / w.abs() } else { err };
        if err.is_nan() || err > errors.max_abs {
            errors.max_abs = if err.is_nan() { f32::INFINITY } else { err };
        }
        errors.max_rel = errors
            .max_rel
            .max(if rel.is_nan() { f32::INFINITY } else { rel });
        let bound = tol.abs + tol.rel * w.abs() + tol.rel_of_max * max_want;
        let excess = if g == w {
            0.0
        } else if err.is_nan() || g.is_nan() != w.is_nan() {
            f32::INFINITY
        } else {
            err - bound
        };
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: not within {tol:?}: worst at index {i}: got {}, want {}; max abs error {:e}, max rel error {:e} \
             ({} values)",
            got[i],
            want[i],
            errors.max_abs,
            errors.max_rel,
            got.len()
        );
    }
    errors
}

/// The shared GPU device for tests (one per test binary), or `None` when no adapter exists
/// and `NSE_GPU_OPTIONAL=1` is set, after a loud SKIPPED line.
///
/// # Panics
/// When no adapter exists and `NSE_GPU_OPTIONAL` is not `1`: a machine that should run the GPU
/// tests cannot pass them by accident.
pub fn gpu() -> Option<nse::gpu::GpuBackend> {
    static GPU: std::sync::OnceLock<Result<nse::gpu::GpuBackend, String>> =
        std::sync::OnceLock::new();
    let device = GPU.get_or_init(|| {
        pollster::block_on(nse::gpu::GpuBackend::with_kernels(HARDWARE)).map_err(|e| e.to_string())
    });
    match device {
        Ok(gpu) => Some(gpu.clone()),
        Err(e) => skip_or_panic(e),
    }
}

/// The tests' devices run the hardware kernels on every adapter, lavapipe included, so that CI
/// checks the kernels real GPUs run ([`gpu_software`] checks the others).
const HARDWARE: nse::gpu::KernelSet = nse::gpu::KernelSet::Hardware;

/// A device of its own running the software adapters' kernels; `None` and SKIPPED as for
/// [`gpu`].
pub fn gpu_software() -> Option<nse::gpu::GpuBackend> {
    match pollster::block_on(nse::gpu::GpuBackend::with_kernels(
        nse::gpu::KernelSet::Software,
    )) {
        Ok(gpu) => Some(gpu),
        Err(e) => skip_or_panic(&e.to_string()),
    }
}

/// A new GPU device of its own (for tests that watch the buffer pool or lose the device);
/// `None` and SKIPPED as for [`gpu`].
pub fn fresh_gpu() -> Option<nse::gpu::GpuBackend> {
    match pollster::block_on(nse::gpu::GpuBackend::with_kernels(HARDWARE)) {
        Ok(gpu) => Some(gpu),
        Err(e) => skip_or_panic(&e.to_string()),
    }
}

fn skip_or_panic(e: &str) -> Option<nse::gpu::GpuBackend> {
    if std::env::var("NSE_GPU_OPTIONAL").as_deref() == Ok("1") {
        eprintln!("==== SKIPPED (no GPU adapter, NSE_GPU_OPTIONAL=1): {e} ====");
        return None;
    }
    panic!(
        "no GPU adapter for the GPU tests: {e}\nOn a machine without a GPU install mesa-vulkan-drivers and run with \
         WGPU_BACKEND=vulkan (lavapipe), or set NSE_GPU_OPTIONAL=1 to skip these tests."
    )
}

// ---- Evaluation helpers (tests/golden_eval.rs, tests/eval_*.rs) ----

/// The default model on the cpu backend, with its tokenizer.
pub fn cpu_model() -> (
    nse::model::Model<nse::cpu::CpuBackend>,
    nse::model::Tokenizer,
) {
    let loaded = load_default_model();
    let model = nse::model::Model::upload(nse::cpu::CpuBackend, loaded.config, loaded.weights)
        .unwrap_or_else(|e| panic!("uploading the default model: {e}"));
    (model, loaded.tokenizer)
}

/// The shipped hyperparameters of the default model (`hparams/SmolLM2-135M-Instruct.json`,
/// the golden runs' values and templates).
pub fn default_hparams() -> nse::edit::Hparams {
    nse::edit::Hparams::parse(
        nse::edit::hparams::SMOLLM2_135M,
        "hparams/SmolLM2-135M-Instruct.json",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Where `scripts/setup.sh` writes the default model's covariance statistic (`nse covariance
/// --out www/models/cov`: `layer{l}.npy` and `covariance.json`).
pub fn setup_covariance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/cov")
}

/// The covariance statistics of `hp.layers` that setup computed for the default model over the
/// first `hp.mom2_n_samples` tokens of wikitext-2: the same statistic as the reference run's
/// (which is too large to commit; `golden_edit.rs` ties the two together through
/// `tests/golden/covariance/`).
///
/// # Panics
/// When the statistic is missing, or was made for another model, corpus, budget or window.
pub fn setup_covariance(hp: &nse::edit::Hparams, d_ff: usize) -> nse::edit::CovarianceSet {
    let dir = setup_covariance_dir();
    let manifest_path = dir.join("covariance.json");
    let fix = "run `bash scripts/setup.sh` to compute it (a few minutes)";
    let text = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("{}: {e}; {fix}", manifest_path.display()));
    let m: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}; {fix}", manifest_path.display()));
    let model_sha = nse::model::load::sha256_hex(&[model_bytes()]);
    let want = serde_json::json!({
        "model_sha256": model_sha, "tokens": hp.mom2_n_samples,
        "corpus": hp.mom2_dataset, "window": hp.mom2_window,
    });
    for (key, value) in want.as_object().unwrap() {
        assert_eq!(
            &m[key],
            value,
            "{}: `{key}` differs from what the tests need; {fix}",
            manifest_path.display()
        );
    }
    nse::edit::CovarianceSet::from_npy_dir(&dir, &hp.layers, d_ff, hp.mom2_n_samples)
        .unwrap_or_else(|e| panic!("setup's covariance: {e}; {fix}"))
}

/// The first `n` records of `data/counterfact_easyedit/counterfact-edit.json` (the golden
/// seq100 runs' cases).
pub fn counterfact_edit_cases(n: usize) -> Vec<nse::edit::Case> {
    let path = data("counterfact_easyedit/counterfact-edit.json");
    let mut cases = nse::edit::dataset::load_cases(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cases.len() >= n,
        "{} holds fewer than {n} records",
        path.display()
    );
    cases.truncate(n);
    cases
}
