//! Qwen2 (q/k/v biases, tied head), Llama 3 (`llama3` RoPE scaling, untied head) and GPT-2
//! (LayerNorm, GELU, learned positions, `Conv1D` weights, biases everywhere) from both formats: tiny random checkpoints made by Hugging Face transformers, their Hugging Face files
//! and the GGUF files gguf-py wrote from them as llama.cpp's converter does
//! (`tests/data/archs/make.py`). Token ids, logits at every position (1e-4) and greedy tokens
//! against transformers' own, on the cpu and the gpu backend.

use nse::backend::Backend;
use nse::cpu::CpuBackend;
use nse::model::load::load_path;
use nse::model::{Arch, ForwardSpec, LogitRows, Model, Packed, RopeScaling, Sampling, generate};
use serde_json::Value;

use crate::common;

/// `tests/data/archs/<rel>`.
pub fn arch_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/archs")
        .join(rel)
}

fn golden(model: &str) -> Value {
    let path = arch_path(&format!("{model}.golden.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Standard base64 (the golden logits, f32 little-endian).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = vec![];
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &d)| acc | (u32::from(d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Every golden prompt's logits and greedy tokens on `model`.
async fn check_forward<B: Backend>(model: &Model<B>, golden: &Value, what: &str) {
    let vocab = model.config.vocab_size;
    let eos = model.config.eos_id;
    for p in golden["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let prompt = ids(&p["ids"]);
        let want: Vec<f32> = base64(p["logits_f32le"].as_str().unwrap())
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            want.len(),
            prompt.len() * vocab,
            "{what}: golden logits' shape"
        );
        let out = model
            .forward(
                &Packed::new(std::slice::from_ref(&prompt)),
                &ForwardSpec {
                    logits: LogitRows::All,
                    ..Default::default()
                },
            )
            .unwrap();
        let got = model
            .backend()
            .read(out.logits.as_ref().unwrap())
            .await
            .unwrap();
        if std::env::var("ARCHS_DEBUG").is_ok() {
            let rows: Vec<f32> = got
                .chunks(vocab)
                .zip(want.chunks(vocab))
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max)
                })
                .collect();
            eprintln!("{what} {text:?}: max error per row {rows:?}");
        }
        common::assert_close(
            &got,
            &want,
            common::Tol::abs(1e-4),
            &format!("{what}: logits of {text:?}"),
        );
        let mut want_greedy = ids(&p["greedy"]);
        if let Some(stop) = want_greedy.iter().position(|&t| Some(t) == eos) {
            want_greedy.truncate(stop + 1);
        }
        let greedy = generate(model, &prompt, want_greedy.len(), Sampling::Greedy, |_| {})
            .await
            .unwrap();
        assert_eq!(
            greedy.ids, want_greedy,
            "{what}: greedy tokens after {text:?}"
        );
    }
}

