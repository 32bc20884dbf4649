//! [`Backend`] for [`GpuBackend`]: tensor creation and readback here, every op through its
//! launcher in `super::kernels`.

use std::future::Future;

use super::kernels::{
    adam, attention, elementwise, embedding, fused, layer_norm, matmul, rms_norm, rope, rows,
    softmax,
};
use super::{GpuBackend, GpuTensor};
use crate::Result;
use crate::backend::{
    AttnShape, Backend, DType, QkvDecode, TensorInfo, Transpose, ZAdamState, ZAdamStep, unfused,
};

impl Backend for GpuBackend {
    type Tensor = GpuTensor;

    fn describe(&self) -> String {
        format!("gpu: {}", self.describe_adapter())
    }

    /// The size is checked before `data`, so a tensor over the binding limit is reported as
    /// [`crate::Error::BufferTooLarge`] however `data` looks.
    fn device_counters(&self) -> Option<crate::gpu::GpuCounters> {
        Some(self.counters())
    }

    fn upload(&self, name: &str, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_bytes(name, bytemuck::cast_slice(data), shape, DType::F32)
    }

    /// Keeps a weight compact where a packed layout exists for its storage type
    /// ([`super::packed`]); widens it to f32 otherwise (and always in the baseline design).
    fn upload_host(&self, t: crate::model::HostTensor) -> Result<GpuTensor> {
        if let crate::model::host::HostData::Stored(s) = &t.data
            && !self.is_baseline()
            && let Some(packed) = super::packed::Packed::from_stored(s)
        {
            return self.upload_packed(&t.name, &packed, &t.shape);
        }
        let (name, shape) = (t.name.clone(), t.shape.clone());
        self.upload_owned(&name, t.into_f32(), &shape)
    }

    fn upload_u32(&self, name: &str, data: &[u32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_bytes(name, bytemuck::cast_slice(data), shape, DType::U32)
    }

    fn zeros(&self, shape: &[usize]) -> Result<GpuTensor> {
        let t = self.empty("zeros", shape, DType::F32)?;
        self.count(crate::gpu::Count::Copy);
        self.encode(|encoder| encoder.clear_buffer(t.buffer(), 0, None))?;
        Ok(t)
    }

    /// A packed weight's copy is packed too.
    fn copy(&self, t: &GpuTensor) -> Result<GpuTensor> {
        let out = self.empty_like("copy", t)?;
        let size = t.buffer().size();
        self.count(crate::gpu::Count::Copy);
        self.encode(|encoder| encoder.copy_buffer_to_buffer(t.buffer(), 0, out.buffer(), 0, size))?;
        Ok(out)
    }

    /// The copy is recorded and submitted when this is called, not when it is awaited.
    fn read(&self, t: &GpuTensor) -> impl Future<Output = Result<Vec<f32>>> {
        t.expect_dtype(DType::F32, "read");
        let started = self.dense(t).and_then(|t| self.start_read(&t));
        async move {
            Ok(bytemuck::pod_collect_to_vec(
                &self.finish_read(started).await?,
            ))
        }
    }

    /// The copy is recorded and submitted when this is called, not when it is awaited.
    fn read_u32(&self, t: &GpuTensor) -> impl Future<Output = Result<Vec<u32>>> {
        t.expect_dtype(DType::U32, "read_u32");
        let started = self.start_read(t);
        async move {
            Ok(bytemuck::pod_collect_to_vec(
                &self.finish_read(started).await?,
            ))
        }
    }

    fn submit(&self) {
        self.flush();
    }

    fn reads_overlap(&self) -> bool {
        true
    }

    /// One transfer for all of `ts`: each is copied into one staging buffer at its offset.
    fn read_many(&self, ts: &[&GpuTensor]) -> impl Future<Output = Result<Vec<Vec<f32>>>> {
        for t in ts {
            t.expect_dtype(DType::F32, "read_many");
        }
        let started = ts
            .iter()
            .map(|t| self.dense(t))
            .collect::<Result<Vec<_>>>()
            .and_then(|dense| {
                self.start_read_many(&dense.iter().map(|t| &**t).collect::<Vec<_>>())
            });
        let lens: Vec<usize> = ts.iter().map(|t| t.len()).collect();
        async move {
            let all: Vec<f32> = bytemuck::pod_collect_to_vec(&self.finish_read(started).await?);
            let mut out = Vec::with_capacity(lens.len());
            let mut at = 0;
            for n in lens {
                out.push(all[at..at + n].to_vec());
                at += n;
            }
            Ok(out)
        }
    }

    fn z_adam(
        &self,
        state: &mut ZAdamState<GpuTensor>,
        s: &ZAdamStep<'_, GpuTensor>,
    ) -> Result<()> {
        adam::launch_z_adam(self, state, s)
    }

    fn embedding(&self, table: &GpuTensor, ids: &GpuTensor) -> Result<GpuTensor> {
        embedding::launch_embedding(self, table, ids)
    }

    fn rms_norm(&self, x: &GpuTensor, w: &GpuTensor, eps: f32) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        let w = &*self.dense(w)?;
        rms_norm::launch_rms_norm(self, x, w, eps)
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor, t: Transpose) -> Result<GpuTensor> {
        let dims = crate::ops::matmul::MatmulDims::from_shapes(a.shape(), b.shape(), t);
        let c = self.empty("matmul output", &[dims.m, dims.n], DType::F32)?;
        matmul::launch_matmul(self, &c, a, b, t, false)?;
        Ok(c)
    }

