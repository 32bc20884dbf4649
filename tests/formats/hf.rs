//! Hugging Face checkpoints: a tiny random Llama written with the `safetensors` serializer in
//! F32, F16 and BF16, its config.json and tokenizer.json, and lying or incomplete files.

use ::safetensors::Dtype;
use ::safetensors::tensor::TensorView;
use half::{bf16, f16};
use nse::Error;
use nse::model::load::load_safetensors;
use nse::model::safetensors::parse_config;
use serde_json::{Value, json};

use crate::gguf_writer::{TINY, tiny_hf_weights};
use crate::{assert_mentions, format_msg, unsupported_msg};

type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

fn config(extra: Value) -> String {
    let mut c = json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": TINY.d,
        "intermediate_size": TINY.d_ff,
        "num_hidden_layers": TINY.layers,
        "num_attention_heads": TINY.heads,
        "num_key_value_heads": TINY.kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 250.0,
        "max_position_embeddings": 64,
        "vocab_size": 7,
        "tie_word_embeddings": false,
        "bos_token_id": 0,
        "eos_token_id": [6, 0],
        "hidden_act": "silu",
        "rope_scaling": null,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

/// A 7-token byte-level BPE tokenizer.json; with `bos`, its post-processor prepends `<s>`.
fn tokenizer_json(bos: bool) -> String {
    let post = if bos {
        json!({
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}}
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
        })
    } else {
        Value::Null
    };
    let byte_level = json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": post,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false,
            "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3, "Ġ": 4, "Ġa": 5, "Ġab": 6},
            "merges": ["Ġ a", "a b", "Ġa b"]
        }
    })
    .to_string()
}

/// Bytes of `v` in `dtype`, and the f32 values they hold.
fn encode(v: &[f32], dtype: Dtype) -> (Vec<u8>, Vec<f32>) {
    match dtype {
        Dtype::F32 => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), v.to_vec()),
        Dtype::F16 => (
            v.iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
            v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
        ),
        Dtype::BF16 => (
            v.iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
            v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        ),
        Dtype::F64 => (
            v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect(),
            v.to_vec(),
        ),
        other => panic!("no test encoding for {other}"),
    }
}

/// One safetensors file holding `tensors` in `dtype`.
fn shard(tensors: &Named, dtype: Dtype) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), encode(v, dtype).0))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()));
    ::safetensors::serialize(views, None).unwrap()
}

/// A safetensors file with a hand-written header.
fn raw_shard(header: Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

#[test]
fn tiny_llama_round_trips_in_f32_f16_bf16() {
    let weights = tiny_hf_weights(11);
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        // Two shards, split in the middle, to exercise the shard index.
        let (a, b) = weights.split_at(weights.len() / 2);
        let (sa, sb) = (shard(&a.to_vec(), dtype), shard(&b.to_vec(), dtype));
        let m = load_safetensors(
            &config(json!({})),
            &tokenizer_json(false),
            &[("a.safetensors", &sa), ("b.safetensors", &sb)],
        )
        .unwrap();
        let mut loaded = vec![&m.weights.embed_tokens];
        for l in &m.weights.layers {
            loaded.extend([
                &l.input_layernorm,
                &l.q_proj,
                &l.k_proj,
                &l.v_proj,
                &l.o_proj,
                &l.post_attention_layernorm,
                l.gate_proj.as_ref().unwrap(),
                &l.up_proj,
                &l.down_proj,
            ]);
        }
        loaded.extend([&m.weights.norm, m.weights.lm_head.as_ref().unwrap()]);
        assert_eq!(loaded.len(), weights.len());
        for t in loaded {
            let (_, shape, values) = weights.iter().find(|w| w.0 == t.name).unwrap();
            assert_eq!(
                (&t.shape, &*t.f32()),
                (shape, &encode(values, dtype).1[..]),
                "{} in {dtype}",
                t.name
            );
        }
        let c = &m.config;
        assert_eq!(
            (
                c.n_layers,
                c.d_model,
                c.d_ff,
                c.n_heads,
                c.n_kv_heads,
                c.head_dim
            ),
            (2, 8, 12, 2, 1, 4)
        );
        assert_eq!(
            (c.rope_theta, c.rms_eps, c.max_ctx, c.vocab_size),
            (250.0, 1e-5, 64, 7)
        );
        assert_eq!(
            (c.tie_embeddings, c.bos_id, c.eos_id, c.add_bos),
            (false, Some(0), Some(6), false)
        );
        assert_eq!(m.source.format, "safetensors");
        assert_eq!(m.source.tensor_count, weights.len());
        assert_eq!(m.source.tensor_types, [(dtype.to_string(), weights.len())]);
        assert_eq!(m.source.bytes, (sa.len() + sb.len()) as u64);
        assert_eq!(m.tokenizer.encode("ab a").unwrap(), [3, 5]);
    }
}

