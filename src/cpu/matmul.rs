//! The cpu backend's matrix product: faer's GEMM (cache-blocked, SIMD, threaded natively), and a
//! few-rows path for the products faer is slow at. Tested against the reference
//! [`crate::ops::matmul::matmul_naive`].

use faer::{Accum, MatMut, MatRef, Par};

use crate::backend::Transpose;
use crate::ops::matmul::MatmulDims;

/// `c = op(a) · op(b)` (or `c += …` with `accumulate`) with faer.
///
/// # Shapes
/// `a (m, k)` or `(k, m)`, `b (k, n)` or `(n, k)`, `c (m, n)`; all row-major.
pub fn matmul_into(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: MatmulDims,
    t: Transpose,
    accumulate: bool,
) {
    matmul_into_on(c, a, b, dims, t, accumulate, true)
}

/// [`matmul_into`], on the calling thread alone unless `threaded` (for callers that are already
/// one of several parallel tasks).
pub(crate) fn matmul_into_on(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: MatmulDims,
    t: Transpose,
    accumulate: bool,
    threaded: bool,
) {
    let MatmulDims { m, k, n } = dims;
    assert_eq!(c.len(), m * n);
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    if takes_small_m(dims, t) {
        small_m_nn(c, a, b, dims, accumulate, threaded);
        return;
    }
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    let par = if threaded {
        parallelism(m * n * k)
    } else {
        Par::Seq
    };
    faer_into(
        MatMut::from_row_major_slice_mut(c, m, n),
        accum,
        (a, b),
        dims,
        t,
        par,
    );
}

/// Whether [`matmul_into_on`] takes [`small_m_nn`] for these dimensions (otherwise faer).
pub(crate) fn takes_small_m(dims: MatmulDims, t: Transpose) -> bool {
    !t.a && !t.b && dims.m <= SMALL_M
}

/// faer's product into `dst`, an `(m, n)` view that may be a block of columns of a wider
/// matrix (the values do not depend on where `dst` lives); `k > 0`.
pub(crate) fn faer_into(
    dst: MatMut<'_, f32>,
    accum: Accum,
    (a, b): (&[f32], &[f32]),
    dims: MatmulDims,
    t: Transpose,
    par: Par,
) {
    let MatmulDims { m, k, n } = dims;
    let lhs = if t.a {
        MatRef::from_row_major_slice(a, k, m).transpose()
    } else {
        MatRef::from_row_major_slice(a, m, k)
    };
    let rhs = if t.b {
        MatRef::from_row_major_slice(b, n, k).transpose()
    } else {
        MatRef::from_row_major_slice(b, k, n)
    };
    faer::linalg::matmul::matmul(dst, accum, lhs, rhs, 1.0f32, par);
    if matches!(par, Par::Seq) {
        super::simd::clear_upper();
    } else {
        super::simd::clear_upper_everywhere();
    }
}

/// Row count at or below which `A (m, k) · B (k, n)` takes [`small_m_nn`].
const SMALL_M: usize = 8;

/// `C = A · B` for a few rows of `A` as a sum of scaled rows of `B`, read once and in order.
/// faer packs all of `B` per call, which costs ~10× more than the product when `m` is tiny and
/// `k` huge (the LM head's backward: `(R, V) · (V, d)` with `V` = 49,152).
fn small_m_nn(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: MatmulDims,
    accumulate: bool,
    threaded: bool,
) {
    let MatmulDims { m, k, n } = dims;
    // Rows of `B` are summed in f32 over blocks of `BLOCK`, then the block sums in f64: the
    // plain running f32 sum over k = 49,152 terms loses ~1e-4 relative, enough to move the z
    // optimisation's Adam trajectory away from the reference's (whose BLAS sums in blocks).
    const BLOCK: usize = 128;
    let columns = |j0: usize, j1: usize| {
        let w = j1 - j0;
        let mut total = vec![0.0f64; m * w];
        let mut part = vec![0.0f32; m * w];
        for p0 in (0..k).step_by(BLOCK) {
            part.fill(0.0);
            for p in p0..(p0 + BLOCK).min(k) {
                let brow = &b[p * n + j0..p * n + j1];
                for i in 0..m {
                    let x = a[i * k + p];
                    if x != 0.0 {
                        for (o, &y) in part[i * w..(i + 1) * w].iter_mut().zip(brow) {
                            *o += x * y;
                        }
                    }
                }
            }
            for (t, &v) in total.iter_mut().zip(&part) {
                *t += v as f64;
            }
        }
        (
            j0,
            total.into_iter().map(|v| v as f32).collect::<Vec<f32>>(),
        )
    };
    #[cfg(not(target_arch = "wasm32"))]
    let parts: Vec<(usize, Vec<f32>)> = if !threaded {
        vec![columns(0, n)]
    } else {
        use rayon::prelude::*;
        let chunk = n.div_ceil(rayon::current_num_threads()).max(64);
        (0..n.div_ceil(chunk))
            .into_par_iter()
            .map(|q| columns(q * chunk, ((q + 1) * chunk).min(n)))
            .collect()
    };
    #[cfg(target_arch = "wasm32")]
    let parts = {
        let _ = threaded; // one thread in the page
        vec![columns(0, n)]
    };
    for (j0, part) in parts {
        let w = part.len() / m.max(1);
        for i in 0..m {
            let dst = &mut c[i * n + j0..i * n + j0 + w];
            for (o, &v) in dst.iter_mut().zip(&part[i * w..(i + 1) * w]) {
                *o = if accumulate { *o + v } else { v };
            }
        }
    }
}

/// Threads only pay off above a few hundred thousand multiply-adds.
fn parallelism(work: usize) -> Par {
    #[cfg(not(target_arch = "wasm32"))]
    if work >= 1 << 18 {
        return Par::rayon(0);
    }
    let _ = work;
    Par::Seq
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::matmul_naive;

    /// Both paths (faer, and the few-rows path) against the triple loop, with and without
    /// accumulation, at awkward sizes.
    #[test]
    fn matmul_into_matches_the_naive_product() {
        let value = |i: usize, salt: usize| ((i * 31 + salt * 7) % 17) as f32 / 17.0 - 0.5;
        for (m, k, n) in [
            (1, 1, 1),
            (3, 7, 5),
            (8, 300, 33),
            (9, 40, 65),
            (1, 2000, 3),
        ] {
            for t in [Transpose::NN, Transpose::NT, Transpose::TN] {
                let dims = MatmulDims { m, k, n };
                let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
                let b: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
                let want = matmul_naive(&a, &b, dims, t);
                let mut c = vec![1.0f32; m * n];
                matmul_into(&mut c, &a, &b, dims, t, true);
                for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (got - (1.0 + w)).abs() <= 1e-5 * (1.0 + w.abs()) * k as f32,
                        "{t:?} {m}x{k}x{n} [{i}]: {got} vs 1 + {w}"
                    );
                }
                matmul_into(&mut c, &a, &b, dims, t, false);
                for (&got, &w) in c.iter().zip(&want) {
                    assert!(
                        (got - w).abs() <= 1e-5 * (1.0 + w.abs()) * k as f32,
                        "{t:?} {m}x{k}x{n}: {got} vs {w}"
                    );
                }
            }
        }
    }
}
