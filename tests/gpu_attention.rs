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
        let (q, qc) = rand(&g, &mut rng, &[n, hq * hd]);
        let (k, kc) = rand(&g, &mut rng, &[n, hkv * hd]);
        let (v, vc) = rand(&g, &mut rng, &[n, hkv * hd]);
        let (r, rc) = up_u32(&g, &causal_ranges(&lens), &[n, 2]);
        let want = CpuBackend.attention(&qc, &kc, &vc, &rc, s).unwrap();
        check(
            &g,
            &g.attention(&q, &k, &v, &r, s).unwrap(),
            &want,
            TOL_F32_REDUCTION,
            &format!("attention causal {s:?}"),
        );
        // Queries over another set of keys (a KV cache), arbitrary non-empty ranges.
        let (nq, nk) = (3, 10);
        let (q, qc) = rand(&g, &mut rng, &[nq, hq * hd]);
        let (k, kc) = rand(&g, &mut rng, &[nk, hkv * hd]);
        let (v, vc) = rand(&g, &mut rng, &[nk, hkv * hd]);
        let (r, rc) = up_u32(&g, &[0, 10, 4, 5, 2, 9], &[nq, 2]);
        let want = CpuBackend.attention(&qc, &kc, &vc, &rc, s).unwrap();
        check(
            &g,
            &g.attention(&q, &k, &v, &r, s).unwrap(),
            &want,
            TOL_F32_REDUCTION,
            &format!("attention cross {s:?}"),
        );
    }
}

#[test]
fn attention_backward_packed_causal_and_subsets() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(7);
    for (hq, hkv, hd) in ATTN_SHAPES {
        let s = AttnShape {
            n_heads: hq,
            n_kv_heads: hkv,
            head_dim: hd,
        };
        for lens in [&[1][..], &[4, 1, 6, 2]] {
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
