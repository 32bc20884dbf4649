//! Random-weight models of real models' shapes (`--model synthetic:smollm2-135m`), for benchmarks
//! on machines that have no model file: the work of a forward pass or an edit depends on the
//! shape, not on the values.
//!
//! The weights are deterministic (a seeded generator), scaled `1/sqrt(fan_in)` with norms of 1,
//! so activations stay in the range a trained model's do. The tokenizer is the one the caller
//! passes (the default model's, when it is on disk, so that prompts have their real token
//! counts), else [`Tokenizer::byte_level`]: one token per byte, which makes edit prompts about
//! four times longer than a real BPE would.

use super::config::{Arch, ModelConfig, RopeScaling};
use super::load::{LoadedModel, ModelSource, sha256_hex};
use super::weights::{LayerWeights, Weights, layer_name};
use super::{HostTensor, Tokenizer};
use crate::{Error, Result};

/// The prefix of a synthetic model's `--model` value.
pub const PREFIX: &str = "synthetic:";

/// Changes whenever the generated values change, so covariance caches keyed by the model's hash
/// never outlive the weights they were computed on.
const GENERATOR_VERSION: u32 = 1;

/// The shapes on offer: `(name, what it copies)`.
pub const SHAPES: &[(&str, &str)] = &[
    (
        "smollm2-135m",
        "SmolLM2-135M: 30 blocks, d 576, d_ff 1536, 9/3 heads",
    ),
    (
        "smollm2-360m",
        "SmolLM2-360M: 32 blocks, d 960, d_ff 2560, 15/5 heads",
    ),
    (
        "llama-3.2-1b",
        "Llama-3.2-1B: 16 blocks, d 2048, d_ff 8192, 32/8 heads, llama3 RoPE scaling",
    ),
];

/// The architecture of shape `name` with a vocabulary of `vocab` tokens.
fn config(name: &str, vocab: usize) -> Option<ModelConfig> {
    let llama = |n_layers, d_model, d_ff, n_heads, n_kv_heads, rope_theta| ModelConfig {
        arch: Arch::Llama,
        n_layers,
        d_model,
        d_ff,
        n_heads,
        n_kv_heads,
        head_dim: d_model / n_heads,
        vocab_size: vocab,
        max_ctx: 8192,
        rope_theta,
        rope_scaling: None,
        rms_eps: 1e-5,
        tie_embeddings: true,
        bos_id: None,
        eos_id: None,
        add_bos: false,
    };
    Some(match name {
        "smollm2-135m" => llama(30, 576, 1536, 9, 3, 100_000.0),
        "smollm2-360m" => llama(32, 960, 2560, 15, 5, 100_000.0),
        "llama-3.2-1b" => ModelConfig {
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
            ..llama(16, 2048, 8192, 32, 8, 500_000.0)
        },
        _ => return None,
    })
}

/// The real vocabulary size of shape `name` (the byte-level tokenizer is padded to it).
fn vocab_of(name: &str) -> usize {
    if name.starts_with("llama") {
        128_256
    } else {
        49_152
    }
}

