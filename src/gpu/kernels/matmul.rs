//! The launchers of `shaders/matmul.wgsl`, `shaders/matmul_vec4.wgsl` and `shaders/gemv.wgsl`,
//! the WGSL kernels of
//! `crate::ops::matmul`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use super::unpack::Dense;
use crate::backend::{DType, TensorInfo, Transpose};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, Packing, u32_of};
use crate::ops::matmul::MatmulDims;

/// Invocations per side of a matmul workgroup.
pub const TILE: u32 = 8;
/// Outputs per invocation per side (a 4×4 register block).
pub const BLOCK: u32 = 4;
/// Invocations per matmul workgroup (`TILE²`).
pub const MATMUL_WG: u32 = TILE * TILE;

/// Rows of A up to which `x · Wᵀ` runs as a GEMV (`shaders/gemv.wgsl`).
pub const GEMV_MAX_ROWS: usize = 8;
/// Columns of C per GEMV workgroup (`COLS` in the shader).
pub const GEMV_COLS: usize = 4;
/// Invocations per GEMV workgroup.
pub const GEMV_WG: u32 = 64;

/// The kernel (shader, entry point) the gpu backend uses for a product of `dims` and `t`: the
/// GEMV for `x · Wᵀ` with at most [`GEMV_MAX_ROWS`] rows (unless `no_gemv`), a vec4 path when
/// the contiguous dimension allows whole-vec4 loads, else the general one.
pub fn gpu_matmul_kernel(
    dims: MatmulDims,
    t: Transpose,
    no_gemv: bool,
) -> (&'static str, &'static str) {
    let MatmulDims { m, k, n } = dims;
    match t {
        Transpose::NT if k % 4 == 0 && m <= GEMV_MAX_ROWS && !no_gemv => ("gemv", "nt"),
        Transpose::NT if k % 4 == 0 => ("matmul_vec4", "nt"),
        Transpose::NN if n % 4 == 0 => ("matmul_vec4", "nn"),
        Transpose::TN if m % 4 == 0 && n % 4 == 0 => ("matmul_vec4", "tn"),
        _ => ("matmul", "main"),
    }
}

/// GPU `c = op(a) · op(b)`, or `c += …` with `accumulate`.
///
/// # Shapes
/// `a (M, K)` or `(K, M)`, `b (K, N)` or `(N, K)`, `c (M, N)`.
pub(crate) fn launch_matmul(
    gpu: &GpuBackend,
    c: &GpuTensor,
    a: &GpuTensor,
    b: &GpuTensor,
    t: Transpose,
    accumulate: bool,
) -> crate::Result<()> {
    let dims = MatmulDims::from_shapes(a.shape(), b.shape(), t);
    let MatmulDims { m, k, n } = dims;
    assert_eq!(c.shape(), [m, n], "matmul: output shape");
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (shader, entry) = gpu_matmul_kernel(dims, t, !gpu.uses_gemv());
    // A weight kept compact is decoded inside the GEMV and the vec4 `nt` and `nn` products
    // (its rows run along K, or along N); any other operand is made dense first.
    let b_native = matches!((shader, entry), ("gemv", _) | ("matmul_vec4", "nt" | "nn"));
    if a.packing().is_some() || (b.packing().is_some() && !b_native) {
        let (a, b) = (
            gpu.dense(a)?,
            if b_native {
                Dense::Borrowed(b)
            } else {
                gpu.dense(b)?
            },
        );
        return launch_matmul(gpu, c, &a, &b, t, accumulate);
    }
    let [b_fmt, b_group] = Packing::constants(b.packing(), ("b_FMT", "b_GROUP"));
    let acc = f64::from(u8::from(accumulate));
    if shader == "gemv" {
        let groups = n.div_ceil(GEMV_COLS);
        return gpu.dispatch(&Dispatch {
            shader: gpu.variant("gemv", &[b.packing()]),
            entry,
            overrides: &[("M", m as f64), ("ACCUMULATE", acc), b_fmt, b_group],
            params: &[u32_of(n), u32_of(k), u32_of(groups)],
            bindings: &[(1, a.buffer()), (2, b.buffer()), (3, c.buffer())],
            workgroups: groups as u64,
        });
    }
    let span = (TILE * BLOCK) as usize;
    let tiles_n = n.div_ceil(span);
    let tiles = m.div_ceil(span) * tiles_n;
    let splits = if shader == "matmul_vec4" && gpu.hardware_kernels() {
        split_k(tiles, k, m * n * 4, gpu.max_tensor_bytes())
    } else {
        1
    };
    if splits > 1 {
        return launch_split_k(
            gpu, c, a, b, entry, dims, tiles_n, tiles, splits, accumulate,
        );
    }
    let general = [
        ("TRANS_A", f64::from(u8::from(t.a))),
        ("TRANS_B", f64::from(u8::from(t.b))),
        ("ACCUMULATE", acc),
    ];
    let vec4 = [("ACCUMULATE", acc), b_fmt, b_group];
    gpu.dispatch(&Dispatch {
        shader: gpu.variant(shader, &[b.packing()]),
        entry,
        overrides: if shader == "matmul" { &general } else { &vec4 },
        params: &[
            u32_of(m),
            u32_of(n),
            u32_of(k),
            u32_of(tiles_n),
            u32_of(tiles),
            u32_of(k.next_multiple_of(4).max(4)),
            1,
        ],
        bindings: &[(1, a.buffer()), (2, b.buffer()), (3, c.buffer())],
        workgroups: tiles as u64,
    })
}

