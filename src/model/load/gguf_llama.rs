//! llama.cpp's conventions for the Llama family (`llama`, `qwen2`): metadata keys, tensor names,
//! RoPE frequency factors, and the Q/K row permutation of `llama` files.

use super::super::gguf::GgufFile;
use super::super::host::HostData;
use super::super::{Arch, HostTensor, ModelConfig, RopeScaling, Tokenizer};
use crate::error::escape;
use crate::{Error, Result};

/// HF per-layer suffix → GGUF per-layer name, in [`LAYER_SUFFIXES`](super::LAYER_SUFFIXES) order.
const LAYER_NAMES: [(&str, &str); 9] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// The GGUF architectures read, for errors.
pub const SUPPORTED_GGUF_ARCHITECTURES: &str = "`llama` (Llama 1–3, SmolLM, Mistral), `qwen2` \
     (Qwen2, Qwen2.5) and `gpt2` (GPT-2)";

/// The GGUF name of a Hugging Face tensor name (`model.layers.3.mlp.down_proj.weight` →
/// `blk.3.ffn_down.weight`, `model.layers.3.self_attn.q_proj.bias` → `blk.3.attn_q.bias`),
/// `None` for a name outside the Llama layout.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (rest, kind) = match rest.strip_suffix(".weight") {
        Some(r) => (r, "weight"),
        None => (rest.strip_suffix(".bias")?, "bias"),
    };
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, gguf) = LAYER_NAMES.iter().find(|(h, _)| *h == suffix)?;
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// The model config from a GGUF file's `llama.*` or `qwen2.*` metadata; BOS/EOS/add_bos come
/// from the tokenizer built from the same file, the vocabulary size from `tokenizer.ggml.tokens`,
/// the embeddings are tied when there is no `output.weight`, and a `rope_freqs.weight` tensor
/// (Llama 3) scales the RoPE frequencies.
///
/// Errors: [`Error::Unsupported`] for another architecture, partial rotary, a RoPE scaling type
/// or mixture-of-experts; [`Error::Format`] for missing or invalid keys.
pub fn config_from_gguf(gguf: &GgufFile, tokenizer: &Tokenizer) -> Result<ModelConfig> {
    let path = gguf.path();
    let unsupported = |msg: String| Error::Unsupported {
        path: path.to_string(),
        msg,
    };
    let arch_name = gguf.get_str("general.architecture")?.unwrap_or("(none)");
    let arch = match arch_name {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        "gpt2" => Arch::Gpt2,
        other => {
            return Err(unsupported(format!(
                "general.architecture is `{}`: nse runs {SUPPORTED_GGUF_ARCHITECTURES}",
                escape(other)
            )));
        }
    };
    let prefix = arch.name();
    let key = |k: &str| format!("{prefix}.{k}");
    let uint = |k: &str| -> Result<Option<usize>> {
        match gguf.get_u64(&key(k))? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| Error::format(path, format!("{} is {v}, too large", key(k)))),
        }
    };
    let required = |k: &str| -> Result<usize> {
        uint(k)?.ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "metadata key `{}` is missing: the GGUF is incomplete; convert it again",
                    key(k)
                ),
            )
        })
    };
    if uint("expert_count")?.unwrap_or(0) > 0 {
        return Err(unsupported(format!(
            "mixture-of-experts models ({}.expert_count > 0) are not supported",
            prefix
        )));
    }
    if let Some(scaling) = gguf.get_str(&key("rope.scaling.type"))?
        && scaling != "none"
    {
        return Err(unsupported(format!(
            "RoPE scaling `{}` ({}) is not implemented; supported are plain RoPE and Llama 3's \
             per-frequency factors (rope_freqs.weight)",
            escape(scaling),
            key("rope.scaling.type")
        )));
    }
    let d_model = required("embedding_length")?;
    let n_heads = required("attention.head_count")?;
    let head_dim = match uint("attention.key_length")? {
        Some(hd) => hd,
        None => d_model.checked_div(n_heads).unwrap_or(0),
    };
    if let Some(rot) = uint("rope.dimension_count")?
        && rot != head_dim
    {
        return Err(unsupported(format!(
            "partial rotary embeddings ({rot} of {head_dim} head dimensions) are not implemented"
        )));
    }
    let vocab_size = match gguf.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        Some(tokens) => tokens.len(),
        None => required("vocab_size")?,
    };
    // GPT-2's LayerNorm, the Llama family's RMSNorm.
    let eps_key = key(if arch.is_gpt2() {
        "attention.layer_norm_epsilon"
    } else {
        "attention.layer_norm_rms_epsilon"
    });
    let rms_eps = gguf.get_f64(&eps_key)?.ok_or_else(|| {
        Error::format(
            path,
            format!(
                "metadata key `{eps_key}` is missing: the GGUF is incomplete; convert it again"
            ),
        )
    })?;
    let rope_scaling = match gguf.tensor_info("rope_freqs.weight") {
        None => None,
        Some(info) if info.n_elements() == (head_dim / 2) as u64 => Some(RopeScaling::Factors(
            gguf.tensor("rope_freqs.weight")?.into_f32(),
        )),
        Some(info) => {
            return Err(Error::format(
                path,
                format!(
                    "rope_freqs.weight has {} values, expected {} (head_dim {} / 2)",
                    info.n_elements(),
                    head_dim / 2,
                    head_dim
                ),
            ));
        }
    };
    let cfg = ModelConfig {
        arch,
        n_layers: required("block_count")?,
        d_model,
        d_ff: required("feed_forward_length")?,
        n_heads,
        n_kv_heads: uint("attention.head_count_kv")?.unwrap_or(n_heads),
        head_dim,
        vocab_size,
        max_ctx: required("context_length")?,
        rope_theta: gguf.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0) as f32,
        rope_scaling,
        rms_eps: rms_eps as f32,
        tie_embeddings: if arch.is_gpt2() {
            super::gpt2::gguf_head_is_embedding(gguf)
        } else {
            gguf.tensor_info("output.weight").is_none()
        },
        bos_id: tokenizer.bos_id(),
        eos_id: tokenizer.eos_id(),
        add_bos: tokenizer.add_bos(),
    };
    cfg.validate(path)?;
    Ok(cfg)
}

