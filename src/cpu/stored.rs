//! Products with a weight kept in its storage type ([`Stored`]: f16, bf16, ggml blocks).
//!
//! The weight is decoded a slice at a time into f32 scratch and the slice goes through the same
//! product as a dense f32 weight ([`matmul_into`]), so no f32 copy of the whole matrix ever
//! exists. The slices never cut the sum: `x · Wᵀ` takes whole rows of `W` (each output column
//! is one row's dot product), `dy · W` takes block-aligned column ranges (each output column
//! sums over all rows of `W`). Slices are decoded and multiplied in parallel natively.

#[cfg(test)]
use super::matmul::matmul_into;
use super::matmul::matmul_into_on;
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
    if t.b && !t.a && m <= FUSED_M && fused_nt(c, a, w, m, accumulate) {
        return;
    }
    // Output columns per slice: whole rows of `w` (t.b) or whole blocks of its columns.
    let align = if t.b { 1 } else { w.block() };
    let per_value = if t.b { k } else { k.max(1) };
    let threads = threads();
    let by_memory = (SLICE_VALUES / per_value.max(1)).max(1);
    let by_threads = n.div_ceil(4 * threads);
    let width = by_memory
        .min(by_threads)
        .max(1)
        .next_multiple_of(align)
        .min(n);
    let slice = |j0: usize| -> (usize, Vec<f32>) {
        let j1 = (j0 + width).min(n);
        let (b, sub) = if t.b {
            (w.rows_f32(j0, j1), MatmulDims { m, k, n: j1 - j0 })
        } else {
            (w.cols_f32(j0, j1), MatmulDims { m, k, n: j1 - j0 })
        };
        let mut out = vec![0.0f32; m * (j1 - j0)];
        matmul_into_on(&mut out, a, &b, sub, t, false, false);
        (j0, out)
    };
    let starts: Vec<usize> = (0..n).step_by(width).collect();
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

/// Rows of `a` at or below which `a · Wᵀ` of a block-quantised `W` takes [`fused_nt`] (decode).
const FUSED_M: usize = 4;

/// `c = a · Wᵀ` for a few rows of `a`, straight from Q4_0, Q4_1 or Q8_0 blocks, without decoding
/// them to memory: per block, `d · Σ q_j a_j (+ m · Σ a_j)`. Reads a fifth to a quarter of the
/// bytes a dense f32 weight takes, which is what a token of decoding is bound by. The sum runs
/// block by block, so it rounds differently from the dense product (about 1e-7 relative).
/// Returns false, doing nothing, for other storage types.
fn fused_nt(c: &mut [f32], a: &[f32], w: &Stored, m: usize, accumulate: bool) -> bool {
    use crate::model::gguf::GgmlType;
    let (k, n) = (w.cols, w.rows);
    let (ty, rb) = (w.ty, w.row_bytes());
    let block_bytes = match ty {
        GgmlType::Q4_0 => 18,
        GgmlType::Q4_1 => 20,
        GgmlType::Q8_0 => 34,
        _ => return false,
    };
    let f16 = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    // Per row of `a`, the sum of each block of 32 (Q4_1's minimum multiplies it).
    let sums: Vec<f32> = a.chunks_exact(32).map(|x| x.iter().sum()).collect();
    let nb = k / 32;
    let row = |j: usize, out: &mut [f32]| {
        let bytes = &w.bytes[j * rb..(j + 1) * rb];
        for (i, o) in out.iter_mut().enumerate() {
            let x = &a[i * k..(i + 1) * k];
            let mut acc = 0.0f32;
            for (q, blk) in bytes.chunks_exact(block_bytes).enumerate() {
                let xb: &[f32; 32] = x[q * 32..q * 32 + 32].try_into().expect("32 values");
                acc += match ty {
                    GgmlType::Q8_0 => {
                        let mut s = 0.0f32;
                        for (v, &qv) in xb.iter().zip(&blk[2..34]) {
                            s += v * (qv as i8) as f32;
                        }
                        f16(blk, 0) * s
                    }
                    GgmlType::Q4_0 => {
                        let qs = &blk[2..18];
                        let mut s = 0.0f32;
                        for jj in 0..16 {
                            s += xb[jj] * ((qs[jj] & 15) as i32 - 8) as f32
                                + xb[jj + 16] * ((qs[jj] >> 4) as i32 - 8) as f32;
                        }
                        f16(blk, 0) * s
                    }
                    _ => {
                        let qs = &blk[4..20];
                        let mut s = 0.0f32;
                        for jj in 0..16 {
                            s += xb[jj] * (qs[jj] & 15) as f32 + xb[jj + 16] * (qs[jj] >> 4) as f32;
                        }
                        f16(blk, 0) * s + f16(blk, 2) * sums[i * nb + q]
                    }
                };
            }
            *o = acc;
        }
    };
    let mut out = vec![0.0f32; n * m]; // (n, m): one contiguous chunk per weight row
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(m * 64)
            .enumerate()
            .for_each(|(t, chunk)| {
                for (r, o) in chunk.chunks_exact_mut(m).enumerate() {
                    row(t * 64 + r, o);
                }
            });
    }
    #[cfg(target_arch = "wasm32")]
    for (j, o) in out.chunks_exact_mut(m).enumerate() {
        row(j, o);
    }
    for j in 0..n {
        for i in 0..m {
            let v = out[j * m + i];
            let dst = &mut c[i * n + j];
            *dst = if accumulate { *dst + v } else { v };
        }
    }
    true
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
                if t.b && !t.a && m <= FUSED_M {
                    // The fused path sums block by block.
                    for (&got, &x) in c.iter().zip(&dense_c) {
                        assert!(
                            (got - x).abs() <= 1e-6 * k as f32 * (1.0 + x.abs()),
                            "{ty} fused {m}x{k}x{n}: {got} vs {x}"
                        );
                    }
                } else {
                    assert_eq!(c, dense_c, "{ty} {t:?} {m}x{k}x{n}");
                }
            }
        }
    }
}
