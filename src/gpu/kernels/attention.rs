//! The launchers of `shaders/attention.wgsl`, `shaders/attention_split.wgsl`,
//! `shaders/attention_tiled.wgsl`, `shaders/attention_backward.wgsl` and `shaders/attention_backward_wg.wgsl`, the WGSL kernels
//! of `crate::ops::attention`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernels against it).

use crate::backend::{AttnShape, DType, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};
use crate::{Error, Result};

/// Invocations per workgroup of the attention kernels (one per (row, head)).
pub const ATTENTION_WG: u32 = 64;
/// Widest head the kernels' private accumulators hold.
pub const MAX_HEAD_DIM: usize = 128;

/// Checks the shapes (panics: caller bugs) and the head width (an error: a model property).
fn check_shapes(
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    ranges: &GpuTensor,
    s: AttnShape,
) -> Result<()> {
    assert!(
        s.n_kv_heads > 0 && s.n_heads.is_multiple_of(s.n_kv_heads),
        "attention: {s:?} does not group"
    );
    assert_eq!(
        q.width(),
        s.n_heads * s.head_dim,
        "attention: q width for {s:?}"
    );
    assert_eq!(
        k.width(),
        s.n_kv_heads * s.head_dim,
        "attention: k width for {s:?}"
    );
    assert_eq!(v.shape(), k.shape(), "attention: v shape");
    ranges.expect_dtype(DType::U32, "attention ranges");
    assert_eq!(
        ranges.len(),
        2 * q.len() / q.width().max(1),
        "attention: one range per query row"
    );
    if s.head_dim > MAX_HEAD_DIM {
        return Err(Error::Gpu(format!(
            "attention heads of width {} exceed the GPU kernels' maximum of {MAX_HEAD_DIM}; use the cpu backend \
             (--backend cpu)",
            s.head_dim
        )));
    }
    Ok(())
}

/// GPU [`attention_forward`](crate::ops::attention::attention_forward). An empty key range (a caller bug) gives a zero row.
///
/// # Shapes
/// `q (Nq, Hq·hd)`, `k (Nk, Hkv·hd)`, `v (Nk, Hkv·hd)`, `ranges (Nq, 2)` u32 → `(Nq, Hq·hd)`.
pub(crate) fn launch_attention(
    gpu: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    ranges: &GpuTensor,
    s: AttnShape,
) -> Result<GpuTensor> {
    check_shapes(q, k, v, ranges, s)?;
    if gpu.hardware_kernels() {
        let nq = q.len() / q.width().max(1);
        if nq >= TILED_MIN_ROWS && gpu.uses_tiled_attention() {
            return launch_attention_tiled(gpu, q, k, v, ranges, s);
        }
        if s.head_dim.is_multiple_of(4) {
            return launch_attention_split(gpu, q, k, v, ranges, s);
        }
    }
    let out = gpu.empty("attention output", q.shape(), DType::F32)?;
    let len = u32_of(q.len() / s.head_dim.max(1));
    let nk = u32_of(k.len() / k.width().max(1));
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    gpu.dispatch(&Dispatch {
        shader: "attention",
        entry: "main",
        overrides: &[],
        params: &[
            len,
            nk,
            u32_of(s.n_heads),
            u32_of(s.head_dim),
            u32_of(s.n_heads / s.n_kv_heads),
            scale.to_bits(),
        ],
        bindings: &[
            (1, q.buffer()),
            (2, k.buffer()),
            (3, v.buffer()),
            (4, ranges.buffer()),
            (5, out.buffer()),
        ],
        workgroups: u64::from(len).div_ceil(u64::from(ATTENTION_WG)),
    })?;
    Ok(out)
}

/// What the split and tiled kernels derive from their operands.
struct Geometry {
    /// Query rows.
    nq: usize,
    /// Key rows.
    nk: usize,
    /// Query heads per KV head.
    group: usize,
    /// Batches of at most `SPLIT_HEADS` query heads per KV head.
    batches: usize,
    /// `1 / sqrt(head_dim)`.
    scale: f32,
}

