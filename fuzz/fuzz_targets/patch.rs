//! `.nsepatch` decoding and replay against a tiny model: any input either decodes and applies, or
//! is refused with an error that leaves the model and the ledger exactly as they were.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nse::cpu::CpuBackend;
use nse::edit::EditState;
use nse::edit::patch::Patch;
use nse::model::{Arch, HostTensor, LayerWeights, Model, ModelConfig, Weights};
use sha2::{Digest, Sha256};

/// A 4-layer Llama with d 8, d_ff 12 and deterministic weights.
fn tiny() -> Model<CpuBackend> {
    let c = ModelConfig {
        arch: Arch::Llama,
        n_layers: 4,
        d_model: 8,
        d_ff: 12,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        vocab_size: 16,
        max_ctx: 32,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_eps: 1e-5,
        tie_embeddings: true,
        bos_id: None,
        eos_id: None,
        add_bos: false,
    };
    let mut seed = 1u32;
    let mut t = |name: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        HostTensor::new(name, shape, data)
    };
    let (d, f, q, kv) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
    let layers = (0..c.n_layers)
        .map(|l| {
            let n = |s: &str| nse::model::weights::layer_name(l, s);
            LayerWeights {
                input_layernorm: HostTensor::new(n("input_layernorm"), vec![d], vec![1.0; d]),
                q_proj: t(n("self_attn.q_proj"), vec![q, d]),
                k_proj: t(n("self_attn.k_proj"), vec![kv, d]),
                v_proj: t(n("self_attn.v_proj"), vec![kv, d]),
                o_proj: t(n("self_attn.o_proj"), vec![d, q]),
                post_attention_layernorm: HostTensor::new(
                    n("post_attention_layernorm"),
                    vec![d],
                    vec![1.0; d],
                ),
                gate_proj: Some(t(n("mlp.gate_proj"), vec![f, d])),
                up_proj: t(n("mlp.up_proj"), vec![f, d]),
                down_proj: t(n("mlp.down_proj"), vec![d, f]),
                qkv_bias: None,
                gpt2_bias: None,
            }
        })
        .collect();
    let weights = Weights {
        embed_tokens: t("model.embed_tokens.weight".into(), vec![c.vocab_size, d]),
        layers,
        norm: HostTensor::new("model.norm.weight", vec![d], vec![1.0; d]),
        lm_head: None,
        position_embd: None,
        norm_bias: None,
    };
    Model::upload(CpuBackend, c, weights).expect("the tiny model uploads")
}

fuzz_target!(|data: &[u8]| {
    // As given (the checksum path), and with a valid checksum appended, so that mutations reach
    // the manifest and blob checks behind it.
    check(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Sha256::digest(data));
    check(&sealed);
});

fn check(bytes: &[u8]) {
    let Ok(patch) = Patch::from_bytes(bytes, "fuzz.nsepatch") else {
        return;
    };
    let mut model = tiny();
    let Ok(mut state) = EditState::new(&model, &patch.hparams.layers) else {
        return;
    };
    let before: Vec<Vec<f32>> = model
        .weights
        .layers
        .iter()
        .map(|l| l.down_proj.f32().to_vec())
        .collect();
    let sha = patch.model_sha256.clone();
    if pollster::block_on(patch.apply(&mut model, &mut state, &sha)).is_err() {
        for (l, w) in model.weights.layers.iter().zip(&before) {
            assert_eq!(
                l.down_proj.f32(),
                w.as_slice(),
                "a refused patch changed the model"
            );
        }
        assert!(
            state.ledger.is_empty(),
            "a refused patch changed the ledger"
        );
    }
}
