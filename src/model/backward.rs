//! Reverse mode through blocks, the final norm and the LM head, with frozen weights.
//!
//! NSE's target optimisation needs the gradient of a loss on the logits with respect to one
//! vector added to a block's output (spec §4.2, hazard H7). Only input gradients are needed, so
//! every step is an op's backward or a matmul with a weight in the other orientation. Each
//! backward op has a CPU reference checked by finite differences and a WGSL kernel checked
//! against it.

use super::block::{BatchTensors, BlockActs};
use super::forward::Model;
use crate::Result;
use crate::backend::{Backend, TensorInfo, Transpose};

/// The rows a block ran on, for [`Model::block_backward`].
pub enum BlockRows<'a, T> {
    /// The whole packed batch ([`Model::block_packed`]).
    Packed(&'a BatchTensors<T>),
    /// Some of its rows ([`Model::block_partial`]): their positions and ranges, and their
    /// indices in the packed layout.
    Partial {
        positions: &'a T,
        ranges: &'a T,
        kv_rows: &'a T,
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
        let (positions, ranges, kv_rows) = match rows {
            BlockRows::Packed(bt) => (&bt.positions, &bt.ranges, None),
            BlockRows::Partial {
                positions,
                ranges,
                kv_rows,
            } => (positions, ranges, Some(kv_rows)),
        };
        let be = self.backend();
        let w = &self.weights.layers[l];
        let (eps, hd) = (self.config.rms_eps, self.config.head_dim);
        // out = h1 + key · down_projᵀ
        let dkey = be.matmul(dout, down_proj.unwrap_or(&w.down_proj), Transpose::NN)?; // (N, d_ff)
        let (dgate, dup) = be.silu_mul_backward(&acts.gate, &acts.up, &dkey)?;
        let dx2 = be.add(
            &be.matmul(&dgate, &w.gate_proj, Transpose::NN)?,
            &be.matmul(&dup, &w.up_proj, Transpose::NN)?,
        )?; // (N, d)
        let dh1 = be.add(
            dout,
            &be.rms_norm_backward(&acts.h1, &w.post_attention_layernorm, &dx2, eps)?,
        )?;
        // h1 = h + att · o_projᵀ
        let datt = be.matmul(&dh1, &w.o_proj, Transpose::NN)?; // (N, Hq·hd)
        let (dq, dk, dv) =
            be.attention_backward(&acts.q, &acts.k, &acts.v, ranges, &datt, self.attn_shape())?;
        // In a partial block the other rows' keys and values are fixed: keep the gradient of the
        // rows that ran.
        let (dk, dv) = match kv_rows {
            Some(r) => (be.gather_rows(&dk, r)?, be.gather_rows(&dv, r)?),
            None => (dk, dv),
        };
        let dq = be.rope_backward(&dq, positions, self.rope_table(), hd)?;
        let dk = be.rope_backward(&dk, positions, self.rope_table(), hd)?;
        let dx = be.add(
            &be.add(
                &be.matmul(&dq, &w.q_proj, Transpose::NN)?,
                &be.matmul(&dk, &w.k_proj, Transpose::NN)?,
            )?,
            &be.matmul(&dv, &w.v_proj, Transpose::NN)?,
        )?;
        be.add(
            &dh1,
            &be.rms_norm_backward(h, &w.input_layernorm, &dx, eps)?,
        )
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
        let dhg = be.rms_norm_backward(&hg, &self.weights.norm, &dxn, self.config.rms_eps)?;
        let mut dh = be.zeros(h.shape())?;
        be.add_rows(&mut dh, rows, &dhg)?;
        Ok(dh)
    }
}
