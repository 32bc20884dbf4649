//! Editing in the browser: one NSE batch on a tiny random Llama on WebGPU against the same batch
//! on the cpu backend, the patch round trip and bit-exact replay in wasm, and the page's
//! windowed covariance against the library's.

use std::collections::BTreeMap;

use nse::backend::Backend;
use nse::cpu::CpuBackend;
use nse::edit::covariance::second_moments;
use nse::edit::patch::Patch;
use nse::edit::{
    ContextTemplates, CovarianceSet, EditContext, EditRequest, EditState, Hparams, Nse, apply_batch,
};
use nse::model::{Arch, HostTensor, LayerWeights, Model, ModelConfig, Tokenizer, Weights};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

use super::{Rng, Tol, assert_close, gpu};

/// The words the tiny tokenizer knows (a whitespace-split word-level vocabulary).
const WORDS: &str = "<unk> The Eiffel Tower is located in the city of Rome Paris a mother tongue \
                     Danielle Darrieux English French capital Germany Berlin . , and was";

/// A word-level tokenizer over [`WORDS`]: enough for requests, templates and targets.
fn tiny_tokenizer() -> Tokenizer {
    let vocab: serde_json::Map<String, serde_json::Value> = WORDS
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    Tokenizer::from_json(&json.to_string(), "tiny tokenizer.json").expect("a valid tokenizer")
}

/// 3 blocks, d 32, d_ff 40 (not a multiple of the workgroup size), vocabulary 64.
fn config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_layers: 3,
        d_model: 32,
        d_ff: 40,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        vocab_size: 64,
        max_ctx: 64,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_eps: 1e-5,
        tie_embeddings: true,
        bos_id: None,
        eos_id: None,
        add_bos: false,
    }
}

fn weights(c: &ModelConfig, seed: u64) -> Weights<HostTensor> {
    let mut rng = Rng(seed);
    let mut t = |name: String, shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        HostTensor::new(name, shape, (0..n).map(|_| scale * rng.signed()).collect())
    };
    let (d, f, q, kv) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
    let s = |fan_in: usize| 1.7 / (fan_in as f32).sqrt();
    let layers = (0..c.n_layers)
        .map(|l| {
            let n = |suffix: &str| nse::model::weights::layer_name(l, suffix);
            LayerWeights {
                input_layernorm: HostTensor::new(n("input_layernorm"), vec![d], vec![1.0; d]),
                q_proj: t(n("self_attn.q_proj"), vec![q, d], s(d)),
                k_proj: t(n("self_attn.k_proj"), vec![kv, d], s(d)),
                v_proj: t(n("self_attn.v_proj"), vec![kv, d], s(d)),
                o_proj: t(n("self_attn.o_proj"), vec![d, q], s(q)),
                post_attention_layernorm: HostTensor::new(
                    n("post_attention_layernorm"),
                    vec![d],
                    vec![1.0; d],
                ),
                gate_proj: Some(t(n("mlp.gate_proj"), vec![f, d], s(d))),
                up_proj: t(n("mlp.up_proj"), vec![f, d], s(d)),
                down_proj: t(n("mlp.down_proj"), vec![d, f], s(f)),
                qkv_bias: None,
                gpt2_bias: None,
            }
        })
        .collect();
    Weights {
        embed_tokens: t(
            "model.embed_tokens.weight".into(),
            vec![c.vocab_size, d],
            1.0,
        ),
        layers,
        norm: HostTensor::new("model.norm.weight", vec![d], vec![1.0; d]),
        lm_head: None,
        position_embd: None,
        norm_bias: None,
    }
}

/// The default policies on tiny layers: edit blocks 0 and 1, loss on block 2, a short z loop.
fn hparams() -> Hparams {
    let mut hp = Hparams::for_model("SmolLM2-135M-Instruct").expect("shipped hparams");
    hp.layers = vec![0, 1];
    hp.v_loss_layer = 2;
    hp.v_num_grad_steps = 4;
    hp.mom2_update_weight = 50.0;
    hp.alpha = 0.0;
    hp.upper_bound = f32::INFINITY;
    hp.context_templates = None;
    hp
}

fn requests() -> Vec<EditRequest> {
    vec![
        EditRequest::from_sentence(
            "The Eiffel Tower is located in the city of",
            "Eiffel Tower",
            "Rome",
            Some("Paris"),
        )
        .unwrap(),
        EditRequest::from_sentence(
            "The mother tongue of Danielle Darrieux is",
            "Danielle Darrieux",
            "English",
            Some("French"),
        )
        .unwrap(),
    ]
}

/// Random token windows, and `C_l` over them on the cpu backend.
async fn covariance(model: &Model<CpuBackend>, layers: &[usize]) -> (Vec<Vec<u32>>, CovarianceSet) {
    let mut rng = Rng(99);
    let windows: Vec<Vec<u32>> = (0..3)
        .map(|w| {
            (0..20 + 7 * w)
                .map(|_| (rng.next_u64() % 64) as u32)
                .collect()
        })
        .collect();
    let (c, n) = second_moments(model, &windows, layers, |_, _| {})
        .await
        .unwrap();
    (windows, CovarianceSet::new(c, n, "random windows"))
}