/// Workgroups a split-K product aims for.
const SPLIT_TARGET_WORKGROUPS: usize = 1024;
/// The least K per split.
const SPLIT_MIN_K: usize = 512;
/// Invocations per workgroup of `shaders/split_sum.wgsl`.
pub const SPLIT_SUM_WG: u32 = 64;

/// The number of K slices for a vec4 product of `tiles` tiles over `k` (1: no split): only
/// products with few tiles and a long K, such as the LM head's backward (18 tiles over
/// K = 49,152), are split, into slices of at least [`SPLIT_MIN_K`], and only while the partial
/// blocks (`c_bytes` each) fit one binding of `max_bytes`.
pub fn split_k(tiles: usize, k: usize, c_bytes: usize, max_bytes: u64) -> usize {
    if tiles >= 64 || k < 2 * SPLIT_MIN_K {
        return 1;
    }
    let splits = (SPLIT_TARGET_WORKGROUPS / tiles).clamp(1, k / SPLIT_MIN_K);
    let fit = (max_bytes / c_bytes.max(1) as u64).max(1) as usize;
    // Slices of a whole number of vec4s; the last may be shorter.
    let chunk = k.div_ceil(splits.min(fit)).next_multiple_of(4);
    k.div_ceil(chunk)
}

/// [`launch_matmul`] split along K into `splits` slices: each writes its own (M, N) block of a
/// scratch tensor, and `split_sum.wgsl` adds them into `c`.
#[allow(clippy::too_many_arguments)]
fn launch_split_k(
    gpu: &GpuBackend,
    c: &GpuTensor,
    a: &GpuTensor,
    b: &GpuTensor,
    entry: &'static str,
    dims: MatmulDims,
    tiles_n: usize,
    tiles: usize,
    splits: usize,
    accumulate: bool,
) -> crate::Result<()> {
    let MatmulDims { m, k, n } = dims;
    let chunk = k.div_ceil(splits).next_multiple_of(4);
    let part = gpu.empty("split-K partial products", &[splits * m, n], DType::F32)?;
    let [b_fmt, b_group] = Packing::constants(b.packing(), ("b_FMT", "b_GROUP"));
    gpu.dispatch(&Dispatch {
        shader: gpu.variant("matmul_vec4", &[b.packing()]),
        entry,
        overrides: &[("ACCUMULATE", 0.0), b_fmt, b_group],
        params: &[
            u32_of(m),
            u32_of(n),
            u32_of(k),
            u32_of(tiles_n),
            u32_of(tiles),
            u32_of(chunk),
            u32_of(splits),
        ],
        bindings: &[(1, a.buffer()), (2, b.buffer()), (3, part.buffer())],
        workgroups: (tiles * splits) as u64,
    })?;
    let len = m * n;
    gpu.dispatch(&Dispatch {
        shader: "split_sum",
        entry: "main",
        overrides: &[("ACCUMULATE", f64::from(u8::from(accumulate)))],
        params: &[u32_of(len), u32_of(splits)],
        bindings: &[(1, part.buffer()), (2, c.buffer())],
        workgroups: (len as u64).div_ceil(u64::from(SPLIT_SUM_WG)),
    })
}
