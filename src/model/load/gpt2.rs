//! GPT-2's checkpoints: llama.cpp's `gpt2` GGUF and Hugging Face's `GPT2LMHeadModel`.
//!
//! Both hold the query, key and value projections as one matrix (`attn.c_attn`, GGUF
//! `attn_qkv`), split here into the three [`LayerWeights`] fields by rows. Hugging Face stores its
//! four projections as `Conv1D` weights, `[in][out]`; they are transposed once here to the
//! `[out][in]` of every other weight (llama.cpp's converter already did that for the GGUF).
//! Matrices stay in their storage type: F16 and BF16 transpose element by element, ggml blocks
//! are only ever split by rows.

use super::super::gguf::GgufFile;
use super::super::host::{HostData, Stored, transpose};
use super::super::weights::{Gpt2Bias, LayerWeights, QkvBias, Weights};
use super::super::{HostTensor, ModelConfig};
use crate::{Error, Result};

/// Where a GPT-2's tensors are and how they are laid out.
#[derive(Clone, Copy, Debug)]
pub(super) enum Gpt2Layout {
    /// llama.cpp's names (`blk.{l}.attn_qkv.weight`), `[out][in]` weights.
    Gguf,
    /// Hugging Face's names after `prefix` (`transformer.` for `GPT2LMHeadModel`, empty for a
    /// bare `GPT2Model`), `Conv1D` weights `[in][out]`.
    Hf { prefix: &'static str },
}

/// The per-layer tensors by role: (GGUF suffix after `blk.{l}.`, Hugging Face suffix after
/// `h.{l}.`).
const QKV: (&str, &str) = ("attn_qkv", "attn.c_attn");
const ATTN_OUT: (&str, &str) = ("attn_output", "attn.c_proj");
const LN_1: (&str, &str) = ("attn_norm", "ln_1");
const LN_2: (&str, &str) = ("ffn_norm", "ln_2");
const FC: (&str, &str) = ("ffn_up", "mlp.c_fc");
const MLP_PROJ: (&str, &str) = ("ffn_down", "mlp.c_proj");

impl Gpt2Layout {
    /// The file's name of a layer tensor (`kind` is `weight` or `bias`).
    fn layer(self, l: usize, (gguf, hf): (&str, &str), kind: &str) -> String {
        match self {
            Gpt2Layout::Gguf => format!("blk.{l}.{gguf}.{kind}"),
            Gpt2Layout::Hf { prefix } => format!("{prefix}h.{l}.{hf}.{kind}"),
        }
    }

    /// The file's name of a model-level tensor given its two names.
    fn global(self, gguf: &str, hf: &str) -> String {
        match self {
            Gpt2Layout::Gguf => gguf.to_string(),
            Gpt2Layout::Hf { .. } if hf == "lm_head.weight" => hf.to_string(),
            Gpt2Layout::Hf { prefix } => format!("{prefix}{hf}"),
        }
    }

