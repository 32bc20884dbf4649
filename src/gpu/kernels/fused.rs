//! The launchers of `shaders/gemv_fused.wgsl`: decoding's fused products (the final norm with
//! the LM head, a projection with its residual add, the MLP's gate and up with SiLU, and
//! attention's input with RoPE and the KV-cache write). Each launcher returns `None` where its
//! kernel does not apply (more than [`GEMV_MAX_ROWS`] rows, a K that is not a whole number of
//! vec4s, an adapter without enough storage bindings), and the backend then runs the
//! composition in [`crate::backend::unfused`]. tests/gpu_fused.rs checks them against the cpu.

use super::matmul::{GEMV_COLS, GEMV_MAX_ROWS};
use crate::backend::{DType, QkvDecode, TensorInfo};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, Packing, u32_of};
use crate::{Error, Result};

/// Storage bindings of the `qkv` entry (h, norm, three projections, the RoPE table, q and the
/// two caches), and of `qkv_bias` (three biases more).
pub const QKV_BINDINGS: u32 = 9;
/// See [`QKV_BINDINGS`].
pub const QKV_BIAS_BINDINGS: u32 = 12;

/// Whether the fused kernels may take an `(rows, k)` input on this device.
fn applies(gpu: &GpuBackend, rows: usize, k: usize) -> bool {
    gpu.uses_fused() && (1..=GEMV_MAX_ROWS).contains(&rows) && k.is_multiple_of(4)
}

/// The fused GEMV entry `entry` over `n` outputs in `groups` workgroups, with the weights it
/// reads bound to `b`, `b2` and `b3` in that order, in the layouts `packs` (`None`: dense f32).
fn dispatch(
    gpu: &GpuBackend,
    entry: &'static str,
    rows: usize,
    params: &[u32],
    bindings: &[(u32, &wgpu::Buffer)],
    groups: usize,
    packs: &[Option<Packing>],
) -> Result<()> {
    // Every entry binds the whole `Params` block (8 words).
    let mut words = [0u32; 8];
    words[..params.len()].copy_from_slice(params);
    let pack = |i: usize| packs.get(i).copied().flatten();
    let [b, b2, b3] = [
        Packing::constants(pack(0), ("b_FMT", "b_GROUP")),
        Packing::constants(pack(1), ("b2_FMT", "b2_GROUP")),
        Packing::constants(pack(2), ("b3_FMT", "b3_GROUP")),
    ];
    gpu.dispatch(&Dispatch {
        shader: gpu.variant("gemv_fused", packs),
        entry,
        overrides: &[("M", rows as f64), b[0], b[1], b2[0], b2[1], b3[0], b3[1]],
        params: &words,
        bindings,
        workgroups: groups as u64,
    })
}

/// `(rows, K, N)` of `x · Wᵀ` for `x (rows, K)` and `w (N, K)`, or `None` where the kernels do
/// not apply.
fn gemv_dims(gpu: &GpuBackend, x: &GpuTensor, w: &GpuTensor, what: &str) -> Option<[usize; 3]> {
    let (rows, k) = (x.len() / x.width().max(1), x.width());
    if !applies(gpu, rows, k) {
        return None;
    }
    assert_eq!(w.width(), k, "{what}: weight width");
    Some([rows, k, w.len() / k])
}

/// Runs `entry` over `groups` workgroups into a new `(rows, N)` output (binding 3) beside
/// `bindings`.
fn launch_into(
    gpu: &GpuBackend,
    entry: &'static str,
    [rows, k, n]: [usize; 3],
    groups: usize,
    eps: f32,
    bindings: &[(u32, &wgpu::Buffer)],
    packs: &[Option<Packing>],
) -> Result<GpuTensor> {
    let c = gpu.empty(entry, &[rows, n], DType::F32)?;
    let mut all = bindings.to_vec();
    all.push((3, c.buffer()));
    let params = [u32_of(n), u32_of(k), u32_of(groups), eps.to_bits()];
    dispatch(gpu, entry, rows, &params, &all, groups, packs)?;
    Ok(c)
}

/// `rms_norm(h, norm) · Wᵀ`, or `None` where the kernel does not apply.
///
/// # Shapes
/// `h (N, K)`, `norm (K)`, `w (V, K)` → `(N, V)`.
pub(crate) fn launch_norm_matmul_nt(
    gpu: &GpuBackend,
    h: &GpuTensor,
    norm: &GpuTensor,
    eps: f32,
    w: &GpuTensor,
) -> Result<Option<GpuTensor>> {
    let Some(dims) = gemv_dims(gpu, h, w, "norm_matmul_nt") else {
        return Ok(None);
    };
    assert_eq!(norm.len(), dims[1], "norm_matmul_nt: norm weight");
    let bindings = [(1, h.buffer()), (2, w.buffer()), (4, norm.buffer())];
    let groups = dims[2].div_ceil(GEMV_COLS);
    launch_into(gpu, "norm_nt", dims, groups, eps, &bindings, &[w.packing()]).map(Some)
}

