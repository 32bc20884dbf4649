//! The launchers of `shaders/embedding.wgsl`, the WGSL kernels of `crate::ops::embedding`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, Packing, u32_of};

/// Invocations per workgroup of `shaders/embedding.wgsl`.
pub const EMBEDDING_WG: u32 = 256;

/// GPU embedding lookup. Ids `≥ V` are a caller bug; the kernel gives them a zero row.
///
/// # Shapes
/// `table (V, D)`, `ids (N)` u32 → `(N, D)`.
pub(crate) fn launch_embedding(
    gpu: &GpuBackend,
    table: &GpuTensor,
    ids: &GpuTensor,
) -> crate::Result<GpuTensor> {
    assert_eq!(
        table.shape().len(),
        2,
        "embedding: table must be (V, D), got {:?}",
        table.shape()
    );
    ids.expect_dtype(DType::U32, "embedding ids");
    let (vocab, d) = (table.shape()[0], table.shape()[1]);
    let out = gpu.empty("embedding output", &[ids.len(), d], DType::F32)?;
    let len = u32_of(out.len());
    gpu.dispatch(&Dispatch {
        shader: gpu.variant("embedding", &[table.packing()]),
        entry: "main",
        overrides: &Packing::constants(table.packing(), ("table_FMT", "table_GROUP")),
        params: &[len, u32_of(d), u32_of(vocab)],
        bindings: &[(1, table.buffer()), (2, ids.buffer()), (3, out.buffer())],
        workgroups: u64::from(len).div_ceil(u64::from(EMBEDDING_WG)),
    })?;
    Ok(out)
}
