//! Loading a whole model (config, weights in Hugging Face Llama layout, tokenizer) from a GGUF
//! file or a Hugging Face safetensors checkpoint; GPT-2's own layouts are read by `gpt2`.
//!
//! Both paths end in [`Weights<HostTensor>`] with HF names, `[out][in]` linear weights and Q/K
//! rows in HF rotate-half order. Tensors are decoded one at a time straight into their final
//! place, so the peak is the file bytes plus the f32 weights and one tensor's worth of
//! scratch.

#[cfg(not(target_arch = "wasm32"))]
mod files;
mod gguf_llama;
mod gpt2;

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::gguf::GgufFile;
use super::safetensors::{SafetensorsShards, parse_config, sorted_counts};
use super::weights::{
    BIAS_SUFFIXES, LAYER_SUFFIXES, LayerWeights, QkvBias, Weights, bias_name, layer_name,
};
use super::{HostTensor, ModelConfig, Tokenizer};
use crate::{Error, Result};

#[cfg(not(target_arch = "wasm32"))]
pub use files::load_path;
pub use gguf_llama::{config_from_gguf, gguf_name, unpermute_qk_rows};

/// A model ready to upload to a backend.
pub struct LoadedModel {
    /// Architecture, validated against the tensors below.
    pub config: ModelConfig,
    /// f32 weights, HF names and layout (Q/K rows in rotate-half order).
    pub weights: Weights<HostTensor>,
    /// With the BOS/EOS policy of `config`.
    pub tokenizer: Tokenizer,
    /// File name, format, hash and storage types.
    pub source: ModelSource,
}

impl std::fmt::Debug for LoadedModel {
    /// Config and source only: the weights are hundreds of megabytes of numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("config", &self.config)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Where a model came from, for `nse info`, ledgers and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSource {
    /// File or directory name.
    pub name: String,
    /// `"gguf"` or `"safetensors"`.
    pub format: String,
    /// Lowercase hex SHA-256 of the file (of the shards' bytes one after another, in the order
    /// given, for a safetensors checkpoint).
    pub sha256: String,
    /// Size in bytes (all shards together).
    pub bytes: u64,
    /// Tensors in the file(s), used or not.
    pub tensor_count: usize,
    /// `(ggml type or safetensors dtype, tensor count)`, most common first.
    pub tensor_types: Vec<(String, usize)>,
}

/// Loads a GGUF model from its bytes; `name` names it in errors and in [`ModelSource`].
///
/// Errors: see [`GgufFile::parse`], [`config_from_gguf`], [`Tokenizer::from_gguf`]; a missing
/// tensor is an [`Error::MissingTensor`] with its GGUF name, a wrong shape an
/// [`Error::TensorShape`].
pub fn load_gguf(bytes: &[u8], name: &str) -> Result<LoadedModel> {
    let gguf = GgufFile::parse(bytes, name)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let config = config_from_gguf(&gguf, &tokenizer)?;
    let stored = gguf
        .tensor_infos()
        .iter()
        .fold(0u64, |n, t| n.saturating_add(t.n_elements()));
    config.check_memory_as(
        stored,
        Some(gguf.resident_bytes()),
        "in their storage types",
    )?;
    let weights = if config.arch.is_gpt2() {
        gpt2::build_weights(&config, name, gpt2::Gpt2Layout::Gguf, |n| {
            gguf.tensor_stored(n)
        })?
    } else {
        build_weights(&config, name, |hf| gguf_llama::tensor(&gguf, &config, hf))?
    };
    let source = ModelSource {
        name: name.to_string(),
        format: "gguf".into(),
        sha256: sha256_hex(&[bytes]),
        bytes: bytes.len() as u64,
        tensor_count: gguf.tensor_infos().len(),
        tensor_types: type_counts(&gguf),
    };
    Ok(LoadedModel {
        config,
        weights,
        tokenizer,
        source,
    })
}

