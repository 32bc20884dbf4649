//! The launchers of `shaders/gather_rows.wgsl`, `shaders/add_rows.wgsl`,
//! `shaders/add_columns.wgsl`, and `write_rows` as a buffer copy, the WGSL kernels of
//! `crate::ops::rows`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per workgroup of `shaders/gather_rows.wgsl`.
pub const GATHER_ROWS_WG: u32 = 256;
/// Invocations per workgroup of `shaders/add_rows.wgsl` (one per column).
pub const ADD_ROWS_WG: u32 = 64;
/// Invocations per workgroup of `shaders/add_columns.wgsl`.
pub const ADD_COLUMNS_WG: u32 = 256;

/// GPU [`gather_rows`](crate::ops::rows::gather_rows). A row index `≥ N` (a caller bug) gives a zero row.
///
/// # Shapes
/// `x (N, D)`, `rows (R)` u32 → `(R, D)`.
pub(crate) fn launch_gather_rows(
    gpu: &GpuBackend,
    x: &GpuTensor,
    rows: &GpuTensor,
) -> crate::Result<GpuTensor> {
    rows.expect_dtype(DType::U32, "gather_rows rows");
    let d = x.width();
    let out = gpu.empty("gather_rows output", &[rows.len(), d], DType::F32)?;
    let len = u32_of(out.len());
    gpu.dispatch(&Dispatch {
        shader: "gather_rows",
        entry: "main",
        overrides: &[],
        params: &[len, u32_of(d), u32_of(x.len() / d.max(1))],
        bindings: &[(1, x.buffer()), (2, rows.buffer()), (3, out.buffer())],
        workgroups: u64::from(len).div_ceil(u64::from(GATHER_ROWS_WG)),
    })?;
    Ok(out)
}

/// GPU [`add_rows`](crate::ops::rows::add_rows), in place. Row indices `≥ N` (a caller bug) are skipped.
///
/// # Shapes
/// `x (N, D)`, `rows (R)` u32, `v (R, D)`.
pub(crate) fn launch_add_rows(
    gpu: &GpuBackend,
    x: &GpuTensor,
    rows: &GpuTensor,
    v: &GpuTensor,
) -> crate::Result<()> {
    rows.expect_dtype(DType::U32, "add_rows rows");
    let d = x.width();
    assert_eq!(v.shape(), [rows.len(), d], "add_rows: v shape");
    if rows.is_empty() {
        return Ok(());
    }
    gpu.dispatch(&Dispatch {
        shader: "add_rows",
        entry: "main",
        overrides: &[],
        params: &[u32_of(d), u32_of(x.len() / d.max(1)), u32_of(rows.len())],
        bindings: &[(1, x.buffer()), (2, rows.buffer()), (3, v.buffer())],
        workgroups: (d as u64).div_ceil(u64::from(ADD_ROWS_WG)),
    })
}

/// GPU [`zero_rows`](crate::ops::rows::zero_rows), in place (`add_rows.wgsl`'s `zero`). Row
/// indices `≥ N` (a caller bug) are skipped.
///
/// # Shapes
/// `x (N, D)`, `rows (R)` u32.
pub(crate) fn launch_zero_rows(
    gpu: &GpuBackend,
    x: &GpuTensor,
    rows: &GpuTensor,
) -> crate::Result<()> {
    rows.expect_dtype(DType::U32, "zero_rows rows");
    let d = x.width();
    if rows.is_empty() {
        return Ok(());
    }
    gpu.dispatch(&Dispatch {
        shader: "add_rows",
        entry: "zero",
        overrides: &[],
        params: &[u32_of(d), u32_of(x.len() / d.max(1)), u32_of(rows.len())],
        bindings: &[(1, x.buffer()), (2, rows.buffer())],
        workgroups: (d as u64).div_ceil(u64::from(ADD_ROWS_WG)),
    })
}

/// GPU [`add_columns`](crate::ops::rows::add_columns), in place. Column indices `≥ K` (a caller bug) are skipped.
///
/// # Shapes
/// `w (N, K)`, `cols (C)` u32 (distinct), `delta (N, C)`.
pub(crate) fn launch_add_columns(
    gpu: &GpuBackend,
    w: &GpuTensor,
    cols: &GpuTensor,
    delta: &GpuTensor,
) -> crate::Result<()> {
    cols.expect_dtype(DType::U32, "add_columns cols");
    let k = w.width();
    assert_eq!(
        delta.shape(),
        [w.len() / k.max(1), cols.len()],
        "add_columns: delta shape"
    );
    let len = u32_of(delta.len());
    gpu.dispatch(&Dispatch {
        shader: "add_columns",
        entry: "main",
        overrides: &[],
        params: &[len, u32_of(k), u32_of(cols.len())],
        bindings: &[(1, w.buffer()), (2, cols.buffer()), (3, delta.buffer())],
        workgroups: u64::from(len).div_ceil(u64::from(ADD_COLUMNS_WG)),
    })
}

/// GPU `dst[row0 + r, :] = src[r, :]`, in place, as one buffer copy.
///
/// # Shapes
/// `dst (N, D)`, `src (R, D)` with `row0 + R ≤ N`.
pub(crate) fn launch_write_rows(
    gpu: &GpuBackend,
    dst: &GpuTensor,
    row0: usize,
    src: &GpuTensor,
) -> crate::Result<()> {
    let d = dst.width();
    assert_eq!(src.width(), d, "write_rows: width");
    let rows = src.len() / d.max(1);
    let dst_rows = dst.len() / d.max(1);
    assert!(
        row0 + rows <= dst_rows,
        "write_rows: rows {row0}..{} of {dst_rows}",
        row0 + rows
    );
    if src.is_empty() {
        return Ok(());
    }
    let offset = (row0 * d * 4) as u64;
    gpu.count(crate::gpu::Count::Copy);
    gpu.encode(|encoder| {
        encoder.copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), offset, src.bytes())
    })
}
