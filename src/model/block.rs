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
/// `gate, up (N, d_ff)`; `key (N, d_ff)` the `down_proj` input.
pub struct BlockActs<T> {
    pub q: T,
    pub k: T,
    pub v: T,
    pub h1: T,
    pub gate: T,
    pub up: T,
    pub key: T,
}

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

    /// Block `l` on a packed batch (no cache), returning its output and its activations.
    pub fn block_packed(
        &self,
        l: usize,
        h: &B::Tensor,
        bt: &BatchTensors<B::Tensor>,
        down_proj: Option<&B::Tensor>,
    ) -> Result<(B::Tensor, BlockActs<B::Tensor>)> {
        let mut ctx = Ctx {
            positions: &bt.positions,
            ranges: &bt.ranges,
            kv: Kv::Packed,
        };
        self.block(l, h, &mut ctx, down_proj)
    }

    /// Block `l` on some rows of a packed batch: `h`, `positions` and `ranges` are those rows',
    /// `part` holds everyone's fixed keys and values. The activations' `k`, `v` are the full
    /// `(N, Hkv·hd)` matrices.
    pub fn block_partial(
        &self,
        l: usize,
        h: &B::Tensor,
        positions: &B::Tensor,
        ranges: &B::Tensor,
        part: &PartialKv<B::Tensor>,
    ) -> Result<(B::Tensor, BlockActs<B::Tensor>)> {
        let mut ctx = Ctx {
            positions,
            ranges,
            kv: Kv::Partial(part),
        };
        self.block(l, h, &mut ctx, None)
    }

    /// One transformer block; returns the new residual stream and what it computed on the way.
    pub(super) fn block(
        &self,
        l: usize,
        h: &B::Tensor,
        ctx: &mut Ctx<'_, B::Tensor>,
        down_proj: Option<&B::Tensor>,
    ) -> Result<(B::Tensor, BlockActs<B::Tensor>)> {
        let be = self.backend();
        let w = &self.weights.layers[l];
        let (eps, hd) = (self.config.rms_eps, self.config.head_dim);
        let x = be.rms_norm(h, &w.input_layernorm, eps)?; // (N, d)
        // A projection, plus its bias where the architecture has one (Qwen2).
        let project = |weight: &B::Tensor, bias: Option<&B::Tensor>| -> Result<B::Tensor> {
            let y = be.matmul(&x, weight, Transpose::NT)?;
            match bias {
                Some(b) => be.add_bias(&y, b),
                None => Ok(y),
            }
        };
        let bias = w.qkv_bias.as_ref();
        let q = be.rope(
            &project(&w.q_proj, bias.map(|b| &b.q))?,
            ctx.positions,
            self.rope_table(),
            hd,
        )?; // (N, Hq·hd)
        let mut k = be.rope(
            &project(&w.k_proj, bias.map(|b| &b.k))?,
            ctx.positions,
            self.rope_table(),
            hd,
        )?; // (N, Hkv·hd)
        let mut v = project(&w.v_proj, bias.map(|b| &b.v))?; // (N, Hkv·hd)
        let att = match &mut ctx.kv {
            Kv::Packed => be.attention(&q, &k, &v, ctx.ranges, self.attn_shape())?,
            Kv::Partial(part) => {
                let (Some(k0), Some(v0)) = (part.k[l].as_ref(), part.v[l].as_ref()) else {
                    panic!("no fixed keys/values for block {l}")
                };
                let mut kf = be.copy(k0)?;
                be.add_rows(&mut kf, &part.rows, &k)?;
                let mut vf = be.copy(v0)?;
                be.add_rows(&mut vf, &part.rows, &v)?;
                let att = be.attention(&q, &kf, &vf, ctx.ranges, self.attn_shape())?;
                (k, v) = (kf, vf);
                att
            }
        };
        let h1 = be.add(h, &be.matmul(&att, &w.o_proj, Transpose::NT)?)?;
        let x2 = be.rms_norm(&h1, &w.post_attention_layernorm, eps)?;
        let gate = be.matmul(&x2, &w.gate_proj, Transpose::NT)?; // (N, d_ff)
        let up = be.matmul(&x2, &w.up_proj, Transpose::NT)?;
        let key = be.silu_mul(&gate, &up)?; // (N, d_ff): the NSE key
        let mlp = be.matmul(&key, down_proj.unwrap_or(&w.down_proj), Transpose::NT)?;
        let out = be.add(&h1, &mlp)?;
        Ok((
            out,
            BlockActs {
                q,
                k,
                v,
                h1,
                gate,
                up,
                key,
            },
        ))
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
        let key = be.norm_gate_up(
            &h1,
            &w.post_attention_layernorm,
            eps,
            &w.gate_proj,
            &w.up_proj,
        )?;
        be.matmul_nt_residual(&key, &w.down_proj, &h1)
    }
}
