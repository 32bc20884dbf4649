//! The launchers of `shaders/rope.wgsl`, the WGSL kernels of `crate::ops::rope`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per workgroup of `shaders/rope.wgsl`.
pub const ROPE_WG: u32 = 256;

/// GPU rotation by `sign · angle`: [`rope_forward`](crate::ops::rope::rope_forward) with `sign = 1`, [`rope_backward`](crate::ops::rope::rope_backward) with −1.
///
/// # Shapes
/// `x (N, H·hd)`, `positions (N)` u32, `table (P, hd)` → `(N, H·hd)`.
pub(crate) fn launch_rope(
    gpu: &GpuBackend,
    x: &GpuTensor,
    positions: &GpuTensor,
    table: &GpuTensor,
    head_dim: usize,
    sign: f32,
) -> crate::Result<GpuTensor> {
    positions.expect_dtype(DType::U32, "rope positions");
    assert!(
        head_dim > 0 && head_dim.is_multiple_of(2),
        "rope: head_dim {head_dim} must be even"
    );
    let width = x.width();
    assert_eq!(
        width % head_dim,
        0,
        "rope: row width {width} is not a multiple of head_dim {head_dim}"
    );
    let rows = x.len() / width.max(1);
    assert_eq!(
        positions.len(),
        rows,
        "rope: {} positions for {rows} rows",
        positions.len()
    );
    assert_eq!(table.width(), head_dim, "rope: table width");
    let n_pos = table.len() / head_dim;
    assert!(n_pos > 0, "rope: empty table");
    let out = gpu.empty("rope output", x.shape(), DType::F32)?;
    let len = u32_of(x.len() / 2);
    gpu.dispatch(&Dispatch {
        shader: "rope",
        entry: "main",
        overrides: &[],
        params: &[
            len,
            u32_of(width / head_dim),
            u32_of(head_dim),
            u32_of(n_pos),
            sign.to_bits(),
        ],
        bindings: &[
            (1, x.buffer()),
            (2, positions.buffer()),
            (3, table.buffer()),
            (4, out.buffer()),
        ],
        workgroups: u64::from(len).div_ceil(u64::from(ROPE_WG)),
    })?;
    Ok(out)
}