#[test]
fn bos_comes_from_the_post_processor_and_tied_heads_are_dropped() {
    let weights = tiny_hf_weights(12);
    let s = shard(&weights, Dtype::F32);
    let m = load_safetensors(
        &config(json!({"tie_word_embeddings": true})),
        &tokenizer_json(true),
        &[("m.safetensors", &s)],
    )
    .unwrap();
    assert!(m.config.add_bos && m.tokenizer.add_bos());
    assert_eq!(m.tokenizer.encode("ab ab").unwrap(), [0, 3, 6]);
    assert_eq!(m.tokenizer.decode(&[0, 3, 6]).unwrap(), "<s>ab ab");
    assert!(m.config.tie_embeddings && m.weights.lm_head.is_none());
}

#[test]
fn config_defaults_and_variants() {
    let c = parse_config(
        &config(
            json!({"num_key_value_heads": null, "rope_theta": null, "eos_token_id": 3,
                       "architectures": ["MistralForCausalLM"], "sliding_window": 32}),
        ),
        "config.json",
    )
    .unwrap();
    assert_eq!(
        (c.n_kv_heads, c.rope_theta, c.eos_id, c.max_ctx),
        (TINY.heads, 10000.0, Some(3), 32)
    );
    let c = parse_config(
        &config(json!({"head_dim": 6, "architectures": ["TinyLlamaForCausalLM"]})),
        "c.json",
    )
    .unwrap();
    assert_eq!(c.head_dim, 6);
}

