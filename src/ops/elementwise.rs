//! Elementwise ops: the SwiGLU gate `silu(g) · u`, GPT-2's GELU, the residual add and the bias
//! add.

/// `silu(g) = g · sigmoid(g)`.
fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// CPU reference: `silu(gate) · up`.
///
/// # Shapes
/// `gate (N, F)`, `up (N, F)` → `(N, F)`.
pub fn silu_mul_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
}

/// CPU reference backward: `d gate = dy · u · σ(g)(1 + g(1 − σ(g)))`, `d up = dy · silu(g)`.
///
/// # Shapes
/// `gate, up, dy (N, F)` → `(d gate, d up)`, each `(N, F)`.
pub fn silu_mul_backward(gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dgate = Vec::with_capacity(gate.len());
    let mut dup = Vec::with_capacity(gate.len());
    for ((&g, &u), &d) in gate.iter().zip(up).zip(dy) {
        let s = 1.0 / (1.0 + (-g).exp());
        dgate.push(d * u * s * (1.0 + g * (1.0 - s)));
        dup.push(d * g * s);
    }
    (dgate, dup)
}

/// `√(2/π)`, the scale of GELU's tanh argument.
const SQRT_2_OVER_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
/// The cubic coefficient of GELU's tanh approximation.
const GELU_CUBIC: f64 = 0.044715;

/// GELU's tanh argument `u = √(2/π) · (x + 0.044715 · x³)`.
fn gelu_u(x: f64) -> f64 {
    SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)
}

/// CPU reference: GPT-2's GELU ("gelu_new", the tanh approximation),
/// `0.5 · x · (1 + tanh(u))` with `u = √(2/π) · (x + 0.044715 · x³)`, elementwise.
///
/// Computed in f64 as `x · σ(2u)`, since `0.5 · (1 + tanh(u)) = σ(2u) = 1 / (1 + exp(−2u))`:
/// for negative `x`, `1 + tanh(u)` cancels (in f32 it keeps about 9 bits at x = −4 and none
/// past x ≈ −5.5, where GELU is still about −6e-9), and the logistic form does not.
///
/// # Shapes
/// Any; the output is shaped like `x`.
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&x| {
            let x = x as f64;
            (x * logistic(2.0 * gelu_u(x))) as f32
        })
        .collect()
}

/// CPU reference backward: `dx = dy · (0.5 · (1 + t) + 0.5 · x · (1 − t²) · u′)` with
/// `t = tanh(u)` and `u′ = √(2/π) · (1 + 3 · 0.044715 · x²)`. In f64 and in the logistic form
/// as the forward: `0.5 · (1 + t) = σ(2u)` and `1 − t² = 4 · σ(2u) · σ(−2u)`.
///
/// # Shapes
/// `x, dy` of one shape → that shape.
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "gelu_backward: dy shape");
    x.iter()
        .zip(dy)
        .map(|(&x, &dy)| {
            let x = x as f64;
            let u = gelu_u(x);
            let (plus, minus) = (logistic(2.0 * u), logistic(-2.0 * u)); // (1 ± t) / 2
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x);
            (dy as f64 * (plus + 2.0 * x * plus * minus * du)) as f32
        })
        .collect()
}

/// `σ(v) = 1 / (1 + exp(−v))`; 0 or 1 where `exp` overflows, as it should.
fn logistic(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// CPU reference: `a + b`.
pub fn add_forward(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// CPU reference: `x + b` with the bias `b (C)` broadcast over the rows of `x (N, C)`.
pub fn add_bias_forward(x: &[f32], b: &[f32]) -> Vec<f32> {
    if b.is_empty() {
        return x.to_vec();
    }
    x.chunks(b.len())
        .flat_map(|row| row.iter().zip(b).map(|(v, c)| v + c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{assert_close_f64, numeric_grad, uniform};

    /// GELU's closed form as written, with tanh, in f64 (the reference takes another road).
    fn gelu_tanh(x: f64) -> f64 {
        let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
        0.5 * x * (1.0 + u.tanh())
    }

    #[test]
    fn gelu_values() {
        let x = [0.0f32, 1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 4.5, -4.0];
        let want: Vec<f64> = x.iter().map(|&x| gelu_tanh(x as f64)).collect();
        assert_close_f64(&gelu_forward(&x), &want, 1e-7, "gelu vs its closed form");
        // The published value of the tanh approximation at 1 (the exact GELU's is 0.841345).
        assert!((gelu_forward(&[1.0])[0] - 0.841_192).abs() < 1e-6);
        assert_eq!(gelu_forward(&[0.0])[0], 0.0);
    }

    /// Far from 0, GELU is the identity on the right and 0 on the left, and its slope a step;
    /// nothing overflows on the way. On the left it is `x · e^(2u)` to f32 precision, which
    /// the tanh form (0 past x ≈ −7.3 even in f64) does not keep.
    #[test]
    fn gelu_tails() {
        let x = [50.0f32, 1e4, -50.0, -1e4, 9.0, -9.0];
        let y = gelu_forward(&x);
        assert_eq!(y[..2], [50.0, 1e4]);
        assert_eq!(y[2..4], [0.0, 0.0]);
        assert!((y[4] - 9.0).abs() < 1e-6 && y[5].abs() < 1e-6 && y[5] <= 0.0);
        assert_eq!(gelu_backward(&x[..4], &[1.0; 4]), [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(gelu_backward(&[0.0], &[1.0]), [0.5], "slope 1/2 at 0");
        for x in [-6.0f64, -8.0] {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
            let want = x * (2.0 * u).exp();
            let got = gelu_forward(&[x as f32])[0] as f64;
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "gelu({x}) = {got}, want {want}"
            );
        }
    }

    /// The gradient of `L = Σ c ⊙ gelu(x)` against central differences, on both sides of 0 and
    /// into the tails.
    #[test]
    fn gelu_backward_matches_finite_differences() {
        let x = uniform(200, 7, -6.0, 6.0);
        let c = uniform(200, 8, -1.0, 1.0);
        let got = gelu_backward(&x, &c);
        let want = numeric_grad(&x, &c, 1e-2, gelu_forward);
        assert_close_f64(&got, &want, 1e-4, "gelu_backward");
    }
}
