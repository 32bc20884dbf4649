//! Fuzz target: config.json + tokenizer.json + one safetensors shard, framed in one input, up to a model.
//! The body is `tests/hostile/harness.rs`, which `tests/hostile.rs` replays on stable.
#![no_main]

#[path = "../../tests/hostile/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::hf(data);
});
