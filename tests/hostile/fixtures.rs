//! What the hostile-input tests build on: the tiny model in GGUF and Hugging Face form, a
//! scratch folder, the shared memory budget, and the fuzz seeds.

use std::path::PathBuf;

use nse::budget;
use nse::model::load::load_gguf;
use serde_json::json;

use crate::gguf_writer::{
    GgufWriter, Rng, TINY, Val, tiny_hf_weights, tiny_llama_gguf, tiny_vocab,
};
use crate::harness::{BUDGET, frame_hf};

/// The harness's budget: the same in every test of this binary, so tests may run in parallel.
pub fn setup() {
    budget::set_limit(Some(BUDGET));
}

/// A fresh empty folder under the system temp dir, named after the test.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nse-hostile-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces (or adds) a metadata entry of a GGUF being written.
pub fn set_kv(w: &mut GgufWriter, key: &str, v: Val) {
    w.kv.retain(|(k, _)| k != key);
    w.kv(key, v);
}

/// The tiny Llama of `tests/formats/gguf_writer.rs` as GGUF bytes.
pub fn tiny_gguf() -> Vec<u8> {
    tiny_llama_gguf(1).0.to_bytes()
}

/// config.json of the tiny HF Llama (the GGUF tiny model's dimensions and vocabulary).
pub fn tiny_hf_config(vocab_size: usize) -> String {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": TINY.d,
        "intermediate_size": TINY.d_ff,
        "num_hidden_layers": TINY.layers,
        "num_attention_heads": TINY.heads,
        "num_key_value_heads": TINY.kv_heads,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 64,
        "vocab_size": vocab_size,
        "tie_word_embeddings": false,
        "eos_token_id": 0,
        "hidden_act": "silu"
    })
    .to_string()
}

/// tokenizer.json of the tiny model (7 tokens), as the GGUF tokenizer exports it.
pub fn tiny_tokenizer_json() -> String {
    load_gguf(&tiny_gguf(), "tiny.gguf")
        .unwrap()
        .tokenizer
        .to_json()
        .unwrap()
}

/// The tiny HF weights as one F32 safetensors shard.
pub fn tiny_shard() -> Vec<u8> {
    f32_shard(tiny_hf_weights(2))
}

/// `(name, shape, values)` as one F32 safetensors shard.
fn f32_shard(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes.iter().map(|(n, s, b)| {
        let view = ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F32, s.clone(), b);
        (n.clone(), view.unwrap())
    });
    ::safetensors::serialize(views, None).unwrap()
}

/// Positions of the tiny GPT-2.
const GPT2_POSITIONS: usize = 16;

/// The tiny GPT-2 (TINY's depth, width and heads, 16 positions, the tiny vocabulary) in Hugging
/// Face's layout: `(name, shape, values)`, `Conv1D` weights `[in][out]`.
pub fn tiny_gpt2_hf_weights(seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (d, f, v) = (TINY.d, TINY.d_ff, tiny_vocab().0.len());
    let mut shapes = vec![
        ("transformer.wte.weight".to_string(), vec![v, d]),
        (
            "transformer.wpe.weight".to_string(),
            vec![GPT2_POSITIONS, d],
        ),
    ];
    for l in 0..TINY.layers {
        let p = |s: &str| format!("transformer.h.{l}.{s}");
        shapes.extend([
            (p("ln_1.weight"), vec![d]),
            (p("ln_1.bias"), vec![d]),
            (p("attn.c_attn.weight"), vec![d, 3 * d]),
            (p("attn.c_attn.bias"), vec![3 * d]),
            (p("attn.c_proj.weight"), vec![d, d]),
            (p("attn.c_proj.bias"), vec![d]),
            (p("ln_2.weight"), vec![d]),
            (p("ln_2.bias"), vec![d]),
            (p("mlp.c_fc.weight"), vec![d, f]),
            (p("mlp.c_fc.bias"), vec![f]),
            (p("mlp.c_proj.weight"), vec![f, d]),
            (p("mlp.c_proj.bias"), vec![d]),
        ]);
    }
    shapes.push(("transformer.ln_f.weight".into(), vec![d]));
    shapes.push(("transformer.ln_f.bias".into(), vec![d]));
    let mut rng = Rng(seed);
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, shape, rng.vec(n))
        })
        .collect()
}

