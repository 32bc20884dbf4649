//! Attention forward and backward on the gpu backend against the cpu backend: packed causal
//! sequences (including length 1), queries over another key set, grouped heads, and subsets of
//! query rows over all keys (the z optimisation's partial recomputation).

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::gpu_vs_cpu::{check, rand, up_u32};
use common::{Rng, TOL_F32_REDUCTION, gpu};
use nse::Error;
use nse::backend::{AttnShape, Backend};
use nse::cpu::CpuBackend;
use nse::gpu::GpuBackend;

/// Causal ranges for packed sequences of `lens`: row `i` of a sequence starting at `s` sees
/// `s .. i + 1`.
fn causal_ranges(lens: &[usize]) -> Vec<u32> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for &len in lens {
        for i in start..start + len {
            ranges.extend([start as u32, i as u32 + 1]);
        }
        start += len;
    }
    ranges
}

/// Random `q` (`nq` rows) and `k`, `v` (`nk` rows) for `s`, attention over `ranges` on the
/// gpu backend against the cpu backend.
fn attention_matches(
    g: &GpuBackend,
    rng: &mut Rng,
    s: AttnShape,
    (nq, nk): (usize, usize),
    ranges: &[u32],
    what: &str,
) {
    let (q, qc) = rand(g, rng, &[nq, s.n_heads * s.head_dim]);
    let (k, kc) = rand(g, rng, &[nk, s.n_kv_heads * s.head_dim]);
    let (v, vc) = rand(g, rng, &[nk, s.n_kv_heads * s.head_dim]);
    let (r, rc) = up_u32(g, ranges, &[nq, 2]);
    let want = CpuBackend.attention(&qc, &kc, &vc, &rc, s).unwrap();
    let got = g.attention(&q, &k, &v, &r, s).unwrap();
    check(g, &got, &want, TOL_F32_REDUCTION, what);
}

/// Grouped-head geometries: 9/3 and 4/2 grouping, plain multi-head, one-wide and widest heads.
const ATTN_SHAPES: [(usize, usize, usize); 5] =
    [(9, 3, 8), (4, 2, 6), (2, 2, 1), (3, 1, 33), (1, 1, 128)];

#[test]
fn attention_forward_packed_causal_and_cross() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(6);
    for (hq, hkv, hd) in ATTN_SHAPES {
        let s = AttnShape {
            n_heads: hq,
            n_kv_heads: hkv,
            head_dim: hd,
        };
        // Causal self-attention over packed sequences, including ones of length 1.
        let lens = [1, 3, 7, 1, 5];
        let n: usize = lens.iter().sum();
        let causal = causal_ranges(&lens);
        attention_matches(&g, &mut rng, s, (n, n), &causal, &format!("causal {s:?}"));
        // Queries over another set of keys (a KV cache), arbitrary non-empty ranges.
        let cross = [0, 10, 4, 5, 2, 9];
        attention_matches(&g, &mut rng, s, (3, 10), &cross, &format!("cross {s:?}"));
    }
}

/// The split-KV kernel (`attention_split.wgsl`, heads of width % 4 = 0) at decode: one or two
/// query rows over a KV cache of 1, 17, 1000 and 4097 keys (one chunk, a partial chunk, many,
/// and one key past a whole number of chunks), with the grouping of SmolLM2 (9/3), Llama 3.2
/// (32/8), Qwen2.5 (14/2) and a group of 16 (two head batches per KV head).
#[test]
fn attention_split_kv_at_decode_context_lengths() {
    let Some(g) = gpu() else { return };
    split_kv_cases(g);
}

fn split_kv_cases(g: nse::gpu::GpuBackend) {
    let mut rng = Rng::new(8);
    for (hq, hkv, hd) in [(9, 3, 64), (32, 8, 64), (14, 2, 64), (16, 1, 128)] {
        let s = AttnShape {
            n_heads: hq,
            n_kv_heads: hkv,
            head_dim: hd,
        };
        for nk in [1usize, 17, 1000, 4097] {
            // The newest token over the whole cache, and an older one over a prefix.
            let (nq, ranges) = if nk == 1 {
                (1, vec![0, 1])
            } else {
                (2, vec![0, nk as u32, 0, (nk / 2) as u32])
            };
            let what = format!("split attention {s:?} over {nk} keys");
            attention_matches(&g, &mut rng, s, (nq, nk), &ranges, &what);
        }
    }
}

