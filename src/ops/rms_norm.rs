//! RMSNorm: `y = x · r · w` with `r = 1 / sqrt(mean(x²) + eps)`, per row.

use super::par_rows;

/// CPU reference forward.
///
/// # Shapes
/// `x (N, D)`, `w (D)` → `(N, D)`.
pub fn rms_norm_forward(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0.0; x.len()];
    par_rows(&mut out, d, |i, y| {
        let xr = &x[i * d..(i + 1) * d];
        let r = inv_rms(xr, eps);
        for ((y, &x), &w) in y.iter_mut().zip(xr).zip(w) {
            *y = w * (x * r);
        }
    });
    out
}

/// CPU reference backward with respect to `x`:
/// `dx_j = r·w_j·dy_j − r³·x_j·(Σ_i w_i·dy_i·x_i) / D`.
///
/// # Shapes
/// `x (N, D)`, `w (D)`, `dy (N, D)` → `(N, D)`.
pub fn rms_norm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0.0; x.len()];
    par_rows(&mut out, d, |i, dx| {
        let xr = &x[i * d..(i + 1) * d];
        let dyr = &dy[i * d..(i + 1) * d];
        let r = inv_rms(xr, eps) as f64;
        let dot: f64 = (0..d).map(|j| (w[j] * dyr[j]) as f64 * xr[j] as f64).sum();
        let c = r * r * r * dot / d as f64;
        for j in 0..d {
            dx[j] = (r * (w[j] * dyr[j]) as f64 - c * xr[j] as f64) as f32;
        }
    });
    out
}

/// `1 / sqrt(mean(x²) + eps)`, the square sum taken in f64.
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    1.0 / ((ms as f32) + eps).sqrt()
}

// ---- GPU launchers: `shaders/rms_norm.wgsl` ----

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

/// GPU [`rms_norm_forward`].
pub(crate) fn launch_rms_norm(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    eps: f32,
) -> crate::Result<GpuTensor> {
    launch(gpu, x, w, None, eps)
}

/// GPU [`rms_norm_backward`].
pub(crate) fn launch_rms_norm_backward(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    dy: &GpuTensor,
    eps: f32,
) -> crate::Result<GpuTensor> {
    launch(gpu, x, w, Some(dy), eps)
}
