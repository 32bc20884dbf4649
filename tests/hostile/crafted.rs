//! Crafted hostile inputs, one per defect of issue 10, and the fuzz seeds.

use std::path::PathBuf;

use nse::budget;
use nse::cpu::CpuBackend;
use nse::edit::covariance::{CorpusSpec, second_moments};
use nse::edit::{CovarianceSet, Hparams};
use nse::model::load::{LoadedModel, load_gguf, load_path, load_safetensors};
use nse::model::{ForwardSpec, LogitRows, Model, ModelConfig, Packed};
use serde_json::json;

use crate::common::tiny::{tiny_config, tiny_weights};
use crate::common::{TOL_F32_REDUCTION, assert_close};
use crate::expect_err;
use crate::gguf_writer::{GgufWriter, TINY, Val, tiny_hf_weights, tiny_llama_gguf};
use crate::harness::{BUDGET, frame_hf};

/// The harness's budget: the same in every test of this binary, so tests may run in parallel.
fn setup() {
    budget::set_limit(Some(BUDGET));
}

/// A fresh empty folder under the system temp dir, named after the test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nse-hostile-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces (or adds) a metadata entry of a GGUF being written.
fn set_kv(w: &mut GgufWriter, key: &str, v: Val) {
    w.kv.retain(|(k, _)| k != key);
    w.kv(key, v);
}

fn tiny_gguf() -> Vec<u8> {
    tiny_llama_gguf(1).0.to_bytes()
}

/// config.json of the tiny HF Llama (the GGUF tiny model's dimensions and vocabulary).
fn tiny_hf_config(vocab_size: usize) -> String {
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
fn tiny_tokenizer_json() -> String {
    load_gguf(&tiny_gguf(), "tiny.gguf")
        .unwrap()
        .tokenizer
        .to_json()
        .unwrap()
}

/// The tiny HF weights as one F32 safetensors shard.
fn tiny_shard() -> Vec<u8> {
    let tensors = tiny_hf_weights(2);
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
        ("hf", "tiny.hf", hf),
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
    ]
}

#[test]
fn a_huge_context_length_is_refused_before_the_rope_table() {
    setup();
    let mut w = tiny_llama_gguf(4).0;
    set_kv(&mut w, "llama.context_length", Val::U32(u32::MAX));
    let text = expect_err(
        load_gguf(&w.to_bytes(), "ctx.gguf"),
        "TooLarge",
        "RoPE table",
    );
    assert!(text.contains("4294967295 positions"), "{text}");
    // The same through config.json's max_position_embeddings.
    let config = tiny_hf_config(7).replace(
        "\"max_position_embeddings\":64",
        "\"max_position_embeddings\":1099511627776",
    );
    let shard = tiny_shard();
    let r = load_safetensors(
        &config,
        &tiny_tokenizer_json(),
        &[("m.safetensors", &shard)],
    );
    expect_err(r, "TooLarge", "RoPE table");
}

/// A model of a few MB whose `d_ff` = 65536 makes each edited layer's `P`/`C` 16 GiB.
#[test]
fn d_ff_squared_is_budgeted_before_p_and_c() {
    setup();
    let config = ModelConfig {
        n_layers: 1,
        d_model: 8,
        d_ff: 65536,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        max_ctx: 64,
        ..tiny_config(7)
    };
    let model = Model::upload(CpuBackend, config.clone(), tiny_weights(&config, 5)).unwrap();
    let before = model.weights.layers[0].down_proj.f32().to_vec();
    let mut hp = Hparams::for_model("SmolLM2-135M-Instruct").unwrap();
    hp.layers = vec![0];
    hp.v_loss_layer = 0;
    let text = expect_err(hp.check_model(&model.config), "TooLarge", "d_ff 65536");
    assert!(text.contains("256.0 GiB"), "{text}");
    let r = pollster::block_on(second_moments(&model, &[vec![1, 2, 3]], &[0], |_, _| {}));
    expect_err(r, "TooLarge", "covariance sums");
    let after = model.weights.layers[0].down_proj.f32();
    assert!(
        after
            .iter()
            .map(|x| x.to_bits())
            .eq(before.iter().map(|x| x.to_bits()))
    );
    // Sized in u64: d_ff² · 4 for d_ff = 65536 is 2^34, which a 32-bit usize would wrap to 0.
    assert_eq!(budget::bytes_of(&[65536, 65536], 4), Some(1 << 34));
    assert_eq!(
        nse::edit::hparams::edit_memory_bytes(1, 65536),
        Some((1u64 << 32) * (4 + 4 + 8 + 6 * 8))
    );
    assert_eq!(nse::edit::hparams::edit_memory_bytes(1, usize::MAX), None);
}

