//! LayerNorm (GPT-2's `ln_1`, `ln_2` and `ln_f`), per row: `y = x̂ · w + b` with
//! `x̂ = (x − μ) · r`, `μ` the row's mean, `r = 1 / sqrt(var + eps)` and `var` the population
//! variance (the mean of squared deviations), exactly `torch.nn.LayerNorm`.

use super::par_rows;

/// CPU reference forward.
///
/// # Shapes
/// `x (N, D)`, `w (D)`, `b (D)` → `(N, D)`.
pub fn layer_norm_forward(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert_eq!(
        b.len(),
        d,
        "layer_norm: bias of {} for rows of {d}",
        b.len()
    );
    assert_eq!(x.len() % d.max(1), 0, "layer_norm: rows of {d}");
    let mut out = vec![0.0; x.len()];
    par_rows(&mut out, d, |i, y| {
        let xr = &x[i * d..(i + 1) * d]; // (D)
        let (mean, r) = row_stats(xr, eps);
        for j in 0..d {
            let x_hat = (xr[j] as f64 - mean) * r;
            y[j] = (x_hat * w[j] as f64 + b[j] as f64) as f32;
        }
    });
    out
}

/// CPU reference backward with respect to `x` (`w` and `b` are frozen): with `g = w · dy`,
/// `dx = r · (g − mean(g) − x̂ · mean(g · x̂))`. The bias drops out: it shifts `y`, not `x̂`.
///
/// # Shapes
/// `x (N, D)`, `w (D)`, `dy (N, D)` → `(N, D)`.
pub fn layer_norm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert_eq!(x.len(), dy.len(), "layer_norm_backward: dy shape");
    assert_eq!(x.len() % d.max(1), 0, "layer_norm_backward: rows of {d}");
    let mut out = vec![0.0; x.len()];
    par_rows(&mut out, d, |i, dxr| {
        let xr = &x[i * d..(i + 1) * d]; // (D)
        let dyr = &dy[i * d..(i + 1) * d]; // (D)
        let (mean, r) = row_stats(xr, eps);
        let x_hat = |j: usize| (xr[j] as f64 - mean) * r;
        let g = |j: usize| w[j] as f64 * dyr[j] as f64;
        let mean_g = (0..d).map(g).sum::<f64>() / d as f64;
        let mean_g_x_hat = (0..d).map(|j| g(j) * x_hat(j)).sum::<f64>() / d as f64;
        for (j, dx) in dxr.iter_mut().enumerate() {
            *dx = (r * (g(j) - mean_g - x_hat(j) * mean_g_x_hat)) as f32;
        }
    });
    out
}

/// `(μ, r)` of a row in f64: the mean, then the variance as a second pass around it (the one
/// pass `E[x²] − μ²` cancels when `|μ|` is large next to the spread, as in a residual stream).
fn row_stats(x: &[f32], eps: f32) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{assert_close_f64, numeric_grad, uniform};

    /// Row `[1, 2, 3, 4]` by hand: μ = 2.5, var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    #[test]
    fn forward_by_hand() {
        let (w, b, eps) = ([0.5f32, -1.0, 2.0, 1.5], [0.1f32, 0.2, -0.3, 0.0], 1e-5f32);
        let r = 1.0 / (1.25 + eps as f64).sqrt();
        let want: Vec<f64> = [-1.5, -0.5, 0.5, 1.5]
            .iter()
            .zip(w.iter().zip(&b))
            .map(|(dev, (&w, &b))| dev * r * w as f64 + b as f64)
            .collect();
        let got = layer_norm_forward(&[1.0, 2.0, 3.0, 4.0], &w, &b, eps);
        assert_close_f64(&got, &want, 1e-6, "layer_norm [1, 2, 3, 4]");
        // Shifting the row leaves x̂, hence y, as it was.
        let got = layer_norm_forward(&[1001.0, 1002.0, 1003.0, 1004.0], &w, &b, eps);
        assert_close_f64(&got, &want, 1e-5, "layer_norm [1001 … 1004]");
    }

    /// A constant row has no spread: `x̂ = 0` and `y = b`, with `eps` keeping `r` finite.
    #[test]
    fn constant_row_gives_the_bias() {
        let got = layer_norm_forward(&[3.0; 5], &[2.0; 5], &[0.5, -1.0, 0.0, 1.0, 7.0], 1e-5);
        assert_eq!(got, [0.5, -1.0, 0.0, 1.0, 7.0]);
    }

    /// The gradient of `L = Σ c ⊙ y` against central differences of the forward, on random
    /// rows (one of them offset far from zero), widths 1, 5 and 16.
    #[test]
    fn backward_matches_finite_differences() {
        for (seed, n, d) in [(1, 1, 1), (2, 3, 5), (3, 2, 16)] {
            let mut x = uniform(n * d, seed, -2.0, 2.0);
            x[..d].iter_mut().for_each(|v| *v += 30.0);
            let w = uniform(d, seed + 10, -1.5, 1.5);
            let b = uniform(d, seed + 20, -1.0, 1.0);
            let c = uniform(n * d, seed + 30, -1.0, 1.0);
            let eps = 1e-5;
            let got = layer_norm_backward(&x, &w, &c, eps);
            let want = numeric_grad(&x, &c, 1e-2, |x| layer_norm_forward(x, &w, &b, eps));
            assert_close_f64(&got, &want, 2e-3, &format!("layer_norm_backward {n}x{d}"));
        }
    }
}
