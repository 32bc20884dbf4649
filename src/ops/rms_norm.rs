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
