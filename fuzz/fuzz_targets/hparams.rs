//! Fuzz target: A hyperparameter file, checked against a model and round-tripped through JSON.
//! The body is `tests/hostile/harness.rs`, which `tests/hostile.rs` replays on stable.
#![no_main]

#[path = "../../tests/hostile/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::hparams(data);
});
