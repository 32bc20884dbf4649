//! Bad prompts get clear errors, never panics: an empty prompt, a prompt longer than the
//! context, a prompt plus new tokens longer than the context, token ids outside the vocabulary.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tiny::{tiny_config, tiny_weights};
use nse::cpu::CpuBackend;
use nse::model::{ForwardSpec, LogitRows, Model, Packed, Sampling, generate};

fn model() -> Model<CpuBackend> {
    let c = tiny_config(64);
    Model::upload(CpuBackend, c.clone(), tiny_weights(&c, 1)).unwrap()
}

fn err_of<T>(r: nse::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_prompts_are_rejected() {
    let m = model();
    let e = err_of(pollster::block_on(generate(
        &m,
        &[],
        4,
        Sampling::Greedy,
        |_| {},
    )));
    assert!(e.contains("empty"), "{e}");
    let mut cache = m.new_cache(8).unwrap();
    assert!(err_of(m.forward_cached(&mut cache, &[])).contains("empty"));
}

#[test]
fn prompts_longer_than_the_context_are_rejected() {
    let m = model();
    let ctx = m.config.max_ctx;
    let long = vec![5u32; ctx + 1];
    let e = err_of(m.forward(
        &Packed::new(std::slice::from_ref(&long)),
        &ForwardSpec {
            logits: LogitRows::Last,
            ..Default::default()
        },
    ));
    assert!(
        e.contains("longer than the model's context") && e.contains(&ctx.to_string()),
        "{e}"
    );
    let e = err_of(pollster::block_on(generate(
        &m,
        &long,
        1,
        Sampling::Greedy,
        |_| {},
    )));
    assert!(e.contains("context"), "{e}");
    // A prompt that fits, but not with the requested new tokens.
    let e = err_of(pollster::block_on(generate(
        &m,
        &vec![5u32; ctx - 2],
        10,
        Sampling::Greedy,
        |_| {},
    )));
    assert!(
        e.contains("exceeds the context") && e.contains("--max-tokens"),
        "{e}"
    );
}

#[test]
fn token_ids_outside_the_vocabulary_are_rejected() {
    let m = model();
    let e = err_of(m.forward(&Packed::new(&[vec![1u32, 64]]), &ForwardSpec::default()));
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = err_of(pollster::block_on(generate(
        &m,
        &[3],
        4,
        Sampling::TopK { k: 0, seed: 1 },
        |_| {},
    )));
    assert!(e.contains("k >= 1"), "{e}");
}
