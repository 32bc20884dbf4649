//! One transformer block, in its three attention modes: packed self-attention over a batch,
//! recomputing only some rows of a batch over fixed keys and values of the others (the z
//! optimisation's shortcut), and decoding, which appends to a KV cache through the backend's
//! fused ops and keeps no activations.

use super::batch::Packed;
use super::forward::Model;
use super::kv::{Ctx, Kv, KvCache, PartialKv};
use crate::Result;
use crate::backend::{Backend, QkvDecode, Transpose};

/// A [`Packed`] batch's index tensors on the backend, uploaded once and shared by all blocks
/// (and by the backward pass).
pub struct BatchTensors<T> {
    /// Token ids, u32 `(N)`.
    pub ids: T,
    /// Positions, u32 `(N)`.
    pub positions: T,
    /// Attention ranges, u32 `(N, 2)`.
    pub ranges: T,
}

/// What one block computed, kept when a backward pass will follow.
///
/// # Shapes
/// `q (N, Hq·hd)` and `k, v (N, Hkv·hd)` after RoPE; `h1 (N, d)` the residual after attention;
/// `gate, up (N, d_ff)` (GPT-2: no gate, `up` before its GELU). The NSE key, the `down_proj`
/// input, is not among them: the backward pass does not need it, and the z optimisation keeps
/// these for some twenty blocks.
pub struct BlockActs<T> {
    pub q: T,
    pub k: T,
    pub v: T,
    pub h1: T,
    /// The MLP's inputs to its activation, `(gate, up)`; `None` once
    /// [`BlockActs::forget_mlp`] dropped them, and the backward pass recomputes them from `h1`
    /// with the same ops ([`Model::mlp_inputs`]), so the result is the same bit for bit.
    pub mlp: Option<(Option<T>, T)>,
}

impl<T> BlockActs<T> {
    /// Drops the MLP's `gate` and `up` (two `(N, d_ff)` tensors, most of a block's
    /// activations), for the backward pass to recompute: memory for two matmuls.
    pub fn forget_mlp(&mut self) {
        self.mlp = None;
    }
}

/// What a block returns: the new residual stream `(N, d)`, its [`BlockActs`], and its NSE key
/// `(N, d_ff)` (the `down_proj` input).
pub type BlockOutput<T> = (T, BlockActs<T>, T);

impl<B: Backend> Model<B> {
    /// Uploads a packed batch's ids, positions and ranges.
    pub fn upload_batch(&self, batch: &Packed) -> Result<BatchTensors<B::Tensor>> {
        let be = self.backend();
        let n = batch.n_rows();
        Ok(BatchTensors {
            ids: be.upload_u32("token ids", &batch.ids, &[n])?,
            positions: be.upload_u32("positions", &batch.positions, &[n])?,
            ranges: be.upload_u32("attention ranges", &batch.ranges, &[n, 2])?,
        })
    }

    /// Block `l` on a packed batch (no cache), returning its output, its activations and its
    /// NSE key `(N, d_ff)`.
    pub fn block_packed(
        &self,
        l: usize,
        h: &B::Tensor,
        bt: &BatchTensors<B::Tensor>,
        down_proj: Option<&B::Tensor>,
    ) -> Result<BlockOutput<B::Tensor>> {
        let mut ctx = Ctx {
            positions: &bt.positions,
            ranges: &bt.ranges,
            kv: Kv::Packed,
        };
        self.block(l, h, &mut ctx, down_proj)
    }

    /// Block `l` on some rows of a packed batch: `h`, `positions` and `ranges` are those rows',
    /// `part` holds everyone's fixed keys and values. The activations' `k`, `v` are those rows'
    /// (the backward pass rebuilds the full matrices with [`PartialKv::full`]).
    pub fn block_partial(
        &self,
        l: usize,
        h: &B::Tensor,
        positions: &B::Tensor,
        ranges: &B::Tensor,
        part: &PartialKv<B::Tensor>,
    ) -> Result<BlockOutput<B::Tensor>> {
        let mut ctx = Ctx {
            positions,
            ranges,
            kv: Kv::Partial(part),
        };
        self.block(l, h, &mut ctx, None)
    }