#[test]
fn bad_configs_are_named() {
    let bad = |extra: Value| parse_config(&config(extra), "config.json");
    assert_mentions(
        &unsupported_msg(bad(json!({"architectures": ["FalconForCausalLM"]}))),
        &[
            "FalconForCausalLM",
            "LlamaForCausalLM",
            "Qwen2ForCausalLM",
            "GPT2LMHeadModel",
        ],
    );
    // GPT-2's own keys, and the variants of its block that nse does not run.
    let gpt2 = |extra: Value| {
        let mut v = json!({"architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_layer": 2,
            "n_head": 4, "n_positions": 32, "vocab_size": 7});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        parse_config(&v.to_string(), "config.json")
    };
    let c = gpt2(json!({})).unwrap();
    assert_eq!(
        (c.d_ff, c.head_dim, c.max_ctx, c.tie_embeddings, c.rms_eps),
        (256, 16, 32, true, 1e-5)
    );
    assert_mentions(
        &unsupported_msg(gpt2(json!({"activation_function": "relu"}))),
        &["relu", "gelu_new"],
    );
    assert_mentions(
        &unsupported_msg(gpt2(json!({"scale_attn_by_inverse_layer_idx": true}))),
        &["scale_attn_by_inverse_layer_idx"],
    );
    assert_mentions(
        &format_msg(gpt2(json!({"n_head": 5}))),
        &["n_embd 64", "n_head 5"],
    );
    assert_mentions(
        &format_msg(gpt2(json!({"n_layer": null}))),
        &["`n_layer` is missing"],
    );
    assert_mentions(
        &unsupported_msg(bad(json!({"architectures": null}))),
        &["Llama"],
    );
    assert_mentions(
        &unsupported_msg(bad(json!({"hidden_act": "gelu"}))),
        &["gelu"],
    );
    assert_mentions(
        &unsupported_msg(bad(
            json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
        )),
        &["rope_scaling of type `linear`", "`llama3`"],
    );
    assert_mentions(
        &format_msg(bad(
            json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
        )),
        &["llama3 needs a number"],
    );
    assert_mentions(
        &format_msg(bad(
            json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 4.0, "high_freq_factor": 1.0,
            "original_max_position_embeddings": 8192}}),
        )),
        &["low_freq_factor < high_freq_factor"],
    );
    assert_mentions(
        &unsupported_msg(bad(json!({"architectures": ["Qwen2ForCausalLM"],
            "use_sliding_window": true}))),
        &["use_sliding_window", "sliding-window attention"],
    );
    assert_mentions(
        &unsupported_msg(bad(json!({"attention_bias": true}))),
        &["attention_bias"],
    );
    assert_mentions(
        &format_msg(bad(json!({"hidden_size": null}))),
        &["`hidden_size` is missing"],
    );
    assert_mentions(
        &format_msg(bad(json!({"num_attention_heads": "2"}))),
        &["num_attention_heads", "integer"],
    );
    assert_mentions(
        &format_msg(bad(json!({"num_key_value_heads": 3}))),
        &["not a multiple of 3"],
    );
    assert_mentions(
        &format_msg(bad(json!({"eos_token_id": "x"}))),
        &["eos_token_id"],
    );
    assert_mentions(
        &format_msg(parse_config("{\"architectures\": [", "config.json")),
        &["not valid JSON"],
    );
    // Through the loader too, with the file named.
    let s = shard(&tiny_hf_weights(13), Dtype::F32);
    let r = load_safetensors(
        &config(json!({"intermediate_size": null})),
        &tokenizer_json(false),
        &[("m.safetensors", &s)],
    );
    match r {
        Err(Error::Format { path, msg }) => assert_eq!(
            (path.as_str(), msg.contains("intermediate_size")),
            ("config.json", true)
        ),
        other => panic!("expected Format, got {other:?}"),
    }
    let r = load_safetensors(
        &config(json!({"vocab_size": 5})),
        &tokenizer_json(false),
        &[("m.safetensors", &s)],
    );
    assert_mentions(&format_msg(r), &["7 tokens", "vocab_size is 5"]);
    assert_mentions(
        &format_msg(load_safetensors(
            &config(json!({})),
            "{",
            &[("m.safetensors", &s)],
        )),
        &["tokenizer.json"],
    );
}