/// Everything one batch leaves behind, read back to the host.
struct After {
    losses: Vec<f32>,
    selected: Vec<Vec<u32>>,
    down_proj: BTreeMap<usize, Vec<f32>>,
    p: BTreeMap<usize, nse::edit::PastKeys>,
    entry: nse::edit::LedgerEntry,
}

async fn edit_on<B: Backend>(backend: B, cov: &CovarianceSet) -> After {
    let c = config();
    let tok = tiny_tokenizer();
    let hp = hparams();
    let templates =
        ContextTemplates::new(vec![vec!["{}".into()], vec!["The city . {}".into()]]).unwrap();
    let mut model = Model::upload(backend, c.clone(), weights(&c, 5)).unwrap();
    let mut state = EditState::new(&model, &hp.layers).unwrap();
    let ctx = EditContext {
        tok: &tok,
        hp: &hp,
        templates: &templates,
        cov,
        method: &Nse,
    };
    let out = apply_batch(
        &mut model,
        &mut state,
        &ctx,
        &requests(),
        Default::default(),
        |_| {},
    )
    .await
    .expect("the edit");
    let mut down_proj = BTreeMap::new();
    for &l in &hp.layers {
        down_proj.insert(
            l,
            model
                .backend()
                .read(&model.weights.layers[l].down_proj)
                .await
                .unwrap(),
        );
    }
    After {
        losses: out
            .z
            .iter()
            .flat_map(|z| z.steps.iter().map(|s| s.loss))
            .collect(),
        selected: out
            .rounds
            .iter()
            .flat_map(|r| &r.layers)
            .map(|l| {
                let mut s = l.selected.clone();
                s.sort_unstable();
                s
            })
            .collect(),
        down_proj,
        p: state.p.clone(),
        entry: state.ledger[0].clone(),
    }
}

/// Adam's first steps (≈ lr · sign(g)) amplify the backends' f32 summation-order differences,
/// and every later quantity inherits them: compared at 1e-3 of the largest value.
const TOL_EDIT: Tol = Tol {
    abs: 1e-5,
    rel: 1e-3,
    rel_of_max: 1e-3,
};

#[wasm_bindgen_test]
async fn nse_edit_on_webgpu_matches_the_cpu_backend() {
    let c = config();
    let cpu_model = Model::upload(CpuBackend, c.clone(), weights(&c, 5)).unwrap();
    let (_, cov) = covariance(&cpu_model, &hparams().layers).await;
    let want = edit_on(CpuBackend, &cov).await;
    let got = edit_on(gpu().await, &cov).await;
    assert_close(&got.losses, &want.losses, TOL_EDIT, "z losses");
    assert_eq!(
        got.selected, want.selected,
        "selected neurons, per round and layer"
    );
    for (l, w) in &want.down_proj {
        assert_close(
            &got.down_proj[l],
            w,
            TOL_EDIT,
            &format!("down_proj of layer {l} after the edit"),
        );
        assert_close(
            &got.p[l].dense(),
            &want.p[l].dense(),
            TOL_EDIT,
            &format!("P of layer {l}"),
        );
    }
    console_log!(
        "{} z steps, {} layer updates",
        want.losses.len(),
        want.selected.len()
    );
}

#[wasm_bindgen_test]
async fn patch_round_trips_and_replays_bit_for_bit_in_wasm() {
    let c = config();
    let cpu_model = Model::upload(CpuBackend, c.clone(), weights(&c, 5)).unwrap();
    let (_, cov) = covariance(&cpu_model, &hparams().layers).await;
    let edited = edit_on(CpuBackend, &cov).await;
    let patch = Patch::new(
        "tiny",
        &"ab".repeat(32),
        &hparams(),
        vec![edited.entry.clone()],
    );
    let bytes = patch.to_bytes();
    let back = Patch::from_bytes(&bytes, "tiny.nsepatch").expect("a valid patch");
    assert_eq!(back.entries, patch.entries);
    assert_eq!(back.hparams, patch.hparams);

    // Replayed on a fresh copy of the same model: the edited weights, bit for bit.
    let mut model = Model::upload(CpuBackend, c.clone(), weights(&c, 5)).unwrap();
    let mut state = EditState::new(&model, &hparams().layers).unwrap();
    back.apply(&mut model, &mut state, &patch.model_sha256)
        .await
        .unwrap();
    for (l, w) in &edited.down_proj {
        assert_eq!(
            model.weights.layers[*l].down_proj.f32_decoded(),
            w.as_slice(),
            "layer {l}"
        );
    }
    // Undo is bit-exact too.
    state.rewind_to(&mut model, 0).unwrap();
    let fresh = weights(&c, 5);
    for &l in &hparams().layers {
        assert_eq!(
            model.weights.layers[l].down_proj.f32_decoded(),
            &*fresh.layers[l].down_proj.f32()
        );
    }

    // Another model's patch is refused before anything changes.
    let err = back
        .apply(&mut model, &mut state, &"cd".repeat(32))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not for the loaded model"), "{err}");
    assert!(state.ledger.is_empty());
    let err = Patch::from_bytes(&bytes[..bytes.len() - 3], "cut.nsepatch")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum") || err.contains("truncated"),
        "{err}"
    );
}
