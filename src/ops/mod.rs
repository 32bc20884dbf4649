//! The ops, one file each: the CPU reference (plain loops, numerically careful: max subtracted
//! before `exp`, sums in f64) and, beside it, the GPU launcher for the WGSL kernel of the same
//! name in `shaders/`. The reference is the specification; the kernel optimises it and is tested
//! against it.
//!
//! References work on slices with explicit sizes so that they read like the maths; the
//! [`crate::cpu::CpuBackend`] wraps them into the [`crate::Backend`] interface.

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod rows;
pub mod softmax;

/// Clears the upper halves of the vector registers on this thread (`vzeroupper`) where the CPU
/// has AVX; does nothing elsewhere.
///
/// faer's AVX-512 kernels can return with the upper register state dirty. Until it is cleared,
/// every legacy-SSE instruction on that thread (which is all of this crate's own code, built
/// for the x86-64 baseline) pays a state-transition penalty: measured here, the z loop ran 2.5×
/// and the forward pass 5× slower after a minute of matmuls than in a fresh process. So every
/// faer call is followed by this on the threads that ran it ([`clear_upper_everywhere`] for
/// the threaded ones).
#[inline]
pub(crate) fn clear_upper() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, which is all `vzeroupper` needs.
        unsafe { vzeroupper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn vzeroupper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// [`clear_upper`] on this thread and on every thread of the rayon pool (natively).
pub(crate) fn clear_upper_everywhere() {
    #[cfg(not(target_arch = "wasm32"))]
    rayon::broadcast(|_| clear_upper());
    clear_upper();
}

/// Calls [`clear_upper_everywhere`] when dropped: held by code that uses faer's solvers.
pub(crate) struct ClearUpperOnDrop;

impl Drop for ClearUpperOnDrop {
    fn drop(&mut self) {
        clear_upper_everywhere();
    }
}

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