/// Dequantises the tensor with HF name `hf` from its GGUF counterpart, renamed to `hf`, with
/// Q/K rows un-permuted to HF order (`llama` files only: llama.cpp's converter permutes them
/// for its adjacent-pair RoPE there, and leaves `qwen2`'s in rotate-half order).
pub(super) fn tensor(gguf: &GgufFile, cfg: &ModelConfig, hf: &str) -> Result<HostTensor> {
    let name = gguf_name(hf).expect("the loader only asks for Llama tensor names");
    let mut t = gguf.tensor_stored(&name)?;
    t.name = hf.to_string();
    let heads = if cfg.arch != Arch::Llama {
        None
    } else if hf.ends_with("self_attn.q_proj.weight") {
        Some(cfg.n_heads)
    } else if hf.ends_with("self_attn.k_proj.weight") {
        Some(cfg.n_kv_heads)
    } else {
        None
    };
    // A wrong shape is reported by the caller; only un-permute what has the expected shape.
    if let Some(h) = heads
        && t.shape == [h * cfg.head_dim, cfg.d_model]
    {
        match &mut t.data {
            HostData::F32(w) => unpermute_qk_rows(w, h, cfg.d_model),
            HostData::Stored(s) => {
                let row_bytes = s.row_bytes();
                unpermute_qk_rows(&mut s.bytes, h, row_bytes);
            }
        }
    }
    Ok(t)
}

/// Undoes llama.cpp's Q/K row permutation in place, giving Hugging Face rotate-half order.
///
/// llama.cpp's converter maps HF → GGUF with
/// `w.reshape(n_heads, 2, hd/2, d_in).swapaxes(1, 2).reshape(rows, d_in)`: within head `h`, HF
/// row `h·hd + s·hd/2 + i` (`s ∈ {0, 1}`, `i < hd/2`) is stored as GGUF row `h·hd + 2i + s`, so
/// each RoPE pair sits in adjacent rows. This puts every row back.
///
/// # Shapes
/// `w` is `(n_heads·hd, d_in)` row-major; `hd` is inferred and must be even. A row may be any
/// run of elements: `d_in` bytes of quantised blocks move the same way as `d_in` f32 values.
///
/// # Panics
/// If `w.len()` is not a multiple of `n_heads · d_in` or `hd` is odd (the loader checked the
/// shape first, so this is a bug).
pub fn unpermute_qk_rows<T: Copy + Default>(w: &mut [T], n_heads: usize, d_in: usize) {
    assert!(
        n_heads > 0 && d_in > 0 && w.len().is_multiple_of(n_heads * d_in),
        "unpermute_qk_rows: bad shape"
    );
    let hd = w.len() / (n_heads * d_in);
    assert!(hd.is_multiple_of(2), "unpermute_qk_rows: odd head_dim {hd}");
    let half = hd / 2;
    let mut head = vec![T::default(); hd * d_in]; // (hd, d_in) scratch: one head in GGUF order
    for block in w.chunks_exact_mut(hd * d_in) {
        head.copy_from_slice(block);
        for s in 0..2 {
            for i in 0..half {
                let (dst, src) = (s * half + i, 2 * i + s);
                block[dst * d_in..(dst + 1) * d_in]
                    .copy_from_slice(&head[src * d_in..(src + 1) * d_in]);
            }
        }
    }
}