/// Loads `model` from its GGUF file and its Hugging Face directory, and checks both.
fn check(model: &str, arch: Arch, tied: bool, scaled: bool) {
    let golden = golden(model);
    for (format, path) in [
        ("GGUF", arch_path(&format!("{model}.gguf"))),
        ("safetensors", arch_path(model)),
    ] {
        let what = format!("{model} ({format})");
        let loaded = load_path(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let c = &loaded.config;
        assert_eq!(c.arch, arch, "{what}: architecture");
        assert_eq!(c.tie_embeddings, tied, "{what}: tied head");
        assert_eq!(loaded.weights.layers[0].qkv_bias.is_some(), arch.qkv_bias());
        match (&c.rope_scaling, scaled, format) {
            (None, false, _) => {}
            (Some(RopeScaling::Factors(f)), true, "GGUF") => assert_eq!(f.len(), c.head_dim / 2),
            (Some(RopeScaling::Llama3 { factor, .. }), true, "safetensors") => {
                assert_eq!(*factor, 8.0)
            }
            other => panic!("{what}: unexpected RoPE scaling {other:?}"),
        }
        for (text, want) in golden["tokens"].as_object().unwrap() {
            assert_eq!(
                loaded.tokenizer.encode(text).unwrap(),
                ids(want),
                "{what}: token ids of {text:?}"
            );
        }
        let cpu = Model::upload(CpuBackend, loaded.config.clone(), loaded.weights).unwrap();
        pollster::block_on(check_forward(&cpu, &golden, &format!("{what}, cpu")));
        if let Some(gpu) = common::gpu() {
            let weights = load_path(&path).unwrap().weights;
            let model = Model::upload(gpu, loaded.config, weights).unwrap();
            pollster::block_on(check_forward(&model, &golden, &format!("{what}, gpu")));
        }
    }
}

#[test]
fn qwen2_with_biases_and_a_tied_head_matches_transformers() {
    check("qwen2", Arch::Qwen2, true, false);
}

#[test]
fn llama3_with_rope_scaling_and_an_untied_head_matches_transformers() {
    check("llama3", Arch::Llama, false, true);
}

#[test]
fn gpt2_with_layer_norms_learned_positions_and_conv1d_weights_matches_transformers() {
    // The GGUF's `output.weight` is llama.cpp's copy of the embedding: tied, held once.
    check("gpt2", Arch::Gpt2, true, false);
}

#[test]
fn a_gguf_is_sized_up_from_its_header_before_it_is_read() {
    use nse::model::gguf::GgufFile;
    use nse::model::load::inspect_gguf;
    let bytes = std::fs::read(arch_path("qwen2.gguf")).unwrap();
    let header = GgufFile::parse(&bytes, "qwen2.gguf").unwrap().data_offset() as usize;
    assert!(
        header < bytes.len() / 10,
        "the header is {header} of {} bytes",
        bytes.len()
    );
    // The header alone: architecture, parameters, storage and the memory a load takes.
    let len = bytes.len() as u64;
    let e = inspect_gguf(&bytes[..header], len, "qwen2.gguf").unwrap();
    assert_eq!(
        (e.arch.as_str(), e.n_layers, e.n_params),
        ("qwen2", 6, 218_688)
    );
    assert_eq!(
        e.tensor_types,
        [("F16".to_string(), 43), ("F32".to_string(), 31)]
    );
    // Kept as loaded: the 43 F16 matrices at 2 bytes a weight, the 31 F32 vectors (two norms
    // and three biases of 64 + 64 + 64 + 32 + 32 per layer, and the final norm) at 4.
    let f32_weights = 6 * (64 + 64 + 64 + 32 + 32) + 64;
    let kept = 2 * (218_688 - f32_weights) + 4 * f32_weights;
    assert_eq!((e.file_bytes, e.weight_bytes), (len, kept));
    assert_eq!(e.peak_bytes, len + kept);
    // A file that claims to be a terabyte is refused from its header, with the estimate.
    match inspect_gguf(&bytes[..header], 1 << 40, "huge.gguf") {
        Err(nse::Error::TooLarge { what, .. }) => {
            assert!(
                what.contains("qwen2") && what.contains("needs about"),
                "{what}"
            )
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Too few bytes for the header: named, never read past.
    let msg = crate::format_msg(inspect_gguf(&bytes[..100], len, "cut.gguf"));
    assert!(msg.contains("truncated") || msg.contains("bytes"), "{msg}");
}

#[test]
fn a_safetensors_checkpoint_is_sized_up_from_its_headers_before_it_is_read() {
    use nse::model::load::inspect_safetensors;
    let dir = arch_path("gpt2");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let len = bytes.len() as u64;
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Exactly the header, and a longer prefix: the same estimate, without the data.
    let e = inspect_safetensors(&config, &[("model.safetensors", &bytes[..8 + n], len)]).unwrap();
    let longer = inspect_safetensors(
        &config,
        &[("model.safetensors", &bytes[..8 + n + 100], len)],
    );
    assert_eq!(longer.unwrap(), e);
    assert_eq!(
        (e.arch.as_str(), e.n_layers, e.n_params),
        ("gpt2", 6, 340_992)
    );
    // All 76 tensors F16 (make.py saves the model halved): wte, wpe, 12 per block, ln_f.
    assert_eq!(e.tensor_types, [("F16".to_string(), 76)]);
    // Kept as loaded: F16 matrices at 2 bytes a weight (wte 512×64, wpe 128×64, per block
    // c_attn 64×192, attn.c_proj 64×64, c_fc 64×256, mlp.c_proj 256×64), the vectors (832 per
    // block, ln_f's 128) widened to 4.
    let matrices = 512 * 64 + 128 * 64 + 6 * (64 * 192 + 64 * 64 + 2 * 64 * 256);
    let vectors = 6 * 832 + 128;
    assert_eq!(matrices + vectors, 340_992);
    assert_eq!(
        (e.file_bytes, e.weight_bytes),
        (len, 2 * matrices + 4 * vectors)
    );
    // A prefix shorter than the header, and a header that does not account for the file.
    let msg = crate::format_msg(inspect_safetensors(
        &config,
        &[("model.safetensors", &bytes[..100], len)],
    ));
    assert!(msg.contains("longer than the 100 bytes"), "{msg}");
    let msg = crate::format_msg(inspect_safetensors(
        &config,
        &[("model.safetensors", &bytes[..8 + n], len + 4)],
    ));
    assert!(msg.contains("cut short or padded"), "{msg}");
    // A shard whose header states a 4 TiB tensor is refused from the header, with the estimate.
    let header =
        br#"{"w":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,4398046511104]}}"#;
    let mut huge = (header.len() as u64).to_le_bytes().to_vec();
    huge.extend_from_slice(header);
    let huge_len = huge.len() as u64 + 4_398_046_511_104;
    match inspect_safetensors(&config, &[("huge.safetensors", &huge, huge_len)]) {
        Err(nse::Error::TooLarge { what, .. }) => {
            assert!(
                what.contains("gpt2") && what.contains("needs about"),
                "{what}"
            )
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
