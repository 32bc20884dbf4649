//! Crafted hostile inputs for the defects of issue 10 other than the memory budget: token ids,
//! shard paths, scoring with a BOS, NaN covariance caches, terminal escapes in messages.

use nse::cpu::CpuBackend;
use nse::edit::CovarianceSet;
use nse::edit::covariance::CorpusSpec;
use nse::model::load::{LoadedModel, load_gguf, load_path, load_safetensors};
use nse::model::{ForwardSpec, LogitRows, Model, Packed};
use serde_json::json;

use crate::common::{TOL_F32_REDUCTION, assert_close};
use crate::expect_err;
use crate::fixtures::{
    set_kv, setup, temp_dir, tiny_gguf, tiny_hf_config, tiny_shard, tiny_tokenizer_json,
};
use crate::gguf_writer::{GgufWriter, TINY, Val, tiny_llama_gguf};

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