impl Geometry {
    fn of(q: &GpuTensor, k: &GpuTensor, s: AttnShape) -> Self {
        let group = s.n_heads / s.n_kv_heads;
        Geometry {
            nq: q.len() / q.width().max(1),
            nk: k.len() / k.width().max(1),
            group,
            batches: group.div_ceil(SPLIT_HEADS),
            scale: 1.0 / (s.head_dim as f32).sqrt(),
        }
    }
}

/// Query rows from which the hardware kernels' attention runs in tiles
/// (`attention_tiled.wgsl`) instead of split along the keys: decoding's few rows over a long
/// cache want the split kernel's parallelism, a prefill's many rows want each key read once
/// per tile of rows.
pub const TILED_MIN_ROWS: usize = 32;
/// Keys per tile in workgroup memory of `attention_tiled.wgsl` (`TK`).
pub const TILED_KEYS: usize = 16;
/// Keys per pass (dispatch) of `attention_tiled.wgsl` (`CH`).
pub const TILED_PASS_KEYS: usize = 128;

/// [`launch_attention`] for many query rows (`shaders/attention_tiled.wgsl`): a workgroup per
/// (tile of `ATTENTION_WG / min(group, SPLIT_HEADS)` consecutive query rows, KV head, batch of
/// its query heads), which loads each tile of keys and values into workgroup memory once for
/// all its rows and heads; one dispatch per `TILED_PASS_KEYS` keys of the longest possible
/// range, with each row's softmax state kept between them. Any head width.
fn launch_attention_tiled(
    gpu: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    ranges: &GpuTensor,
    s: AttnShape,
) -> Result<GpuTensor> {
    let out = gpu.empty("attention output", q.shape(), DType::F32)?;
    let Geometry {
        nq,
        nk,
        group,
        batches,
        scale,
    } = Geometry::of(q, k, s);
    let tq = ATTENTION_WG as usize / group.min(SPLIT_HEADS);
    let workgroups = nq.div_ceil(tq) * s.n_kv_heads * batches;
    // Ranges are on the device: as many passes as the longest possible range needs.
    let passes = nk.div_ceil(TILED_PASS_KEYS).max(1);
    let state_rows = if passes == 1 { 1 } else { nq * s.n_heads };
    let ml = gpu.empty("attention softmax state", &[state_rows, 2], DType::F32)?;
    for pass in 0..passes {
        gpu.dispatch(&Dispatch {
            shader: "attention_tiled",
            entry: "main",
            overrides: &[],
            params: &[
                u32_of(nq),
                u32_of(nk),
                u32_of(s.n_heads),
                u32_of(s.head_dim),
                u32_of(group),
                scale.to_bits(),
                u32_of(batches),
                u32_of(tq),
                u32_of(workgroups),
                u32_of(pass),
                u32_of(passes),
            ],
            bindings: &[
                (1, q.buffer()),
                (2, k.buffer()),
                (3, v.buffer()),
                (4, ranges.buffer()),
                (5, out.buffer()),
                (6, ml.buffer()),
            ],
            workgroups: workgroups as u64,
        })?;
    }
    Ok(out)
}

/// Keys per workgroup of `attention_split.wgsl` (`CHUNK`).
pub const SPLIT_CHUNK: usize = 64;
/// Query heads per workgroup of `attention_split.wgsl` (`GMAX`).
pub const SPLIT_HEADS: usize = 8;