#[test]
fn missing_wrong_and_unsupported_tensors_are_named() {
    let load = |w: &Named, dtype| {
        let s = shard(w, dtype);
        load_safetensors(
            &config(json!({})),
            &tokenizer_json(false),
            &[("m.safetensors", &s)],
        )
    };
    let mut w = tiny_hf_weights(14);
    w.retain(|t| t.0 != "model.layers.1.mlp.up_proj.weight");
    match load(&w, Dtype::F32) {
        Err(Error::MissingTensor { path, name, .. }) => {
            assert_eq!(
                (path.as_str(), name.as_str()),
                ("m.safetensors", "model.layers.1.mlp.up_proj.weight")
            )
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let mut w = tiny_hf_weights(14);
    let norm = w.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
    (norm.1, norm.2) = (vec![9], vec![0.5; 9]);
    match load(&w, Dtype::F32) {
        Err(Error::TensorShape {
            name, got, want, ..
        }) => {
            assert_eq!(
                (name.as_str(), got, want),
                ("model.norm.weight", vec![9], vec![TINY.d])
            )
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    let msg = unsupported_msg(load(&tiny_hf_weights(14), Dtype::F64));
    assert_mentions(&msg, &["model.embed_tokens.weight", "F64", "F16"]);

    let s = shard(&tiny_hf_weights(14), Dtype::F32);
    let r = load_safetensors(
        &config(json!({})),
        &tokenizer_json(false),
        &[("a.safetensors", &s), ("b.safetensors", &s)],
    );
    assert_mentions(&format_msg(r), &["also in a.safetensors"]);
}

#[test]
fn lying_safetensors_headers_are_format_errors() {
    let parse = |bytes: &[u8]| {
        nse::model::safetensors::SafetensorsShards::parse(&[("x.safetensors", bytes)])
            .map(|s| s.len())
    };
    let f32x2 =
        |lo: usize, hi: usize| json!({"dtype": "F32", "shape": [2], "data_offsets": [lo, hi]});
    // Offsets past the end of the file.
    assert_mentions(
        &format_msg(parse(&raw_shard(json!({"a": f32x2(0, 8)}), &[0; 4]))),
        &["truncated"],
    );
    // A span that disagrees with shape × dtype.
    let header = json!({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}});
    assert_mentions(
        &format_msg(parse(&raw_shard(header, &[0; 8]))),
        &["`a`", "12 bytes", "span 8 bytes"],
    );
    // Two tensors over the same bytes.
    let header = json!({"a": f32x2(0, 8), "b": f32x2(0, 8)});
    assert_mentions(
        &format_msg(parse(&raw_shard(header, &[0; 8]))),
        &["overlapping"],
    );
    // A header length past the end, a header that is not JSON, a cut file, garbage.
    let mut long = raw_shard(json!({"a": f32x2(0, 8)}), &[0; 8]);
    long[..8].copy_from_slice(&1000u64.to_le_bytes());
    assert_mentions(&format_msg(parse(&long)), &["truncated"]);
    assert_mentions(&format_msg(parse(&raw_shard(json!("x"), &[]))), &["JSON"]);
    let good = shard(&tiny_hf_weights(15), Dtype::BF16);
    for cut in [0, 5, 100, good.len() - 1] {
        assert_mentions(&format_msg(parse(&good[..cut])), &["truncated"]);
    }
    assert_eq!(parse(&good).unwrap(), 21);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn load_path_reads_a_checkpoint_directory() {
    use sha2::Digest;
    let dir = std::env::temp_dir().join(format!("nse-formats-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = tiny_hf_weights(16);
    let s = shard(&weights, Dtype::F16);
    std::fs::write(dir.join("config.json"), config(json!({}))).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json(false)).unwrap();
    std::fs::write(dir.join("model.safetensors"), &s).unwrap();
    let m = nse::model::load::load_path(&dir).unwrap();
    assert_eq!(m.source.name, dir.file_name().unwrap().to_string_lossy());
    let want: String = sha2::Sha256::digest(&s)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(m.source.sha256, want);
    // With an index naming a shard that is not there.
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"x": "model-00001.safetensors"}}"#,
    )
    .unwrap();
    assert!(matches!(
        nse::model::load::load_path(&dir),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every prefix of a small shard, and the shard with any header byte set to 0x00 or 0xFF,
/// loads or errors without panicking.
#[test]
fn every_cut_and_every_corrupted_header_byte_errors_without_panicking() {
    let (cfg, tok) = (config(json!({})), tokenizer_json(false));
    let good = shard(&tiny_hf_weights(17), Dtype::F16);
    for cut in 0..good.len() {
        assert!(
            load_safetensors(&cfg, &tok, &[("cut.safetensors", &good[..cut])]).is_err(),
            "cut at {cut} loaded"
        );
    }
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut copy = good.clone();
    for i in 0..header_end {
        for v in [0x00, 0xFF] {
            copy[i] = v;
            let _ = load_safetensors(&cfg, &tok, &[("corrupt.safetensors", &copy)]);
        }
        copy[i] = good[i];
    }
}
