//! Elementwise ops: the SwiGLU gate `silu(g) · u`, the residual add and the bias add.

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
