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
        Arch::Gpt2 => {
            let v = json!({
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "n_embd": config.d_model,
                "n_inner": config.d_ff,
                "n_layer": config.n_layers,
                "n_head": config.n_heads,
                "n_positions": config.max_ctx,
                "vocab_size": config.vocab_size,
                "layer_norm_epsilon": config.rms_eps,
                "activation_function": "gelu_new",
                "tie_word_embeddings": config.tie_embeddings,
                "bos_token_id": config.bos_id,
                "eos_token_id": config.eos_id,
                "torch_dtype": "float32",
            });
            return Ok(serde_json::to_string_pretty(&v).expect("JSON values serialise"));
        }
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
    if model.config.arch.is_gpt2() {
        return export_gpt2(model, metadata).await;
    }
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
    let shapes: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let mut out = safetensors_header(&shapes, metadata);
    for (_, t) in &tensors {
        let values = model.backend().read(t).await?;
        out.extend_from_slice(bytemuck::cast_slice(&values));
    }
    Ok(out)
}

/// [`export_safetensors`] for GPT-2, in its own checkpoint's layout: `transformer.h.{l}.…`, the
/// query, key and value projections joined again as `attn.c_attn`, and the four projections
/// transposed back to `Conv1D`'s `[in][out]`.
async fn export_gpt2<B: Backend>(model: &Model<B>, metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
    let w = &model.weights;
    let be = model.backend();
    let (Some(wpe), Some(ln_f_bias)) = (&w.position_embd, &w.norm_bias) else {
        panic!("a GPT-2 model without learned positions or a final LayerNorm bias")
    };
    // (name, shape, values), in checkpoint order.
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut plain = |name: String, t: &B::Tensor, values: Vec<f32>| {
        tensors.push((name, t.shape().to_vec(), values));
    };
    plain(
        "transformer.wte.weight".into(),
        &w.embed_tokens,
        be.read(&w.embed_tokens).await?,
    );
    plain("transformer.wpe.weight".into(), wpe, be.read(wpe).await?);
    let mut layers = Vec::new();
    for (l, layer) in w.layers.iter().enumerate() {
        let (Some(b), Some(qkv_b)) = (&layer.gpt2_bias, &layer.qkv_bias) else {
            panic!("GPT-2 block {l} without its biases")
        };
        let p = |suffix: &str| format!("transformer.h.{l}.{suffix}");
        let mut c_attn = be.read(&layer.q_proj).await?;
        c_attn.extend(be.read(&layer.k_proj).await?);
        c_attn.extend(be.read(&layer.v_proj).await?);
        let mut c_attn_bias = be.read(&qkv_b.q).await?;
        c_attn_bias.extend(be.read(&qkv_b.k).await?);
        c_attn_bias.extend(be.read(&qkv_b.v).await?);
        let d = model.config.d_model;
        let conv1d = |name: String, values: Vec<f32>, rows: usize| {
            let cols = values.len() / rows;
            (
                name,
                vec![cols, rows],
                super::host::transpose(&values, rows, cols),
            )
        };
        layers.extend([
            (
                p("ln_1.weight"),
                vec![d],
                be.read(&layer.input_layernorm).await?,
            ),
            (p("ln_1.bias"), vec![d], be.read(&b.ln_1).await?),
            conv1d(p("attn.c_attn.weight"), c_attn, 3 * d),
            (p("attn.c_attn.bias"), vec![3 * d], c_attn_bias),
            conv1d(p("attn.c_proj.weight"), be.read(&layer.o_proj).await?, d),
            (
                p("attn.c_proj.bias"),
                vec![d],
                be.read(&b.attn_c_proj).await?,
            ),
            (
                p("ln_2.weight"),
                vec![d],
                be.read(&layer.post_attention_layernorm).await?,
            ),
            (p("ln_2.bias"), vec![d], be.read(&b.ln_2).await?),
            conv1d(
                p("mlp.c_fc.weight"),
                be.read(&layer.up_proj).await?,
                model.config.d_ff,
            ),
            (
                p("mlp.c_fc.bias"),
                vec![model.config.d_ff],
                be.read(&b.c_fc).await?,
            ),
            conv1d(p("mlp.c_proj.weight"), be.read(&layer.down_proj).await?, d),
            (p("mlp.c_proj.bias"), vec![d], be.read(&b.mlp_c_proj).await?),
        ]);
    }
    tensors.extend(layers);
    let d = model.config.d_model;
    tensors.push((
        "transformer.ln_f.weight".into(),
        vec![d],
        be.read(&w.norm).await?,
    ));
    tensors.push((
        "transformer.ln_f.bias".into(),
        vec![d],
        be.read(ln_f_bias).await?,
    ));
    if let Some(head) = &w.lm_head {
        tensors.push((
            "lm_head.weight".into(),
            head.shape().to_vec(),
            be.read(head).await?,
        ));
    }
    let shapes: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    let mut out = safetensors_header(&shapes, metadata);
    for (_, _, values) in &tensors {
        out.extend_from_slice(bytemuck::cast_slice(values));
    }
    Ok(out)
}

/// The 8-byte length and the JSON header of an F32 safetensors file holding `tensors` in order,
/// with room reserved for their data.
fn safetensors_header(tensors: &[(String, Vec<usize>)], metadata: &[(&str, &str)]) -> Vec<u8> {
    // Header first (its size fixes the data offsets), then the data in the same order.
    let mut header = serde_json::Map::new();
    let meta: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
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
    out
}