    fn norm_matmul_nt(
        &self,
        h: &GpuTensor,
        norm: &GpuTensor,
        eps: f32,
        w: &GpuTensor,
    ) -> Result<GpuTensor> {
        match fused::launch_norm_matmul_nt(self, h, norm, eps, w)? {
            Some(c) => Ok(c),
            None => unfused::norm_matmul_nt(self, h, norm, eps, w),
        }
    }

    fn matmul_nt_residual(&self, x: &GpuTensor, w: &GpuTensor, r: &GpuTensor) -> Result<GpuTensor> {
        match fused::launch_matmul_nt_residual(self, x, w, r)? {
            Some(c) => Ok(c),
            None => unfused::matmul_nt_residual(self, x, w, r),
        }
    }

    fn norm_gate_up(
        &self,
        h: &GpuTensor,
        norm: &GpuTensor,
        eps: f32,
        gate: &GpuTensor,
        up: &GpuTensor,
    ) -> Result<GpuTensor> {
        match fused::launch_norm_gate_up(self, h, norm, eps, gate, up)? {
            Some(c) => Ok(c),
            None => unfused::norm_gate_up(self, h, norm, eps, gate, up),
        }
    }

    fn decode_qkv(
        &self,
        h: &GpuTensor,
        p: &QkvDecode<'_, GpuTensor>,
        cache_k: &mut GpuTensor,
        cache_v: &mut GpuTensor,
    ) -> Result<GpuTensor> {
        match fused::launch_decode_qkv(self, h, p, cache_k, cache_v)? {
            Some(q) => Ok(q),
            None => unfused::decode_qkv(self, h, p, cache_k, cache_v),
        }
    }

    fn matmul_acc(
        &self,
        c: &mut GpuTensor,
        a: &GpuTensor,
        b: &GpuTensor,
        t: Transpose,
    ) -> Result<()> {
        matmul::launch_matmul(self, c, a, b, t, true)
    }

