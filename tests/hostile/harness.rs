//! The bodies of the fuzz targets, one function per reader of untrusted input.
//!
//! Shared by `fuzz/fuzz_targets/*.rs` (libFuzzer on nightly, `scripts/fuzz.sh`) and
//! `tests/hostile.rs` (which replays every committed crasher and seed on stable), so that a
//! crash found by the fuzzer is replayed by exactly the code that found it. Each function takes
//! the raw input and returns the library's verdict; a panic, an abort or an allocation over
//! the fuzzer's memory limit is the bug being hunted.
#![allow(dead_code)]

use std::sync::OnceLock;

use nse::Result;
use nse::cpu::CpuBackend;
use nse::model::{Arch, Model, ModelConfig, Tokenizer};

/// The memory budget every target runs under: far below libFuzzer's 2 GiB RSS limit, far
/// above anything the seeds need.
pub const BUDGET: u64 = 256 << 20;

/// The targets, by the name of their fuzz binary and of their folder of cases.
pub const TARGETS: [&str; 5] = ["gguf", "hf", "requests", "npy", "hparams"];

/// Runs the target named `name` on `data`.
///
/// # Panics
/// For an unknown target name.
pub fn run(name: &str, data: &[u8]) -> Result<()> {
    match name {
        "gguf" => gguf(data),
        "hf" => hf(data),
        "requests" => requests(data),
        "npy" => npy(data),
        "hparams" => hparams(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// A GGUF file, read up to a model with its weights and RoPE table on the cpu backend.
pub fn gguf(data: &[u8]) -> Result<()> {
    nse::budget::set_limit(Some(BUDGET));
    let loaded = nse::model::load::load_gguf(data, "fuzz.gguf")?;
    Model::upload(CpuBackend, loaded.config, loaded.weights)?;
    Ok(())
}

/// The three parts of an HF checkpoint framed in one input (see [`frame_hf`]), sized up from
/// its header (`inspect_safetensors`) and loaded to a model on the cpu backend.
pub fn hf(data: &[u8]) -> Result<()> {
    nse::budget::set_limit(Some(BUDGET));
    let Some((config, tokenizer, shard)) = unframe_hf(data) else {
        return Ok(());
    };
    let (config, tokenizer) = (
        String::from_utf8_lossy(config),
        String::from_utf8_lossy(tokenizer),
    );
    // Sized up from its header first (as the page does), whole and from half a prefix.
    let len = shard.len() as u64;
    for prefix in [shard, &shard[..shard.len() / 2]] {
        let _ =
            nse::model::load::inspect_safetensors(&config, &[("fuzz.safetensors", prefix, len)]);
    }
    let loaded =
        nse::model::load::load_safetensors(&config, &tokenizer, &[("fuzz.safetensors", shard)])?;
    Model::upload(CpuBackend, loaded.config, loaded.weights)?;
    Ok(())
}

/// `[u32 LE length][config.json][u32 LE length][tokenizer.json][safetensors shard]`.
pub fn frame_hf(config: &str, tokenizer: &str, shard: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [config.as_bytes(), tokenizer.as_bytes()] {
        out.extend((part.len() as u32).to_le_bytes());
        out.extend(part);
    }
    out.extend(shard);
    out
}

/// The parts of a [`frame_hf`] input, `None` when the lengths do not fit (not an HF input).
pub fn unframe_hf(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let part = |d: &[u8]| -> Option<(usize, usize)> {
        let n = u32::from_le_bytes(d.get(..4)?.try_into().ok()?) as usize;
        (d.len() - 4 >= n).then_some((4, 4 + n))
    };
    let (a, b) = part(data)?;
    let (config, rest) = (&data[a..b], &data[b..]);
    let (a, b) = part(rest)?;
    Some((config, &rest[a..b], &rest[b..]))
}

/// A request file (any schema `load_cases` reads), validated as a batch, each request's
/// sentence and target tokenised and its subject located, as the editor does before any work.
pub fn requests(data: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(data);
    let cases = nse::edit::dataset::parse_cases(&text, "fuzz.json")?;
    let requests: Vec<_> = cases.into_iter().map(|c| c.request).collect();
    let tok = tokenizer();
    for r in &requests {
        tok.encode(&r.sentence())?;
    }
    // The editor's own check before any work: shape, target tokens, the subject's last token
    // in every prompt the editor builds, the context, duplicates.
    let hp = nse::edit::Hparams::for_model("SmolLM2-135M-Instruct")?;
    let templates =
        nse::edit::ContextTemplates::new(hp.context_templates.clone().unwrap_or_default())?;
    nse::edit::check::CheckSpec {
        tok,
        templates: &templates,
        target_space: hp.target_space,
        max_ctx: 8192,
    }
    .check_batch(&requests)
}

/// A `.npy` file as the golden files and the covariance cache are read: as a matrix, then as
/// a covariance statistic of its own size; what is read must write back to the same bytes'
/// values.
pub fn npy(data: &[u8]) -> Result<()> {
    nse::budget::set_limit(Some(BUDGET));
    let (shape, values) = nse::npy::read_f32(data, "fuzz.npy")?;
    let again = nse::npy::read_f32(&nse::npy::write_f32(&shape, &values), "rewritten.npy")
        .expect("a written .npy reads back");
    assert_eq!(again.0, shape, "shape changed in a round trip");
    assert!(
        again
            .1
            .iter()
            .map(|x| x.to_bits())
            .eq(values.iter().map(|x| x.to_bits())),
        "values changed in a round trip"
    );
    let d_ff = shape.first().copied().unwrap_or(0);
    nse::edit::covariance::matrix_from_npy(data, "fuzz.npy", d_ff)?;
    Ok(())
}

/// A hyperparameter file, checked against a small model; what parses must serialise and parse
/// back to the same value (patches embed the hyperparameters as JSON).
pub fn hparams(data: &[u8]) -> Result<()> {
    nse::budget::set_limit(Some(BUDGET));
    let text = String::from_utf8_lossy(data);
    let hp = nse::edit::Hparams::parse(&text, "fuzz-hparams.json")?;
    hp.check_model(&small_config())?;
    let json = serde_json::to_string(&hp).expect("hyperparameters serialise");
    let back = nse::edit::Hparams::parse(&json, "rewritten.json").expect("a written file parses");
    assert_eq!(back, hp, "hyperparameters changed in a round trip");
    Ok(())
}

/// The config the hyperparameters are checked against: 30 layers (the default model's depth), d_ff 64.
pub fn small_config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_layers: 30,
        d_model: 16,
        d_ff: 64,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
        vocab_size: 300,
        max_ctx: 64,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_eps: 1e-5,
        tie_embeddings: true,
        bos_id: None,
        eos_id: Some(0),
        add_bos: false,
    }
}

/// A byte-level BPE tokenizer that can encode any text (all 256 bytes are tokens), with
/// merges that build a few English words and one CJK word, so that subjects split across
/// merges are reachable.
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        Tokenizer::from_json(&byte_level_tokenizer_json(), "fuzz-tokenizer.json")
            .expect("the harness tokenizer builds")
    })
}

/// GPT-2's byte → printable character map (`bytes_to_unicode`).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("a valid char")
}

/// The `tokenizer.json` of [`tokenizer`].
pub fn byte_level_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|endoftext|>".into(), 0.into());
    for b in 0..=255u8 {
        let n = vocab.len();
        vocab.insert(byte_char(b).to_string(), n.into());
    }
    let mut merges = vec![];
    for word in [
        " the",
        " is",
        " in",
        " of",
        " Paris",
        " Washington",
        " live",
        "I",
        " 中国",
        " Tower",
    ] {
        let chars: Vec<String> = word.bytes().map(|b| byte_char(b).to_string()).collect();
        let mut left = chars[0].clone();
        for c in &chars[1..] {
            let merged = format!("{left}{c}");
            if !vocab.contains_key(&merged) {
                merges.push(format!("{left} {c}"));
                let n = vocab.len();
                vocab.insert(merged.clone(), n.into());
            }
            left = merged;
        }
    }
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    })
    .to_string()
}
