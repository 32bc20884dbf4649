//! CPU reference of [`crate::Backend::z_adam`]: one Adam step of the z optimisation for some
//! requests, each a row of `δ`, with the weight-decay gradient added first and the norm clamp
//! after (spec §4: PyTorch's Adam with β = (0.9, 0.999), ε = 1e-8 and its update arithmetic;
//! `‖δ‖` in f64 as [`crate::edit::target::norm`]).

/// Adam's first-moment decay.
pub const B1: f32 = 0.9;
/// Adam's second-moment decay.
pub const B2: f32 = 0.999;
/// Adam's ε.
pub const EPS: f32 = 1e-8;
/// Invocations per workgroup of `shaders/z_adam.wgsl` (a workgroup per request).
pub const Z_ADAM_WG: u32 = 64;

/// `‖x‖`, summed in f64.
pub fn norm(x: &[f32]) -> f32 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt() as f32
}

/// The step size and `sqrt(1 − β₂ᵗ)` of Adam's step `t` (1-based) at learning rate `lr`,
/// computed in f64 as PyTorch does in Python.
pub fn step_constants(lr: f32, t: i32) -> (f32, f32) {
    // The betas as Python floats, not their f32 roundings.
    let bc1 = 1.0 - 0.9f64.powi(t);
    let bc2_sqrt = (1.0 - 0.999f64.powi(t)).sqrt() as f32;
    ((lr as f64 / bc1) as f32, bc2_sqrt)
}

/// For each request `i` of `rows`, in place on row `i` of `delta`, `m`, `v` (width `d`):
///
/// 1. `g = grad_i + (coef[i,0] / ‖δ_i‖) · δ_i` (the gradient of `wd · ‖δ‖ / ‖h‖²`; nothing
///    added at `δ = 0`, PyTorch's convention);
/// 2. Adam: `m = β₁m + (1 − β₁)g`, `v = β₂v + (1 − β₂)g²`,
///    `δ −= step · m / (sqrt(v) / bc2_sqrt + ε)`;
/// 3. `δ_i` scaled back to `coef[i,1]` when its norm is larger;
/// 4. `norms[i] = ‖δ_i‖`.
///
/// # Shapes
/// `delta, m, v, grad (N, d)`, `rows (R)` (distinct, < N), `coef (N, 2)`, `norms (N)`.
#[allow(clippy::too_many_arguments)]
pub fn z_adam(
    delta: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[f32],
    rows: &[u32],
    coef: &[f32],
    norms: &mut [f32],
    d: usize,
    step: f32,
    bc2_sqrt: f32,
) {
    for &i in rows {
        let i = i as usize;
        let r = i * d..(i + 1) * d;
        let (x, m, v) = (&mut delta[r.clone()], &mut m[r.clone()], &mut v[r.clone()]);
        let mut g = grad[r].to_vec();
        let n0 = norm(x);
        if n0 > 0.0 {
            let c = coef[2 * i] / n0;
            for (g, &x) in g.iter_mut().zip(x.iter()) {
                *g += c * x;
            }
        }
        for j in 0..d {
            m[j] = m[j] * B1 + g[j] * (1.0 - B1);
            v[j] = v[j] * B2 + (1.0 - B2) * g[j] * g[j];
            let denom = v[j].sqrt() / bc2_sqrt + EPS;
            x[j] -= step * (m[j] / denom);
        }
        let (n1, max) = (norm(x), coef[2 * i + 1]);
        if n1 > max {
            for x in x.iter_mut() {
                *x *= max / n1;
            }
        }
        norms[i] = norm(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step by hand: t = 1 (bias-corrected, so the first step moves each coordinate by
    /// about `lr · sign(g)`), a weight-decay term, and the clamp.
    #[test]
    fn one_step_by_hand() {
        let d = 2;
        let mut delta = vec![3.0, 4.0, 0.0, 0.0];
        let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
        let grad = vec![1.0, -1.0, 2.0, 0.5];
        // Row 0: wd gradient (0.5 / 5) · δ = (0.3, 0.4); clamp at 100 (no clamp).
        // Row 1: δ = 0, so no wd term; clamp at 0.1.
        let coef = vec![0.5, 100.0, 0.5, 0.1];
        let mut norms = vec![-1.0; 2];
        let (step, bc2) = step_constants(0.5, 1);
        assert!((step - 5.0).abs() < 1e-6 && (bc2 - 0.031_622_78).abs() < 1e-7);
        z_adam(
            &mut delta,
            &mut m,
            &mut v,
            &grad,
            &[0, 1],
            &coef,
            &mut norms,
            d,
            step,
            bc2,
        );
        // g = (1.3, -0.6): m = 0.1 g, v = 0.001 g², m / (sqrt(v)/bc2) = sign(g) · 0.1 / 0.1 ...
        // each coordinate moves by lr = 0.5 against the sign of g (up to ε).
        let want0 = [3.0 - 0.5, 4.0 + 0.5];
        for (got, want) in delta[..2].iter().zip(want0) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        // Row 1 moves to (-0.5, -0.5), norm 0.7071 > 0.1: scaled to norm 0.1.
        let n1 = norm(&delta[2..]);
        assert!((n1 - 0.1).abs() < 1e-6, "{n1}");
        assert!((delta[2] - delta[3]).abs() < 1e-9 && delta[2] < 0.0);
        assert!((norms[0] - norm(&want0)).abs() < 1e-5 && (norms[1] - 0.1).abs() < 1e-6);
    }
}
