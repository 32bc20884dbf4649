//! The memory budget: every allocation sized by the input is refused with `Error::TooLarge`
//! before it is made, and the command line's flag and variable set the budget.

use nse::budget;
use nse::cpu::CpuBackend;
use nse::edit::Hparams;
use nse::edit::covariance::second_moments;
use nse::model::load::{load_gguf, load_path, load_safetensors};
use nse::model::{Model, ModelConfig};

use crate::common::tiny::{tiny_config, tiny_weights};
use crate::expect_err;
use crate::fixtures::{
    set_kv, setup, temp_dir, tiny_gguf, tiny_hf_config, tiny_shard, tiny_tokenizer_json,
};
use crate::gguf_writer::{Val, tiny_llama_gguf};
use crate::harness::BUDGET;

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

/// A model of a few MB whose `d_ff` = 65536 makes each edited layer's `C` 16 GiB.
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
    let before = model.weights.layers[0].down_proj.f32_decoded().to_vec();
    let mut hp = Hparams::for_model("SmolLM2-135M-Instruct").unwrap();
    hp.layers = vec![0];
    hp.v_loss_layer = 0;
    let text = expect_err(hp.check_model(&model.config), "TooLarge", "d_ff 65536");
    assert!(text.contains("80.0 GiB"), "{text}"); // 16 GiB of C and 64 GiB of solve
    // A batch, with the statistics held already, checks the solve alone.
    let text = expect_err(hp.check_batch(&model.config), "TooLarge", "f64 solve");
    assert!(text.contains("64.0 GiB"), "{text}");
    let r = pollster::block_on(second_moments(&model, &[vec![1, 2, 3]], &[0], |_, _| {}));
    expect_err(r, "TooLarge", "covariance sums");
    let after = model.weights.layers[0].down_proj.f32_decoded();
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
        Some((1u64 << 32) * (4 + 2 * 8))
    );
    assert_eq!(nse::edit::hparams::edit_memory_bytes(1, usize::MAX), None);
    assert_eq!(
        nse::edit::hparams::alphaedit_memory_bytes(2, 65536),
        Some((1u64 << 32) * (2 + 6) * 8)
    );
    assert_eq!(
        nse::edit::hparams::alphaedit_memory_bytes(1, usize::MAX),
        None
    );
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

#[test]
fn covariance_sums_that_do_not_fit_together_are_made_a_few_layers_at_a_time() {
    // 256 MiB budget (the harness's). d_ff 2,048 with more than eight windows: each layer's sums
    // take 64 MiB (f32 sums, their copy, the f64 sums), so five layers go in two passes; d_ff
    // 4,096 with one readback: 128 MiB each, so two at a time. The statistics are the same
    // floats as each layer computed alone, and the progress runs over every pass.
    setup();
    for (d_ff, n_windows) in [(2048, 9), (4096, 3)] {
        let config = ModelConfig {
            n_layers: 5,
            d_model: 8,
            d_ff,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            max_ctx: 64,
            ..tiny_config(7)
        };
        let model = Model::upload(CpuBackend, config.clone(), tiny_weights(&config, 6)).unwrap();
        let windows: Vec<Vec<u32>> = (0..n_windows)
            .map(|w| (0..5).map(|i| ((w * 5 + i) % 7) as u32).collect())
            .collect();
        let layers = [0, 1, 2, 3, 4];
        let mut calls = vec![];
        let (all, n) = pollster::block_on(second_moments(&model, &windows, &layers, |a, b| {
            calls.push((a, b))
        }))
        .unwrap();
        assert_eq!(n, 5 * n_windows);
        let passes = if d_ff == 2048 { 2 } else { 3 };
        assert_eq!(
            calls.len(),
            passes * n_windows,
            "d_ff {d_ff}: one call per window per pass"
        );
        assert_eq!(calls.last(), Some(&(passes * n, passes * n)));
        for l in layers {
            let (alone, _) =
                pollster::block_on(second_moments(&model, &windows, &[l], |_, _| {})).unwrap();
            let (a, b) = (&all[&l], &alone[&l]);
            assert_eq!(a.len(), d_ff * d_ff);
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "d_ff {d_ff}, layer {l}"
            );
        }
    }
}

#[test]
fn a_dense_p_or_alphaedits_projectors_over_the_budget_are_refused_before_they_are_made() {
    // 256 MiB budget. P of d_ff 8,200 is 269 MB dense: its keys are kept up to 2,049 rows, and
    // the batch that would make it dense is refused, P unchanged.
    setup();
    let f = 8200;
    let mut p = nse::edit::PastKeys::new(f);
    p.add(&vec![0.5; 2049 * f]).unwrap();
    let before = p.resident_bytes();
    expect_err(p.add(&vec![0.5; f]), "TooLarge", "second moment P");
    assert!(!p.is_dense() && p.resident_bytes() == before);
    // AlphaEdit on one layer of d_ff 4,096: a 134 MB projector and 805 MB of solve workspace.
    let cov = std::collections::BTreeMap::from([(0usize, vec![0.0f32; 4096 * 4096])]);
    let hp = Hparams::for_model("SmolLM2-135M-Instruct").unwrap();
    expect_err(
        nse::edit::AlphaEdit::new(&cov, 4096, &hp),
        "TooLarge",
        "AlphaEdit on 1 layers",
    );
}

#[test]
fn hyperparameters_over_the_budget_are_offered_to_be_changed_and_fewer_layers_start_editing() {
    // 256 MiB budget. d_ff 3,072: the derived layers need C (38 MB each) and the solve (151 MB),
    // over the budget for their number of layers; one layer fits. The session says why it cannot
    // edit and offers the hyperparameters; with one layer it edits.
    setup();
    let config = ModelConfig {
        n_layers: 12,
        d_model: 8,
        d_ff: 3072,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        max_ctx: 64,
        ..tiny_config(crate::common::tiny::tiny(1).tok.vocab_size())
    };
    let model = Model::upload(CpuBackend, config.clone(), tiny_weights(&config, 5)).unwrap();
    let source = nse::model::ModelSource {
        name: "wide-random-llama".into(),
        format: "gguf".into(),
        sha256: "ab".repeat(32),
        bytes: 0,
        tensor_count: 0,
        tensor_types: vec![],
    };
    let engine = nse::session::Engine::Cpu(nse::session::Workbench { model, edits: None });
    let tok = crate::common::tiny::tiny(1).tok;
    let mut s = nse::session::Session::new(engine, tok, source, "cpu".into()).unwrap();
    let why = s
        .editing
        .as_ref()
        .err()
        .expect("editing unavailable")
        .clone();
    assert!(
        why.contains("TooLarge") || why.contains("memory budget"),
        "{why}"
    );
    let mut hp = s
        .proposed_hparams
        .clone()
        .expect("the hyperparameters are offered");
    assert_eq!(hp, Hparams::derived(&config, "wide-random-llama"));
    assert!(hp.layers.len() > 1, "{:?}", hp.layers);
    // Still too many: refused, nothing changes.
    expect_err(s.set_hparams(hp.clone()), "TooLarge", "editing");
    assert!(s.editing.is_err() && s.proposed_hparams.is_some());
    hp.layers = vec![hp.z_layer()];
    s.set_hparams(hp.clone()).unwrap();
    assert_eq!(s.setup().unwrap().hp, hp);
    assert!(s.proposed_hparams.is_none());
}
