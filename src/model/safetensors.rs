//! Hugging Face checkpoints: `config.json` and safetensors shards (F32, F16, BF16).
//!
//! The `safetensors` crate validates each shard's header (offsets contiguous from 0, each span
//! equal to shape × dtype size, data ending exactly at the end of the file); this module turns
//! its errors into messages that name the tensor and say what to do, and reads the Llama-family
//! or GPT-2 `config.json` into a [`ModelConfig`].

use std::collections::HashMap;

use ::safetensors::{Dtype, SafeTensorError, SafeTensors};
use half::{bf16, f16};
use serde_json::Value;

use super::gguf::GgmlType;
use super::host::Stored;
use super::{Arch, HostTensor, ModelConfig, RopeScaling};
use crate::error::escape;
use crate::{Error, Result};

/// `architectures` entries other than `*Llama*ForCausalLM` that have the Llama block
/// (RMSNorm, SwiGLU, rotate-half RoPE, no biases).
const LLAMA_LIKE: [&str; 1] = ["MistralForCausalLM"];

/// What [`parse_config`] accepts, for its errors.
pub const SUPPORTED_ARCHITECTURES: &str = "Llama-family causal LMs: LlamaForCausalLM (Llama 1–3, \
     SmolLM), MistralForCausalLM and Qwen2ForCausalLM (Qwen2, Qwen2.5), and GPT2LMHeadModel \
     (GPT-2)";

/// Why a `rope_scaling` object was refused.
enum ScalingError {
    Unsupported(String),
    Format(String),
}

/// A `config.json` `rope_scaling` object: `llama3` (or `default`, plain RoPE).
fn rope_scaling(s: &Value) -> std::result::Result<Option<RopeScaling>, ScalingError> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("(none)");
    let num = |key: &str| -> std::result::Result<f64, ScalingError> {
        s.get(key).and_then(Value::as_f64).ok_or_else(|| {
            ScalingError::Format(format!(
                "rope_scaling of type llama3 needs a number `{key}`: {s}"
            ))
        })
    };
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let original = num("original_max_position_embeddings")?;
            if !(original >= 1.0 && original.fract() == 0.0 && original <= u32::MAX as f64) {
                return Err(ScalingError::Format(format!(
                    "rope_scaling.original_max_position_embeddings is {original}, expected a \
                     positive integer"
                )));
            }
            Ok(Some(RopeScaling::Llama3 {
                factor: num("factor")? as f32,
                low_freq_factor: num("low_freq_factor")? as f32,
                high_freq_factor: num("high_freq_factor")? as f32,
                original_max_position_embeddings: original as usize,
            }))
        }
        other => Err(ScalingError::Unsupported(format!(
            "rope_scaling of type `{}`: supported are `llama3` and plain RoPE (no rope_scaling)",
            escape(other)
        ))),
    }
}