    /// Whether the projections are stored `[in][out]` (Hugging Face's `Conv1D`).
    fn conv1d(self) -> bool {
        matches!(self, Gpt2Layout::Hf { .. })
    }
}

/// Fetches a GPT-2's tensors by their names in `layout` and checks their shapes; `path` names
/// the file in errors.
///
/// # Errors
/// [`Error::MissingTensor`] from `fetch`, [`Error::TensorShape`] for a tensor whose shape the
/// config does not give.
pub(super) fn build_weights(
    cfg: &ModelConfig,
    path: &str,
    layout: Gpt2Layout,
    mut fetch: impl FnMut(&str) -> Result<HostTensor>,
) -> Result<Weights<HostTensor>> {
    let (d, f, v) = (cfg.d_model, cfg.d_ff, cfg.vocab_size);
    // A tensor of shape `want` as stored; a projection `[out][in]` whatever the file's layout.
    let mut get = |name: String, want: Vec<usize>, projection: bool| -> Result<HostTensor> {
        let stored_shape: Vec<usize> = if projection && layout.conv1d() {
            want.iter().rev().copied().collect()
        } else {
            want.clone()
        };
        let t = fetch(&name)?;
        if t.shape != stored_shape {
            return Err(Error::TensorShape {
                path: path.to_string(),
                name,
                got: t.shape,
                want: stored_shape,
            });
        }
        let mut t = if projection && layout.conv1d() {
            transposed(t)
        } else {
            t
        };
        t.name = name;
        Ok(t)
    };
    let embed_tokens = get(
        layout.global("token_embd.weight", "wte.weight"),
        vec![v, d],
        false,
    )?;
    let position_embd = get(
        layout.global("position_embd.weight", "wpe.weight"),
        vec![cfg.max_ctx, d],
        false,
    )?;
    // No `with_capacity(n_layers)`: the count comes from the file; a missing layer stops the loop.
    let mut layers = Vec::new();
    for l in 0..cfg.n_layers {
        let w = |role| layout.layer(l, role, "weight");
        let b = |role| layout.layer(l, role, "bias");
        let [q_proj, k_proj, v_proj] = split_rows(get(w(QKV), vec![3 * d, d], true)?, d);
        let [q, k, v] = split_rows(get(b(QKV), vec![3 * d], false)?, d);
        layers.push(LayerWeights {
            input_layernorm: get(w(LN_1), vec![d], false)?,
            q_proj,
            k_proj,
            v_proj,
            o_proj: get(w(ATTN_OUT), vec![d, d], true)?,
            post_attention_layernorm: get(w(LN_2), vec![d], false)?,
            gate_proj: None,
            up_proj: get(w(FC), vec![f, d], true)?,
            down_proj: get(w(MLP_PROJ), vec![d, f], true)?,
            qkv_bias: Some(QkvBias { q, k, v }),
            gpt2_bias: Some(Gpt2Bias {
                ln_1: get(b(LN_1), vec![d], false)?,
                attn_c_proj: get(b(ATTN_OUT), vec![d], false)?,
                ln_2: get(b(LN_2), vec![d], false)?,
                c_fc: get(b(FC), vec![f], false)?,
                mlp_c_proj: get(b(MLP_PROJ), vec![d], false)?,
            }),
        });
    }
    let norm = get(
        layout.global("output_norm.weight", "ln_f.weight"),
        vec![d],
        false,
    )?;
    let norm_bias = get(
        layout.global("output_norm.bias", "ln_f.bias"),
        vec![d],
        false,
    )?;
    let lm_head = if cfg.tie_embeddings {
        None
    } else {
        Some(get(
            layout.global("output.weight", "lm_head.weight"),
            vec![v, d],
            false,
        )?)
    };
    Ok(Weights {
        embed_tokens,
        layers,
        norm,
        lm_head,
        position_embd: Some(position_embd),
        norm_bias: Some(norm_bias),
    })
}

/// Whether a `gpt2` GGUF's LM head is its token embedding: llama.cpp's converter writes
/// `output.weight` as a copy of `token_embd.weight` (GPT-2 ties them), so a head with the same
/// type and bytes is dropped rather than held twice.
pub(super) fn gguf_head_is_embedding(gguf: &GgufFile) -> bool {
    let (Some(out), Some(emb)) = (
        gguf.tensor_info("output.weight"),
        gguf.tensor_info("token_embd.weight"),
    ) else {
        return gguf.tensor_info("output.weight").is_none();
    };
    out.ggml_type == emb.ggml_type
        && out.shape() == emb.shape()
        && matches!(
            (gguf.tensor_bytes("output.weight"), gguf.tensor_bytes("token_embd.weight")),
            (Ok(a), Ok(b)) if a == b
        )
}

/// `t` split by rows into three tensors of `rows` rows each (or three vectors of `rows` values).
///
/// # Panics
/// If `t` does not have `3 · rows` rows (the caller checked its shape).
fn split_rows(t: HostTensor, rows: usize) -> [HostTensor; 3] {
    assert_eq!(t.shape[0], 3 * rows, "split_rows: {} rows", t.shape[0]);
    let tail: Vec<usize> = t.shape[1..].to_vec();
    let per_row: usize = tail.iter().product();
    let mut shape = vec![rows];
    shape.extend(&tail);
    let part = |i: usize| -> HostTensor {
        let name = format!("{}[{}]", t.name, ["q", "k", "v"][i]);
        match &t.data {
            HostData::F32(x) => HostTensor::new(
                name,
                shape.clone(),
                x[i * rows * per_row..(i + 1) * rows * per_row].to_vec(),
            ),
            HostData::Stored(s) => {
                let rb = s.row_bytes();
                let bytes = s.bytes[i * rows * rb..(i + 1) * rows * rb].to_vec();
                let s = Stored::new(s.ty, bytes, rows, s.cols)
                    .expect("whole rows of a stored matrix are a stored matrix");
                HostTensor::stored(name, s)
            }
        }
    };
    [part(0), part(1), part(2)]
}

/// A matrix transposed, kept in its storage type where its elements stand alone (f32, F16,
/// BF16), widened to f32 otherwise (ggml blocks run along rows and cannot be transposed).
fn transposed(t: HostTensor) -> HostTensor {
    let [rows, cols] = t.shape[..] else {
        panic!("transposed: {:?} is not a matrix", t.shape)
    };
    match t.data {
        HostData::Stored(s) if s.block() == 1 => {
            // F16 and BF16 elements are two bytes each: transpose them as u16 pairs of bytes.
            let elems: Vec<[u8; 2]> = s.bytes.chunks_exact(2).map(|b| [b[0], b[1]]).collect();
            let out: Vec<u8> = transpose(&elems, rows, cols).concat();
            let s = Stored::new(s.ty, out, cols, rows).expect("a transposed F16/BF16 matrix");
            HostTensor::stored(t.name, s)
        }
        _ => {
            let name = t.name.clone();
            let x = t.into_f32();
            HostTensor::new(name, vec![cols, rows], transpose(&x, rows, cols))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::GgmlType;

    #[test]
    fn transposes_keep_f16_and_agree_with_f32() {
        let x: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect(); // (2, 3)
        let f32_t = transposed(HostTensor::new("w", vec![2, 3], x.clone()));
        assert_eq!(f32_t.shape, [3, 2]);
        assert_eq!(&*f32_t.f32(), &[0.0, 1.5, 0.5, 2.0, 1.0, 2.5]);
        let bytes: Vec<u8> = x
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let f16 = HostTensor::stored("w", Stored::new(GgmlType::F16, bytes, 2, 3).unwrap());
        let t = transposed(f16);
        assert_eq!(t.storage(), GgmlType::F16);
        assert_eq!(t.f32(), f32_t.f32());
    }

    #[test]
    fn splits_rows_of_vectors_and_stored_matrices() {
        let [a, b, c] = split_rows(
            HostTensor::new("b", vec![6], (0..6).map(|i| i as f32).collect()),
            2,
        );
        assert_eq!(
            (&*a.f32(), &*b.f32(), &*c.f32()),
            (&[0.0, 1.0][..], &[2.0, 3.0][..], &[4.0, 5.0][..])
        );
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect(); // (6, 2)
        let bytes: Vec<u8> = x
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let m = HostTensor::stored("w", Stored::new(GgmlType::F16, bytes, 6, 2).unwrap());
        let [_, k, _] = split_rows(m, 2);
        assert_eq!(
            (k.shape.as_slice(), &*k.f32()),
            (&[2, 2][..], &[4.0, 5.0, 6.0, 7.0][..])
        );
        assert_eq!(k.name, "w[k]");
    }
}
