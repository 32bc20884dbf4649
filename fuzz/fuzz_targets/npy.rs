//! Fuzz target: A `.npy` file as a matrix and as a covariance statistic (the golden files and the cache).
//! The body is `tests/hostile/harness.rs`, which `tests/hostile.rs` replays on stable.
#![no_main]

#[path = "../../tests/hostile/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::npy(data);
});