/// Reads a Llama-family `config.json`; `path` only names it in errors.
///
/// `bos_id`/`eos_id` come from `bos_token_id`/`eos_token_id` (the first entry of a list);
/// `add_bos` is left `false` for the tokenizer to decide. A Mistral `sliding_window` smaller than
/// `max_position_embeddings` becomes `max_ctx`, where full and sliding attention agree.
///
/// Errors: [`Error::Unsupported`] for another architecture, activation, RoPE scaling or biases;
/// [`Error::Format`] for invalid JSON or a missing or mistyped field.
pub fn parse_config(json: &str, path: &str) -> Result<ModelConfig> {
    let fmt = |msg: String| Error::format(path, msg);
    let unsupported = |msg: String| Error::Unsupported {
        path: path.to_string(),
        msg,
    };
    let v: Value = serde_json::from_str(json).map_err(|e| fmt(format!("not valid JSON: {e}")))?;
    let archs: Vec<&str> = v
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let llama =
        |a: &&str| (a.contains("Llama") && a.ends_with("ForCausalLM")) || LLAMA_LIKE.contains(a);
    let arch = if archs.iter().any(llama) {
        Arch::Llama
    } else if archs.contains(&"Qwen2ForCausalLM") {
        Arch::Qwen2
    } else if archs
        .iter()
        .any(|a| *a == "GPT2LMHeadModel" || *a == "GPT2Model")
        || (archs.is_empty() && v.get("model_type").and_then(Value::as_str) == Some("gpt2"))
    {
        Arch::Gpt2
    } else {
        return Err(unsupported(format!(
            "architectures {archs:?}: nse runs {SUPPORTED_ARCHITECTURES}"
        )));
    };
    let uint = |key: &str| -> Result<Option<usize>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| fmt(format!("`{key}` is {x}, expected a non-negative integer"))),
        }
    };
    let required = |key: &str| -> Result<usize> {
        uint(key)?.ok_or_else(|| fmt(format!("`{key}` is missing; this config.json needs it")))
    };
    let float = |key: &str, default: f64| -> Result<f32> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default as f32),
            Some(x) => x
                .as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| fmt(format!("`{key}` is {x}, expected a number"))),
        }
    };
    let flag = |key: &str| -> Result<bool> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| fmt(format!("`{key}` is {x}, expected true or false"))),
        }
    };
    if arch == Arch::Gpt2 {
        return gpt2_config(&v, path, required, uint, float, flag);
    }
    if let Some(act) = v.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(unsupported(format!(
            "hidden_act `{}`: the Llama MLP here is SwiGLU (silu)",
            escape(act)
        )));
    }
    let rope_scaling = match v.get("rope_scaling").filter(|s| !s.is_null()) {
        None => None,
        Some(scaling) => rope_scaling(scaling).map_err(|msg| match msg {
            ScalingError::Unsupported(m) => unsupported(m),
            ScalingError::Format(m) => fmt(m),
        })?,
    };
    for key in ["attention_bias", "mlp_bias"] {
        if flag(key)? {
            return Err(unsupported(format!(
                "`{key}` is true: the Llama block here has no biases (Qwen2 checkpoints, whose \
                 query, key and value projections have them, say Qwen2ForCausalLM)"
            )));
        }
    }
    if arch == Arch::Qwen2 && flag("use_sliding_window")? {
        return Err(unsupported(
            "`use_sliding_window` is true: sliding-window attention is not implemented (nse \
             attends to the whole context)"
                .into(),
        ));
    }

    let d_model = required("hidden_size")?;
    let n_heads = required("num_attention_heads")?;
    let head_dim = match uint("head_dim")? {
        Some(hd) => hd,
        None if n_heads > 0 && d_model.is_multiple_of(n_heads) => d_model / n_heads,
        None => {
            return Err(fmt(format!(
                "hidden_size {d_model} is not a multiple of num_attention_heads {n_heads} and no \
                 head_dim is given"
            )));
        }
    };
    let mut max_ctx = uint("max_position_embeddings")?.unwrap_or(2048);
    // Mistral's window (Qwen2 states one too, but only uses it with use_sliding_window).
    if arch == Arch::Llama
        && let Some(window) = uint("sliding_window")?
    {
        max_ctx = max_ctx.min(window);
    }
    let cfg = ModelConfig {
        arch,
        n_layers: required("num_hidden_layers")?,
        d_model,
        d_ff: required("intermediate_size")?,
        n_heads,
        n_kv_heads: uint("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        vocab_size: required("vocab_size")?,
        max_ctx,
        rope_theta: float("rope_theta", 10000.0)?,
        rope_scaling,
        // transformers' LlamaConfig default.
        rms_eps: float("rms_norm_eps", 1e-6)?,
        tie_embeddings: flag("tie_word_embeddings")?,
        bos_id: token_id(&v, "bos_token_id").map_err(fmt)?,
        eos_id: token_id(&v, "eos_token_id").map_err(fmt)?,
        add_bos: false,
    };
    cfg.validate(path)?;
    Ok(cfg)
}

