//! Products with a weight kept in its storage type ([`Stored`]: f16, bf16, ggml blocks).
//!
//! The weight is decoded a slice at a time into f32 scratch and the slice goes through the same
//! product as a dense f32 weight ([`matmul_into`]), so no f32 copy of the whole matrix ever
//! exists. The slices never cut the sum: `x · Wᵀ` takes whole rows of `W` (each output column
//! is one row's dot product), `dy · W` takes block-aligned column ranges (each output column
//! sums over all rows of `W`). Slices are decoded and multiplied in parallel natively, each
//! product written straight into its block of columns of the output.

use faer::{Accum, MatMut, Par};

#[cfg(test)]
use super::matmul::matmul_into;
use super::matmul::{faer_into, matmul_into_on, takes_small_m};
use crate::backend::Transpose;
use crate::model::host::Stored;
use crate::ops::matmul::MatmulDims;

/// f32 values decoded per slice at most (1 MiB of scratch per thread).
const SLICE_VALUES: usize = 1 << 18;

/// `c = op(a) · op(w)` (or `c += …` with `accumulate`), `w` stored `(rows, cols)`.
///
/// # Shapes
/// As [`matmul_into`] with `b = w`: with `t.b`, `w` is `(n, k)`; else `(k, n)`.
pub fn matmul_stored_into(
    c: &mut [f32],
    a: &[f32],
    w: &Stored,
    dims: MatmulDims,
    t: Transpose,
    accumulate: bool,
) {
    let MatmulDims { m, k, n } = dims;
    assert_eq!(c.len(), m * n);
    assert_eq!(a.len(), m * k);
    let (w_rows, w_cols) = if t.b { (n, k) } else { (k, n) };
    assert_eq!(
        (w.rows, w.cols),
        (w_rows, w_cols),
        "matmul_stored_into: weight shape"
    );
    if m == 0 || n == 0 {
        return;
    }
    // Output columns per slice: whole rows of `w` (t.b) or whole blocks of its columns.
    let align = if t.b { 1 } else { w.block() };
    // Each output column decodes `k` weights (a row of `W`, or a column over its rows).
    let threads = threads();
    let by_memory = (SLICE_VALUES / k.max(1)).max(1);
    let by_threads = n.div_ceil(4 * threads);
    let width = by_memory
        .min(by_threads)
        .max(1)
        .next_multiple_of(align)
        .min(n);
    let starts: Vec<usize> = (0..n).step_by(width).collect();
    let decoded = |j0: usize, j1: usize| {
        if t.b {
            w.rows_f32(j0, j1)
        } else {
            w.cols_f32(j0, j1)
        }
    };
    if !accumulate && k > 0 && !takes_small_m(MatmulDims { m, k, n: width }, t) {
        // Each slice's product goes straight into its block of columns of `c`: the same
        // product as into a buffer of its own (faer's values do not depend on where the
        // destination lives), without the buffer and the copy.
        let mut blocks = Vec::with_capacity(starts.len());
        let mut rest = MatMut::from_row_major_slice_mut(c, m, n);
        for &j0 in &starts {
            let (block, tail) = rest.split_at_col_mut((j0 + width).min(n) - j0);
            blocks.push((j0, block));
            rest = tail;
        }
        let run = |(j0, block): (usize, MatMut<'_, f32>)| {
            let j1 = j0 + block.ncols();
            let sub = MatmulDims { m, k, n: j1 - j0 };
            faer_into(
                block,
                Accum::Replace,
                (a, &decoded(j0, j1)),
                sub,
                t,
                Par::Seq,
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            blocks.into_par_iter().for_each(run);
        }
        #[cfg(target_arch = "wasm32")]
        blocks.into_iter().for_each(run);
        return;
    }
    let slice = |j0: usize| -> (usize, Vec<f32>) {
        let j1 = (j0 + width).min(n);
        let sub = MatmulDims { m, k, n: j1 - j0 };
        let mut out = vec![0.0f32; m * (j1 - j0)];
        matmul_into_on(&mut out, a, &decoded(j0, j1), sub, t, false, false);
        (j0, out)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let parts: Vec<(usize, Vec<f32>)> = {
        use rayon::prelude::*;
        starts.into_par_iter().map(slice).collect()
    };
    #[cfg(target_arch = "wasm32")]
    let parts: Vec<(usize, Vec<f32>)> = starts.into_iter().map(slice).collect();
    for (j0, part) in parts {
        let w = part.len() / m;
        for i in 0..m {
            let dst = &mut c[i * n + j0..i * n + j0 + w];
            let src = &part[i * w..(i + 1) * w];
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
}

fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::GgmlType;
    use crate::ops::matmul::matmul_naive;

    /// Q8_0 `{f16 d, i8 q[32]}`, Q4_0 `{f16 d, u8 q[16]}` or Q4_1 `{f16 d, f16 m, u8 q[16]}`
    /// blocks with varied scales and payloads.
    fn blocks(ty: GgmlType, rows: usize, cols: usize) -> Stored {
        let mut bytes = vec![];
        for r in 0..rows {
            for b in 0..cols / 32 {
                let d = half::f16::from_f32(0.25 * (1 + (r + b) % 3) as f32);
                bytes.extend(d.to_le_bytes());
                if ty == GgmlType::Q4_1 {
                    bytes
                        .extend(half::f16::from_f32(-0.5 * ((r + 2 * b) % 5) as f32).to_le_bytes());
                }
                let payload = if ty == GgmlType::Q8_0 { 32 } else { 16 };
                bytes.extend((0..payload).map(|i| ((r * 7 + b * 5 + i * 29) % 251) as u8));
            }
        }
        Stored::new(ty, bytes, rows, cols).unwrap()
    }

    /// Every orientation a weight is used in, at sizes that split into several slices (and one
    /// short last slice), against the triple loop on the decoded weight.
    #[test]
    fn stored_products_match_the_naive_product_on_the_decoded_weight() {
        let value = |i: usize| ((i * 37 % 19) as f32 - 9.0) / 8.0;
        for (ty, m, w_rows, w_cols) in [
            (GgmlType::Q8_0, 1, 70, 64),
            (GgmlType::Q4_1, 1, 200, 96),
            (GgmlType::Q4_0, 4, 65, 128),
            (GgmlType::Q8_0, 3, 33, 96),
            (GgmlType::Q4_1, 9, 1000, 320),
            (GgmlType::Q8_0, 12, 5, 2048),
        ] {
            let w = blocks(ty, w_rows, w_cols);
            let dense = w.to_f32();
            for t in [Transpose::NT, Transpose::NN, Transpose::TN] {
                let (k, n) = if t.b {
                    (w_cols, w_rows)
                } else {
                    (w_rows, w_cols)
                };
                let dims = MatmulDims { m, k, n };
                let a: Vec<f32> = (0..m * k).map(value).collect();
                let want = matmul_naive(&a, &dense, dims, t);
                let mut c = vec![1.0f32; m * n];
                matmul_stored_into(&mut c, &a, &w, dims, t, true);
                for (i, (&got, &x)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (got - (1.0 + x)).abs() <= 1e-5 * (1.0 + x.abs()) * k as f32,
                        "{ty} {t:?} {m}x{k}x{n} [{i}]: {got} vs 1 + {x}"
                    );
                }
                // Without accumulation it equals the dense product bit for bit: the slices
                // never split a sum.
                let mut dense_c = vec![0.0f32; m * n];
                matmul_into(&mut dense_c, &a, &dense, dims, t, false);
                matmul_stored_into(&mut c, &a, &w, dims, t, false);
                assert_eq!(c, dense_c, "{ty} {t:?} {m}x{k}x{n}");
            }
        }
    }
}