    /// The architecture's norm of `x`: RMSNorm, or LayerNorm with its `bias` (GPT-2).
    ///
    /// # Shapes
    /// `x (N, d)`, `w, bias (d)` → `(N, d)`.
    pub(super) fn norm(
        &self,
        x: &B::Tensor,
        w: &B::Tensor,
        bias: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let (be, eps) = (self.backend(), self.config.rms_eps);
        match bias {
            Some(b) => be.layer_norm(x, w, b, eps),
            None => be.rms_norm(x, w, eps),
        }
    }

    /// `x · wᵀ`, plus `bias` where the architecture has one.
    ///
    /// # Shapes
    /// `x (N, K)`, `w (M, K)`, `bias (M)` → `(N, M)`.
    pub(super) fn linear(
        &self,
        x: &B::Tensor,
        w: &B::Tensor,
        bias: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let be = self.backend();
        let y = be.matmul(x, w, Transpose::NT)?;
        match bias {
            Some(b) => be.add_bias(&y, b),
            None => Ok(y),
        }
    }

    /// One transformer block; returns the new residual stream, what the backward pass needs of
    /// what it computed on the way, and the NSE key `(N, d_ff)`.
    pub(super) fn block(
        &self,
        l: usize,
        h: &B::Tensor,
        ctx: &mut Ctx<'_, B::Tensor>,
        down_proj: Option<&B::Tensor>,
    ) -> Result<BlockOutput<B::Tensor>> {
        let be = self.backend();
        let w = &self.weights.layers[l];
        let hd = self.config.head_dim;
        let g2 = w.gpt2_bias.as_ref();
        let x = self.norm(h, &w.input_layernorm, g2.map(|b| &b.ln_1))?; // (N, d)
        let bias = w.qkv_bias.as_ref();
        // GPT-2's positions were added to the embeddings; the Llama family rotates q and k.
        let rope = |y: B::Tensor| -> Result<B::Tensor> {
            if self.config.arch.is_gpt2() {
                Ok(y)
            } else {
                be.rope(&y, ctx.positions, self.rope_table(), hd)
            }
        };
        let q = rope(self.linear(&x, &w.q_proj, bias.map(|b| &b.q))?)?; // (N, Hq·hd)
        let k = rope(self.linear(&x, &w.k_proj, bias.map(|b| &b.k))?)?; // (N, Hkv·hd)
        let v = self.linear(&x, &w.v_proj, bias.map(|b| &b.v))?; // (N, Hkv·hd)
        let att = match &mut ctx.kv {
            Kv::Packed => be.attention(&q, &k, &v, ctx.ranges, self.attn_shape())?,
            Kv::Partial(part) => {
                let (kf, vf) = part.full(l, &k, &v, be)?;
                be.attention(&q, &kf, &vf, ctx.ranges, self.attn_shape())?
            }
        };
        let h1 = be.add(
            h,
            &self.linear(&att, &w.o_proj, g2.map(|b| &b.attn_c_proj))?,
        )?;
        // The NSE key (N, d_ff): silu(gate) · up, or GPT-2's gelu(up).
        let (gate, up) = self.mlp_inputs(l, &h1)?;
        let key = match &gate {
            Some(gate) => be.silu_mul(gate, &up)?,
            None => be.gelu(&up)?,
        };
        let mlp = self.linear(
            &key,
            down_proj.unwrap_or(&w.down_proj),
            g2.map(|b| &b.mlp_c_proj),
        )?;
        let out = be.add(&h1, &mlp)?;
        Ok((
            out,
            BlockActs {
                q,
                k,
                v,
                h1,
                mlp: Some((gate, up)),
            },
            key,
        ))
    }

