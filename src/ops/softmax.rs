//! Over the vocabulary: log-softmax (max-stabilised) and its gradient, argmax, seeded top-k
//! sampling.

use super::par_rows;

/// CPU reference: `logp = x − max − log Σ exp(x − max)`, per row; the sum in f64.
///
/// # Shapes
/// `x (N, V)` → `(N, V)`.
pub fn log_softmax_forward(x: &[f32], v: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    log_softmax_in_place(&mut out, v);
    out
}

/// [`log_softmax_forward`] over `x` itself, bit for bit.
pub fn log_softmax_in_place(x: &mut [f32], v: usize) {
    par_rows(x, v, |_, row| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&a| ((a - max) as f64).exp()).sum();
        let lse = max + sum.ln() as f32;
        for y in row.iter_mut() {
            *y -= lse;
        }
    });
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

/// CPU reference of the z loss's terms and their gradient with respect to `logp`: `(dlogp,
/// values)`, the KL sums in f64. [`crate::Backend::z_loss`] is this followed by
/// [`log_softmax_backward`] ([`z_loss_in_place`]).
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
        values[r] = z_loss_row(lp, d, labels[r], weights[r], refs, kl_rows[r], kl_factor);
    }
    (dlogp, values)
}

/// Row `r` of [`z_loss`]: writes `d loss / d logp` into `d` (zeroed) and returns the term.
fn z_loss_row(
    lp: &[f32],
    d: &mut [f32],
    label: u32,
    weight: f32,
    refs: &[f32],
    kl_row: u32,
    kl_factor: f32,
) -> f32 {
    let v = lp.len();
    if label != KL_ROW {
        return match lp.get(label as usize) {
            Some(&x) => {
                d[label as usize] = weight;
                x
            }
            None => 0.0,
        };
    }
    let k = kl_row as usize;
    let reference = &refs[k * v..(k + 1) * v];
    let mut kl = 0.0f64;
    for j in 0..v {
        let p = lp[j].exp();
        kl += p as f64 * (lp[j] - reference[j]) as f64;
        d[j] = kl_factor * p * (lp[j] - reference[j] + 1.0);
    }
    kl as f32
}

/// [`z_loss`] then [`log_softmax_backward`], bit for bit, with `logp` overwritten by the
/// gradient with respect to the logits: the z loop's backward pass then holds one `(R, V)`
/// buffer instead of three. Returns the terms.
pub fn z_loss_in_place(
    logp: &mut [f32],
    v: usize,
    labels: &[u32],
    weights: &[f32],
    refs: &[f32],
    kl_rows: &[u32],
    kl_factor: f32,
) -> Vec<f32> {
    let mut values = vec![0.0f32; labels.len()];
    if v == 0 {
        return values;
    }
    let row = |r: usize, lp: &mut [f32], value: &mut f32| {
        let mut d = vec![0.0f32; v];
        *value = z_loss_row(
            lp, &mut d, labels[r], weights[r], refs, kl_rows[r], kl_factor,
        );
        let total = d.iter().map(|&a| a as f64).sum::<f64>() as f32;
        for (x, &dj) in lp.iter_mut().zip(&d) {
            *x = dj - x.exp() * total;
        }
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        logp.par_chunks_mut(v)
            .zip(values.par_iter_mut())
            .enumerate()
            .for_each(|(r, (lp, value))| row(r, lp, value));
    }
    #[cfg(target_arch = "wasm32")]
    for (r, (lp, value)) in logp.chunks_mut(v).zip(values.iter_mut()).enumerate() {
        row(r, lp, value);
    }
    values
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        logits: Vec<f32>,
        labels: Vec<u32>,
        weights: Vec<f32>,
        refs: Vec<f32>,
        kl_rows: Vec<u32>,
    }

    /// Three rows over a vocabulary of 7: two target rows and a KL row.
    fn case() -> Case {
        let mut s = 7u32;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1 << 24) as f32 * 6.0 - 3.0
        };
        let logits: Vec<f32> = (0..21).map(|_| next()).collect();
        let refs = log_softmax_forward(&(0..7).map(|_| next()).collect::<Vec<_>>(), 7);
        Case {
            logits,
            labels: vec![2, KL_ROW, 6],
            weights: vec![-0.5, 0.0, -0.25],
            refs,
            kl_rows: vec![0, 0, 0],
        }
    }

    impl Case {
        /// [`z_loss_in_place`] of these rows over `logp`.
        fn in_place(&self, logp: &mut [f32]) -> Vec<f32> {
            let (l, w, r, k) = (&self.labels, &self.weights, &self.refs, &self.kl_rows);
            z_loss_in_place(logp, 7, l, w, r, k, 0.0625)
        }
    }

    #[test]
    fn z_loss_in_place_is_z_loss_then_log_softmax_backward_bit_for_bit() {
        let c = case();
        let logp = log_softmax_forward(&c.logits, 7);
        let mut in_place = c.logits.clone();
        log_softmax_in_place(&mut in_place, 7);
        assert_eq!(in_place, logp);
        let (l, w, r, k) = (&c.labels, &c.weights, &c.refs, &c.kl_rows);
        let (dlogp, want_values) = z_loss(&logp, 7, l, w, r, k, 0.0625);
        let want = log_softmax_backward(&logp, &dlogp, 7);
        assert_eq!(c.in_place(&mut in_place), want_values);
        assert_eq!(in_place, want);
    }

    /// The gradient is that of `Σ_target w · logp[label] + kl_factor · Σ_KL KL` with respect to
    /// the logits: central differences in f64 on the same function.
    #[test]
    fn z_loss_gradient_matches_finite_differences() {
        let c = case();
        let loss = |x: &[f64]| -> f64 {
            let mut total = 0.0;
            for (r, row) in x.chunks(7).enumerate() {
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + row.iter().map(|a| (a - max).exp()).sum::<f64>().ln();
                let lp: Vec<f64> = row.iter().map(|a| a - lse).collect();
                total += if c.labels[r] == KL_ROW {
                    let kl: f64 = (0..7)
                        .map(|j| lp[j].exp() * (lp[j] - c.refs[j] as f64))
                        .sum();
                    0.0625 * kl
                } else {
                    c.weights[r] as f64 * lp[c.labels[r] as usize]
                };
            }
            total
        };
        let mut grad = log_softmax_forward(&c.logits, 7);
        c.in_place(&mut grad);
        let x: Vec<f64> = c.logits.iter().map(|&a| a as f64).collect();
        for i in 0..x.len() {
            let (mut hi, mut lo) = (x.clone(), x.clone());
            hi[i] += 1e-5;
            lo[i] -= 1e-5;
            let fd = (loss(&hi) - loss(&lo)) / 2e-5;
            assert!(
                (fd - grad[i] as f64).abs() < 1e-5,
                "logit {i}: finite difference {fd}, gradient {}",
                grad[i]
            );
        }
    }
}
