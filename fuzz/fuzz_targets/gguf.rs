//! Fuzz target: A GGUF file, read up to a model with its weights and RoPE table, under the memory budget.
//! The body is `tests/hostile/harness.rs`, which `tests/hostile.rs` replays on stable.
#![no_main]

#[path = "../../tests/hostile/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::gguf(data);
});