    fn rope(
        &self,
        x: &GpuTensor,
        positions: &GpuTensor,
        table: &GpuTensor,
        head_dim: usize,
    ) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        let table = &*self.dense(table)?;
        rope::launch_rope(self, x, positions, table, head_dim, 1.0)
    }

    fn rope_backward(
        &self,
        dy: &GpuTensor,
        positions: &GpuTensor,
        table: &GpuTensor,
        head_dim: usize,
    ) -> Result<GpuTensor> {
        let dy = &*self.dense(dy)?;
        let table = &*self.dense(table)?;
        rope::launch_rope(self, dy, positions, table, head_dim, -1.0)
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        ranges: &GpuTensor,
        shape: AttnShape,
    ) -> Result<GpuTensor> {
        let q = &*self.dense(q)?;
        let k = &*self.dense(k)?;
        let v = &*self.dense(v)?;
        attention::launch_attention(self, q, k, v, ranges, shape)
    }

    fn attention_backward(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        ranges: &GpuTensor,
        dout: &GpuTensor,
        shape: AttnShape,
    ) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        let q = &*self.dense(q)?;
        let k = &*self.dense(k)?;
        let v = &*self.dense(v)?;
        let dout = &*self.dense(dout)?;
        attention::launch_attention_backward(self, q, k, v, ranges, dout, shape)
    }

    fn silu_mul(&self, gate: &GpuTensor, up: &GpuTensor) -> Result<GpuTensor> {
        let gate = &*self.dense(gate)?;
        let up = &*self.dense(up)?;
        elementwise::launch_silu_mul(self, gate, up)
    }

    fn silu_mul_backward(
        &self,
        gate: &GpuTensor,
        up: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let gate = &*self.dense(gate)?;
        let up = &*self.dense(up)?;
        let dy = &*self.dense(dy)?;
        elementwise::launch_silu_mul_backward(self, gate, up, dy)
    }

    fn rms_norm_backward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        let w = &*self.dense(w)?;
        let dy = &*self.dense(dy)?;
        rms_norm::launch_rms_norm_backward(self, x, w, dy, eps)
    }

    fn layer_norm(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        let w = &*self.dense(w)?;
        let b = &*self.dense(b)?;
        layer_norm::launch_layer_norm(self, x, w, b, eps)
    }

    fn layer_norm_backward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        let w = &*self.dense(w)?;
        let dy = &*self.dense(dy)?;
        layer_norm::launch_layer_norm_backward(self, x, w, dy, eps)
    }

    fn gelu(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        elementwise::launch_gelu(self, x)
    }

    fn gelu_backward(&self, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        let dy = &*self.dense(dy)?;
        elementwise::launch_gelu_backward(self, x, dy)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let a = &*self.dense(a)?;
        let b = &*self.dense(b)?;
        elementwise::launch_add(self, a, b)
    }

    fn add_bias(&self, x: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        let b = &*self.dense(b)?;
        elementwise::launch_add_bias(self, x, b)
    }

    fn add_rows(&self, x: &mut GpuTensor, rows: &GpuTensor, v: &GpuTensor) -> Result<()> {
        let v = &*self.dense(v)?;
        self.widen(x)?;
        rows::launch_add_rows(self, x, rows, v)
    }

    fn z_loss(
        &self,
        logp: GpuTensor,
        labels: &GpuTensor,
        weights: &GpuTensor,
        refs: &GpuTensor,
        kl_rows: &GpuTensor,
        kl_factor: f32,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let logp = &*self.dense(&logp)?;
        let refs = &*self.dense(refs)?;
        let (dlogp, values) =
            softmax::launch_z_loss(self, logp, labels, weights, refs, kl_rows, kl_factor)?;
        let dlogits = softmax::launch_log_softmax_backward(self, logp, &dlogp)?;
        Ok((dlogits, values))
    }

    fn zero_rows(&self, x: &mut GpuTensor, rows: &GpuTensor) -> Result<()> {
        self.widen(x)?;
        rows::launch_zero_rows(self, x, rows)
    }

    fn gather_rows(&self, x: &GpuTensor, rows: &GpuTensor) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        rows::launch_gather_rows(self, x, rows)
    }

    fn write_rows(&self, dst: &mut GpuTensor, row0: usize, src: &GpuTensor) -> Result<()> {
        let src = &*self.dense(src)?;
        self.widen(dst)?;
        rows::launch_write_rows(self, dst, row0, src)
    }

    fn add_columns(&self, w: &mut GpuTensor, cols: &GpuTensor, delta: &GpuTensor) -> Result<()> {
        let delta = &*self.dense(delta)?;
        self.widen(w)?;
        rows::launch_add_columns(self, w, cols, delta)
    }

    fn log_softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        softmax::launch_log_softmax(self, x)
    }

    fn log_softmax_backward(&self, logp: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        let logp = &*self.dense(logp)?;
        let dy = &*self.dense(dy)?;
        softmax::launch_log_softmax_backward(self, logp, dy)
    }

    fn argmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let x = &*self.dense(x)?;
        softmax::launch_argmax(self, x)
    }

    fn sample_top_k(
        &self,
        logits: &GpuTensor,
        k: usize,
        uniforms: &GpuTensor,
    ) -> Result<GpuTensor> {
        let logits = &*self.dense(logits)?;
        softmax::launch_sample_top_k(self, logits, k, uniforms)
    }
}