/// [`launch_attention`] split along the keys (flash decoding, `shaders/attention_split.wgsl`):
/// a workgroup per (row, KV head, batch of its query heads, chunk of 64 keys), then a pass that
/// merges the chunks when there is more than one. For `head_dim % 4 == 0`.
fn launch_attention_split(
    gpu: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    ranges: &GpuTensor,
    s: AttnShape,
) -> Result<GpuTensor> {
    let out = gpu.empty("attention output", q.shape(), DType::F32)?;
    let Geometry {
        nq,
        nk,
        group,
        batches,
        scale,
    } = Geometry::of(q, k, s);
    // Ranges are on the device: every row gets the chunks of the longest possible one.
    let chunks = nk.div_ceil(SPLIT_CHUNK).max(1);
    let workgroups = nq * s.n_kv_heads * batches * chunks;
    // One chunk: the split pass writes `out` itself and the partial buffers are not read.
    let parts = if chunks == 1 {
        1
    } else {
        nq * s.n_heads * chunks
    };
    let part_o = gpu.empty(
        "attention partial outputs",
        &[parts, s.head_dim],
        DType::F32,
    )?;
    let part_ml = gpu.empty("attention partial statistics", &[parts, 2], DType::F32)?;
    let params = |total: usize| {
        [
            u32_of(nq),
            u32_of(nk),
            u32_of(s.n_heads),
            u32_of(s.head_dim),
            u32_of(group),
            scale.to_bits(),
            u32_of(chunks),
            u32_of(batches),
            u32_of(total),
        ]
    };
    gpu.dispatch(&Dispatch {
        shader: "attention_split",
        entry: "split",
        overrides: &[],
        params: &params(workgroups),
        bindings: &[
            (1, q.buffer()),
            (2, k.buffer()),
            (3, v.buffer()),
            (4, ranges.buffer()),
            (5, out.buffer()),
            (6, part_o.buffer()),
            (7, part_ml.buffer()),
        ],
        workgroups: workgroups as u64,
    })?;
    if chunks > 1 {
        let total = q.len();
        gpu.dispatch(&Dispatch {
            shader: "attention_split",
            entry: "combine",
            overrides: &[],
            params: &params(total),
            bindings: &[
                (5, out.buffer()),
                (6, part_o.buffer()),
                (7, part_ml.buffer()),
            ],
            workgroups: (total as u64).div_ceil(u64::from(ATTENTION_WG)),
        })?;
    }
    Ok(out)
}

/// GPU [`attention_backward`](crate::ops::attention::attention_backward) for any ranges (queries and keys may be different rows).
///
/// # Shapes
/// As [`launch_attention`], plus `dout (Nq, Hq·hd)` → `(dq, dk, dv)` shaped like `q, k, v`.
pub(crate) fn launch_attention_backward(
    gpu: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    ranges: &GpuTensor,
    dout: &GpuTensor,
    s: AttnShape,
) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
    check_shapes(q, k, v, ranges, s)?;
    assert_eq!(dout.shape(), q.shape(), "attention_backward: dout shape");
    let n = q.len() / q.width().max(1);
    let nk = k.len() / k.width().max(1);
    let stats = gpu.empty("attention_backward stats", &[n, s.n_heads, 2], DType::F32)?;
    let dq = gpu.empty("attention_backward dq", q.shape(), DType::F32)?;
    let dk = gpu.empty("attention_backward dk", k.shape(), DType::F32)?;
    let dv = gpu.empty("attention_backward dv", v.shape(), DType::F32)?;
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let common = [
        (1, q.buffer()),
        (2, k.buffer()),
        (3, v.buffer()),
        (4, ranges.buffer()),
        (5, dout.buffer()),
    ];
    let shape_params = [
        u32_of(n),
        u32_of(nk),
        u32_of(s.n_heads),
        u32_of(s.head_dim),
        u32_of(s.n_heads / s.n_kv_heads),
        scale.to_bits(),
    ];
    for (entry, rows, heads, outputs) in [
        (
            "dq_pass",
            n,
            s.n_heads,
            vec![(6, stats.buffer()), (7, dq.buffer())],
        ),
        (
            "dkv_pass",
            nk,
            s.n_kv_heads,
            vec![(6, stats.buffer()), (8, dk.buffer()), (9, dv.buffer())],
        ),
    ] {
        let len = u32_of(rows * heads);
        let mut params = vec![len];
        params.extend(shape_params);
        let bindings: Vec<(u32, &wgpu::Buffer)> = common.iter().copied().chain(outputs).collect();
        // A workgroup per output row, or (software kernels) an invocation per output row.
        let (shader, workgroups) = if !gpu.hardware_kernels() {
            (
                "attention_backward",
                u64::from(len).div_ceil(u64::from(ATTENTION_WG)),
            )
        } else {
            ("attention_backward_wg", u64::from(len))
        };
        gpu.dispatch(&Dispatch {
            shader,
            entry,
            overrides: &[],
            params: &params,
            bindings: &bindings,
            workgroups,
        })?;
    }
    Ok((dq, dk, dv))
}