    /// Block `l`'s MLP inputs to its activation from the residual after attention `h1`:
    /// `(Some(gate), up)`, or GPT-2's `(None, up)` with `up` before its GELU.
    ///
    /// # Shapes
    /// `h1 (N, d)` → `(N, d_ff)` each.
    pub(super) fn mlp_inputs(
        &self,
        l: usize,
        h1: &B::Tensor,
    ) -> Result<(Option<B::Tensor>, B::Tensor)> {
        let be = self.backend();
        let w = &self.weights.layers[l];
        let g2 = w.gpt2_bias.as_ref();
        let x2 = self.norm(h1, &w.post_attention_layernorm, g2.map(|b| &b.ln_2))?;
        Ok(match &w.gate_proj {
            Some(gate_proj) => (
                Some(be.matmul(&x2, gate_proj, Transpose::NT)?),
                be.matmul(&x2, &w.up_proj, Transpose::NT)?,
            ),
            None => (None, self.linear(&x2, &w.up_proj, g2.map(|b| &b.c_fc))?),
        })
    }

    /// Block `l` decoding the rows of `h` at positions `pos0 …`: appends their keys and values
    /// to the cache at those rows and returns the new residual stream. The arithmetic of
    /// [`Self::block`], through the backend's fused decoding ops.
    pub(super) fn block_cached(
        &self,
        l: usize,
        h: &B::Tensor,
        cache: &mut KvCache<B::Tensor>,
        pos0: usize,
        positions: &B::Tensor,
        ranges: &B::Tensor,
    ) -> Result<B::Tensor> {
        let be = self.backend();
        let w = &self.weights.layers[l];
        let eps = self.config.rms_eps;
        let (Some(gate_proj), None) = (&w.gate_proj, &w.gpt2_bias) else {
            return self.block_cached_gpt2(l, h, cache, pos0, ranges);
        };
        let qkv = QkvDecode {
            norm: &w.input_layernorm,
            eps,
            proj: [&w.q_proj, &w.k_proj, &w.v_proj],
            bias: w.qkv_bias.as_ref().map(|b| [&b.q, &b.k, &b.v]),
            positions,
            table: self.rope_table(),
            head_dim: self.config.head_dim,
            pos0,
        };
        let q = be.decode_qkv(h, &qkv, &mut cache.k[l], &mut cache.v[l])?;
        let att = be.attention(&q, &cache.k[l], &cache.v[l], ranges, self.attn_shape())?;
        let h1 = be.matmul_nt_residual(&att, &w.o_proj, h)?;
        let key = be.norm_gate_up(&h1, &w.post_attention_layernorm, eps, gate_proj, &w.up_proj)?;
        be.matmul_nt_residual(&key, &w.down_proj, &h1)
    }

    /// [`Self::block_cached`] for GPT-2, op by op (the fused decoding ops are RMSNorm's and
    /// SwiGLU's): the arithmetic of [`Self::block`].
    fn block_cached_gpt2(
        &self,
        l: usize,
        h: &B::Tensor,
        cache: &mut KvCache<B::Tensor>,
        pos0: usize,
        ranges: &B::Tensor,
    ) -> Result<B::Tensor> {
        let be = self.backend();
        let w = &self.weights.layers[l];
        let (Some(g2), Some(bias)) = (&w.gpt2_bias, &w.qkv_bias) else {
            panic!("block_cached_gpt2 on a block without GPT-2's biases")
        };
        let x = self.norm(h, &w.input_layernorm, Some(&g2.ln_1))?;
        let q = self.linear(&x, &w.q_proj, Some(&bias.q))?;
        let k = self.linear(&x, &w.k_proj, Some(&bias.k))?;
        let v = self.linear(&x, &w.v_proj, Some(&bias.v))?;
        be.write_rows(&mut cache.k[l], pos0, &k)?;
        be.write_rows(&mut cache.v[l], pos0, &v)?;
        let att = be.attention(&q, &cache.k[l], &cache.v[l], ranges, self.attn_shape())?;
        let h1 = be.add(h, &self.linear(&att, &w.o_proj, Some(&g2.attn_c_proj))?)?;
        let x2 = self.norm(&h1, &w.post_attention_layernorm, Some(&g2.ln_2))?;
        let key = be.gelu(&self.linear(&x2, &w.up_proj, Some(&g2.c_fc))?)?;
        be.add(&h1, &self.linear(&key, &w.down_proj, Some(&g2.mlp_c_proj))?)
    }
}