/// The tiled kernel (`attention_tiled.wgsl`, from 32 query rows on): causal prefills of 1,000
/// and 4,097 rows (8 and 33 passes of 128 keys; in one pass, lavapipe's loop limit cut the
/// rows past ~480 keys of width 64 short, and the split kernel would need 613 MB of partial
/// buffers for 4,097 rows of the default model's attention), packed
/// sequences whose tiles straddle several of them (lengths 1, 17, 40, 1, 70), every head
/// geometry of `ATTN_SHAPES` (widths not a multiple of 4 included) and the groupings of
/// Llama 3.2 (32/8) and a group of 12 (two head batches of different sizes), and a subset of
/// query rows over all keys (the z loop's recomputed rows).
#[test]
fn attention_tiles_prefill_rows() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(9);
    let mut case = |s: AttnShape, lens: &[usize], what: &str| {
        let n: usize = lens.iter().sum();
        let what = format!("tiled attention {s:?}, {what}");
        attention_matches(&g, &mut rng, s, (n, n), &causal_ranges(lens), &what);
    };
    let shape = |(n_heads, n_kv_heads, head_dim)| AttnShape {
        n_heads,
        n_kv_heads,
        head_dim,
    };
    for geometry in ATTN_SHAPES.into_iter().chain([(32, 8, 16), (24, 2, 12)]) {
        case(shape(geometry), &[1, 17, 40, 1, 70], "packed sequences");
    }
    case(shape((9, 3, 64)), &[1000], "a causal prefill of 1,000");
    case(shape((9, 3, 8)), &[4097], "a causal prefill of 4,097");

    // 40 of 130 rows over all keys, as the z loop recomputes them.
    let s = shape((9, 3, 64));
    let lens = [60, 70];
    let n: usize = lens.iter().sum();
    let rows: Vec<u32> = (0..n as u32).filter(|i| i % 13 < 4).collect();
    let ranges = causal_ranges(&lens);
    let sub: Vec<u32> = rows
        .iter()
        .flat_map(|&i| [ranges[2 * i as usize], ranges[2 * i as usize + 1]])
        .collect();
    assert!(
        rows.len() >= 32,
        "{} rows: the tiled kernel's case",
        rows.len()
    );
    let what = "tiled attention, a subset of rows over all keys";
    attention_matches(&g, &mut rng, s, (rows.len(), n), &sub, what);
}

#[test]
fn attention_backward_packed_causal_and_subsets() {
    let Some(g) = gpu() else { return };
    backward_cases(g);
}

fn backward_cases(g: nse::gpu::GpuBackend) {
    let mut rng = Rng::new(7);
    for (hq, hkv, hd) in ATTN_SHAPES {
        let s = AttnShape {
            n_heads: hq,
            n_kv_heads: hkv,
            head_dim: hd,
        };
        // The last: rows whose ranges span up to three 64-key chunks of the workgroup kernels,
        // and more than 64 query rows per key.
        for lens in [&[1][..], &[4, 1, 6, 2], &[150, 3]] {
            let n: usize = lens.iter().sum();
            let (q, qc) = rand(&g, &mut rng, &[n, hq * hd]);
            let (k, kc) = rand(&g, &mut rng, &[n, hkv * hd]);
            let (v, vc) = rand(&g, &mut rng, &[n, hkv * hd]);
            let (dout, doutc) = rand(&g, &mut rng, &[n, hq * hd]);
            let (r, rc) = up_u32(&g, &causal_ranges(lens), &[n, 2]);
            let (dq, dk, dv) = g.attention_backward(&q, &k, &v, &r, &dout, s).unwrap();
            let (wq, wk, wv) = CpuBackend
                .attention_backward(&qc, &kc, &vc, &rc, &doutc, s)
                .unwrap();
            let what = format!("attention_backward {lens:?} {s:?}");
            check(&g, &dq, &wq, TOL_F32_REDUCTION, &format!("{what} dq"));
            check(&g, &dk, &wk, TOL_F32_REDUCTION, &format!("{what} dk"));
            check(&g, &dv, &wv, TOL_F32_REDUCTION, &format!("{what} dv"));
        }
        // A subset of query rows over all key rows, with arbitrary ranges (how the z
        // optimisation recomputes only the rows that depend on δ).
        let (nq, nk) = (4, 9);
        let (q, qc) = rand(&g, &mut rng, &[nq, hq * hd]);
        let (k, kc) = rand(&g, &mut rng, &[nk, hkv * hd]);
        let (v, vc) = rand(&g, &mut rng, &[nk, hkv * hd]);
        let (dout, doutc) = rand(&g, &mut rng, &[nq, hq * hd]);
        let (r, rc) = up_u32(&g, &[0, 3, 0, 4, 5, 9, 2, 8], &[nq, 2]);
        let (dq, dk, dv) = g.attention_backward(&q, &k, &v, &r, &dout, s).unwrap();
        let (wq, wk, wv) = CpuBackend
            .attention_backward(&qc, &kc, &vc, &rc, &doutc, s)
            .unwrap();
        let what = format!("attention_backward, {nq} queries over {nk} keys, {s:?}");
        check(&g, &dq, &wq, TOL_F32_REDUCTION, &format!("{what} dq"));
        check(&g, &dk, &wk, TOL_F32_REDUCTION, &format!("{what} dk"));
        check(&g, &dv, &wv, TOL_F32_REDUCTION, &format!("{what} dv"));
    }
}

#[test]
fn attention_rejects_heads_wider_than_the_kernel() {
    let Some(g) = gpu() else { return };
    let hd = nse::gpu::kernels::attention::MAX_HEAD_DIM + 2;
    let s = AttnShape {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: hd,
    };
    let x = g.zeros(&[1, hd]).unwrap();
    let r = g.upload_u32("ranges", &[0, 1], &[1, 2]).unwrap();
    match g.attention(&x, &x, &x, &r, s) {
        Err(Error::Gpu(msg)) => assert!(msg.contains("cpu backend"), "{msg}"),
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
}
