//! Hostile input (issue 10): every minimised fuzz crasher and every crafted file gives a named
//! error, never a panic, and leaves the model as it was.
//!
//! `tests/hostile/<target>/` holds the crashers the fuzz targets (`fuzz/`, `scripts/fuzz.sh`)
//! found, each replayed here through the very harness the fuzzer ran
//! (`tests/hostile/harness.rs`); `fuzz/seeds/<target>/` holds the valid inputs the fuzzers
//! start from, which must load cleanly. The crafted cases (the memory budget, scoring with a
//! BOS, the covariance cache, escaped error text) are in `tests/hostile/budget.rs` and
//! `tests/hostile/crafted.rs`.
//!
//! Every test runs under the harness's memory budget of 256 MiB.

// Native only (files, subprocesses): in wasm32 this test crate is empty.
#![cfg(not(target_arch = "wasm32"))]

mod common;

#[path = "hostile/budget.rs"]
mod budget;
#[path = "hostile/crafted.rs"]
mod crafted;
#[path = "hostile/fixtures.rs"]
mod fixtures;
#[path = "formats/gguf_writer.rs"]
#[allow(dead_code)]
mod gguf_writer;
#[path = "hostile/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use nse::Error;

/// The expected verdict on each committed crasher: `(target, file, error variant, a phrase of
/// the message)`. Every file under `tests/hostile/<target>/` must be listed here.
const CRASHERS: &[(&str, &str, &str, &str)] = &[
    // tokenizer.json cut short inside `decoder`: the tokenizers library panicked
    // (`expect("Helper")`) instead of reporting the bad JSON.
    (
        "hf",
        "truncated-decoder.hf",
        "Format",
        "tokenizer.json: not valid JSON",
    ),
    // `v_weight_decay` of 6e45 parsed as f32 infinity, which serialised as `null`: a patch
    // holding these hyperparameters could not have been read back.
    (
        "hparams",
        "f32-overflow.json",
        "Json",
        "`v_weight_decay` is inf",
    ),
    // A 112-digit `mom2_update_weight`: serde_json parses it to within an ulp, and its shortest
    // printed form parsed back to another value, so the patch's copy differed from the file.
    (
        "hparams",
        "f64-not-round-tripping.json",
        "Json",
        "`mom2_update_weight` is 5.0008888888888",
    ),
];

/// The variant of an error, for comparing verdicts by name.
pub fn variant(e: &Error) -> &'static str {
    match e {
        Error::Format { .. } => "Format",
        Error::Unsupported { .. } => "Unsupported",
        Error::MissingTensor { .. } => "MissingTensor",
        Error::TensorShape { .. } => "TensorShape",
        Error::Input(_) => "Input",
        Error::Refused { .. } => "Refused",
        Error::Gpu(_) => "Gpu",
        Error::BufferTooLarge { .. } => "BufferTooLarge",
        Error::DeviceLost(_) => "DeviceLost",
        Error::Numeric(_) => "Numeric",
        Error::Io { .. } => "Io",
        Error::Json { .. } => "Json",
        Error::TooLarge { .. } => "TooLarge",
        Error::Cancelled(_) => "Cancelled",
    }
}

/// The error of `r`, failing the test (with what came instead) unless it is the variant `want`
/// and its message, as printed, holds `phrase`.
#[track_caller]
pub fn expect_err<T>(r: nse::Result<T>, want: &str, phrase: &str) -> String {
    let e = match r {
        Ok(_) => panic!("expected Error::{want} mentioning {phrase:?}, got Ok"),
        Err(e) => e,
    };
    let text = e.to_string();
    assert_eq!(variant(&e), want, "wrong error variant: {text}");
    assert!(text.contains(phrase), "{phrase:?} not in: {text}");
    text
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of a folder, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_committed_crasher_gives_its_named_error() {
    for target in harness::TARGETS {
        for path in files(&root().join("tests/hostile").join(target)) {
            let file = name(&path);
            let Some(&(_, _, want, phrase)) = CRASHERS
                .iter()
                .find(|(t, f, _, _)| *t == target && *f == file)
            else {
                panic!("tests/hostile/{target}/{file} is not listed in CRASHERS");
            };
            let data = std::fs::read(&path).unwrap();
            let r = harness::run(target, &data);
            expect_err(r, want, phrase);
        }
    }
    for &(target, file, _, _) in CRASHERS {
        let path = root().join("tests/hostile").join(target).join(file);
        assert!(
            path.is_file(),
            "CRASHERS lists {} but it is missing",
            path.display()
        );
    }
}

#[test]
fn every_fuzz_seed_is_a_valid_input() {
    let mut seen = 0;
    for target in harness::TARGETS {
        let seeds = files(&root().join("fuzz/seeds").join(target));
        assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ is empty");
        for path in seeds {
            let data = std::fs::read(&path).unwrap();
            if let Err(e) = harness::run(target, &data) {
                panic!("seed {} is refused: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= harness::TARGETS.len());
    // The patch target replays on its own tiny model (fuzz/fuzz_targets/patch.rs); its seed
    // must at least decode, and be the one the fixtures write.
    let seeds = files(&root().join("fuzz/seeds/patch"));
    assert!(!seeds.is_empty(), "fuzz/seeds/patch/ is empty");
    for path in seeds {
        let data = std::fs::read(&path).unwrap();
        let patch = nse::edit::patch::Patch::from_bytes(&data, &path.display().to_string())
            .unwrap_or_else(|e| panic!("seed {} is refused: {e}", path.display()));
        assert_eq!(
            (patch.entries.len(), patch.hparams.layers.clone()),
            (1, vec![1, 2])
        );
        assert_eq!(data, fixtures::patch_seed(), "{} is stale", path.display());
    }
}

/// Writes `fuzz/seeds/` afresh: `cargo test --test hostile write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes the fuzz seed corpus into the source tree"]
fn write_fuzz_seeds() {
    for (target, file, bytes) in fixtures::seeds() {
        let dir = root().join("fuzz/seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), bytes).unwrap();
    }
}

#[test]
fn the_gpt2_fixtures_load_to_the_same_model_from_both_layouts() {
    // The seeds' tiny GPT-2, written once in llama.cpp's layout (`attn_qkv`, transposed) and once
    // in Hugging Face's (`c_attn`, `Conv1D`), from the same values: both loaders must give the
    // same weights, the GGUF's copied head tied back.
    fixtures::setup();
    let gguf = nse::model::load::load_gguf(&fixtures::tiny_gpt2_gguf(4), "g.gguf").unwrap();
    let framed = fixtures::tiny_gpt2_hf();
    let (config, tokenizer, shard) = harness::unframe_hf(&framed).unwrap();
    let hf = nse::model::load::load_safetensors(
        std::str::from_utf8(config).unwrap(),
        std::str::from_utf8(tokenizer).unwrap(),
        &[("m.safetensors", shard)],
    )
    .unwrap();
    assert_eq!(gguf.config.arch, nse::model::Arch::Gpt2);
    assert!(gguf.config.tie_embeddings && gguf.weights.lm_head.is_none());
    let (a, b) = (gguf.weights.tensors(), hf.weights.tensors());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.shape, &*x.f32()),
            (&y.shape, &*y.f32()),
            "{} vs {}",
            x.name,
            y.name
        );
    }
}
