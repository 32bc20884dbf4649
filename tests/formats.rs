//! Model formats: the GGUF reader, the tokenizer, the Hugging Face safetensors loader and
//! whole-model loading, on the real default model and on small files built here.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

#[path = "formats/archs.rs"]
mod archs;
#[path = "formats/gguf_synthetic.rs"]
mod gguf_synthetic;
#[path = "formats/gguf_writer.rs"]
mod gguf_writer;
#[path = "formats/hf.rs"]
mod hf;
#[path = "formats/kquants.rs"]
mod kquants;
#[path = "formats/real_model.rs"]
mod real_model;
#[path = "formats/tokenizer.rs"]
mod tokenizer;

use nse::Error;

/// The message of a [`Error::Format`], failing the test for any other outcome.
#[track_caller]
pub fn format_msg<T: std::fmt::Debug>(r: nse::Result<T>) -> String {
    match r {
        Err(Error::Format { msg, .. }) => msg,
        other => panic!("expected Error::Format, got {other:?}"),
    }
}

/// The message of a [`Error::Unsupported`], failing the test for any other outcome.
#[track_caller]
pub fn unsupported_msg<T: std::fmt::Debug>(r: nse::Result<T>) -> String {
    match r {
        Err(Error::Unsupported { msg, .. }) => msg,
        other => panic!("expected Error::Unsupported, got {other:?}"),
    }
}

/// Asserts that `msg` contains every one of `parts`.
#[track_caller]
pub fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} does not mention {p:?}");
    }
}
