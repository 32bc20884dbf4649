//! The interface the model, the editor and the evaluation are written against, once.
//!
//! Two implementations exist: [`crate::cpu::CpuBackend`] (plain Rust, faer for matmuls, threads
//! natively) and [`crate::gpu::GpuBackend`] (wgpu with our WGSL kernels, natively and on browser
//! WebGPU). Every op has a CPU reference in [`crate::ops`]; the GPU kernels are tested against it.
//!
//! Tensors are dense, row-major, 32-bit (f32, or u32 for token ids, positions and ranges). Ops
//! return new tensors and enqueue work; only [`Backend::read`] waits, and it is `async` because the
//! browser cannot block on the GPU. Activations are *packed*: a batch of sequences of different
//! lengths is one `(N, D)` matrix of all their tokens, and attention is told, per query row, which
//! key rows it may see (see [`Backend::attention`]). There is no padding anywhere.
//!
//! Ops panic when their *own* shape contract is broken (that is a bug in the caller, which is this
//! crate); they return an error for anything the adapter or the user can cause: a buffer over the
//! adapter's limit, a lost device.

use std::future::Future;

use crate::Result;

/// Element type of a tensor. Both are 32 bits wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U32,
}

/// What every backend tensor can tell about itself.
pub trait TensorInfo {
    /// Row-major shape.
    fn shape(&self) -> &[usize];
    /// Element type.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize {
        self.shape().iter().product()
    }
    /// True when the tensor holds no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shape of a matrix product `C = op(A) · op(B)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transpose {
    /// `A` is stored `(K, M)` and used transposed.
    pub a: bool,
    /// `B` is stored `(N, K)` and used transposed (the `nn.Linear` weight layout).
    pub b: bool,
}

impl Transpose {
    /// `A (M,K) · B (K,N)`.
    pub const NN: Transpose = Transpose { a: false, b: false };
    /// `A (M,K) · B(N,K)ᵀ`: a linear layer `x · Wᵀ` with `W` stored `[out][in]`.
    pub const NT: Transpose = Transpose { a: false, b: true };
    /// `A(K,M)ᵀ · B (K,N)`: a Gram matrix `Kᵀ K`, or a weight gradient.
    pub const TN: Transpose = Transpose { a: true, b: false };
}

/// Grouped-query attention geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttnShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; `n_heads` is a multiple of it and query head `h` reads kv head
    /// `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// The z optimisation's state on a backend, a row per request of the batch: `δ`, Adam's
/// moments, and `‖δ‖` after the last step.
///
/// # Shapes
/// `delta, m, v (N, d)`, `norms (N)`.
pub struct ZAdamState<T> {
    pub delta: T,
    pub m: T,
    pub v: T,
    pub norms: T,
}

/// One [`Backend::z_adam`] step: the loss gradient, the requests that step, their constants,
/// and Adam's step size and bias correction ([`crate::ops::adam::step_constants`]).
///
/// # Shapes
/// `grad (N, d)`; `rows (R)` u32, distinct request indices; `coef (N, 2)`: per request the
/// weight-decay factor `wd / ‖h‖²` and the largest `‖δ‖`.
pub struct ZAdamStep<'a, T> {
    pub grad: &'a T,
    pub rows: &'a T,
    pub coef: &'a T,
    pub step: f32,
    pub bc2_sqrt: f32,
}

