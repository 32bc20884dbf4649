//! Keeping faer's AVX-512 kernels from slowing down the rest of the process.

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
