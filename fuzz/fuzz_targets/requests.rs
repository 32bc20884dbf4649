//! Fuzz target: A request file through `parse_cases`, batch validation, tokenising and locating the subject.
//! The body is `tests/hostile/harness.rs`, which `tests/hostile.rs` replays on stable.
#![no_main]

#[path = "../../tests/hostile/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::requests(data);
});
