//! Softmax attention with grouped KV heads over explicit per-query key ranges.
//!
//! Query row `i`, head `h` reads kv head `g = h / (Hq / Hkv)` and the key rows
//! `ranges[i].0 .. ranges[i].1`: `out = Σ_j p_j v_j`, `p = softmax_j(q · k_j / sqrt(hd))`.

use super::par_rows;
use crate::backend::AttnShape;

/// CPU reference forward.
///
/// # Shapes
/// `q (Nq, Hq·hd)`, `k (Nk, Hkv·hd)`, `v (Nk, Hkv·hd)`, `ranges (Nq, 2)` → `(Nq, Hq·hd)`.
pub fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ranges: &[u32],
    s: AttnShape,
) -> Vec<f32> {
    let (hd, qw, kw) = (
        s.head_dim,
        s.n_heads * s.head_dim,
        s.n_kv_heads * s.head_dim,
    );
    let group = s.n_heads / s.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0; q.len()];
    par_rows(&mut out, qw, |i, o| {
        let (start, end) = (ranges[2 * i] as usize, ranges[2 * i + 1] as usize);
        assert!(
            start < end && end <= k.len() / kw,
            "attention row {i}: bad key range {start}..{end}"
        );
        let mut p = vec![0.0f32; end - start];
        for h in 0..s.n_heads {
            let g = h / group;
            let qh = &q[i * qw + h * hd..i * qw + (h + 1) * hd];
            for (j, pj) in (start..end).zip(p.iter_mut()) {
                *pj = dot(qh, &k[j * kw + g * hd..j * kw + (g + 1) * hd]) * scale;
            }
            softmax_in_place(&mut p);
            let oh = &mut o[h * hd..(h + 1) * hd];
            oh.fill(0.0);
            for (j, &pj) in (start..end).zip(&p) {
                for (o, &v) in oh
                    .iter_mut()
                    .zip(&v[j * kw + g * hd..j * kw + (g + 1) * hd])
                {
                    *o += pj * v;
                }
            }
        }
    });
    out
}

/// CPU reference backward, for any ranges (queries and keys may be different rows).
///
/// With `p` the forward probabilities, `dp_j = dout · v_j` and `ds_j = p_j (dp_j − Σ p dp)`:
/// `dq = scale Σ_j ds_j k_j`, `dk_j += scale ds_j q`, `dv_j += p_j dout`.
///
/// # Shapes
/// As [`attention_forward`] plus `dout (Nq, Hq·hd)` → `(dq, dk, dv)` shaped like `q, k, v`.
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ranges: &[u32],
    dout: &[f32],
    s: AttnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hd, qw, kw) = (
        s.head_dim,
        s.n_heads * s.head_dim,
        s.n_kv_heads * s.head_dim,
    );
    let group = s.n_heads / s.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let n = q.len() / qw;
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for i in 0..n {
        let (start, end) = (ranges[2 * i] as usize, ranges[2 * i + 1] as usize);
        let mut p = vec![0.0f32; end - start];
        let mut dp = vec![0.0f32; end - start];
        for h in 0..s.n_heads {
            let g = h / group;
            let qh = &q[i * qw + h * hd..i * qw + (h + 1) * hd];
            let doh = &dout[i * qw + h * hd..i * qw + (h + 1) * hd];
            let kv = |j: usize| j * kw + g * hd..j * kw + (g + 1) * hd;
            for (t, j) in (start..end).enumerate() {
                p[t] = dot(qh, &k[kv(j)]) * scale;
                dp[t] = dot(doh, &v[kv(j)]);
            }
            softmax_in_place(&mut p);
            let pdp: f32 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
            for (t, j) in (start..end).enumerate() {
                let ds = p[t] * (dp[t] - pdp) * scale;
                let r = kv(j);
                for c in 0..hd {
                    dq[i * qw + h * hd + c] += ds * k[r.start + c];
                    dk[r.start + c] += ds * qh[c];
                    dv[r.start + c] += p[t] * doh[c];
                }
            }
        }
    }
    (dq, dk, dv)
}

/// Dot product with eight running sums: without fast-math the compiler vectorises a float
/// reduction only when it is written with independent accumulators.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Max-subtracted softmax.
pub(crate) fn softmax_in_place(p: &mut [f32]) {
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in p.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in p.iter_mut() {
        *x /= sum;
    }
}
