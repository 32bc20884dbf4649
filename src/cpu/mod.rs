//! The cpu backend: the [`crate::ops`] references behind the [`Backend`] interface.
//!
//! Not a second-class path: it is what tests, CI and GPU-less users run, and the page's fallback
//! when WebGPU is missing. Matmuls (`matmul`) and attention (`attention`) go through faer (SIMD,
//! threaded natively); the other ops are the plain-loop references, parallel over rows natively.
//! `simd` keeps faer's AVX-512 state from slowing down the rest of the process.

pub mod attention;
pub mod matmul;
pub(crate) mod simd;
pub mod stored;

use std::future::Future;
use std::sync::Arc;

use crate::Result;
use crate::backend::{AttnShape, Backend, DType, TensorInfo, Transpose, ZAdamState, ZAdamStep};
use crate::model::HostTensor;
use crate::model::host::{HostData, Stored};
use crate::ops::{elementwise, embedding, layer_norm, rms_norm, rope, rows, softmax};

/// Storage of a [`CpuTensor`].
#[derive(Clone, Debug, PartialEq)]
enum Data {
    F32(Vec<f32>),
    U32(Vec<u32>),
    /// A weight matrix kept in its storage type (f16, bf16, ggml blocks), shared by copies;
    /// matmuls, the embedding gather and reads decode it, and a write widens it to f32 first.
    Stored(Arc<Stored>),
}

/// A dense row-major tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    shape: Vec<usize>,
    data: Data,
}

impl CpuTensor {
    /// An f32 tensor; panics if `data` does not fill `shape`.
    pub fn from_f32(data: Vec<f32>, shape: &[usize]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} vs {} values",
            data.len()
        );
        CpuTensor {
            shape: shape.to_vec(),
            data: Data::F32(data),
        }
    }

    /// A u32 tensor; panics if `data` does not fill `shape`.
    pub fn from_u32(data: Vec<u32>, shape: &[usize]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} vs {} values",
            data.len()
        );
        CpuTensor {
            shape: shape.to_vec(),
            data: Data::U32(data),
        }
    }

    /// The values of a dense f32 tensor.
    ///
    /// # Panics
    /// On a u32 tensor, and on a stored weight: only the ops that decode one (matmul's `b`, the
    /// embedding table, reads, row gathers) may be given one, so anything else is a bug.
    pub fn f32(&self) -> &[f32] {
        match &self.data {
            Data::F32(v) => v,
            Data::U32(_) => panic!("expected an f32 tensor, got u32 {:?}", self.shape),
            Data::Stored(s) => panic!(
                "expected a dense f32 tensor, got a {:?} weight kept as {}",
                self.shape, s.ty
            ),
        }
    }

    /// The f32 values, decoded when the tensor is a weight kept in its storage type (what a
    /// caller outside the ops wants to read a weight with).
    pub fn f32_decoded(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.data {
            Data::Stored(s) => std::borrow::Cow::Owned(s.to_f32()),
            _ => std::borrow::Cow::Borrowed(self.f32()),
        }
    }

    /// Mutable values of an f32 tensor. A stored weight is widened to f32 first, in place, with
    /// exactly the values an f32 load gives (an edited `down_proj` becomes f32 at its first
    /// edit; the weights no edit touches stay compact).
    pub fn f32_mut(&mut self) -> &mut [f32] {
        if let Data::Stored(s) = &self.data {
            self.data = Data::F32(s.to_f32());
        }
        match &mut self.data {
            Data::F32(v) => v,
            Data::U32(_) => panic!("expected an f32 tensor, got u32 {:?}", self.shape),
            Data::Stored(_) => unreachable!("widened above"),
        }
    }

    /// The values of a u32 tensor.
    pub fn u32(&self) -> &[u32] {
        match &self.data {
            Data::U32(v) => v,
            _ => panic!("expected a u32 tensor, got f32 {:?}", self.shape),
        }
    }

    /// The storage type of a weight kept compact, `None` for a dense tensor.
    pub fn stored_type(&self) -> Option<crate::model::gguf::GgmlType> {
        match &self.data {
            Data::Stored(s) => Some(s.ty),
            _ => None,
        }
    }

    /// Bytes the values take in memory (a stored weight shares them with its copies).
    pub fn byte_len(&self) -> usize {
        match &self.data {
            Data::F32(v) => 4 * v.len(),
            Data::U32(v) => 4 * v.len(),
            Data::Stored(s) => s.bytes.len(),
        }
    }

    /// Last dimension (the row width).
    fn width(&self) -> usize {
        *self
            .shape
            .last()
            .expect("tensor has at least one dimension")
    }
}

