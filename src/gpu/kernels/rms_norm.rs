//! The launchers of `shaders/rms_norm.wgsl`, the WGSL kernels of `crate::ops::rms_norm`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per workgroup of `shaders/rms_norm.wgsl` (one workgroup per row).
pub const RMS_NORM_WG: u32 = 64;

/// GPU RMSNorm forward (`dy = None`, entry `forward`) or gradient (entry `backward`).
///
/// # Shapes
/// `x (N, D)`, `w (D)`, `dy (N, D)` → `(N, D)`.
fn launch(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    dy: Option<&GpuTensor>,
    eps: f32,
) -> crate::Result<GpuTensor> {
    let d = x.width();
    assert_eq!(
        w.len(),
        d,
        "rms_norm: weight of {} for rows of {d}",
        w.len()
    );
    let out = gpu.empty("rms_norm output", x.shape(), DType::F32)?;
    if d == 0 {
        return Ok(out);
    }
    let rows = x.len() / d;
    let mut bindings: Vec<(u32, &wgpu::Buffer)> =
        vec![(1, x.buffer()), (2, w.buffer()), (4, out.buffer())];
    if let Some(dy) = dy {
        assert_eq!(dy.shape(), x.shape(), "rms_norm_backward: dy shape");
        bindings.push((3, dy.buffer()));
    }
    gpu.dispatch(&Dispatch {
        shader: "rms_norm",
        entry: if dy.is_some() { "backward" } else { "forward" },
        overrides: &[],
        params: &[u32_of(rows), u32_of(d), eps.to_bits()],
        bindings: &bindings,
        workgroups: rows as u64,
    })?;
    Ok(out)
}

/// GPU [`rms_norm_forward`](crate::ops::rms_norm::rms_norm_forward).
pub(crate) fn launch_rms_norm(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    eps: f32,
) -> crate::Result<GpuTensor> {
    launch(gpu, x, w, None, eps)
}

/// GPU [`rms_norm_backward`](crate::ops::rms_norm::rms_norm_backward).
pub(crate) fn launch_rms_norm_backward(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    dy: &GpuTensor,
    eps: f32,
) -> crate::Result<GpuTensor> {
    launch(gpu, x, w, Some(dy), eps)
}
