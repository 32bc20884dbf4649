//! A tiny random Llama with the real tokenizer, for editing tests that must be fast: every
//! property that holds for any weights (locality, normal equations, undo, rewinding) is checked
//! here; the real model is for the golden parity tests.

use std::collections::BTreeMap;

use nse::cpu::{CpuBackend, CpuTensor};
use nse::edit::covariance::{second_moments, windows};
use nse::edit::{
    BatchOutcome, ContextTemplates, CovarianceSet, EditContext, EditMethod, EditRequest, EditState,
    Hparams, apply_batch,
};
use nse::model::{Arch, HostTensor, LayerWeights, Model, ModelConfig, Tokenizer, Weights};

use super::Rng;

/// Edited layers of the tiny model's hyperparameters (the last is the z layer).
pub const TINY_LAYERS: [usize; 3] = [1, 2, 3];

/// Architecture: 6 blocks, d 32, d_ff 48, 4 query / 2 kv heads of 8, the real vocabulary.
pub fn tiny_config(vocab: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_layers: 6,
        d_model: 32,
        d_ff: 48,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        vocab_size: vocab,
        max_ctx: 512,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_eps: 1e-5,
        tie_embeddings: true,
        bos_id: Some(1),
        eos_id: Some(2),
        add_bos: false,
    }
}

/// Random weights: normal-ish entries scaled by `1/sqrt(fan_in)`, norms around 1.
pub fn tiny_weights(c: &ModelConfig, seed: u64) -> Weights<HostTensor> {
    let mut rng = Rng::new(seed);
    let mut t = |name: String, shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| scale * (rng.range(-1.0, 1.0) + rng.range(-1.0, 1.0)))
            .collect();
        HostTensor::new(name, shape, data)
    };
    let (d, f, q, kv) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
    let s = |fan_in: usize| 1.2 / (fan_in as f32).sqrt();
    let mut layers = vec![];
    for l in 0..c.n_layers {
        let n = |suffix: &str| nse::model::weights::layer_name(l, suffix);
        layers.push(LayerWeights {
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
        });
    }
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

/// Hyperparameters for the tiny model: the default file's policies, tiny layers, a short z loop.
pub fn tiny_hparams() -> Hparams {
    let mut hp = Hparams::for_model("SmolLM2-135M-Instruct").expect("shipped hparams");
    hp.layers = TINY_LAYERS.to_vec();
    hp.v_loss_layer = 5;
    hp.v_num_grad_steps = 6;
    hp.mom2_update_weight = 50.0;
    hp.alpha = 0.0;
    hp.upper_bound = f32::INFINITY;
    hp.neuron_threshold = 0.8;
    hp
}

/// A tiny model on the cpu backend, with the real tokenizer.
pub struct Tiny {
    pub model: Model<CpuBackend>,
    pub tok: Tokenizer,
    pub hp: Hparams,
    pub templates: ContextTemplates,
    pub cov: CovarianceSet,
}

impl Tiny {
    /// One batch of `reqs` with `method`: the engine's `apply_batch`, without options.
    pub fn apply(
        &mut self,
        state: &mut EditState<CpuTensor>,
        reqs: &[EditRequest],
        method: &dyn EditMethod,
    ) -> nse::Result<BatchOutcome> {
        let ctx = EditContext {
            tok: &self.tok,
            hp: &self.hp,
            templates: &self.templates,
            cov: &self.cov,
            method,
        };
        pollster::block_on(apply_batch(
            &mut self.model,
            state,
            &ctx,
            reqs,
            Default::default(),
            |_| {},
        ))
    }
}

/// Builds the tiny model and its covariance over 1,024 tokens of wikitext-2.
pub fn tiny(seed: u64) -> Tiny {
    let tok = super::load_default_model().tokenizer;
    let config = tiny_config(tok.vocab_size());
    let model =
        Model::upload(CpuBackend, config.clone(), tiny_weights(&config, seed)).expect("upload");
    tiny_with(model, tok)
}

/// A 6-block `model` with the tiny model's hyperparameters, templates and a covariance over
/// 1,024 tokens of wikitext-2 in `tok`'s tokens (windows of 256 tokens, or the context).
pub fn tiny_with(model: Model<CpuBackend>, tok: Tokenizer) -> Tiny {
    let hp = tiny_hparams();
    let templates =
        ContextTemplates::new(hp.context_templates.clone().expect("shipped templates")).unwrap();
    let text = super::wikitext();
    let wins = windows(&text, &tok, 256.min(model.config.max_ctx), 1024).unwrap();
    let (c, n) = pollster::block_on(second_moments(&model, &wins, &hp.layers, |_, _| {})).unwrap();
    Tiny {
        model,
        tok,
        hp,
        templates,
        cov: CovarianceSet::new(c, n, "wikitext-2, 1024 tokens"),
    }
}

/// Three CounterFact-style requests with distinct subjects.
pub fn requests() -> Vec<EditRequest> {
    vec![
        EditRequest::from_sentence(
            "The mother tongue of Danielle Darrieux is",
            "Danielle Darrieux",
            "English",
            Some("French"),
        )
        .unwrap(),
        EditRequest::from_sentence(
            "The Eiffel Tower is located in the city of",
            "Eiffel Tower",
            "Rome",
            Some("Paris"),
        )
        .unwrap(),
        EditRequest::from_sentence(
            "Platform Controller Hub is created by",
            "Platform Controller Hub",
            "Dodge",
            Some("Intel"),
        )
        .unwrap(),
    ]
}

/// The edited layers' `down_proj` as host vectors.
pub fn down_projs(model: &Model<CpuBackend>, layers: &[usize]) -> BTreeMap<usize, Vec<f32>> {
    layers
        .iter()
        .map(|&l| {
            (
                l,
                model.weights.layers[l].down_proj.f32_decoded().into_owned(),
            )
        })
        .collect()
}

/// The model of `tests/data/archs/<file>` on the cpu backend, with the tiny model's
/// hyperparameters (6 blocks, layers 1–3 edited) and a covariance over 1,024 tokens.
pub fn tiny_from_archs(file: &str) -> Tiny {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/archs")
        .join(file);
    let loaded = nse::model::load::load_path(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(
        loaded.config.n_layers, 6,
        "tiny_hparams edit a 6-block model"
    );
    let model = Model::upload(CpuBackend, loaded.config, loaded.weights).unwrap();
    tiny_with(model, loaded.tokenizer)
}
