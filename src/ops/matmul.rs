//! Matrix product `C = op(A) · op(B)` (and `C += …`): the sizes, and the reference, a plain
//! triple loop ([`matmul_naive`]) that both the cpu backend's faer path
//! (`crate::cpu::matmul::matmul_into`) and the WGSL kernel are tested against.

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
