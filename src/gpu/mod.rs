//! The gpu backend: wgpu with the WGSL kernels of `shaders/`, natively (Vulkan, Metal, DX12,
//! GL) and on browser WebGPU.
//!
//! - `context`: instance, adapter and device (with the adapter's own limits), device-lost
//!   and uncaptured-error tracking, `describe`.
//! - `buffer`: [`GpuTensor`] and the buffer pool that recycles dropped tensors' buffers.
//! - `encoder`: one pending command encoder that ops record into, and kernel dispatch.
//! - `readback`: async readback that works natively and on the web.
//! - `registry`: the list of shaders ([`SHADERS`]) and the pipeline cache.
//! - `kernels`: one launcher file per op family (bind, set constants, dispatch); the CPU
//!   references they implement are in [`crate::ops`].
//! - `ops`: the [`crate::Backend`] implementation, which calls the launchers.
//! - `counters`: what was asked of the device (dispatches, passes, submits, readbacks,
//!   uploads, bind groups, buffers created), for the benchmarks and the count tests.

mod buffer;
mod context;
mod counters;
mod encoder;
pub mod kernels;
mod ops;
pub mod packed;
mod readback;
mod registry;

pub(crate) use buffer::u32_of;
pub use buffer::{GpuTensor, Packing};
pub use context::{GpuBackend, KernelSet};
pub(crate) use counters::Count;
pub use counters::GpuCounters;
pub(crate) use encoder::Dispatch;
pub use registry::{
    F16, INCLUDES, SHADERS, SUBGROUPS, VARIANTS, WORKGROUP_BYTES, has_variant, shader_source,
    workgroup_bytes,
};
