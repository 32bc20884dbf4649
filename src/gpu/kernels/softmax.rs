//! The launchers of `shaders/log_softmax.wgsl`, `shaders/argmax.wgsl`, `shaders/sample_top_k.wgsl`
//! (one workgroup per row), the WGSL kernels of `crate::ops::softmax`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per workgroup of `shaders/log_softmax.wgsl`.
pub const LOG_SOFTMAX_WG: u32 = 128;
/// Invocations per workgroup of `shaders/argmax.wgsl`.
pub const ARGMAX_WG: u32 = 128;
/// Invocations per workgroup of `shaders/sample_top_k.wgsl`.
pub const SAMPLE_TOP_K_WG: u32 = 128;

/// Rows and width of a `(N, V)` tensor; panics on an empty row width (a caller bug).
fn rows_of(x: &GpuTensor, op: &str) -> (usize, usize) {
    let v = x.width();
    assert!(v > 0, "{op}: rows of width 0");
    (x.len() / v, v)
}

/// GPU [`log_softmax_forward`](crate::ops::softmax::log_softmax_forward) (`dy = None`) or [`log_softmax_backward`](crate::ops::softmax::log_softmax_backward) (`x` = logp).
fn launch_log_softmax_entry(
    gpu: &GpuBackend,
    x: &GpuTensor,
    dy: Option<&GpuTensor>,
) -> crate::Result<GpuTensor> {
    let (rows, v) = rows_of(x, "log_softmax");
    let out = gpu.empty("log_softmax output", x.shape(), DType::F32)?;
    let mut bindings: Vec<(u32, &wgpu::Buffer)> = vec![(1, x.buffer()), (3, out.buffer())];
    if let Some(dy) = dy {
        assert_eq!(dy.shape(), x.shape(), "log_softmax_backward: shapes differ");
        bindings.push((2, dy.buffer()));
    }
    gpu.dispatch(&Dispatch {
        shader: "log_softmax",
        entry: if dy.is_some() { "backward" } else { "forward" },
        overrides: &[],
        params: &[u32_of(rows), u32_of(v)],
        bindings: &bindings,
        workgroups: rows as u64,
    })?;
    Ok(out)
}

/// GPU [`log_softmax_forward`](crate::ops::softmax::log_softmax_forward).
///
/// # Shapes
/// `x (N, V)` → `(N, V)`.
pub(crate) fn launch_log_softmax(gpu: &GpuBackend, x: &GpuTensor) -> crate::Result<GpuTensor> {
    launch_log_softmax_entry(gpu, x, None)
}

/// GPU [`log_softmax_backward`](crate::ops::softmax::log_softmax_backward).
///
/// # Shapes
/// `logp (N, V)`, `dy (N, V)` → `(N, V)`.
pub(crate) fn launch_log_softmax_backward(
    gpu: &GpuBackend,
    logp: &GpuTensor,
    dy: &GpuTensor,
) -> crate::Result<GpuTensor> {
    launch_log_softmax_entry(gpu, logp, Some(dy))
}

/// GPU [`argmax_forward`](crate::ops::softmax::argmax_forward) (rows holding NaN: unspecified).
///
/// # Shapes
/// `x (N, V)` → `(N)` u32.
pub(crate) fn launch_argmax(gpu: &GpuBackend, x: &GpuTensor) -> crate::Result<GpuTensor> {
    let (rows, v) = rows_of(x, "argmax");
    let out = gpu.empty("argmax output", &[rows], DType::U32)?;
    gpu.dispatch(&Dispatch {
        shader: "argmax",
        entry: "main",
        overrides: &[],
        params: &[u32_of(rows), u32_of(v)],
        bindings: &[(1, x.buffer()), (2, out.buffer())],
        workgroups: rows as u64,
    })?;
    Ok(out)
}

/// GPU [`sample_top_k_forward`](crate::ops::softmax::sample_top_k_forward); `k` is clamped to `1..=V` as in [`top_k`](crate::ops::softmax::top_k).
///
/// # Shapes
/// `logits (N, V)`, `uniforms (N)` → `(N)` u32.
pub(crate) fn launch_sample_top_k(
    gpu: &GpuBackend,
    logits: &GpuTensor,
    k: usize,
    uniforms: &GpuTensor,
) -> crate::Result<GpuTensor> {
    let (rows, v) = rows_of(logits, "sample_top_k");
    assert_eq!(uniforms.len(), rows, "sample_top_k: one uniform per row");
    let k = k.clamp(1, v);
    let picks = gpu.empty("sample_top_k picks", &[rows, k], DType::U32)?;
    let out = gpu.empty("sample_top_k output", &[rows], DType::U32)?;
    gpu.dispatch(&Dispatch {
        shader: "sample_top_k",
        entry: "main",
        overrides: &[],
        params: &[u32_of(rows), u32_of(v), u32_of(k)],
        bindings: &[
            (1, logits.buffer()),
            (2, uniforms.buffer()),
            (3, picks.buffer()),
            (4, out.buffer()),
        ],
        workgroups: rows as u64,
    })?;
    Ok(out)
}

/// Invocations per workgroup of `shaders/z_loss.wgsl` (one workgroup per row).
pub const Z_LOSS_WG: u32 = 128;

/// GPU [`z_loss`](crate::ops::softmax::z_loss): `(dlogp, values)`.
///
/// # Shapes
/// `logp (R, V)`, `labels (R)` u32, `weights (R)`, `refs (K, V)`, `kl_rows (R)` u32.
pub(crate) fn launch_z_loss(
    gpu: &GpuBackend,
    logp: &GpuTensor,
    labels: &GpuTensor,
    weights: &GpuTensor,
    refs: &GpuTensor,
    kl_rows: &GpuTensor,
    kl_factor: f32,
) -> crate::Result<(GpuTensor, GpuTensor)> {
    labels.expect_dtype(DType::U32, "z_loss labels");
    kl_rows.expect_dtype(DType::U32, "z_loss kl_rows");
    let v = logp.width();
    let r = labels.len();
    assert_eq!(logp.len(), r * v, "z_loss: one label per row");
    assert_eq!(weights.len(), r, "z_loss: one weight per row");
    assert_eq!(kl_rows.len(), r, "z_loss: one KL row index per row");
    let dlogp = gpu.empty("z loss gradient", logp.shape(), DType::F32)?;
    let values = gpu.empty("z loss terms", &[r], DType::F32)?;
    gpu.dispatch(&Dispatch {
        shader: "z_loss",
        entry: "main",
        overrides: &[],
        params: &[u32_of(r), u32_of(v), kl_factor.to_bits()],
        bindings: &[
            (1, logp.buffer()),
            (2, labels.buffer()),
            (3, weights.buffer()),
            (4, refs.buffer()),
            (5, kl_rows.buffer()),
            (6, dlogp.buffer()),
            (7, values.buffer()),
        ],
        workgroups: r as u64,
    })?;
    Ok((dlogp, values))
}