/// Parses `synthetic:<shape>[:<seed>]`; `None` when `spec` is not a synthetic model at all.
///
/// # Errors
/// [`Error::Input`] for an unknown shape or a seed that is not a number, listing the shapes.
pub fn parse(spec: &str) -> Option<Result<(&str, u64)>> {
    let rest = spec.strip_prefix(PREFIX)?;
    let (shape, seed) = rest.split_once(':').unwrap_or((rest, "0"));
    let known = || {
        SHAPES
            .iter()
            .map(|(n, what)| format!("{n} ({what})"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if config(shape, 1).is_none() {
        return Some(Err(Error::input(format!(
            "unknown synthetic model shape `{shape}`; the shapes are: {}",
            known()
        ))));
    }
    match seed.parse() {
        Ok(seed) => Some(Ok((shape, seed))),
        Err(_) => Some(Err(Error::input(format!(
            "the seed in `{spec}` is not a whole number (synthetic:<shape>[:<seed>])"
        )))),
    }
}

/// A splitmix64 stream: fast, and the same on every platform.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Builds the synthetic model `spec` (`synthetic:<shape>[:<seed>]`) with `tokenizer`, or with a
/// byte-level one padded to the shape's vocabulary when `None`.
///
/// # Errors
/// As [`parse`]; [`Error::Input`] when `spec` is not a synthetic model; a tokenizer larger than
/// the shape's vocabulary.
pub fn load(spec: &str, tokenizer: Option<Tokenizer>) -> Result<LoadedModel> {
    let (shape, seed) = parse(spec).ok_or_else(|| {
        Error::input(format!(
            "`{spec}` is not a synthetic model ({PREFIX}<shape>)"
        ))
    })??;
    let (tokenizer, tok_name) = match tokenizer {
        Some(t) => (t, "the default model's tokenizer"),
        None => (Tokenizer::byte_level(vocab_of(shape))?, "byte-level tokens"),
    };
    let vocab = vocab_of(shape).max(tokenizer.max_id().map_or(0, |m| m as usize + 1));
    let mut config = config(shape, vocab).expect("parse checked the shape");
    config.bos_id = tokenizer.bos_id();
    config.eos_id = tokenizer.eos_id();
    config.add_bos = tokenizer.add_bos();
    config.check_memory(u64::MAX)?;
    let weights = weights(&config, seed);
    let name = format!("{PREFIX}{shape}:{seed}");
    let n_tensors = 2 + 9 * config.n_layers;
    let source = ModelSource {
        sha256: sha256_hex(&[
            name.as_bytes(),
            &GENERATOR_VERSION.to_le_bytes(),
            tok_name.as_bytes(),
            &(vocab as u64).to_le_bytes(),
        ]),
        name: format!("{name} (random weights, {tok_name})"),
        format: "synthetic".into(),
        bytes: config.n_params() as u64 * 4,
        tensor_count: n_tensors,
        tensor_types: vec![("F32".into(), n_tensors)],
    };
    Ok(LoadedModel {
        config,
        weights,
        tokenizer,
        source,
    })
}

/// Deterministic weights for `c`.
fn weights(c: &ModelConfig, seed: u64) -> Weights<HostTensor> {
    let mut rng = SplitMix(seed ^ 0x6e73_655f_7379_6e74);
    let mut t = |name: String, shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        // The sum of two uniforms: a triangular distribution, variance 2/3 · scale².
        let data = (0..n).map(|_| scale * (rng.unit() + rng.unit())).collect();
        HostTensor::new(name, shape, data)
    };
    let (d, f, q, kv) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
    let s = |fan_in: usize| 1.2 / (fan_in as f32).sqrt();
    let ones = |name: String| HostTensor::new(name, vec![d], vec![1.0; d]);
    let layers = (0..c.n_layers)
        .map(|l| {
            let n = |suffix: &str| layer_name(l, suffix);
            LayerWeights {
                input_layernorm: ones(n("input_layernorm")),
                q_proj: t(n("self_attn.q_proj"), vec![q, d], s(d)),
                k_proj: t(n("self_attn.k_proj"), vec![kv, d], s(d)),
                v_proj: t(n("self_attn.v_proj"), vec![kv, d], s(d)),
                o_proj: t(n("self_attn.o_proj"), vec![d, q], s(q)),
                post_attention_layernorm: ones(n("post_attention_layernorm")),
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
        norm: ones("model.norm.weight".into()),
        lm_head: None,
        position_embd: None,
        norm_bias: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_name_the_shapes() {
        assert!(parse("models/x.gguf").is_none());
        assert_eq!(
            parse("synthetic:smollm2-135m").unwrap().unwrap(),
            ("smollm2-135m", 0)
        );
        assert_eq!(
            parse("synthetic:llama-3.2-1b:7").unwrap().unwrap(),
            ("llama-3.2-1b", 7)
        );
        let e = parse("synthetic:gpt5").unwrap().unwrap_err().to_string();
        assert!(e.contains("gpt5") && e.contains("smollm2-135m"), "{e}");
        let e = parse("synthetic:smollm2-135m:x").unwrap().unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
    }

    #[test]
    fn shapes_match_the_models_they_copy() {
        // Parameter counts of the real models (tied embeddings), from their model cards'
        // configs: 134,515,008 for SmolLM2-135M, 1,235,814,400 for Llama-3.2-1B.
        assert_eq!(
            config("smollm2-135m", 49_152).unwrap().n_params(),
            134_515_008
        );
        assert_eq!(
            config("llama-3.2-1b", 128_256).unwrap().n_params(),
            1_235_814_400
        );
        for (name, _) in SHAPES {
            let c = config(name, vocab_of(name)).unwrap();
            c.validate(name).unwrap();
            assert_eq!(c.head_dim * c.n_heads, c.d_model, "{name}");
        }
    }

    #[test]
    fn byte_level_tokens_are_bytes() {
        let tok = Tokenizer::byte_level(49_152).unwrap();
        let text = "The Eiffel Tower is in Rome — é";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.len(), text.len(), "one token per byte");
        assert!(ids.iter().all(|&i| i < 256));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.vocab_size(), 49_152);
        assert!(Tokenizer::byte_level(256).is_err());
    }

    #[test]
    fn loads_with_a_named_source() {
        let m = load("synthetic:smollm2-135m:1", None).unwrap();
        assert_eq!(m.config.vocab_size, 49_152);
        assert_eq!(m.weights.layers.len(), 30);
        assert!(
            m.source.name.contains("random weights"),
            "{}",
            m.source.name
        );
        assert_eq!(
            m.source.sha256,
            load("synthetic:smollm2-135m:1", None)
                .unwrap()
                .source
                .sha256
        );
        assert_ne!(
            m.source.sha256,
            load("synthetic:smollm2-135m:2", None)
                .unwrap()
                .source
                .sha256
        );
    }

    #[test]
    fn weights_are_deterministic_and_scaled() {
        let mut c = config("smollm2-135m", 300).unwrap();
        c.n_layers = 1;
        let (a, b) = (weights(&c, 3), weights(&c, 3));
        assert_eq!(a.layers[0].down_proj.data, b.layers[0].down_proj.data);
        assert_ne!(
            a.layers[0].down_proj.data,
            weights(&c, 4).layers[0].down_proj.data
        );
        let w = a.layers[0].gate_proj.as_ref().unwrap().f32();
        let var = w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32;
        // scale² · 2/3 with scale = 1.2 / sqrt(576).
        let want = 1.44 / 576.0 * 2.0 / 3.0;
        assert!((var / want - 1.0).abs() < 0.02, "{var} vs {want}");
    }
}
