//! # nse — neuron-level sequential knowledge editing on your own GPU
//!
//! A Llama-family inference engine with two backends behind one interface ([`backend::Backend`]):
//! `gpu` (wgpu + our WGSL kernels, natively and on browser WebGPU) and `cpu` (plain Rust, faer
//! for matmuls). On top of it sit the NSE editor with MEMIT-seq and AlphaEdit beside it, the
//! CounterFact/zsRE evaluation, a command line and a browser page.
//!
//! Dependencies point one way: `web, cli → edit, eval → model → ops → backend (cpu, gpu)`.
//! See `ARCHITECTURE.md` for the data flow, who owns which buffer, and where f64 lives.

pub mod backend;
pub mod budget;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod cpu;
pub mod edit;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod model;
pub mod npy;
pub mod ops;
pub mod session;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use backend::{AttnShape, Backend, DType, TensorInfo, Transpose};
pub use error::{Error, Result};