/// What loading a GGUF model will take, known from its header alone.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelEstimate {
    /// `llama`, `qwen2`.
    pub arch: String,
    pub n_layers: usize,
    pub n_params: u64,
    /// `(ggml type, tensor count)`, most common first.
    pub tensor_types: Vec<(String, usize)>,
    pub file_bytes: u64,
    /// The weights as the loaders keep them: matrices in their file's storage type, the rest
    /// as f32 (the gpu backend holds about as much: see [`crate::gpu::packed::device_bytes`]).
    pub weight_bytes: u64,
    /// What a load holds at its peak: the file read whole and its weights as kept.
    pub peak_bytes: u64,
}

impl ModelEstimate {
    /// The estimate for `config` stored as `tensor_types` in `file_bytes`, whose weights take
    /// `weight_bytes` as kept; refused when the file and the weights together exceed the
    /// memory budget.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming `name` and the estimate.
    fn checked(
        config: &ModelConfig,
        tensor_types: Vec<(String, usize)>,
        file_bytes: u64,
        weight_bytes: u64,
        name: &str,
    ) -> Result<Self> {
        let estimate = ModelEstimate {
            arch: config.arch.name().to_string(),
            n_layers: config.n_layers,
            n_params: config.n_params() as u64,
            tensor_types,
            file_bytes,
            weight_bytes,
            peak_bytes: file_bytes.saturating_add(weight_bytes),
        };
        crate::budget::check(Some(estimate.peak_bytes), || {
            format!(
                "loading {} ({})",
                crate::error::escape(name),
                estimate.line()
            )
        })?;
        Ok(estimate)
    }

    /// "qwen2, 494.0 M parameters in 24 layers, stored as Q4_K ×169, …; needs about 2.4 GB".
    pub fn line(&self) -> String {
        let types: Vec<String> = self
            .tensor_types
            .iter()
            .map(|(t, n)| format!("{t} ×{n}"))
            .collect();
        let size = |b: u64| {
            if b >= 1_000_000_000 {
                format!("{:.1} GB", b as f64 / 1e9)
            } else {
                format!("{:.1} MB", b as f64 / 1e6)
            }
        };
        format!(
            "{}, {:.1} M parameters in {} layers, stored as {}; loading needs about {} (the \
             file, {}, and its weights as kept, {})",
            self.arch,
            self.n_params as f64 / 1e6,
            self.n_layers,
            types.join(", "),
            size(self.peak_bytes),
            size(self.file_bytes),
            size(self.weight_bytes)
        )
    }
}

/// Sizes up a GGUF model from its first bytes `prefix` (enough to hold the header: metadata and
/// tensor infos) of a file of `file_len` bytes, and refuses it when loading it would not fit
/// the memory budget, before the rest of the file is read.
///
/// # Errors
/// As [`GgufFile::parse_header`] and [`config_from_gguf`]; [`Error::TooLarge`] with the
/// estimate when it does not fit.
pub fn inspect_gguf(prefix: &[u8], file_len: u64, name: &str) -> Result<ModelEstimate> {
    let gguf = GgufFile::parse_header(prefix, file_len, name)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let config = config_from_gguf(&gguf, &tokenizer)?;
    let weight_bytes = gguf.resident_bytes();
    ModelEstimate::checked(&config, type_counts(&gguf), file_len, weight_bytes, name)
}

/// Sizes up a Hugging Face checkpoint from `config.json` and the first bytes of each shard
/// (`(file name, prefix, file length)`; a prefix must hold the shard's 8-byte length and JSON
/// header), and refuses it when loading it would not fit the memory budget, before the shards
/// are read.
///
/// # Errors
/// As [`parse_config`]; [`Error::Format`] for a shard whose header is cut short, is not a
/// safetensors header, or does not account for the file's length; [`Error::TooLarge`] with the
/// estimate when it does not fit.
pub fn inspect_safetensors(
    config_json: &str,
    shards: &[(&str, &[u8], u64)],
) -> Result<ModelEstimate> {
    let config = parse_config(config_json, "config.json")?;
    let mut types: HashMap<String, usize> = HashMap::new();
    let (mut weight_bytes, mut file_bytes) = (0u64, 0u64);
    for &(name, prefix, file_len) in shards {
        for t in super::safetensors::header_tensors(prefix, file_len, name)? {
            let n = t.shape.iter().fold(1u64, |n, &d| n.saturating_mul(d));
            // As the loader keeps them: F16/BF16 matrices at 2 bytes, the rest widened to f32.
            let half = (t.dtype == "F16" || t.dtype == "BF16") && t.shape.len() == 2;
            weight_bytes = weight_bytes.saturating_add(n.saturating_mul(if half { 2 } else { 4 }));
            *types.entry(t.dtype).or_default() += 1;
        }
        file_bytes = file_bytes.saturating_add(file_len);
    }
    let name = shards.first().map_or("the checkpoint", |s| s.0);
    ModelEstimate::checked(
        &config,
        sorted_counts(types),
        file_bytes,
        weight_bytes,
        name,
    )
}