/// The weights and positions of [`Backend::decode_qkv`].
///
/// # Shapes
/// `norm (d)`; `proj` = q, k, v projections `(Hq·hd, d)`, `(Hkv·hd, d)`, `(Hkv·hd, d)`; `bias`
/// their biases (Qwen2); `positions (N)` u32, equal to `pos0 … pos0 + N − 1`; `table (P, hd)`.
pub struct QkvDecode<'a, T> {
    pub norm: &'a T,
    pub eps: f32,
    pub proj: [&'a T; 3],
    pub bias: Option<[&'a T; 3]>,
    pub positions: &'a T,
    pub table: &'a T,
    pub head_dim: usize,
    pub pos0: usize,
}

/// The op set. See the module docs for conventions; each method documents its shapes.
///
/// `u32` tensors (ids, positions, row lists, ranges) are created with [`Backend::upload_u32`].
pub trait Backend {
    /// A tensor living on this backend. Dropping it frees (or recycles) its memory.
    type Tensor: TensorInfo;

    /// Human-readable description: backend kind, adapter name, driver.
    fn describe(&self) -> String;

    /// What the device has been asked to do so far (dispatches, submits, readbacks, …), for
    /// the benchmarks and the count tests; `None` on the cpu backend.
    fn device_counters(&self) -> Option<crate::gpu::GpuCounters> {
        None
    }

    /// Copies host data into a new tensor. `name` is used in error messages only.
    ///
    /// # Errors
    /// [`crate::Error::BufferTooLarge`] when the tensor does not fit one binding of the adapter.
    fn upload(&self, name: &str, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;

    /// Moves a host tensor onto the backend (the cpu backend keeps the allocation).
    fn upload_owned(&self, name: &str, data: Vec<f32>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload(name, &data, shape)
    }

    /// Moves a loaded weight onto the backend. A weight kept in its storage type
    /// ([`crate::model::host::Stored`]) is widened to f32 unless the backend can use it as it is
    /// (the cpu backend keeps it: its matmuls and embedding gather decode it slice by slice).
    fn upload_host(&self, t: crate::model::HostTensor) -> Result<Self::Tensor> {
        let (name, shape) = (t.name.clone(), t.shape.clone());
        self.upload_owned(&name, t.into_f32(), &shape)
    }

    /// Copies host `u32` data into a new tensor.
    fn upload_u32(&self, name: &str, data: &[u32], shape: &[usize]) -> Result<Self::Tensor>;

    /// A new tensor filled with zeros.
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor>;

    /// A copy of `t`.
    fn copy(&self, t: &Self::Tensor) -> Result<Self::Tensor>;

    /// Reads an f32 tensor back to the host, after all work enqueued so far. A backend may
    /// start the transfer when this is called (the gpu backend does): work enqueued between
    /// the call and the await then runs on the device while the host waits.
    fn read(&self, t: &Self::Tensor) -> impl Future<Output = Result<Vec<f32>>>;

    /// Reads a u32 tensor back to the host.
    fn read_u32(&self, t: &Self::Tensor) -> impl Future<Output = Result<Vec<u32>>>;

    /// Row gather from an embedding table.
    ///
    /// # Shapes
    /// `table (V, D)`, `ids (N)` u32 → `(N, D)`. Ids `≥ V` are a caller bug.
    fn embedding(&self, table: &Self::Tensor, ids: &Self::Tensor) -> Result<Self::Tensor>;

    /// RMSNorm: `y = x / sqrt(mean(x²) + eps) * w`, per row.
    ///
    /// # Shapes
    /// `x (N, D)`, `w (D)` → `(N, D)`.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;

    /// Matrix product `C = op(A) · op(B)`.
    ///
    /// # Shapes
    /// `A (M, K)` (or `(K, M)` with `t.a`), `B (K, N)` (or `(N, K)` with `t.b`) → `C (M, N)`.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor, t: Transpose) -> Result<Self::Tensor>;

    /// `C += op(A) · op(B)` in place (used to accumulate Gram matrices).
    fn matmul_acc(
        &self,
        c: &mut Self::Tensor,
        a: &Self::Tensor,
        b: &Self::Tensor,
        t: Transpose,
    ) -> Result<()>;

    /// Rotary position embedding, Hugging Face "rotate half" layout: within each head the first
    /// half of the coordinates pairs with the second half.
    ///
    /// # Shapes
    /// `x (N, H·hd)`, `positions (N)` u32, `table (P, hd)` where row `p` is
    /// `[cos(p·f_0) … cos(p·f_{hd/2−1}), sin(p·f_0) … sin(p·f_{hd/2−1})]` → `(N, H·hd)`.
    fn rope(
        &self,
        x: &Self::Tensor,
        positions: &Self::Tensor,
        table: &Self::Tensor,
        head_dim: usize,
    ) -> Result<Self::Tensor>;

    /// The adjoint of [`Backend::rope`] (rotation by the opposite angle).
    fn rope_backward(
        &self,
        dy: &Self::Tensor,
        positions: &Self::Tensor,
        table: &Self::Tensor,
        head_dim: usize,
    ) -> Result<Self::Tensor>;

    /// Softmax attention with grouped KV heads, scale `1/sqrt(hd)`. Query row `i` attends to key
    /// rows `ranges[i].0 .. ranges[i].1` (half-open, non-empty); causality and sequence packing
    /// are expressed through these ranges.
    ///
    /// # Shapes
    /// `q (Nq, Hq·hd)`, `k (Nk, Hkv·hd)`, `v (Nk, Hkv·hd)`, `ranges (Nq, 2)` u32 → `(Nq, Hq·hd)`.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        ranges: &Self::Tensor,
        shape: AttnShape,
    ) -> Result<Self::Tensor>;

    /// Gradients of [`Backend::attention`], for any ranges (the query rows and the key rows may
    /// differ, as when only some rows of a batch are recomputed).
    ///
    /// # Shapes
    /// As the forward, plus `dout (Nq, Hq·hd)` → `(dq, dk, dv)` shaped like `q, k, v`.
    #[allow(clippy::type_complexity)]
    fn attention_backward(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        ranges: &Self::Tensor,
        dout: &Self::Tensor,
        shape: AttnShape,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;

    /// SwiGLU gate: `silu(gate) * up`, elementwise.
    ///
    /// # Shapes
    /// `gate (N, F)`, `up (N, F)` → `(N, F)`.
    fn silu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;

    /// Gradients of [`Backend::silu_mul`]: `(d gate, d up)`.
    fn silu_mul_backward(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    /// Gradient of [`Backend::rms_norm`] with respect to `x` (the weight is frozen).
    ///
    /// # Shapes
    /// `x (N, D)`, `w (D)`, `dy (N, D)` → `(N, D)`.
    fn rms_norm_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// LayerNorm: `y = (x − μ) / sqrt(var + eps) · w + b`, per row, with `μ` the row's mean and
    /// `var` its population variance (the mean of squared deviations), as `torch.nn.LayerNorm`
    /// (GPT-2's `ln_1`, `ln_2` and `ln_f`).
    ///
    /// # Shapes
    /// `x (N, D)`, `w (D)`, `b (D)` → `(N, D)`.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Gradient of [`Backend::layer_norm`] with respect to `x` (the weight and bias are frozen):
    /// with `x̂ = (x − μ) · r`, `r = 1 / sqrt(var + eps)` and `g = w ⊙ dy`,
    /// `dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))`, per row.
    ///
    /// # Shapes
    /// `x (N, D)`, `w (D)`, `dy (N, D)` → `(N, D)`.
    fn layer_norm_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// GPT-2's GELU ("gelu_new", the tanh approximation),
    /// `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`, elementwise.
    ///
    /// # Shapes
    /// Any; the output is shaped like `x` (`(N, F)` in the MLP).
    fn gelu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Gradient of [`Backend::gelu`]: `dy · gelu′(x)`.
    ///
    /// # Shapes
    /// `x`, `dy` of one shape → that shape.
    fn gelu_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// Elementwise `a + b`.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x + b` with the bias broadcast over the rows.
    ///
    /// # Shapes
    /// `x (N, C)`, `b (C)` → `(N, C)`.
    fn add_bias(&self, x: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// In place, `x[rows[r], :] += v[r, :]` for every `r` (rows may repeat; they add up).
    ///
    /// # Shapes
    /// `x (N, D)`, `rows (R)` u32, `v (R, D)`.
    fn add_rows(&self, x: &mut Self::Tensor, rows: &Self::Tensor, v: &Self::Tensor) -> Result<()>;

    /// In place, `x[rows[r], :] = 0` for every `r` (rows may repeat).
    ///
    /// # Shapes
    /// `x (N, D)`, `rows (R)` u32.
    fn zero_rows(&self, x: &mut Self::Tensor, rows: &Self::Tensor) -> Result<()>;

    /// Row gather: `out[r] = x[rows[r]]`.
    ///
    /// # Shapes
    /// `x (N, D)`, `rows (R)` u32 → `(R, D)`.
    fn gather_rows(&self, x: &Self::Tensor, rows: &Self::Tensor) -> Result<Self::Tensor>;

    /// In place, `dst[row0 + r, :] = src[r, :]` (a KV-cache append).
    fn write_rows(&self, dst: &mut Self::Tensor, row0: usize, src: &Self::Tensor) -> Result<()>;

    /// In place, `w[:, cols[c]] += delta[:, c]`: a column-sparse weight update.
    ///
    /// # Shapes
    /// `w (N, K)`, `cols (C)` u32 (distinct), `delta (N, C)`.
    fn add_columns(
        &self,
        w: &mut Self::Tensor,
        cols: &Self::Tensor,
        delta: &Self::Tensor,
    ) -> Result<()>;

    /// Max-stabilised log-softmax over each row.
    ///
    /// # Shapes
    /// `x (N, V)` → `(N, V)`.
    fn log_softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// [`Backend::log_softmax`] of a tensor the caller gives up, computed over its own storage
    /// where the backend can (the cpu backend): the z loop's `(R, V)` logits are not copied.
    ///
    /// # Shapes
    /// `x (N, V)` → `(N, V)`.
    fn log_softmax_into(&self, x: Self::Tensor) -> Result<Self::Tensor> {
        self.log_softmax(&x)
    }

    /// Gradient of [`Backend::log_softmax`]: `dx = dy − softmax(x) · Σ dy`, given its output.
    ///
    /// # Shapes
    /// `logp (N, V)`, `dy (N, V)` → `(N, V)`.
    fn log_softmax_backward(&self, logp: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// The z loss's per-row terms, and their gradient with respect to the logits that `logp`
    /// came from (through the log-softmax), so that only the terms come back to the host. Row
    /// `r` of `logp` is
    /// - a target row (`labels[r] < V`): `values[r] = logp[r, labels[r]]`, and `dlogp[r]` is
    ///   `weights[r]` at the label and 0 elsewhere;
    /// - a KL row (`labels[r] == u32::MAX`), against reference row `refs[kl_rows[r]]`:
    ///   `values[r] = Σ_v p_v (logp[r, v] − ref_v)` with `p = exp(logp[r])` (summed in f64 on
    ///   the cpu backend), and `dlogp[r] = kl_factor · p · (logp[r] − ref + 1)`;
    ///
    /// and the gradient returned is [`Backend::log_softmax_backward`]`(logp, dlogp)`, bit for bit.
    /// `logp` is consumed: the cpu backend writes the gradient over it, so the z loop's
    /// backward pass holds one `(R, V)` buffer, not three.
    ///
    /// # Shapes
    /// `logp (R, V)`, `labels (R)` u32, `weights (R)`, `refs (K, V)`, `kl_rows (R)` u32 →
    /// `(dlogits (R, V), values (R))`.
    fn z_loss(
        &self,
        logp: Self::Tensor,
        labels: &Self::Tensor,
        weights: &Self::Tensor,
        refs: &Self::Tensor,
        kl_rows: &Self::Tensor,
        kl_factor: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    // Decoding's fused ops. Each default is its composition of the ops above in [`unfused`],
    // in the order the unfused block calls them, so a backend that keeps the defaults (the cpu
    // backend) computes exactly what the unfused block computes. The gpu backend runs them as
    // one kernel each when `h` or `x` has at most 8 rows (`shaders/gemv_fused.wgsl`).

    /// `rms_norm(h, norm) · Wᵀ` (the final norm and the LM head).
    ///
    /// # Shapes
    /// `h (N, K)`, `norm (K)`, `w (V, K)` → `(N, V)`.
    fn norm_matmul_nt(
        &self,
        h: &Self::Tensor,
        norm: &Self::Tensor,
        eps: f32,
        w: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        unfused::norm_matmul_nt(self, h, norm, eps, w)
    }

    /// `r + x · Wᵀ` (a projection back into the residual stream, with its residual add).
    ///
    /// # Shapes
    /// `x (N, K)`, `w (D, K)`, `r (N, D)` → `(N, D)`.
    fn matmul_nt_residual(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        r: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        unfused::matmul_nt_residual(self, x, w, r)
    }

    /// The MLP's key `silu(x · Gᵀ) ⊙ (x · Uᵀ)` with `x = rms_norm(h, norm)`.
    ///
    /// # Shapes
    /// `h (N, d)`, `norm (d)`, `gate, up (F, d)` → `(N, F)`.
    fn norm_gate_up(
        &self,
        h: &Self::Tensor,
        norm: &Self::Tensor,
        eps: f32,
        gate: &Self::Tensor,
        up: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        unfused::norm_gate_up(self, h, norm, eps, gate, up)
    }

    /// Attention's input while decoding: `x = rms_norm(h, norm)`, `q = rope(x·Wqᵀ + bq)`,
    /// `k = rope(x·Wkᵀ + bk)` and `v = x·Wvᵀ + bv` at positions `pos0 …`, with `k` and `v`
    /// written into the caches at rows `pos0 …`; returns `q`.
    ///
    /// # Shapes
    /// `h (N, d)`; see [`QkvDecode`]; `cache_k, cache_v (capacity, Hkv·hd)` → `(N, Hq·hd)`.
    fn decode_qkv(
        &self,
        h: &Self::Tensor,
        p: &QkvDecode<'_, Self::Tensor>,
        cache_k: &mut Self::Tensor,
        cache_v: &mut Self::Tensor,
    ) -> Result<Self::Tensor> {
        unfused::decode_qkv(self, h, p, cache_k, cache_v)
    }

    /// Starts the work recorded so far on the device, without waiting for it: a hint for a
    /// loop that queues the next step before it awaits a read (on a backend that computes at
    /// once, such as the cpu backend, it does nothing).
    fn submit(&self) {}

    /// One Adam step of the z optimisation for the requests in `s.rows`, on the device: the
    /// weight-decay gradient, Adam, the norm clamp, and `‖δ‖` of each into `state.norms`.
    /// The specification is [`crate::ops::adam::z_adam`].
    ///
    /// # Shapes
    /// See [`ZAdamState`] and [`ZAdamStep`].
    fn z_adam(
        &self,
        state: &mut ZAdamState<Self::Tensor>,
        s: &ZAdamStep<'_, Self::Tensor>,
    ) -> Result<()>;

    /// Whether work enqueued after a read has started runs while the host waits for it (the gpu
    /// backend; a cpu backend computes as ops are called). The z loop then enqueues each step's
    /// update before it reads the step's loss, instead of after.
    fn reads_overlap(&self) -> bool {
        false
    }

    /// Reads several tensors back to the host after all work enqueued so far, as one transfer
    /// on the gpu backend (one wait instead of one per tensor).
    fn read_many(&self, ts: &[&Self::Tensor]) -> impl Future<Output = Result<Vec<Vec<f32>>>> {
        async move {
            let mut out = Vec::with_capacity(ts.len());
            for t in ts {
                out.push(self.read(t).await?);
            }
            Ok(out)
        }
    }

    /// Index of the largest value of each row (the lowest index on ties).
    ///
    /// # Shapes
    /// `x (N, V)` → `(N)` u32.
    fn argmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Seeded top-k sampling: keep the `k` largest logits of each row (ties to the lower
    /// index), take their softmax, and return the token at which the running probability (in
    /// descending-logit order) first exceeds `uniforms[row]`.
    ///
    /// # Shapes
    /// `logits (N, V)`, `uniforms (N)` in `[0, 1)` → `(N)` u32.
    fn sample_top_k(
        &self,
        logits: &Self::Tensor,
        k: usize,
        uniforms: &Self::Tensor,
    ) -> Result<Self::Tensor>;
}

/// The fused ops' compositions of plain ops: [`Backend`]'s defaults, and what a backend that
/// fuses them falls back to where its kernel does not apply.
pub mod unfused {
    use super::{Backend, QkvDecode, Transpose};
    use crate::Result;

    /// [`Backend::norm_matmul_nt`] as `rms_norm`, then `matmul`.
    pub fn norm_matmul_nt<B: Backend + ?Sized>(
        be: &B,
        h: &B::Tensor,
        norm: &B::Tensor,
        eps: f32,
        w: &B::Tensor,
    ) -> Result<B::Tensor> {
        let x = be.rms_norm(h, norm, eps)?;
        be.matmul(&x, w, Transpose::NT)
    }

    /// [`Backend::matmul_nt_residual`] as `matmul`, then `add`.
    pub fn matmul_nt_residual<B: Backend + ?Sized>(
        be: &B,
        x: &B::Tensor,
        w: &B::Tensor,
        r: &B::Tensor,
    ) -> Result<B::Tensor> {
        let y = be.matmul(x, w, Transpose::NT)?;
        be.add(r, &y)
    }

    /// [`Backend::norm_gate_up`] as `rms_norm`, two `matmul`s and `silu_mul`.
    pub fn norm_gate_up<B: Backend + ?Sized>(
        be: &B,
        h: &B::Tensor,
        norm: &B::Tensor,
        eps: f32,
        gate: &B::Tensor,
        up: &B::Tensor,
    ) -> Result<B::Tensor> {
        let x = be.rms_norm(h, norm, eps)?;
        let g = be.matmul(&x, gate, Transpose::NT)?;
        let u = be.matmul(&x, up, Transpose::NT)?;
        be.silu_mul(&g, &u)
    }

    /// [`Backend::decode_qkv`] as `rms_norm`, three projections (plus biases), two `rope`s and
    /// two `write_rows`.
    pub fn decode_qkv<B: Backend + ?Sized>(
        be: &B,
        h: &B::Tensor,
        p: &QkvDecode<'_, B::Tensor>,
        cache_k: &mut B::Tensor,
        cache_v: &mut B::Tensor,
    ) -> Result<B::Tensor> {
        let x = be.rms_norm(h, p.norm, p.eps)?;
        let project = |i: usize| -> Result<B::Tensor> {
            let y = be.matmul(&x, p.proj[i], Transpose::NT)?;
            match p.bias {
                Some(b) => be.add_bias(&y, b[i]),
                None => Ok(y),
            }
        };
        let q = be.rope(&project(0)?, p.positions, p.table, p.head_dim)?;
        let k = be.rope(&project(1)?, p.positions, p.table, p.head_dim)?;
        let v = project(2)?;
        be.write_rows(cache_k, p.pos0, &k)?;
        be.write_rows(cache_v, p.pos0, &v)?;
        Ok(q)
    }
}