/// A GPT-2 `config.json` (`n_embd`, `n_layer`, `n_head`, `n_positions`, `n_inner`,
/// `layer_norm_epsilon`, `activation_function`), read with [`parse_config`]'s field readers.
///
/// Errors: [`Error::Unsupported`] for an activation other than GPT-2's tanh GELU, or for the
/// attention variants nse does not run (unscaled, or scaled by the layer index).
fn gpt2_config(
    v: &Value,
    path: &str,
    required: impl Fn(&str) -> Result<usize>,
    uint: impl Fn(&str) -> Result<Option<usize>>,
    float: impl Fn(&str, f64) -> Result<f32>,
    flag: impl Fn(&str) -> Result<bool>,
) -> Result<ModelConfig> {
    let fmt = |msg: String| Error::format(path, msg);
    let unsupported = |msg: String| Error::Unsupported {
        path: path.to_string(),
        msg,
    };
    let act = v
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new");
    // transformers' `gelu_new` and `gelu_pytorch_tanh` are the same tanh approximation.
    if act != "gelu_new" && act != "gelu_pytorch_tanh" {
        return Err(unsupported(format!(
            "activation_function `{}`: nse runs GPT-2's tanh GELU (`gelu_new`)",
            escape(act)
        )));
    }
    if v.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
        return Err(unsupported(
            "`scale_attn_weights` is false: nse scales attention by 1/sqrt(head_dim)".into(),
        ));
    }
    if flag("scale_attn_by_inverse_layer_idx")? {
        return Err(unsupported(
            "`scale_attn_by_inverse_layer_idx` is true: nse does not scale attention by layer"
                .into(),
        ));
    }
    let d_model = required("n_embd")?;
    let n_heads = required("n_head")?;
    if n_heads == 0 || !d_model.is_multiple_of(n_heads) {
        return Err(fmt(format!(
            "n_embd {d_model} is not a multiple of n_head {n_heads}"
        )));
    }
    let max_ctx = match uint("n_positions")? {
        Some(p) => p,
        None => required("n_ctx")?,
    };
    // transformers' GPT2Config: `tie_word_embeddings` defaults to true.
    let tie = match v.get("tie_word_embeddings") {
        None | Some(Value::Null) => true,
        Some(_) => flag("tie_word_embeddings")?,
    };
    let cfg = ModelConfig {
        arch: Arch::Gpt2,
        n_layers: required("n_layer")?,
        d_model,
        d_ff: uint("n_inner")?.unwrap_or(4 * d_model),
        n_heads,
        n_kv_heads: n_heads,
        head_dim: d_model / n_heads,
        vocab_size: required("vocab_size")?,
        max_ctx,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_eps: float("layer_norm_epsilon", 1e-5)?,
        tie_embeddings: tie,
        bos_id: token_id(v, "bos_token_id").map_err(fmt)?,
        eos_id: token_id(v, "eos_token_id").map_err(fmt)?,
        add_bos: false,
    };
    cfg.validate(path)?;
    Ok(cfg)
}

/// `bos_token_id`/`eos_token_id`: absent, null, an id, or a list whose first id is used.
fn token_id(v: &Value, key: &str) -> std::result::Result<Option<u32>, String> {
    let one = |x: &Value| x.as_u64().and_then(|n| u32::try_from(n).ok());
    let id = match v.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => one(&a[0]),
        Some(x) => one(x),
    };
    id.map(Some).ok_or_else(|| {
        format!(
            "`{key}` is {}, expected a token id or a list of them",
            v[key]
        )
    })
}

/// One tensor as a shard's header states it.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderTensor {
    pub name: String,
    /// `F32`, `F16`, `BF16`, … as the header spells it.
    pub dtype: String,
    pub shape: Vec<u64>,
}

