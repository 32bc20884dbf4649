//! Matrix product `C = op(A) · op(B)` (and `C += …`).
//!
//! The CPU path is faer's GEMM (cache-blocked, SIMD, threaded natively). A plain triple loop,
//! [`matmul_naive`], is kept as the independent oracle that both faer and the WGSL kernel are
//! tested against.

use faer::{Accum, MatMut, MatRef, Par};

use crate::backend::Transpose;

/// Logical sizes of a product: `op(A)` is `(m, k)`, `op(B)` is `(k, n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl MatmulDims {
    /// Sizes from stored shapes `a (r_a, c_a)`, `b (r_b, c_b)`; panics if they don't chain.
    pub fn from_shapes(a: &[usize], b: &[usize], t: Transpose) -> Self {
        assert!(
            a.len() == 2 && b.len() == 2,
            "matmul wants matrices, got {a:?} and {b:?}"
        );
        let (m, ka) = if t.a { (a[1], a[0]) } else { (a[0], a[1]) };
        let (kb, n) = if t.b { (b[1], b[0]) } else { (b[0], b[1]) };
        assert_eq!(ka, kb, "matmul inner sizes differ: {a:?} {b:?} {t:?}");
        MatmulDims { m, k: ka, n }
    }
}

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
    if !t.a && !t.b && m <= SMALL_M {
        small_m_nn(c, a, b, dims, accumulate);
        return;
    }
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
    let dst = MatMut::from_row_major_slice_mut(c, m, n);
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    let par = parallelism(m * n * k);
    faer::linalg::matmul::matmul(dst, accum, lhs, rhs, 1.0f32, par);
    if matches!(par, Par::Seq) {
        super::clear_upper();
    } else {
        super::clear_upper_everywhere();
    }
}

/// Row count at or below which `A (m, k) · B (k, n)` takes [`small_m_nn`].
const SMALL_M: usize = 8;

/// `C = A · B` for a few rows of `A` as a sum of scaled rows of `B`, read once and in order.
/// faer packs all of `B` per call, which costs ~10× more than the product when `m` is tiny and
/// `k` huge (the LM head's backward: `(R, V) · (V, d)` with `V` = 49,152).
fn small_m_nn(c: &mut [f32], a: &[f32], b: &[f32], dims: MatmulDims, accumulate: bool) {
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
    let parts: Vec<(usize, Vec<f32>)> = {
        use rayon::prelude::*;
        let chunk = n.div_ceil(rayon::current_num_threads()).max(64);
        (0..n.div_ceil(chunk))
            .into_par_iter()
            .map(|q| columns(q * chunk, ((q + 1) * chunk).min(n)))
            .collect()
    };
    #[cfg(target_arch = "wasm32")]
    let parts = vec![columns(0, n)];
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

/// The independent oracle: a triple loop accumulating in f64.
pub fn matmul_naive(a: &[f32], b: &[f32], dims: MatmulDims, t: Transpose) -> Vec<f32> {
    let MatmulDims { m, k, n } = dims;
    let at = |i: usize, p: usize| if t.a { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if t.b { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
            c[i * n + j] = s as f32;
        }
    }
    c
}

// ---- GPU launcher: `shaders/matmul.wgsl`, `shaders/matmul_vec4.wgsl` ----

use crate::backend::TensorInfo;
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per side of a matmul workgroup.
pub const TILE: u32 = 8;
/// Outputs per invocation per side (a 4×4 register block).
pub const BLOCK: u32 = 4;
/// Invocations per matmul workgroup (`TILE²`).
pub const MATMUL_WG: u32 = TILE * TILE;

/// The kernel (shader, entry point) the gpu backend uses for a product of `dims` and `t`: a
/// vec4 path when the contiguous dimension allows whole-vec4 loads, else the general one.
pub fn gpu_matmul_kernel(dims: MatmulDims, t: Transpose) -> (&'static str, &'static str) {
    let MatmulDims { m, k, n } = dims;
    match t {
        Transpose::NT if k % 4 == 0 => ("matmul_vec4", "nt"),
        Transpose::NN if n % 4 == 0 => ("matmul_vec4", "nn"),
        Transpose::TN if m % 4 == 0 && n % 4 == 0 => ("matmul_vec4", "tn"),
        _ => ("matmul", "main"),
    }
}

/// GPU `c = op(a) · op(b)`, or `c += …` with `accumulate`.
///
/// # Shapes
/// `a (M, K)` or `(K, M)`, `b (K, N)` or `(N, K)`, `c (M, N)`.
pub(crate) fn launch_matmul(
    gpu: &GpuBackend,
    c: &GpuTensor,
    a: &GpuTensor,
    b: &GpuTensor,
    t: Transpose,
    accumulate: bool,
) -> crate::Result<()> {
    let dims = MatmulDims::from_shapes(a.shape(), b.shape(), t);
    let MatmulDims { m, k, n } = dims;
    assert_eq!(c.shape(), [m, n], "matmul: output shape");
    if m == 0 || n == 0 {
        return Ok(());
    }
    let span = (TILE * BLOCK) as usize;
    let tiles_n = n.div_ceil(span);
    let tiles = m.div_ceil(span) * tiles_n;
    let (shader, entry) = gpu_matmul_kernel(dims, t);
    let acc = f64::from(u8::from(accumulate));
    let general = [
        ("TRANS_A", f64::from(u8::from(t.a))),
        ("TRANS_B", f64::from(u8::from(t.b))),
        ("ACCUMULATE", acc),
    ];
    let vec4 = [("ACCUMULATE", acc)];
    gpu.dispatch(&Dispatch {
        shader,
        entry,
        overrides: if shader == "matmul" { &general } else { &vec4 },
        params: &[
            u32_of(m),
            u32_of(n),
            u32_of(k),
            u32_of(tiles_n),
            u32_of(tiles),
        ],
        bindings: &[(1, a.buffer()), (2, b.buffer()), (3, c.buffer())],
        workgroups: tiles as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
