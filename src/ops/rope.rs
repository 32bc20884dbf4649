//! Rotary position embedding in the Hugging Face "rotate half" layout.
//!
//! Within a head of width `hd`, coordinate `c < hd/2` pairs with `c + hd/2`; the pair at
//! position `p` is rotated by `p · f_c` with `f_c = θ^(−2c/hd)`. The angles come from a host-built
//! table (see [`rope_table`]) so that CPU and GPU use bit-identical `cos`/`sin` values: GPU
//! `sin`/`cos` lose accuracy for arguments in the thousands of radians.

use super::par_rows;

/// The cos/sin table for positions `0..n_pos`, computed in f32 exactly as Hugging Face Llama
/// does (`inv_freq = 1 / θ^(2c/hd)`, `angle = p · inv_freq`), each frequency divided by its
/// `scaling` divisor when there is one (Llama 3).
///
/// # Shapes
/// → `(n_pos, hd)`: row `p` is `[cos(p·f_0) … cos(p·f_{hd/2−1}), sin(p·f_0) … sin(…)]`.
pub fn rope_table(
    theta: f32,
    head_dim: usize,
    n_pos: usize,
    scaling: Option<&crate::model::RopeScaling>,
) -> Vec<f32> {
    let half = head_dim / 2;
    let mut inv_freq: Vec<f32> = (0..half)
        .map(|c| 1.0 / theta.powf((2 * c) as f32 / head_dim as f32))
        .collect();
    if let Some(s) = scaling {
        let div = s.divisors(&inv_freq);
        for (f, d) in inv_freq.iter_mut().zip(div) {
            *f /= d;
        }
    }
    let mut table = vec![0.0; n_pos * head_dim];
    for (p, row) in table.chunks_mut(head_dim).enumerate() {
        for c in 0..half {
            let angle = p as f32 * inv_freq[c];
            row[c] = angle.cos();
            row[half + c] = angle.sin();
        }
    }
    table
}

/// CPU reference forward (`sign = 1`) and backward (`sign = −1`, the inverse rotation).
///
/// # Shapes
/// `x (N, H·hd)`, `positions (N)`, `table (P, hd)` → `(N, H·hd)`.
fn rotate(x: &[f32], positions: &[u32], table: &[f32], head_dim: usize, sign: f32) -> Vec<f32> {
    let width = x.len() / positions.len().max(1);
    let half = head_dim / 2;
    let mut out = vec![0.0; x.len()];
    par_rows(&mut out, width, |i, y| {
        let p = positions[i] as usize;
        let cs = &table[p * head_dim..(p + 1) * head_dim];
        let xr = &x[i * width..(i + 1) * width];
        for h in (0..width).step_by(head_dim) {
            for c in 0..half {
                let (cos, sin) = (cs[c], sign * cs[half + c]);
                let (x1, x2) = (xr[h + c], xr[h + half + c]);
                y[h + c] = x1 * cos - x2 * sin;
                y[h + half + c] = x2 * cos + x1 * sin;
            }
        }
    });
    out
}

/// CPU reference forward.
pub fn rope_forward(x: &[f32], positions: &[u32], table: &[f32], head_dim: usize) -> Vec<f32> {
    rotate(x, positions, table, head_dim, 1.0)
}

/// CPU reference backward: the transpose of a rotation is the rotation by the opposite angle.
pub fn rope_backward(dy: &[f32], positions: &[u32], table: &[f32], head_dim: usize) -> Vec<f32> {
    rotate(dy, positions, table, head_dim, -1.0)
}