/// The tensors a safetensors shard of `file_len` bytes holds, read from its first bytes
/// `prefix` (the 8-byte header length and the JSON header) without the data; `path` names it in
/// errors. The header must account for the whole file: its last tensor ends where the file does.
///
/// # Errors
/// [`Error::Format`] for a prefix shorter than the header, a header that is not a safetensors
/// header (not JSON, a tensor without dtype, shape or offsets), or offsets that do not end at
/// the file's end.
pub fn header_tensors(prefix: &[u8], file_len: u64, path: &str) -> Result<Vec<HeaderTensor>> {
    let fmt = |msg: String| Error::format(path, msg);
    let Some(len) = prefix.get(..8) else {
        return Err(fmt(format!(
            "{} bytes: too short for a safetensors file (an 8-byte header length first)",
            prefix.len()
        )));
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let end = n.checked_add(8).filter(|&e| e <= file_len).ok_or_else(|| {
        fmt(format!(
            "the header claims {n} bytes in a file of {file_len}: not a safetensors file, or cut              short"
        ))
    })?;
    let Some(header) = usize::try_from(end).ok().and_then(|e| prefix.get(8..e)) else {
        return Err(fmt(format!(
            "its header ({n} bytes) is longer than the {} bytes read to size it up",
            prefix.len()
        )));
    };
    let v: Value = serde_json::from_slice(header)
        .map_err(|e| fmt(format!("the header is not valid JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(fmt("the header is not a JSON object".into()));
    };
    let mut out = Vec::with_capacity(map.len());
    let mut data_end = 0u64;
    for (name, t) in map {
        if name == "__metadata__" {
            continue;
        }
        let bad = || {
            fmt(format!(
                "tensor `{}` in the header lacks a dtype, shape or data_offsets",
                escape(&name)
            ))
        };
        let dtype = t
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string();
        let nums = |key: &str| -> Option<Vec<u64>> {
            t.get(key)?.as_array()?.iter().map(Value::as_u64).collect()
        };
        let shape = nums("shape").ok_or_else(bad)?;
        let offsets = nums("data_offsets")
            .filter(|o| o.len() == 2)
            .ok_or_else(bad)?;
        data_end = data_end.max(offsets[1]);
        out.push(HeaderTensor { name, dtype, shape });
    }
    if end.checked_add(data_end) != Some(file_len) {
        return Err(fmt(format!(
            "its tensors end at byte {} but the file has {file_len}: the file is cut short or \
             padded",
            end.saturating_add(data_end)
        )));
    }
    Ok(out)
}

/// The tensors of one or more safetensors shards, by name.
pub struct SafetensorsShards<'a> {
    shards: Vec<(String, SafeTensors<'a>)>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

impl<'a> SafetensorsShards<'a> {
    /// Parses the header of every `(file name, bytes)` shard.
    ///
    /// Errors: [`Error::Format`] for an invalid or truncated shard, or a tensor in two shards.
    pub fn parse(shards: &[(&str, &'a [u8])]) -> Result<Self> {
        let mut parsed = Vec::with_capacity(shards.len());
        let mut index = HashMap::new();
        for (i, &(path, bytes)) in shards.iter().enumerate() {
            let st = SafeTensors::deserialize(bytes)
                .map_err(|e| Error::format(path, explain(&e, bytes)))?;
            for name in st.names() {
                if let Some(other) = index.insert(name.to_string(), i) {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor `{}` is also in {}: remove the duplicate shard",
                            escape(name),
                            shards[other].0
                        ),
                    ));
                }
            }
            parsed.push((path.to_string(), st));
        }
        Ok(SafetensorsShards {
            shards: parsed,
            index,
        })
    }

    /// Number of tensors over all shards.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Number of weights stored over all shards (saturating: only compared with a config's).
    /// Bytes the tensors take once loaded as [`SafetensorsShards::tensor_stored`] keeps them:
    /// F16 and BF16 matrices at 2 bytes a weight, the rest as f32.
    pub fn resident_bytes(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|(_, st)| st.iter())
            .map(|(_, v)| {
                let n = v
                    .shape()
                    .iter()
                    .fold(1u64, |n, &d| n.saturating_mul(d as u64));
                let half = matches!(v.dtype(), Dtype::F16 | Dtype::BF16) && v.shape().len() == 2;
                n.saturating_mul(if half { 2 } else { 4 })
            })
            .fold(0, u64::saturating_add)
    }

    pub fn n_weights(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|(_, st)| st.iter())
            .map(|(_, v)| {
                v.shape()
                    .iter()
                    .fold(1u64, |n, &d| n.saturating_mul(d as u64))
            })
            .fold(0, u64::saturating_add)
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// `(dtype name, tensor count)` over all shards, most common first.
    pub fn dtype_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, st) in &self.shards {
            for (_, view) in st.iter() {
                *counts.entry(view.dtype().to_string()).or_default() += 1;
            }
        }
        sorted_counts(counts)
    }

    /// One tensor as the weights of a model keep it: an F16 or BF16 matrix stays in that type
    /// ([`Stored`]), anything else is converted to f32 as [`SafetensorsShards::tensor`] does.
    ///
    /// Errors: as [`SafetensorsShards::tensor`].
    pub fn tensor_stored(&self, name: &str) -> Result<HostTensor> {
        if let Some(&i) = self.index.get(name) {
            let (path, st) = &self.shards[i];
            let view = st
                .tensor(name)
                .map_err(|e| Error::format(path, e.to_string()))?;
            let ty = match view.dtype() {
                Dtype::F16 => Some(GgmlType::F16),
                Dtype::BF16 => Some(GgmlType::BF16),
                _ => None,
            };
            if let (Some(ty), &[rows, cols]) = (ty, view.shape()) {
                crate::budget::check(Some(view.data().len() as u64), || {
                    format!("tensor `{}` of shape {:?}", escape(name), view.shape())
                })?;
                if let Some(s) = Stored::new(ty, view.data().to_vec(), rows, cols) {
                    return Ok(HostTensor::stored(name, s));
                }
            }
        }
        self.tensor(name)
    }

    /// One tensor converted to f32.
    ///
    /// Errors: [`Error::MissingTensor`] when no shard has it, [`Error::Unsupported`] for a dtype
    /// other than F32, F16 and BF16.
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let Some(&i) = self.index.get(name) else {
            let path = self
                .shards
                .first()
                .map_or("safetensors", |(p, _)| p.as_str());
            return Err(Error::MissingTensor {
                path: path.into(),
                name: name.into(),
                arch: "Llama".into(),
            });
        };
        let (path, st) = &self.shards[i];
        let view = st
            .tensor(name)
            .map_err(|e| Error::format(path, e.to_string()))?;
        let b = view.data();
        crate::budget::check(crate::budget::bytes_of(view.shape(), 4), || {
            format!(
                "tensor `{}` of shape {:?} converted to f32",
                escape(name),
                view.shape()
            )
        })?;
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Unsupported {
                    path: path.clone(),
                    msg: format!(
                        "tensor `{}` has dtype {other}; nse reads F32, F16 and BF16 \
                         safetensors (save the model with torch_dtype=float16 or bfloat16)",
                        escape(name)
                    ),
                });
            }
        };
        // The crate checked that the byte span equals shape × dtype size.
        Ok(HostTensor::new(name, view.shape().to_vec(), data))
    }
}

