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