/// The tiny GPT-2 as llama.cpp's converter writes a `gpt2` GGUF: `Conv1D` weights transposed to
/// `[out][in]`, `output.weight` a copy of the token embedding.
pub fn tiny_gpt2_gguf(seed: u64) -> Vec<u8> {
    let (tokens, merges, types) = tiny_vocab();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Val::Str("gpt2".into()))
        .kv("gpt2.block_count", Val::U32(TINY.layers as u32))
        .kv("gpt2.context_length", Val::U32(GPT2_POSITIONS as u32))
        .kv("gpt2.embedding_length", Val::U32(TINY.d as u32))
        .kv("gpt2.feed_forward_length", Val::U32(TINY.d_ff as u32))
        .kv("gpt2.attention.head_count", Val::U32(TINY.heads as u32))
        .kv("gpt2.attention.layer_norm_epsilon", Val::F32(1e-5))
        .kv("tokenizer.ggml.model", Val::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", Val::Str("gpt-2".into()))
        .kv("tokenizer.ggml.tokens", Val::StrArr(tokens))
        .kv("tokenizer.ggml.token_type", Val::I32Arr(types))
        .kv("tokenizer.ggml.merges", Val::StrArr(merges))
        .kv("tokenizer.ggml.eos_token_id", Val::U32(0));
    for (name, shape, values) in tiny_gpt2_hf_weights(seed) {
        let rest = name.strip_prefix("transformer.").unwrap();
        let gguf = match rest {
            "wte.weight" => "token_embd.weight".to_string(),
            "wpe.weight" => "position_embd.weight".to_string(),
            "ln_f.weight" => "output_norm.weight".to_string(),
            "ln_f.bias" => "output_norm.bias".to_string(),
            _ => {
                let (layer, suffix) = rest.strip_prefix("h.").unwrap().split_once('.').unwrap();
                let (role, kind) = suffix.rsplit_once('.').unwrap();
                let ours = match role {
                    "ln_1" => "attn_norm",
                    "attn.c_attn" => "attn_qkv",
                    "attn.c_proj" => "attn_output",
                    "ln_2" => "ffn_norm",
                    "mlp.c_fc" => "ffn_up",
                    _ => "ffn_down",
                };
                format!("blk.{layer}.{ours}.{kind}")
            }
        };
        if let [rows, cols] = shape[..]
            && !gguf.starts_with("token_embd")
            && !gguf.starts_with("position_embd")
        {
            let t: Vec<f32> = (0..rows * cols)
                .map(|i| values[(i % rows) * cols + i / rows])
                .collect();
            w.f32_tensor(&gguf, &[cols, rows], &t);
        } else {
            w.f32_tensor(&gguf, &shape, &values);
        }
        if gguf == "token_embd.weight" {
            w.f32_tensor("output.weight", &shape, &values);
        }
    }
    w.to_bytes()
}

/// The tiny GPT-2's `config.json`, `tokenizer.json` and one F32 shard, framed for the `hf`
/// fuzz target.
pub fn tiny_gpt2_hf() -> Vec<u8> {
    let config = json!({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": TINY.d,
        "n_layer": TINY.layers, "n_head": TINY.heads, "n_inner": TINY.d_ff,
        "n_positions": GPT2_POSITIONS, "vocab_size": tiny_vocab().0.len(),
        "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "eos_token_id": 0
    });
    let shard = f32_shard(tiny_gpt2_hf_weights(4));
    frame_hf(&config.to_string(), &tiny_tokenizer_json(), &shard)
}