/// `(name, count)` pairs, most common first, then by name.
pub(crate) fn sorted_counts(counts: HashMap<String, usize>) -> Vec<(String, usize)> {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// A message for a shard the `safetensors` crate rejected, naming the tensor where it can.
fn explain(e: &SafeTensorError, bytes: &[u8]) -> String {
    match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            "the file is shorter than its header length says: it is truncated or not a safetensors \
             file; download it again"
                .to_string()
        }
        SafeTensorError::HeaderTooLarge => "the header length is over 100 MB: this is not a \
                                            safetensors file"
            .to_string(),
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            format!(
                "the header is not valid safetensors JSON ({e}): the file is corrupt or not a \
                 safetensors file"
            )
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor `{}` has data_offsets that do not start where the previous tensor ends \
             (overlapping tensors or a gap): the file is corrupt",
            escape(name)
        ),
        SafeTensorError::TensorInvalidInfo => match span_mismatch(bytes) {
            Some(detail) => format!("{detail}: the file is corrupt"),
            None => "a tensor's data_offsets do not match its shape and dtype: the file is corrupt"
                .to_string(),
        },
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "the tensor data does not end exactly at the end of the file ({} bytes): the file is \
             truncated or has trailing bytes; download it again",
            bytes.len()
        ),
        SafeTensorError::ValidationOverflow => {
            "a tensor's shape overflows: the file is corrupt".to_string()
        }
        other => format!("invalid safetensors file: {other}"),
    }
}

/// Finds the first tensor whose byte span disagrees with shape × dtype size (for the message).
fn span_mismatch(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: HashMap<String, Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let mut names: Vec<_> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let info: ::safetensors::tensor::TensorInfo =
            serde_json::from_value(header[name].clone()).ok()?;
        let elems = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let want = elems.checked_mul(info.dtype.bitsize())? / 8;
        let (s, e) = info.data_offsets;
        (e.checked_sub(s) != Some(want)).then(|| {
            format!(
                "tensor `{}` has shape {:?} of {} ({want} bytes) but data_offsets [{s}, {e}] \
                 span {} bytes",
                escape(name),
                info.shape,
                info.dtype,
                e as i128 - s as i128
            )
        })
    })
}
