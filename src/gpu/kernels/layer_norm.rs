//! The launchers of `shaders/layer_norm.wgsl`, the WGSL kernels of `crate::ops::layer_norm`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per workgroup of `shaders/layer_norm.wgsl` (one workgroup per row).
pub const LAYER_NORM_WG: u32 = 64;

/// What a launch computes: the forward with its bias, or the gradient with its `dy`.
enum Pass<'a> {
    Forward { b: &'a GpuTensor },
    Backward { dy: &'a GpuTensor },
}

/// GPU LayerNorm forward (entry `forward`) or gradient with respect to `x` (entry `backward`).
///
/// # Shapes
/// `x (N, D)`, `w (D)`, and `b (D)` or `dy (N, D)` → `(N, D)`.
fn launch(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    pass: Pass<'_>,
    eps: f32,
) -> crate::Result<GpuTensor> {
    let d = x.width();
    assert_eq!(
        w.shape(),
        [d],
        "layer_norm: weight {:?} for rows of {d}",
        w.shape()
    );
    let out = gpu.empty("layer_norm output", x.shape(), DType::F32)?;
    if d == 0 {
        return Ok(out);
    }
    let rows = x.len() / d;
    let mut bindings: Vec<(u32, &wgpu::Buffer)> =
        vec![(1, x.buffer()), (2, w.buffer()), (5, out.buffer())];
    let entry = match pass {
        Pass::Forward { b } => {
            assert_eq!(
                b.shape(),
                [d],
                "layer_norm: bias {:?} for rows of {d}",
                b.shape()
            );
            bindings.push((3, b.buffer()));
            "forward"
        }
        Pass::Backward { dy } => {
            assert_eq!(dy.shape(), x.shape(), "layer_norm_backward: dy shape");
            bindings.push((4, dy.buffer()));
            "backward"
        }
    };
    gpu.dispatch(&Dispatch {
        shader: "layer_norm",
        entry,
        overrides: &[],
        params: &[u32_of(rows), u32_of(d), eps.to_bits()],
        bindings: &bindings,
        workgroups: rows as u64,
    })?;
    Ok(out)
}

/// GPU [`layer_norm_forward`](crate::ops::layer_norm::layer_norm_forward).
pub(crate) fn launch_layer_norm(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    eps: f32,
) -> crate::Result<GpuTensor> {
    launch(gpu, x, w, Pass::Forward { b }, eps)
}

/// GPU [`layer_norm_backward`](crate::ops::layer_norm::layer_norm_backward).
pub(crate) fn launch_layer_norm_backward(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    dy: &GpuTensor,
    eps: f32,
) -> crate::Result<GpuTensor> {
    launch(gpu, x, w, Pass::Backward { dy }, eps)
}
