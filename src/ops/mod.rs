//! The ops, one file each: the CPU reference (plain loops, numerically careful: max subtracted
//! before `exp`, sums in f64). The reference is the specification: the cpu backend's fast paths
//! (`crate::cpu`) and the WGSL kernels (`shaders/`, launched from `crate::gpu::kernels`)
//! optimise it and are tested against it. Nothing here depends on a backend.
//!
//! References work on slices with explicit sizes so that they read like the maths; the
//! [`crate::cpu::CpuBackend`] wraps them into the [`crate::Backend`] interface.

pub mod adam;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod layer_norm;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod rows;
pub mod softmax;

/// Runs `f(row_index, row)` over the `row_len`-wide rows of `out`, on all cores natively and
/// sequentially in wasm. Used by the references whose rows are independent.
pub(crate) fn par_rows<F>(out: &mut [f32], row_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if row_len == 0 {
        return;
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        // Tiny outputs are cheaper on one thread than the fork-join.
        if out.len() >= 1 << 14 {
            out.par_chunks_mut(row_len)
                .enumerate()
                .for_each(|(i, row)| f(i, row));
            return;
        }
    }
    out.chunks_mut(row_len)
        .enumerate()
        .for_each(|(i, row)| f(i, row));
}

/// Helpers for the references' unit tests: seeded inputs, central differences, and a
/// comparison against values worked out in f64.
#[cfg(test)]
pub(crate) mod testing {
    /// `n` seeded values uniform in `[lo, hi)` (SplitMix64: the same on every platform).
    pub fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                let u = ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32;
                lo + (hi - lo) * u
            })
            .collect()
    }

    /// `∂L/∂x` of `L = Σ c ⊙ f(x)` by central differences of step about `h`, `L` summed in f64
    /// and each step divided by the difference of the f32 inputs actually taken.
    pub fn numeric_grad(x: &[f32], c: &[f32], h: f32, f: impl Fn(&[f32]) -> Vec<f32>) -> Vec<f64> {
        let loss = |x: &[f32]| -> f64 {
            let y = f(x);
            assert_eq!(y.len(), c.len(), "numeric_grad: one weight per output");
            y.iter().zip(c).map(|(&y, &c)| y as f64 * c as f64).sum()
        };
        let mut x = x.to_vec();
        (0..x.len())
            .map(|i| {
                let x0 = x[i];
                let (plus, minus) = (x0 + h, x0 - h);
                x[i] = plus;
                let l_plus = loss(&x);
                x[i] = minus;
                let l_minus = loss(&x);
                x[i] = x0;
                (l_plus - l_minus) / (plus as f64 - minus as f64)
            })
            .collect()
    }

    /// Panics unless `|got_i − want_i| ≤ tol · (1 + |want_i|)` for every `i`, naming the worst
    /// index and both values there.
    pub fn assert_close_f64(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let excess = |i: usize| (got[i] as f64 - want[i]).abs() - tol * (1.0 + want[i].abs());
        let worst = (0..got.len()).max_by(|&a, &b| excess(a).total_cmp(&excess(b)));
        if let Some(i) = worst.filter(|&i| excess(i).is_nan() || excess(i) > 0.0) {
            panic!(
                "{what}: index {i}: got {}, want {} (tolerance {tol} · (1 + |want|), {} values)",
                got[i],
                want[i],
                got.len()
            );
        }
    }
}