/// Loads a Hugging Face Llama checkpoint from the text of `config.json` and `tokenizer.json` and
/// the `(file name, bytes)` of its safetensors shards.
///
/// BOS/EOS ids come from `config.json` (falling back to the tokenizer's post-processor); BOS is
/// prepended when the tokenizer's post-processor prepends it. The source is named after
/// `_name_or_path` in `config.json`, else the first shard.
///
/// Errors: see [`parse_config`], [`Tokenizer::from_json`], [`SafetensorsShards::parse`]; a
/// missing tensor is an [`Error::MissingTensor`], a wrong shape an [`Error::TensorShape`].
pub fn load_safetensors(
    config_json: &str,
    tokenizer_json: &str,
    shards: &[(&str, &[u8])],
) -> Result<LoadedModel> {
    load_hf(
        "config.json",
        config_json,
        "tokenizer.json",
        tokenizer_json,
        shards,
    )
}

fn load_hf(
    config_path: &str,
    config_json: &str,
    tokenizer_path: &str,
    tokenizer_json: &str,
    shards: &[(&str, &[u8])],
) -> Result<LoadedModel> {
    let mut config = parse_config(config_json, config_path)?;
    let tokenizer = Tokenizer::from_json(tokenizer_json, tokenizer_path)?
        .with_special_ids(config.bos_id, config.eos_id);
    // The largest id, not the count: a vocabulary can skip ids, and every id the tokenizer can
    // produce indexes the embedding and the logits.
    if let Some(max) = tokenizer.max_id()
        && max as usize >= config.vocab_size
    {
        return Err(Error::format(
            tokenizer_path,
            format!(
                "the tokenizer has {} tokens with ids up to {max} but config.json's vocab_size \
                 is {}: the two files are from different models",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    for (key, id) in [
        ("bos_token_id", tokenizer.bos_id()),
        ("eos_token_id", tokenizer.eos_id()),
    ] {
        if let Some(id) = id.filter(|&id| id as usize >= config.vocab_size) {
            return Err(Error::format(
                config_path,
                format!(
                    "{key} is {id} but vocab_size is {}: the file is corrupt",
                    config.vocab_size
                ),
            ));
        }
    }
    config.bos_id = tokenizer.bos_id();
    config.eos_id = tokenizer.eos_id();
    config.add_bos = tokenizer.add_bos();
    if shards.is_empty() {
        return Err(Error::format(
            config_path,
            "no .safetensors file was given with this config.json",
        ));
    }
    let tensors = SafetensorsShards::parse(shards)?;
    config.check_memory_as(
        tensors.n_weights(),
        Some(tensors.resident_bytes()),
        "in their storage types",
    )?;
    let weights = if config.arch.is_gpt2() {
        // `GPT2LMHeadModel` saves `transformer.h.…`, a bare `GPT2Model` (OpenAI's own upload)
        // `h.…`.
        let prefix = if tensors.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let layout = gpt2::Gpt2Layout::Hf { prefix };
        gpt2::build_weights(&config, shards[0].0, layout, |n| tensors.tensor_stored(n))?
    } else {
        build_weights(&config, shards[0].0, |hf| tensors.tensor_stored(hf))?
    };
    let name = serde_json::from_str::<serde_json::Value>(config_json)
        .ok()
        .and_then(|v| {
            v.get("_name_or_path")?
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| shards[0].0.to_string());
    let source = ModelSource {
        name,
        format: "safetensors".into(),
        sha256: sha256_hex(&shards.iter().map(|s| s.1).collect::<Vec<_>>()),
        bytes: shards.iter().map(|s| s.1.len() as u64).sum(),
        tensor_count: tensors.len(),
        tensor_types: tensors.dtype_counts(),
    };
    Ok(LoadedModel {
        config,
        weights,
        tokenizer,
        source,
    })
}

/// Fetches every tensor the config calls for by its HF name and checks its shape.
///
/// `fetch` returns the tensor under its HF name (or a [`Error::MissingTensor`] naming the file's
/// own name for it); `path` names the file in shape errors.
fn build_weights(
    cfg: &ModelConfig,
    path: &str,
    mut fetch: impl FnMut(&str) -> Result<HostTensor>,
) -> Result<Weights<HostTensor>> {
    let mut get = |name: String, want: Vec<usize>| -> Result<HostTensor> {
        let mut t = fetch(&name)?;
        if t.shape != want {
            return Err(Error::TensorShape {
                path: path.to_string(),
                name,
                got: t.shape,
                want,
            });
        }
        t.name = name;
        Ok(t)
    };
    let (d, v) = (cfg.d_model, cfg.vocab_size);
    let embed_tokens = get("model.embed_tokens.weight".into(), vec![v, d])?;
    // No `with_capacity(n_layers)`: the count comes from the file; a missing layer stops the loop.
    let mut layers = Vec::new();
    for l in 0..cfg.n_layers {
        let shapes = layer_shapes(cfg);
        let mut tensors = Vec::with_capacity(LAYER_SUFFIXES.len());
        for (suffix, want) in LAYER_SUFFIXES.iter().zip(shapes) {
            tensors.push(get(layer_name(l, suffix), want)?);
        }
        let tensors: [HostTensor; 9] = tensors
            .try_into()
            .expect("one tensor per LAYER_SUFFIXES entry");
        let mut layer = LayerWeights::from_array(tensors);
        if cfg.arch.qkv_bias() {
            let (q, kv) = (cfg.q_dim(), cfg.kv_dim());
            layer.qkv_bias = Some(QkvBias {
                q: get(bias_name(l, BIAS_SUFFIXES[0]), vec![q])?,
                k: get(bias_name(l, BIAS_SUFFIXES[1]), vec![kv])?,
                v: get(bias_name(l, BIAS_SUFFIXES[2]), vec![kv])?,
            });
        }
        layers.push(layer);
    }
    let norm = get("model.norm.weight".into(), vec![d])?;
    let lm_head = if cfg.tie_embeddings {
        None
    } else {
        Some(get("lm_head.weight".into(), vec![v, d])?)
    };
    Ok(Weights {
        embed_tokens,
        layers,
        norm,
        lm_head,
        position_embd: None,
        norm_bias: None,
    })
}

/// Shapes of one layer's tensors in [`LAYER_SUFFIXES`] order.
fn layer_shapes(cfg: &ModelConfig) -> [Vec<usize>; 9] {
    let (d, f, q, kv) = (cfg.d_model, cfg.d_ff, cfg.q_dim(), cfg.kv_dim());
    [
        vec![d],
        vec![q, d],
        vec![kv, d],
        vec![kv, d],
        vec![d, q],
        vec![d],
        vec![f, d],
        vec![f, d],
        vec![d, f],
    ]
}

/// `(ggml type, tensor count)` of a GGUF's tensors, most common first.
fn type_counts(gguf: &GgufFile) -> Vec<(String, usize)> {
    let mut types: HashMap<String, usize> = HashMap::new();
    for t in gguf.tensor_infos() {
        let ty = t
            .ggml_type
            .name()
            .map_or_else(|| format!("type {}", t.ggml_type.0), str::to_string);
        *types.entry(ty).or_default() += 1;
    }
    sorted_counts(types)
}

/// Lowercase hex SHA-256 of the parts one after another.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
