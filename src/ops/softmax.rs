//! Over the vocabulary: log-softmax (max-stabilised) and its gradient, argmax, seeded top-k
//! sampling.

use super::par_rows;

/// CPU reference: `logp = x − max − log Σ exp(x − max)`, per row; the sum in f64.
///
/// # Shapes
/// `x (N, V)` → `(N, V)`.
pub fn log_softmax_forward(x: &[f32], v: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    par_rows(&mut out, v, |i, y| {
        let xr = &x[i * v..(i + 1) * v];
        let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = xr.iter().map(|&a| ((a - max) as f64).exp()).sum();
        let lse = max + sum.ln() as f32;
        for (y, &a) in y.iter_mut().zip(xr) {
            *y = a - lse;
        }
    });
    out
}

/// CPU reference gradient: `dx = dy − exp(logp) · Σ dy`.
///
/// # Shapes
/// `logp (N, V)`, `dy (N, V)` → `(N, V)`.
pub fn log_softmax_backward(logp: &[f32], dy: &[f32], v: usize) -> Vec<f32> {
    let mut out = vec![0.0; logp.len()];
    par_rows(&mut out, v, |i, dx| {
        let (lp, d) = (&logp[i * v..(i + 1) * v], &dy[i * v..(i + 1) * v]);
        let total = d.iter().map(|&a| a as f64).sum::<f64>() as f32;
        for j in 0..v {
            dx[j] = d[j] - lp[j].exp() * total;
        }
    });
    out
}

/// The label of a KL row in [`z_loss`].
pub const KL_ROW: u32 = u32::MAX;

/// CPU reference of [`crate::Backend::z_loss`]: `(dlogp, values)`, the KL sums in f64.
pub fn z_loss(
    logp: &[f32],
    v: usize,
    labels: &[u32],
    weights: &[f32],
    refs: &[f32],
    kl_rows: &[u32],
    kl_factor: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut dlogp = vec![0.0f32; logp.len()];
    let mut values = vec![0.0f32; labels.len()];
    for (r, (d, lp)) in dlogp.chunks_mut(v).zip(logp.chunks(v)).enumerate() {
        let label = labels[r];
        if label != KL_ROW {
            if let Some(&x) = lp.get(label as usize) {
                values[r] = x;
                d[label as usize] = weights[r];
            }
            continue;
        }
        let k = kl_rows[r] as usize;
        let reference = &refs[k * v..(k + 1) * v];
        let mut kl = 0.0f64;
        for j in 0..v {
            let p = lp[j].exp();
            kl += p as f64 * (lp[j] - reference[j]) as f64;
            d[j] = kl_factor * p * (lp[j] - reference[j] + 1.0);
        }
        values[r] = kl as f32;
    }
    (dlogp, values)
}

/// CPU reference: index of the first maximum of each row.
pub fn argmax_forward(x: &[f32], v: usize) -> Vec<u32> {
    x.chunks(v)
        .map(|row| {
            let mut best = 0;
            for (j, &a) in row.iter().enumerate() {
                if a > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// CPU reference for seeded top-k sampling: the `k` largest logits (lower index first on
/// ties) in descending order, their softmax, and the first token whose running probability
/// exceeds `u` (the last of the `k` if rounding leaves the sum below `u`).
///
/// # Shapes
/// `x (N, V)`, `uniforms (N)` → `(N)`.
pub fn sample_top_k_forward(x: &[f32], v: usize, k: usize, uniforms: &[f32]) -> Vec<u32> {
    x.chunks(v)
        .zip(uniforms)
        .map(|(row, &u)| {
            let top = top_k(row, k);
            let max = row[top[0]];
            let w: Vec<f32> = top.iter().map(|&j| (row[j] - max).exp()).collect();
            let sum: f32 = w.iter().sum();
            let mut acc = 0.0;
            for (&j, &wj) in top.iter().zip(&w) {
                acc += wj / sum;
                if acc > u {
                    return j as u32;
                }
            }
            *top.last().expect("k >= 1") as u32
        })
        .collect()
}

/// Indices of the `k` largest values, descending, ties to the lower index.
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let k = k.clamp(1, row.len());
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let cmp = |&a: &usize, &b: &usize| row[b].total_cmp(&row[a]).then(a.cmp(&b));
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx
}