#[test]
fn a_kv_cache_over_the_budget_is_refused() {
    setup();
    let config = ModelConfig {
        n_layers: 64,
        d_model: 8,
        d_ff: 8,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        max_ctx: 1 << 20,
        ..tiny_config(7)
    };
    let model = Model::upload(CpuBackend, config.clone(), tiny_weights(&config, 6)).unwrap();
    expect_err(
        model.new_cache(1 << 20),
        "TooLarge",
        "KV cache of 1048576 tokens",
    );
    assert_eq!(model.new_cache(16).unwrap().capacity(), 16);
}

#[test]
fn hf_tokenizer_ids_are_checked_by_the_largest_id() {
    setup();
    // Seven entries, as many as vocab_size, but one of them is id 1000.
    let tok = tiny_tokenizer_json().replace("\"Ġab\":6", "\"Ġab\":1000");
    assert!(tok.contains("1000"), "the tokenizer.json layout changed");
    let shard = tiny_shard();
    let r = load_safetensors(&tiny_hf_config(7), &tok, &[("m.safetensors", &shard)]);
    expect_err(
        r,
        "Format",
        "7 tokens with ids up to 1000 but config.json's vocab_size is 7",
    );
    let config = tiny_hf_config(7).replace("\"eos_token_id\":0", "\"eos_token_id\":99");
    let r = load_safetensors(
        &config,
        &tiny_tokenizer_json(),
        &[("m.safetensors", &shard)],
    );
    expect_err(r, "Format", "eos_token_id is 99 but vocab_size is 7");
}

#[test]
fn gguf_byte_arrays_are_budgeted_at_their_size_in_memory() {
    setup();
    // 16 MiB of u8 in the file, 32 bytes each once parsed: 512 MiB.
    let mut w = tiny_llama_gguf(8).0;
    w.kv("evil.bytes", Val::Nested(vec![vec![7u8; 16 << 20]]));
    let text = expect_err(
        load_gguf(&w.to_bytes(), "bytes.gguf"),
        "TooLarge",
        "evil.bytes",
    );
    assert!(text.contains("of 16777216 values"), "{text}");
}