/// `r + x · Wᵀ`, or `None` where the kernel does not apply.
///
/// # Shapes
/// `x (N, K)`, `w (D, K)`, `r (N, D)` → `(N, D)`.
pub(crate) fn launch_matmul_nt_residual(
    gpu: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    r: &GpuTensor,
) -> Result<Option<GpuTensor>> {
    let Some(dims) = gemv_dims(gpu, x, w, "matmul_nt_residual") else {
        return Ok(None);
    };
    assert_eq!(
        r.shape(),
        [dims[0], dims[2]],
        "matmul_nt_residual: residual"
    );
    let bindings = [(1, x.buffer()), (2, w.buffer()), (5, r.buffer())];
    let groups = dims[2].div_ceil(GEMV_COLS);
    launch_into(
        gpu,
        "residual_nt",
        dims,
        groups,
        0.0,
        &bindings,
        &[w.packing()],
    )
    .map(Some)
}

/// `silu(x · Gᵀ) ⊙ (x · Uᵀ)` with `x = rms_norm(h, norm)`, or `None` where the kernel does not
/// apply.
///
/// # Shapes
/// `h (N, d)`, `norm (d)`, `gate, up (F, d)` → `(N, F)`.
pub(crate) fn launch_norm_gate_up(
    gpu: &GpuBackend,
    h: &GpuTensor,
    norm: &GpuTensor,
    eps: f32,
    gate: &GpuTensor,
    up: &GpuTensor,
) -> Result<Option<GpuTensor>> {
    let Some(dims) = gemv_dims(gpu, h, gate, "norm_gate_up") else {
        return Ok(None);
    };
    assert_eq!(norm.len(), dims[1], "norm_gate_up: norm weight");
    assert_eq!(up.shape(), gate.shape(), "norm_gate_up: up shape");
    let bindings = [
        (1, h.buffer()),
        (2, gate.buffer()),
        (4, norm.buffer()),
        (6, up.buffer()),
    ];
    // Two columns of the gate and two of up per workgroup.
    let groups = dims[2].div_ceil(2);
    let packs = [gate.packing(), up.packing()];
    launch_into(gpu, "gate_up", dims, groups, eps, &bindings, &packs).map(Some)
}

/// Attention's input while decoding ([`crate::backend::Backend::decode_qkv`]), or `None`
/// where the kernel does not apply (also: a head dimension that is not a multiple of 4, or an
/// adapter with fewer storage bindings per stage than the entry needs).
///
/// # Errors
/// [`Error::Input`] when the rows would be written past the caches' capacity.
pub(crate) fn launch_decode_qkv(
    gpu: &GpuBackend,
    h: &GpuTensor,
    p: &QkvDecode<'_, GpuTensor>,
    cache_k: &GpuTensor,
    cache_v: &GpuTensor,
) -> Result<Option<GpuTensor>> {
    let (rows, k) = (h.len() / h.width().max(1), h.width());
    let hd = p.head_dim;
    let needed = if p.bias.is_some() {
        QKV_BIAS_BINDINGS
    } else {
        QKV_BINDINGS
    };
    if !applies(gpu, rows, k)
        || hd == 0
        || !hd.is_multiple_of(4)
        || gpu.limits().max_storage_buffers_per_shader_stage < needed
    {
        return Ok(None);
    }
    let [wq, wk, wv] = p.proj;
    assert_eq!(p.norm.len(), k, "decode_qkv: norm weight");
    assert!(
        [wq, wk, wv].iter().all(|w| w.width() == k),
        "decode_qkv: projection widths"
    );
    let (nq, nkv) = (wq.len() / k, wk.len() / k);
    assert_eq!(wv.len() / k, nkv, "decode_qkv: v rows");
    assert!(
        nq.is_multiple_of(hd) && nkv.is_multiple_of(hd),
        "decode_qkv: widths {nq}, {nkv} for heads of {hd}"
    );
    assert_eq!(cache_k.width(), nkv, "decode_qkv: cache width");
    assert_eq!(cache_v.shape(), cache_k.shape(), "decode_qkv: cache shapes");
    assert_eq!(p.positions.len(), rows, "decode_qkv: positions");
    assert_eq!(p.table.width(), hd, "decode_qkv: RoPE table width");
    let capacity = cache_k.len() / nkv.max(1);
    if p.pos0 + rows > capacity {
        return Err(Error::input(format!(
            "{} cached + {rows} new tokens exceed the cache of {capacity} tokens",
            p.pos0
        )));
    }
    let q = gpu.empty("q", &[rows, nq], DType::F32)?;
    // Two coordinate pairs (4 columns) of one head per workgroup.
    let groups = (nq + 2 * nkv) / 4;
    let mut bindings = vec![
        (1, h.buffer()),
        (2, wq.buffer()),
        (3, q.buffer()),
        (4, p.norm.buffer()),
        (6, wk.buffer()),
        (7, wv.buffer()),
        (8, p.table.buffer()),
        (9, cache_k.buffer()),
        (10, cache_v.buffer()),
    ];
    if let Some([bq, bk, bv]) = p.bias {
        bindings.extend([(11, bq.buffer()), (12, bk.buffer()), (13, bv.buffer())]);
    }
    dispatch(
        gpu,
        if p.bias.is_some() { "qkv_bias" } else { "qkv" },
        rows,
        &[
            u32_of(nq),
            u32_of(k),
            u32_of(groups),
            p.eps.to_bits(),
            u32_of(nkv),
            u32_of(hd),
            u32_of(p.table.len() / hd),
            u32_of(p.pos0),
        ],
        &bindings,
        groups,
        &[wq.packing(), wk.packing(), wv.packing()],
    )?;
    Ok(Some(q))
}