/// The valid inputs the fuzzers start from: `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut bos = tiny_llama_gguf(3).0;
    set_kv(&mut bos, "tokenizer.ggml.add_bos_token", Val::Bool(true));
    set_kv(&mut bos, "tokenizer.ggml.bos_token_id", Val::U32(0));
    let hf = frame_hf(&tiny_hf_config(7), &tiny_tokenizer_json(), &tiny_shard());
    let plain = json!([
        {"prompt": "I live in {}", "subject": "Washington", "target_new": "Paris"},
        {"prompt": "中国 is in", "subject": "中国", "target_new": "Asia", "target_true": "Europe"}
    ]);
    let counterfact = json!([{
        "case_id": 7,
        "requested_rewrite": {
            "prompt": "The Eiffel {} is in", "subject": "Tower",
            "target_new": {"str": "Rome"}, "target_true": {"str": "Paris"}
        },
        "paraphrase_prompts": ["The Tower is in"],
        "neighborhood_prompts": ["Paris is the capital of"]
    }]);
    let zsre = json!([{
        "subject": "Paris", "src": "What country is Paris in?", "answers": ["France"],
        "rephrase": "Paris is in which country?", "loc": "nq question: who wrote it",
        "loc_ans": "the author"
    }]);
    let values: Vec<f32> = (0..16).map(|i| i as f32 * 0.25 - 1.0).collect();
    vec![
        ("gguf", "tiny.gguf", tiny_gguf()),
        ("gguf", "tiny-bos.gguf", bos.to_bytes()),
        ("gguf", "tiny-gpt2.gguf", tiny_gpt2_gguf(5)),
        ("hf", "tiny.hf", hf),
        ("hf", "tiny-gpt2.hf", tiny_gpt2_hf()),
        ("requests", "plain.json", plain.to_string().into_bytes()),
        (
            "requests",
            "counterfact.json",
            counterfact.to_string().into_bytes(),
        ),
        ("requests", "zsre.json", zsre.to_string().into_bytes()),
        ("npy", "c4x4.npy", nse::npy::write_f32(&[4, 4], &values)),
        (
            "hparams",
            "smollm2.json",
            nse::edit::hparams::SMOLLM2_135M.as_bytes().to_vec(),
        ),
        ("patch", "two-layers.nsepatch", patch_seed()),
    ]
}

/// A valid patch for the fuzz target's tiny model (`fuzz/fuzz_targets/patch.rs`: 4 layers,
/// d 8, d_ff 12): one NSE entry that updates three neurons of layers 1 and 2.
pub fn patch_seed() -> Vec<u8> {
    use nse::edit::patch::Patch;
    use nse::edit::solve::Factored;
    use nse::edit::state::AppliedUpdate;
    use nse::edit::{EditRequest, Hparams, LedgerEntry, MethodKind, ROOT_DIGEST};
    let mut hp = Hparams::for_model("SmolLM2-135M-Instruct").expect("shipped hparams");
    hp.layers = vec![1, 2];
    hp.v_loss_layer = 3;
    let (d, f) = (8, 12);
    let update = |layer: usize| AppliedUpdate {
        round: 0,
        layer,
        update: Factored {
            cols: vec![0, 3, 5],
            r: (0..d).map(|i| i as f64 * 0.01 - 0.03).collect(),
            y: vec![0.5, -0.25, 0.125],
            n: 1,
            d,
        },
    };
    let keys = |l: usize| (0..f).map(|i| (i + l) as f32 * 0.1).collect::<Vec<f32>>();
    let entry = LedgerEntry {
        method: MethodKind::Nse,
        requests: vec![
            EditRequest::from_sentence("I live in Washington", "Washington", "Paris", None)
                .expect("a valid request"),
        ],
        updates: vec![update(1), update(2)],
        p_keys: [(1, keys(1)), (2, keys(2))].into_iter().collect(),
        parent: ROOT_DIGEST.to_string(),
        measured: vec![],
    };
    Patch::new("tiny", &"0".repeat(64), &hp, vec![entry]).to_bytes()
}