impl TensorInfo for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) | Data::Stored(_) => DType::F32,
            Data::U32(_) => DType::U32,
        }
    }
}

/// `c = op(a) · op(b)` for dense or stored operands (a stored `a`, which no caller makes, is
/// decoded whole).
fn matmul_any(
    c: &mut [f32],
    a: &CpuTensor,
    b: &CpuTensor,
    dims: crate::ops::matmul::MatmulDims,
    t: Transpose,
    accumulate: bool,
) {
    let a = a.f32_decoded();
    match &b.data {
        Data::Stored(w) => stored::matmul_stored_into(c, &a, w, dims, t, accumulate),
        _ => matmul::matmul_into(c, &a, b.f32(), dims, t, accumulate),
    }
}

/// Rows `ids` of a stored matrix, decoded.
fn gather_stored(s: &Stored, ids: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * s.cols);
    for &i in ids {
        let i = i as usize;
        assert!(i < s.rows, "row {i} of a {}-row matrix", s.rows);
        out.extend(s.rows_f32(i, i + 1));
    }
    out
}

/// The cpu backend. Stateless; cheap to create.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

fn same_shape(a: &CpuTensor, b: &CpuTensor, op: &str) {
    assert_eq!(a.shape, b.shape, "{op}: shapes differ");
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn describe(&self) -> String {
        #[cfg(not(target_arch = "wasm32"))]
        let threads = rayon::current_num_threads();
        #[cfg(target_arch = "wasm32")]
        let threads = 1;
        format!("cpu ({threads} threads, faer GEMM)")
    }

    fn upload(&self, _name: &str, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor::from_f32(data.to_vec(), shape))
    }

    fn upload_owned(&self, _name: &str, data: Vec<f32>, shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor::from_f32(data, shape))
    }

    /// Keeps a stored weight in its storage type.
    fn upload_host(&self, t: HostTensor) -> Result<CpuTensor> {
        Ok(match t.data {
            HostData::F32(v) => CpuTensor::from_f32(v, &t.shape),
            HostData::Stored(s) => CpuTensor {
                shape: t.shape,
                data: Data::Stored(Arc::new(s)),
            },
        })
    }

    fn upload_u32(&self, _name: &str, data: &[u32], shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor::from_u32(data.to_vec(), shape))
    }

    fn zeros(&self, shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor::from_f32(
            vec![0.0; shape.iter().product()],
            shape,
        ))
    }

    fn copy(&self, t: &CpuTensor) -> Result<CpuTensor> {
        Ok(t.clone())
    }

    fn read(&self, t: &CpuTensor) -> impl Future<Output = Result<Vec<f32>>> {
        std::future::ready(Ok(t.f32_decoded().into_owned()))
    }

    fn read_u32(&self, t: &CpuTensor) -> impl Future<Output = Result<Vec<u32>>> {
        std::future::ready(Ok(t.u32().to_vec()))
    }

    fn embedding(&self, table: &CpuTensor, ids: &CpuTensor) -> Result<CpuTensor> {
        let d = table.width();
        let out = match &table.data {
            Data::Stored(s) => gather_stored(s, ids.u32()),
            _ => embedding::embedding_forward(table.f32(), d, ids.u32()),
        };
        Ok(CpuTensor::from_f32(out, &[ids.len(), d]))
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        assert_eq!(x.width(), w.len(), "rms_norm: width");
        Ok(CpuTensor::from_f32(
            rms_norm::rms_norm_forward(x.f32(), w.f32(), eps),
            &x.shape,
        ))
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor, t: Transpose) -> Result<CpuTensor> {
        let dims = crate::ops::matmul::MatmulDims::from_shapes(&a.shape, &b.shape, t);
        let mut c = vec![0.0; dims.m * dims.n];
        matmul_any(&mut c, a, b, dims, t, false);
        Ok(CpuTensor::from_f32(c, &[dims.m, dims.n]))
    }

    fn matmul_acc(
        &self,
        c: &mut CpuTensor,
        a: &CpuTensor,
        b: &CpuTensor,
        t: Transpose,
    ) -> Result<()> {
        let dims = crate::ops::matmul::MatmulDims::from_shapes(&a.shape, &b.shape, t);
        assert_eq!(c.shape, [dims.m, dims.n], "matmul_acc: output shape");
        matmul_any(c.f32_mut(), a, b, dims, t, true);
        Ok(())
    }

    fn rope(
        &self,
        x: &CpuTensor,
        positions: &CpuTensor,
        table: &CpuTensor,
        head_dim: usize,
    ) -> Result<CpuTensor> {
        let out = rope::rope_forward(x.f32(), positions.u32(), table.f32(), head_dim);
        Ok(CpuTensor::from_f32(out, &x.shape))
    }

    fn rope_backward(
        &self,
        dy: &CpuTensor,
        positions: &CpuTensor,
        table: &CpuTensor,
        head_dim: usize,
    ) -> Result<CpuTensor> {
        let out = rope::rope_backward(dy.f32(), positions.u32(), table.f32(), head_dim);
        Ok(CpuTensor::from_f32(out, &dy.shape))
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        ranges: &CpuTensor,
        shape: AttnShape,
    ) -> Result<CpuTensor> {
        let out =
            attention::attention_forward_blocked(q.f32(), k.f32(), v.f32(), ranges.u32(), shape);
        Ok(CpuTensor::from_f32(out, &q.shape))
    }

    fn attention_backward(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        ranges: &CpuTensor,
        dout: &CpuTensor,
        shape: AttnShape,
    ) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let (dq, dk, dv) = crate::ops::attention::attention_backward(
            q.f32(),
            k.f32(),
            v.f32(),
            ranges.u32(),
            dout.f32(),
            shape,
        );
        Ok((
            CpuTensor::from_f32(dq, &q.shape),
            CpuTensor::from_f32(dk, &k.shape),
            CpuTensor::from_f32(dv, &v.shape),
        ))
    }

    fn silu_mul(&self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        same_shape(gate, up, "silu_mul");
        Ok(CpuTensor::from_f32(
            elementwise::silu_mul_forward(gate.f32(), up.f32()),
            &gate.shape,
        ))
    }

    fn silu_mul_backward(
        &self,
        gate: &CpuTensor,
        up: &CpuTensor,
        dy: &CpuTensor,
    ) -> Result<(CpuTensor, CpuTensor)> {
        same_shape(gate, up, "silu_mul_backward");
        same_shape(gate, dy, "silu_mul_backward");
        let (dg, du) = elementwise::silu_mul_backward(gate.f32(), up.f32(), dy.f32());
        Ok((
            CpuTensor::from_f32(dg, &gate.shape),
            CpuTensor::from_f32(du, &gate.shape),
        ))
    }

    fn rms_norm_backward(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        dy: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        same_shape(x, dy, "rms_norm_backward");
        Ok(CpuTensor::from_f32(
            rms_norm::rms_norm_backward(x.f32(), w.f32(), dy.f32(), eps),
            &x.shape,
        ))
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        assert_eq!(w.shape, [x.width()], "layer_norm: weight width");
        assert_eq!(b.shape, [x.width()], "layer_norm: bias width");
        Ok(CpuTensor::from_f32(
            layer_norm::layer_norm_forward(x.f32(), w.f32(), b.f32(), eps),
            &x.shape,
        ))
    }

    fn layer_norm_backward(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        dy: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        assert_eq!(w.shape, [x.width()], "layer_norm_backward: weight width");
        same_shape(x, dy, "layer_norm_backward");
        Ok(CpuTensor::from_f32(
            layer_norm::layer_norm_backward(x.f32(), w.f32(), dy.f32(), eps),
            &x.shape,
        ))
    }

    fn gelu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::from_f32(
            elementwise::gelu_forward(x.f32()),
            &x.shape,
        ))
    }

    fn gelu_backward(&self, x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        same_shape(x, dy, "gelu_backward");
        Ok(CpuTensor::from_f32(
            elementwise::gelu_backward(x.f32(), dy.f32()),
            &x.shape,
        ))
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        same_shape(a, b, "add");
        Ok(CpuTensor::from_f32(
            elementwise::add_forward(a.f32(), b.f32()),
            &a.shape,
        ))
    }

    fn add_bias(&self, x: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        assert_eq!(b.shape, [x.width()], "add_bias: bias width");
        Ok(CpuTensor::from_f32(
            elementwise::add_bias_forward(x.f32(), b.f32()),
            &x.shape,
        ))
    }

    fn add_rows(&self, x: &mut CpuTensor, rows: &CpuTensor, v: &CpuTensor) -> Result<()> {
        let d = x.width();
        assert_eq!(v.shape, [rows.len(), d], "add_rows: v shape");
        rows::add_rows(x.f32_mut(), d, rows.u32(), v.f32());
        Ok(())
    }

    fn z_adam(
        &self,
        state: &mut ZAdamState<CpuTensor>,
        s: &ZAdamStep<'_, CpuTensor>,
    ) -> Result<()> {
        let d = state.delta.width();
        let n = state.delta.len() / d.max(1);
        assert_eq!(
            s.grad.shape(),
            state.delta.shape(),
            "z_adam: gradient shape"
        );
        assert_eq!(s.coef.len(), 2 * n, "z_adam: two constants per request");
        assert_eq!(state.norms.len(), n, "z_adam: one norm per request");
        assert!(
            s.rows.u32().iter().all(|&i| (i as usize) < n),
            "z_adam: row out of range"
        );
        let ZAdamState { delta, m, v, norms } = state;
        crate::ops::adam::z_adam(
            delta.f32_mut(),
            m.f32_mut(),
            v.f32_mut(),
            s.grad.f32(),
            s.rows.u32(),
            s.coef.f32(),
            norms.f32_mut(),
            d,
            s.step,
            s.bc2_sqrt,
        );
        Ok(())
    }

    fn z_loss(
        &self,
        mut logp: CpuTensor,
        labels: &CpuTensor,
        weights: &CpuTensor,
        refs: &CpuTensor,
        kl_rows: &CpuTensor,
        kl_factor: f32,
    ) -> Result<(CpuTensor, CpuTensor)> {
        let v = logp.width();
        let r = labels.len();
        assert_eq!(logp.len(), r * v, "z_loss: one label per row");
        assert_eq!(weights.len(), r, "z_loss: one weight per row");
        assert_eq!(kl_rows.len(), r, "z_loss: one KL row index per row");
        let values = softmax::z_loss_in_place(
            logp.f32_mut(),
            v,
            labels.u32(),
            weights.f32(),
            refs.f32(),
            kl_rows.u32(),
            kl_factor,
        );
        Ok((logp, CpuTensor::from_f32(values, &[r])))
    }

    fn zero_rows(&self, x: &mut CpuTensor, rows: &CpuTensor) -> Result<()> {
        let d = x.width();
        rows::zero_rows(x.f32_mut(), d, rows.u32());
        Ok(())
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &CpuTensor) -> Result<CpuTensor> {
        let d = x.width();
        let out = match &x.data {
            Data::Stored(s) => gather_stored(s, rows.u32()),
            _ => rows::gather_rows(x.f32(), d, rows.u32()),
        };
        Ok(CpuTensor::from_f32(out, &[rows.len(), d]))
    }

    fn write_rows(&self, dst: &mut CpuTensor, row0: usize, src: &CpuTensor) -> Result<()> {
        let d = dst.width();
        assert_eq!(src.width(), d, "write_rows: width");
        let n = src.len();
        dst.f32_mut()[row0 * d..row0 * d + n].copy_from_slice(src.f32());
        Ok(())
    }

    fn add_columns(&self, w: &mut CpuTensor, cols: &CpuTensor, delta: &CpuTensor) -> Result<()> {
        let k = w.width();
        assert_eq!(
            delta.shape,
            [w.shape[0], cols.len()],
            "add_columns: delta shape"
        );
        rows::add_columns(w.f32_mut(), k, cols.u32(), delta.f32());
        Ok(())
    }

    fn log_softmax(&self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::from_f32(
            softmax::log_softmax_forward(x.f32(), x.width()),
            &x.shape,
        ))
    }

    fn log_softmax_into(&self, mut x: CpuTensor) -> Result<CpuTensor> {
        let v = x.width();
        softmax::log_softmax_in_place(x.f32_mut(), v);
        Ok(x)
    }

    fn log_softmax_backward(&self, logp: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        same_shape(logp, dy, "log_softmax_backward");
        let out = softmax::log_softmax_backward(logp.f32(), dy.f32(), logp.width());
        Ok(CpuTensor::from_f32(out, &logp.shape))
    }

    fn argmax(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let out = softmax::argmax_forward(x.f32(), x.width());
        let n = out.len();
        Ok(CpuTensor::from_u32(out, &[n]))
    }

    fn sample_top_k(
        &self,
        logits: &CpuTensor,
        k: usize,
        uniforms: &CpuTensor,
    ) -> Result<CpuTensor> {
        let out = softmax::sample_top_k_forward(logits.f32(), logits.width(), k, uniforms.f32());
        let n = out.len();
        Ok(CpuTensor::from_u32(out, &[n]))
    }
}
