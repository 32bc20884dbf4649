//! The whole forward pass against `tests/golden/forward.json`, an independent PyTorch run on
//! the same dequantised weights: last-position top-10 logits within 1e-3 absolute; per-position
//! logsumexp, block-output norms and MLP keys within 1e-3 relative; argmax per position and the
//! 12 greedy tokens identical. On the cpu backend and on the gpu backend (lavapipe here).

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use nse::backend::{Backend, TensorInfo};
use nse::cpu::CpuBackend;
use nse::model::{ForwardSpec, LogitRows, Model, Packed, Sampling, generate};
use serde_json::Value;

/// Layers whose block-output norms the golden file records.
const NORM_LAYERS: [usize; 5] = [0, 3, 7, 15, 28];
/// Layers whose MLP key norms it records.
const KEY_LAYERS: [usize; 3] = [3, 7, 29];

fn golden() -> Value {
    common::golden_json("forward.json")
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() as f32
}

/// Checks every field of every golden prompt on `model`.
async fn check_model<B: Backend>(model: &Model<B>, tok: &nse::model::Tokenizer) {
    let be = model.backend();
    let (d, dff, vocab) = (
        model.config.d_model,
        model.config.d_ff,
        model.config.vocab_size,
    );
    for p in golden()["prompts"].as_array().unwrap() {
        let prompt = p["prompt"].as_str().unwrap();
        let ids = tok.encode(prompt).unwrap();
        let want_ids: Vec<u32> = p["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want_ids, "token ids of {prompt:?}");
        let n = ids.len();

        let out = model
            .forward(
                &Packed::new(std::slice::from_ref(&ids)),
                &ForwardSpec {
                    block_out: &NORM_LAYERS,
                    mlp_key: &KEY_LAYERS,
                    logits: LogitRows::All,
                    ..Default::default()
                },
            )
            .unwrap();
        let logits = be.read(out.logits.as_ref().unwrap()).await.unwrap(); // (n, V)
        assert_eq!(out.logits.as_ref().unwrap().shape(), [n, vocab]);
        let last = &logits[(n - 1) * vocab..];

        // Top-10 at the last position: same ids, values within 1e-3 absolute.
        let top = nse::ops::softmax::top_k(last, 10);
        for (rank, pair) in p["top10_last"].as_array().unwrap().iter().enumerate() {
            let (id, val) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap() as f32,
            );
            assert_eq!(top[rank], id, "{prompt:?}: top-10 rank {rank}");
            common::assert_close(
                &[last[id]],
                &[val],
                common::Tol::abs(1e-3),
                &format!("{prompt:?} logit of id {id}"),
            );
        }
        common::assert_close(
            &last[..16],
            &f32s(&p["logits_last_first16"]),
            common::Tol::abs(1e-3),
            &format!("{prompt:?} logits 0..16"),
        );

        // Per position: logsumexp (1e-3 relative) and argmax (exact).
        let lse: Vec<f32> = logits
            .chunks(vocab)
            .map(|row| {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                m + row.iter().map(|x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32
            })
            .collect();
        common::assert_close(
            &lse,
            &f32s(&p["logsumexp_per_position"]),
            common::Tol::rel(1e-3),
            &format!("{prompt:?} logsumexp"),
        );
        let argmax: Vec<u64> = logits
            .chunks(vocab)
            .map(|r| nse::ops::softmax::argmax_forward(r, vocab)[0] as u64)
            .collect();
        let want_argmax: Vec<u64> = p["argmax_per_position"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(argmax, want_argmax, "{prompt:?}: argmax per position");

        // Residual stream norms per position, and block 7's first values at the last position.
        for l in NORM_LAYERS {
            let h = be.read(&out.block_out[&l]).await.unwrap();
            let norms: Vec<f32> = h.chunks(d).map(norm).collect();
            common::assert_close(
                &norms,
                &f32s(&p["block_output_norms"][l.to_string()]),
                common::Tol::rel(1e-3),
                &format!("{prompt:?} block {l} norms"),
            );
            if l == 7 {
                let got = &h[(n - 1) * d..(n - 1) * d + 8];
                common::assert_close(
                    got,
                    &f32s(&p["block7_output_last_first8"]),
                    common::Tol::rel_of_max(1e-3),
                    &format!("{prompt:?} block 7 values"),
                );
            }
        }
        // NSE keys (down_proj inputs) at the last position.
        for l in KEY_LAYERS {
            let k = be.read(&out.mlp_key[&l]).await.unwrap();
            let last_key = &k[(n - 1) * dff..];
            let want = p["mlp_key_norms_last"][l.to_string()].as_f64().unwrap() as f32;
            common::assert_close(
                &[norm(last_key)],
                &[want],
                common::Tol::rel(1e-3),
                &format!("{prompt:?} key norm, layer {l}"),
            );
            if l == 7 {
                common::assert_close(
                    &last_key[..16],
                    &f32s(&p["mlp_key_layer7_last_first16"]),
                    common::Tol::rel_of_max(1e-3),
                    &format!("{prompt:?} layer-7 key values"),
                );
            }
        }

        let want: Vec<u32> = p["greedy12"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = generate(model, &ids, 12, Sampling::Greedy, |_| {})
            .await
            .unwrap();
        assert_eq!(
            got.ids,
            want,
            "{prompt:?}: greedy continuation {:?}",
            tok.decode(&got.ids)
        );
    }
}

#[test]
fn golden_forward_cpu() {
    let loaded = common::load_default_model();
    let model = Model::upload(CpuBackend, loaded.config, loaded.weights).unwrap();
    pollster::block_on(check_model(&model, &loaded.tokenizer));
}

#[test]
fn golden_forward_gpu() {
    let Some(gpu) = common::gpu() else { return };
    let loaded = common::load_default_model();
    let model = Model::upload(gpu, loaded.config, loaded.weights).unwrap();
    // The Q4_1 and Q8_0 matrices stay compact on the device: this checks the kernels that
    // decode them, not an f32 copy.
    let tensors = model.weights.tensors();
    let packed = tensors.iter().filter(|t| t.packing().is_some()).count();
    assert_eq!(packed, 30 * 7 + 1, "packed matrices of {}", tensors.len());
    pollster::block_on(check_model(&model, &loaded.tokenizer));
}
