//! The launchers of `shaders/add.wgsl`, `shaders/add_bias.wgsl`, `shaders/silu_mul.wgsl` and
//! `shaders/gelu.wgsl`, the WGSL kernels of `crate::ops::elementwise`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per workgroup of `shaders/add.wgsl`.
pub const ADD_WG: u32 = 256;
/// Invocations per workgroup of `shaders/add_bias.wgsl`.
pub const ADD_BIAS_WG: u32 = 256;
/// Invocations per workgroup of `shaders/silu_mul.wgsl`.
pub const SILU_MUL_WG: u32 = 256;
/// Invocations per workgroup of `shaders/gelu.wgsl`.
pub const GELU_WG: u32 = 256;

/// The vec4s covering `t`'s elements (the kernels work four at a time, padding included).
fn vec4s(t: &GpuTensor) -> u32 {
    u32_of(t.len().div_ceil(4))
}

/// GPU `a + b`.
///
/// # Shapes
/// `a (N, D)`, `b (N, D)` → `(N, D)`.
pub(crate) fn launch_add(
    gpu: &GpuBackend,
    a: &GpuTensor,
    b: &GpuTensor,
) -> crate::Result<GpuTensor> {
    assert_eq!(a.shape(), b.shape(), "add: shapes differ");
    let out = gpu.empty("add output", a.shape(), DType::F32)?;
    let n = vec4s(a);
    gpu.dispatch(&Dispatch {
        shader: "add",
        entry: "main",
        overrides: &[],
        params: &[n],
        bindings: &[(1, a.buffer()), (2, b.buffer()), (3, out.buffer())],
        workgroups: u64::from(n).div_ceil(u64::from(ADD_WG)),
    })?;
    Ok(out)
}

/// GPU `x + b` with `b` broadcast over the rows.
///
/// # Shapes
/// `x (N, C)`, `b (C)` → `(N, C)`.
pub(crate) fn launch_add_bias(
    gpu: &GpuBackend,
    x: &GpuTensor,
    b: &GpuTensor,
) -> crate::Result<GpuTensor> {
    assert_eq!(b.shape(), [x.width()], "add_bias: bias width");
    let out = gpu.empty("add_bias output", x.shape(), DType::F32)?;
    let n = u32_of(x.len());
    gpu.dispatch(&Dispatch {
        shader: "add_bias",
        entry: "main",
        overrides: &[],
        params: &[n, u32_of(x.width())],
        bindings: &[(1, x.buffer()), (2, b.buffer()), (3, out.buffer())],
        workgroups: u64::from(n).div_ceil(u64::from(ADD_BIAS_WG)),
    })?;
    Ok(out)
}

/// GPU `silu(gate) · up`.
///
/// # Shapes
/// `gate (N, F)`, `up (N, F)` → `(N, F)`.
pub(crate) fn launch_silu_mul(
    gpu: &GpuBackend,
    gate: &GpuTensor,
    up: &GpuTensor,
) -> crate::Result<GpuTensor> {
    assert_eq!(gate.shape(), up.shape(), "silu_mul: shapes differ");
    let out = gpu.empty("silu_mul output", gate.shape(), DType::F32)?;
    let n = vec4s(gate);
    gpu.dispatch(&Dispatch {
        shader: "silu_mul",
        entry: "forward",
        overrides: &[],
        params: &[n],
        bindings: &[(1, gate.buffer()), (2, up.buffer()), (4, out.buffer())],
        workgroups: u64::from(n).div_ceil(u64::from(SILU_MUL_WG)),
    })?;
    Ok(out)
}

/// GPU gradients of [`silu_mul_forward`](crate::ops::elementwise::silu_mul_forward): `(d gate, d up)`.
///
/// # Shapes
/// `gate, up, dy (N, F)` → two `(N, F)`.
pub(crate) fn launch_silu_mul_backward(
    gpu: &GpuBackend,
    gate: &GpuTensor,
    up: &GpuTensor,
    dy: &GpuTensor,
) -> crate::Result<(GpuTensor, GpuTensor)> {
    assert_eq!(gate.shape(), up.shape(), "silu_mul_backward: shapes differ");
    assert_eq!(gate.shape(), dy.shape(), "silu_mul_backward: shapes differ");
    let d_gate = gpu.empty("silu_mul d gate", gate.shape(), DType::F32)?;
    let d_up = gpu.empty("silu_mul d up", gate.shape(), DType::F32)?;
    let n = vec4s(gate);
    gpu.dispatch(&Dispatch {
        shader: "silu_mul",
        entry: "backward",
        overrides: &[],
        params: &[n],
        bindings: &[
            (1, gate.buffer()),
            (2, up.buffer()),
            (3, dy.buffer()),
            (4, d_gate.buffer()),
            (5, d_up.buffer()),
        ],
        workgroups: u64::from(n).div_ceil(u64::from(SILU_MUL_WG)),
    })?;
    Ok((d_gate, d_up))
}

/// GPU [`gelu_forward`](crate::ops::elementwise::gelu_forward) (entry `forward`, `dy = None`)
/// or [`gelu_backward`](crate::ops::elementwise::gelu_backward) (entry `backward`).
///
/// # Shapes
/// `x` and `dy` of one shape → that shape.
fn launch_gelu_pass(
    gpu: &GpuBackend,
    x: &GpuTensor,
    dy: Option<&GpuTensor>,
) -> crate::Result<GpuTensor> {
    let out = gpu.empty("gelu output", x.shape(), DType::F32)?;
    let n = vec4s(x);
    let mut bindings: Vec<(u32, &wgpu::Buffer)> = vec![(1, x.buffer()), (3, out.buffer())];
    if let Some(dy) = dy {
        assert_eq!(dy.shape(), x.shape(), "gelu_backward: dy shape");
        bindings.push((2, dy.buffer()));
    }
    gpu.dispatch(&Dispatch {
        shader: "gelu",
        entry: if dy.is_some() { "backward" } else { "forward" },
        overrides: &[],
        params: &[n],
        bindings: &bindings,
        workgroups: u64::from(n).div_ceil(u64::from(GELU_WG)),
    })?;
    Ok(out)
}

/// GPU GELU (GPT-2's tanh approximation).
///
/// # Shapes
/// Any; the output is shaped like `x`.
pub(crate) fn launch_gelu(gpu: &GpuBackend, x: &GpuTensor) -> crate::Result<GpuTensor> {
    launch_gelu_pass(gpu, x, None)
}

/// GPU gradient of GELU, `dy · gelu′(x)`.
///
/// # Shapes
/// `x`, `dy` of one shape → that shape.
pub(crate) fn launch_gelu_backward(
    gpu: &GpuBackend,
    x: &GpuTensor,
    dy: &GpuTensor,
) -> crate::Result<GpuTensor> {
    launch_gelu_pass(gpu, x, Some(dy))
}
