//! Reverse mode through blocks, the final norm and the LM head, with frozen weights.
//!
//! NSE's target optimisation needs the gradient of a loss on the logits with respect to one
//! vector added to a block's output (spec §4.2, hazard H7). Only input gradients are needed, so
//! every step is an op's backward or a matmul with a weight in the other orientation. Each
//! backward op has a CPU reference checked by finite differences and a WGSL kernel checked
//! against it.

use super::block::{BatchTensors, BlockActs};
use super::forward::Model;
use super::kv::PartialKv;
use crate::Result;
use crate::backend::{Backend, TensorInfo, Transpose};

/// The rows a block ran on, for [`Model::block_backward`].
pub enum BlockRows<'a, T> {
    /// The whole packed batch ([`Model::block_packed`]).
    Packed(&'a BatchTensors<T>),
    /// Some of its rows ([`Model::block_partial`]): their positions and ranges, and everyone's
    /// fixed keys and values with the rows' indices in the packed layout.
    Partial {
        positions: &'a T,
        ranges: &'a T,
        part: &'a PartialKv<T>,
    },
}

impl<B: Backend> Model<B> {
    /// Gradient with respect to the input `h` of block `l`, given the gradient `dout` at its
    /// output and the activations it recorded. `rows` are the block's rows as it ran: the whole
    /// packed batch ([`BlockRows::Packed`]) or some of its rows ([`BlockRows::Partial`]).
    ///
    /// # Shapes
    /// `h, dout (R, d)` → `(R, d)` for the `R` rows that ran.
    pub fn block_backward(
        &self,
        l: usize,
        h: &B::Tensor,
        acts: &BlockActs<B::Tensor>,
        rows: BlockRows<'_, B::Tensor>,
        down_proj: Option<&B::Tensor>,
        dout: &B::Tensor,
    ) -> Result<B::Tensor> {
        let (positions, ranges, part) = match rows {
            BlockRows::Packed(bt) => (&bt.positions, &bt.ranges, None),
            BlockRows::Partial {
                positions,
                ranges,
                part,
            } => (positions, ranges, Some(part)),
        };
        let be = self.backend();
        let w = &self.weights.layers[l];
        let hd = self.config.head_dim;
        let g2 = w.gpt2_bias.as_ref();
        // out = h1 + key · down_projᵀ (+ bias)
        let dkey = be.matmul(dout, down_proj.unwrap_or(&w.down_proj), Transpose::NN)?; // (N, d_ff)
        let recomputed;
        let (gate, up) = match &acts.mlp {
            Some((gate, up)) => (gate.as_ref(), up),
            None => {
                recomputed = self.mlp_inputs(l, &acts.h1)?;
                (recomputed.0.as_ref(), &recomputed.1)
            }
        };
        let dx2 = match (&w.gate_proj, gate) {
            (Some(gate_proj), Some(gate)) => {
                let (dgate, dup) = be.silu_mul_backward(gate, up, &dkey)?;
                be.add(
                    &be.matmul(&dgate, gate_proj, Transpose::NN)?,
                    &be.matmul(&dup, &w.up_proj, Transpose::NN)?,
                )?
            }
            (None, None) => {
                // key = gelu(up), up = x2 · up_projᵀ + bias
                let dup = be.gelu_backward(up, &dkey)?;
                be.matmul(&dup, &w.up_proj, Transpose::NN)?
            }
            _ => panic!("block {l}: the activations do not match the MLP (gate or none)"),
        }; // (N, d)
        let dh1 = be.add(
            dout,
            &self.norm_backward(
                &acts.h1,
                &w.post_attention_layernorm,
                g2.map(|b| &b.ln_2),
                &dx2,
            )?,
        )?;
        // h1 = h + att · o_projᵀ (+ bias)
        let datt = be.matmul(&dh1, &w.o_proj, Transpose::NN)?; // (N, Hq·hd)
        let (dq, dk, dv) = match part {
            None => {
                be.attention_backward(&acts.q, &acts.k, &acts.v, ranges, &datt, self.attn_shape())?
            }
            // In a partial block the other rows' keys and values are fixed: rebuild the full
            // matrices the attention read, and keep the gradient of the rows that ran.
            Some(part) => {
                let (k, v) = part.full(l, &acts.k, &acts.v, be)?;
                let (dq, dk, dv) =
                    be.attention_backward(&acts.q, &k, &v, ranges, &datt, self.attn_shape())?;
                (
                    dq,
                    be.gather_rows(&dk, &part.rows)?,
                    be.gather_rows(&dv, &part.rows)?,
                )
            }
        };
        let (dq, dk) = if self.config.arch.is_gpt2() {
            (dq, dk)
        } else {
            (
                be.rope_backward(&dq, positions, self.rope_table(), hd)?,
                be.rope_backward(&dk, positions, self.rope_table(), hd)?,
            )
        };
        let dx = be.add(
            &be.add(
                &be.matmul(&dq, &w.q_proj, Transpose::NN)?,
                &be.matmul(&dk, &w.k_proj, Transpose::NN)?,
            )?,
            &be.matmul(&dv, &w.v_proj, Transpose::NN)?,
        )?;
        be.add(
            &dh1,
            &self.norm_backward(h, &w.input_layernorm, g2.map(|b| &b.ln_1), &dx)?,
        )
    }

    /// Gradient of [`Model::norm`] with respect to `x` (RMSNorm, or LayerNorm when it has a
    /// `bias`).
    ///
    /// # Shapes
    /// `x, dy (N, d)`, `w, bias (d)` → `(N, d)`.
    fn norm_backward(
        &self,
        x: &B::Tensor,
        w: &B::Tensor,
        bias: Option<&B::Tensor>,
        dy: &B::Tensor,
    ) -> Result<B::Tensor> {
        let (be, eps) = (self.backend(), self.config.rms_eps);
        match bias {
            Some(_) => be.layer_norm_backward(x, w, dy, eps),
            None => be.rms_norm_backward(x, w, dy, eps),
        }
    }

    /// Gradient with respect to the final residual stream of `logits = head(h[rows])`.
    ///
    /// # Shapes
    /// `h (N, d)`, `rows (R)` u32, `dlogits (R, V)` → `(N, d)`, zero outside `rows`.
    pub fn head_backward(
        &self,
        h: &B::Tensor,
        rows: &B::Tensor,
        dlogits: &B::Tensor,
    ) -> Result<B::Tensor> {
        let be = self.backend();
        let hg = be.gather_rows(h, rows)?; // (R, d)
        let dxn = be.matmul(dlogits, self.weights.head(), Transpose::NN)?; // (R, d)
        let dhg = self.norm_backward(
            &hg,
            &self.weights.norm,
            self.weights.norm_bias.as_ref(),
            &dxn,
        )?;
        let mut dh = be.zeros(h.shape())?;
        be.add_rows(&mut dh, rows, &dhg)?;
        Ok(dh)
    }
}
