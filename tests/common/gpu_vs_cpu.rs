//! Helpers for comparing the gpu backend with the cpu backend: the same inputs on both, and
//! reads that check the GPU's result against the CPU's.

use nse::backend::{Backend, TensorInfo};
use nse::cpu::{CpuBackend, CpuTensor};
use nse::gpu::{GpuBackend, GpuTensor};

use super::{Errors, Rng, Tol, assert_close};

/// The same f32 data on both backends.
pub fn up(g: &GpuBackend, data: &[f32], shape: &[usize]) -> (GpuTensor, CpuTensor) {
    (
        g.upload("test input", data, shape).unwrap(),
        CpuBackend.upload("test input", data, shape).unwrap(),
    )
}

/// The same u32 data on both backends.
pub fn up_u32(g: &GpuBackend, data: &[u32], shape: &[usize]) -> (GpuTensor, CpuTensor) {
    (
        g.upload_u32("test ids", data, shape).unwrap(),
        CpuBackend.upload_u32("test ids", data, shape).unwrap(),
    )
}

/// Random f32 data of `shape` on both backends.
pub fn rand(g: &GpuBackend, rng: &mut Rng, shape: &[usize]) -> (GpuTensor, CpuTensor) {
    up(g, &rng.vec(shape.iter().product()), shape)
}

pub fn read(g: &GpuBackend, t: &GpuTensor) -> Vec<f32> {
    pollster::block_on(g.read(t)).unwrap()
}

pub fn read_u32(g: &GpuBackend, t: &GpuTensor) -> Vec<u32> {
    pollster::block_on(g.read_u32(t)).unwrap()
}

/// Panics at the first index where `got` and `want` differ, naming `what`.
pub fn assert_ids(got: &[u32], want: &[u32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!(
            "{what}: first difference at row {i}: got {}, want {} ({} rows)",
            got[i],
            want[i],
            got.len()
        );
    }
}

/// Reads `got`, checks shape and values against `want`, and prints the errors seen.
pub fn check(g: &GpuBackend, got: &GpuTensor, want: &CpuTensor, tol: Tol, what: &str) -> Errors {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let e = assert_close(&read(g, got), want.f32(), tol, what);
    println!(
        "{what}: max abs {:.2e}, max rel {:.2e}",
        e.max_abs, e.max_rel
    );
    e
}