#[test]
fn a_shard_index_cannot_leave_the_model_directory() {
    setup();
    let root = temp_dir("index");
    let dir = root.join("model");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("config.json"), tiny_hf_config(7)).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    // A valid shard outside the model directory, which a hostile index points at.
    std::fs::write(root.join("outside.safetensors"), tiny_shard()).unwrap();
    std::fs::write(dir.join("sub/inner.safetensors"), tiny_shard()).unwrap();
    let outside = root.join("outside.safetensors").display().to_string();
    for shard in [
        "../outside.safetensors",
        outside.as_str(),
        "sub/inner.safetensors",
        "..",
    ] {
        let index = json!({"weight_map": {"model.embed_tokens.weight": shard}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        expect_err(
            load_path(&dir),
            "Format",
            "not a file name inside the model directory",
        );
    }
    // The same shard beside the index loads.
    std::fs::copy(root.join("outside.safetensors"), dir.join("m.safetensors")).unwrap();
    let index = json!({"weight_map": {"model.embed_tokens.weight": "m.safetensors"}});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    load_path(&dir).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

/// `log_softmax` of one row in f64, as an independent reference.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// A model that prepends a BOS: candidate scores equal the log-probabilities of the
/// candidate's tokens read off a full forward pass over the whole input.
#[test]
fn scoring_works_for_a_model_that_adds_a_bos() {
    setup();
    let mut w = tiny_llama_gguf(9).0;
    set_kv(&mut w, "tokenizer.ggml.add_bos_token", Val::Bool(true));
    set_kv(&mut w, "tokenizer.ggml.bos_token_id", Val::U32(0));
    let LoadedModel {
        config,
        weights,
        tokenizer: tok,
        ..
    } = load_gguf(&w.to_bytes(), "bos.gguf").unwrap();
    assert!(tok.add_bos() && config.add_bos);
    let model = Model::upload(CpuBackend, config, weights).unwrap();
    let pairs: Vec<(String, String)> = [("ab a", "ab"), ("a", "ab ab"), ("b", "a"), ("ab", "b a")]
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .to_vec();
    let scores = pollster::block_on(nse::eval::score_candidates(&model, &tok, &pairs)).unwrap();
    for ((prefix, cand), score) in pairs.iter().zip(&scores) {
        let full = tok.encode(&format!("{prefix} {cand}")).unwrap();
        assert_eq!(full[0], 0, "the input starts with the BOS");
        let start = tok.encode(prefix).unwrap().len();
        let packed = Packed::new(&[full.as_slice()]);
        let spec = ForwardSpec {
            logits: LogitRows::All,
            ..Default::default()
        };
        let logits = model.forward(&packed, &spec).unwrap().logits.unwrap();
        let logits = logits.f32();
        let v = model.config.vocab_size;
        let mut nll = 0.0f64;
        let mut argmax_all = true;
        for (p, &t) in full.iter().enumerate().skip(start) {
            let row = &logits[(p - 1) * v..p * v];
            nll -= log_softmax(row)[t as usize];
            let best = (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            argmax_all &= best == t as usize;
        }
        let want = (nll / (full.len() - start) as f64) as f32;
        assert_close(
            &[score.nll],
            &[want],
            TOL_F32_REDUCTION,
            &format!("{prefix:?} {cand:?}"),
        );
        assert_eq!(score.argmax_all, argmax_all, "{prefix:?} {cand:?}");
    }
}

#[test]
fn a_covariance_cache_holding_nan_is_removed_and_recomputed() {
    setup();
    let dir = temp_dir("cov");
    let loaded = load_gguf(&tiny_gguf(), "tiny.gguf").unwrap();
    let (tok, sha) = (loaded.tokenizer, loaded.source.sha256);
    let model = Model::upload(CpuBackend, loaded.config, loaded.weights).unwrap();
    let corpus = dir.join("corpus.txt");
    std::fs::write(
        &corpus,
        "ab a b ab ab a b a ab b b a ab a a b ab ab a b ".repeat(4),
    )
    .unwrap();
    let spec = CorpusSpec {
        path: corpus,
        budget: 48,
        window: 16,
    };
    let cache = dir.join("cache");
    let load = || {
        pollster::block_on(CovarianceSet::load_or_compute_in(
            &cache,
            &model,
            &tok,
            &sha,
            &spec,
            &[1],
            |_, _| {},
        ))
    };
    let first = load().unwrap();
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&file).unwrap();
    let mut c = first.layer(1).unwrap().to_vec();
    c[2] = f32::NAN;
    std::fs::write(&file, nse::npy::write_f32(&[TINY.d_ff, TINY.d_ff], &c)).unwrap();
    let second = load().unwrap();
    assert!(
        second.source.contains("removed the bad cache for layer 1"),
        "{}",
        second.source
    );
    assert!(second.source.contains("NaN"), "{}", second.source);
    let bits = |s: &CovarianceSet| {
        s.layer(1)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&second), bits(&first));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        good,
        "the recomputed cache replaces the bad one"
    );
    // A golden-layout directory with a NaN is refused outright.
    std::fs::write(
        dir.join("layer1.npy"),
        nse::npy::write_f32(&[TINY.d_ff, TINY.d_ff], &c),
    )
    .unwrap();
    let r = CovarianceSet::from_npy_dir(&dir, &[1], TINY.d_ff, 48);
    expect_err(
        r,
        "Format",
        "entry (0, 2) of the covariance statistic is NaN",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The characters that must not reach a terminal, in the printed message.
fn assert_no_controls(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control characters in: {text:?}"
    );
}

#[test]
fn untrusted_names_are_escaped_in_error_messages() {
    setup();
    // A metadata key that clears the screen, twice.
    let mut w = GgufWriter::new();
    w.kv("evil\u{1b}[2J", Val::U32(1))
        .kv("evil\u{1b}[2J", Val::U32(2));
    let text = expect_err(
        load_gguf(&w.to_bytes(), "keys.gguf"),
        "Format",
        "evil\\u{1b}[2J",
    );
    assert_no_controls(&text);
    // A tensor name that sets the window title, at a misaligned offset.
    let mut w = tiny_llama_gguf(10).0;
    w.tensors[0].name = "token_embd\u{1b}]0;pwned\u{7}\n.weight".into();
    let mut bytes = w.to_bytes();
    let name_at = bytes.windows(10).position(|x| x == b"token_embd").unwrap();
    let offset_at = name_at + w.tensors[0].name.len() + 4 + 8 * w.tensors[0].dims.len() + 4;
    bytes[offset_at] = 1;
    let text = expect_err(
        load_gguf(&bytes, "names.gguf"),
        "Format",
        "token_embd\\u{1b}]0;pwned\\u{7}\\u{a}.weight",
    );
    assert_no_controls(&text);
    // A config.json activation and a file path with escapes.
    let config = tiny_hf_config(7).replace("\"silu\"", "\"\\u001b[31mgelu\"");
    let text = expect_err(
        load_safetensors(&config, "", &[]),
        "Unsupported",
        "\\u{1b}[31mgelu",
    );
    assert_no_controls(&text);
    let text = expect_err(
        load_gguf(b"GGUF", "a\u{1b}[8mhidden.gguf"),
        "Format",
        "a\\u{1b}[8mhidden.gguf",
    );
    assert_no_controls(&text);
    // A request whose subject carries an escape.
    let r = nse::edit::dataset::parse_cases(
        &json!([{"prompt": "{} {}\u{1b}[5m", "subject": "x", "target_new": "y"}]).to_string(),
        "req.json",
    );
    assert_no_controls(&expect_err(r, "Json", "placeholders"));
}

fn nse_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nse"));
    cmd.args(args).env_remove("NSE_MEMORY_BUDGET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_memory_budget_flag_and_variable_are_obeyed() {
    let dir = temp_dir("flag");
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, tiny_gguf()).unwrap();
    let m = model.to_str().unwrap();
    let (code, err) = nse_cli(&["info", "--model", m, "--memory-budget", "1K"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the memory budget is 1.0 KiB"), "{err}");
    assert!(
        err.contains("--memory-budget"),
        "the message says how to raise it: {err}"
    );
    let (code, err) = nse_cli(&["info", "--model", m], &[("NSE_MEMORY_BUDGET", "1K")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the memory budget is 1.0 KiB"), "{err}");
    let (code, err) = nse_cli(&["info", "--model", m], &[("NSE_MEMORY_BUDGET", "lots")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a size"), "{err}");
    let (code, err) = nse_cli(&["info", "--model", m, "--memory-budget", "lots"], &[]);
    assert_eq!(code, 2, "clap refuses the value: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weights_over_the_budget_are_refused_before_decoding() {
    setup();
    // A file holding every weight its config needs justifies them; only the budget refuses
    // them. A vocabulary of 2^21 × d 32 is 256 MiB of f32 embeddings alone.
    let config = ModelConfig {
        vocab_size: 1 << 21,
        ..tiny_config(7)
    };
    assert!(config.weight_bytes().unwrap() > BUDGET);
    expect_err(config.check_memory(u64::MAX), "TooLarge", "weights as f32");
    // A file that holds fewer weights than its config is not budgeted as a whole: it fails on
    // the first missing tensor instead.
    config.check_memory(0).unwrap();
}

#[test]
fn a_file_over_the_budget_is_not_read() {
    setup();
    let dir = temp_dir("big");
    // Sparse: 4 GiB on paper, nothing on disk. Reading it whole would need 4 GiB of memory.
    let path = dir.join("big.gguf");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    expect_err(load_path(&path), "TooLarge", "reading");
    std::fs::remove_dir_all(&dir).unwrap();
}
