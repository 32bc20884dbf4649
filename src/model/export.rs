//! Export of a (possibly edited) model as Hugging Face files: `model.safetensors` (F32) and
//! `config.json`. With the tokenizer's `tokenizer.json` beside them, any loader of the
//! architecture (ours included) reads the result.

use serde_json::json;

use super::config::{Arch, ModelConfig, RopeScaling};
use super::forward::Model;
use crate::Result;
use crate::backend::{Backend, TensorInfo};

/// A Hugging Face `config.json` for `config`.
///
/// # Errors
/// [`crate::Error::Unsupported`] for RoPE given as per-frequency factors (a GGUF's
/// `rope_freqs.weight`), which `config.json` cannot carry.
pub fn hf_config_json(config: &ModelConfig) -> Result<String> {
    let (class, model_type) = match config.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
    };
    let rope_scaling = match &config.rope_scaling {
        None => serde_json::Value::Null,
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
        Some(RopeScaling::Factors(_)) => {
            return Err(crate::Error::Unsupported {
                path: "config.json".into(),
                msg: "this model's RoPE frequencies are scaled by per-frequency factors (a GGUF's \
                      rope_freqs.weight), which a Hugging Face config.json cannot express; export \
                      from the model's safetensors checkpoint instead"
                    .into(),
            });
        }
    };
    let v = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_ctx,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "rms_norm_eps": config.rms_eps,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_id,
        "eos_token_id": config.eos_id,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    Ok(serde_json::to_string_pretty(&v).expect("JSON values serialise"))
}

/// The model's weights as one F32 safetensors file, tensors named as Hugging Face names them.
/// `metadata` goes into the header's `__metadata__`.
pub async fn export_safetensors<B: Backend>(
    model: &Model<B>,
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let w = &model.weights;
    let mut tensors: Vec<(String, &B::Tensor)> =
        vec![("model.embed_tokens.weight".into(), &w.embed_tokens)];
    for (l, layer) in w.layers.iter().enumerate() {
        tensors.extend(layer.named(l));
    }
    tensors.push(("model.norm.weight".into(), &w.norm));
    if let Some(head) = &w.lm_head {
        tensors.push(("lm_head.weight".into(), head));
    }
    // Header first (its size fixes the data offsets), then the data in the same order.
    let mut header = serde_json::Map::new();
    let meta: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut offset = 0usize;
    for (name, t) in &tensors {
        let bytes = t.len() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": t.shape(), "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header_text = serde_json::to_string(&header).expect("JSON values serialise");
    while !header_text.len().is_multiple_of(8) {
        header_text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header_text.len() + offset);
    out.extend_from_slice(&(header_text.len() as u64).to_le_bytes());
    out.extend_from_slice(header_text.as_bytes());
    for (_, t) in &tensors {
        let values = model.backend().read(t).await?;
        out.extend_from_slice(bytemuck::cast_slice(&values));
    }
    Ok(out)
}
