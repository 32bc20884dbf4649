//! An NSE edit on the tiny Qwen2, Llama 3 and GPT-2 checkpoints of `tests/data/archs/` (made by
//! transformers; `tests/formats/archs.rs` checks their forward pass): the spec's invariants hold
//! on each, as on the Llama family's own tiny model. The residual `‖z − h‖` falls, the new
//! target's probability rises on every request, and undo restores the weights and `P` bit for bit.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tiny::{TINY_LAYERS, Tiny, down_projs, requests, tiny_from_archs};
use nse::edit::{EditState, Nse};
use nse::eval::probs::new_vs_true;
use nse::model::load::load_path;

/// P(new target) after each request's prompt.
fn p_new(t: &Tiny) -> Vec<f32> {
    let items: Vec<_> = requests()
        .iter()
        .map(|r| {
            (
                r.prompt.replace("{}", &r.subject),
                r.target_new.clone(),
                None,
            )
        })
        .collect();
    pollster::block_on(new_vs_true(&t.model, &t.tok, &items))
        .unwrap()
        .iter()
        .map(|(new, _)| new.prob())
        .collect()
}

fn edit_invariants_hold(file: &str) {
    let mut t = tiny_from_archs(file);
    let original = down_projs(&t.model, &TINY_LAYERS);
    let before = p_new(&t);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let out = t.apply(&mut state, &requests(), &Nse).unwrap();

    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (&out.rounds[0], out.rounds.last().unwrap());
    assert!(
        mean(&last.residual_norms) < 0.5 * mean(&first.residual_norms),
        "{file}: ‖z − h‖ {:?} → {:?}",
        first.residual_norms,
        last.residual_norms
    );
    let after = p_new(&t);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a > b, "{file}: request {i}: P(new) {b} → {a}");
    }
    assert_ne!(down_projs(&t.model, &TINY_LAYERS), original);

    state.rewind_to(&mut t.model, 0).unwrap();
    assert_eq!(down_projs(&t.model, &TINY_LAYERS), original, "{file}: undo");
    assert!(
        state
            .p
            .values()
            .all(|p| p.dense().iter().all(|&x| x == 0.0))
    );
    assert_eq!(p_new(&t), before, "{file}: P(new) after undo");
}

#[test]
fn nse_edits_qwen2() {
    edit_invariants_hold("qwen2.gguf");
}

#[test]
fn nse_edits_llama3() {
    edit_invariants_hold("llama3/");
}

#[test]
fn nse_edits_gpt2_from_both_formats() {
    // The paper's family: `mlp.c_proj` edited, keys after GELU, biases and LayerNorms around.
    edit_invariants_hold("gpt2.gguf");
    edit_invariants_hold("gpt2/");
}

#[test]
fn derived_hyperparameters_reproduce_the_shipped_smollm2_file() {
    // The rule of hparams/README.md, applied to SmolLM2-135M's shape, gives its shipped file
    // (whose context templates are the reference run's own; the rule samples them instead).
    let config = common::load_default_model().config;
    let mut shipped = nse::edit::Hparams::for_model("SmolLM2-135M-Instruct").unwrap();
    shipped.context_templates = None;
    assert_eq!(
        nse::edit::Hparams::derived(&config, "SmolLM2-135M-Instruct"),
        shipped
    );
    // And for the tiny Qwen2 (6 blocks, d_model 64): layers 1–4, thresholds scaled by 1/3.
    let tiny = load_path(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/archs/qwen2.gguf"),
    )
    .unwrap()
    .config;
    let hp = nse::edit::Hparams::derived(&tiny, "qwen2");
    assert_eq!(hp.layers, [1, 2, 3, 4]);
    assert_eq!(hp.v_loss_layer, 5);
    assert_eq!((hp.alpha, hp.upper_bound), (22.0 / 3.0, 75.0));
    hp.check_model(&tiny).unwrap();
    // GPT-2 at GPT2-XL's depth: the papers' layers 13–17 of 48.
    let mut xl = load_path(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/archs/gpt2.gguf"),
    )
    .unwrap()
    .config;
    xl.n_layers = 48;
    let hp = nse::edit::Hparams::derived(&xl, "gpt2-xl");
    assert_eq!(
        (hp.layers.as_slice(), hp.v_loss_layer),
        (&[13, 14, 15, 16, 17][..], 47)
    );
}

/// A block's backward pass gives the same input gradient, bit for bit, whether it kept the
/// MLP's `gate` and `up` or recomputes them from `h1` (what the z loop does past
/// `Z_TAPE_MLP_BUDGET`), on SwiGLU (Llama 3, Qwen2) and GELU-with-biases (GPT-2) blocks.
#[test]
fn recomputed_mlp_activations_give_the_same_gradient() {
    use nse::backend::Backend;
    use nse::model::{BlockRows, Packed};
    for file in ["llama3.gguf", "qwen2.gguf", "gpt2.gguf"] {
        let t = tiny_from_archs(file);
        let (m, be) = (&t.model, t.model.backend());
        let ids: Vec<u32> = (0..9).map(|i| 3 + 7 * i).collect();
        let batch = Packed::new(&[&ids[..5], &ids[5..]]);
        let bt = m.upload_batch(&batch).unwrap();
        let d = m.config.d_model;
        let n = batch.n_rows();
        let mut s = 1u32;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let h = be.upload(
            "h",
            &(0..n * d).map(|_| next()).collect::<Vec<_>>(),
            &[n, d],
        );
        let dout = be.upload(
            "dout",
            &(0..n * d).map(|_| next()).collect::<Vec<_>>(),
            &[n, d],
        );
        let (h, dout) = (h.unwrap(), dout.unwrap());
        for l in 0..m.config.n_layers {
            let (_, mut acts, _) = m.block_packed(l, &h, &bt, None).unwrap();
            let kept = m
                .block_backward(l, &h, &acts, BlockRows::Packed(&bt), None, &dout)
                .unwrap();
            acts.forget_mlp();
            let recomputed = m
                .block_backward(l, &h, &acts, BlockRows::Packed(&bt), None, &dout)
                .unwrap();
            assert!(
                kept.f32() == recomputed.f32(),
                "{file}, block {l}: the input gradients differ"
            );
        }
    }
}
