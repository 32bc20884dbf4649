//! Decoding's fused ops (`shaders/gemv_fused.wgsl`) on the gpu backend against the cpu
//! backend, whose defaults are the unfused compositions: every row count the kernels take
//! (1 ..= 8) and one past it (the fallback), widths that are not multiples of the 4 columns a
//! workgroup writes, Qwen2's biases, and a whole decode of the tiny model token by token.
//!
//! Natively without a GPU: `WGPU_BACKEND=vulkan` with Mesa lavapipe. `NSE_GPU_OPTIONAL=1` turns
//! a missing adapter into a loud skip.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::gpu_vs_cpu::{check, rand, read, up, up_u32};
use common::tiny::{tiny_config, tiny_weights};
use common::{Rng, TOL_F32_REDUCTION, gpu};
use nse::backend::{Backend, QkvDecode};
use nse::cpu::CpuBackend;
use nse::model::Model;
use nse::model::generate::{Sampling, generate};
use nse::ops::rope::rope_table;

const ROWS: [usize; 4] = [1, 3, 8, 9];

/// Norm weights around 1, as in a trained model.
fn norm_weight(rng: &mut Rng, k: usize) -> Vec<f32> {
    rng.vec(k).iter().map(|x| 1.0 + 0.2 * x).collect()
}

#[test]
fn norm_matmul_nt_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(31);
    for (k, n) in [(32, 7), (576, 130)] {
        let (w, w_c) = rand(&g, &mut rng, &[n, k]);
        let (norm, norm_c) = up(&g, &norm_weight(&mut rng, k), &[k]);
        for m in ROWS {
            let (h, h_c) = rand(&g, &mut rng, &[m, k]);
            let want = CpuBackend
                .norm_matmul_nt(&h_c, &norm_c, 1e-5, &w_c)
                .unwrap();
            let got = g.norm_matmul_nt(&h, &norm, 1e-5, &w).unwrap();
            check(
                &g,
                &got,
                &want,
                TOL_F32_REDUCTION,
                &format!("norm_matmul_nt m={m} k={k} n={n}"),
            );
        }
    }
}

#[test]
fn matmul_nt_residual_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(32);
    for (k, n) in [(48, 33), (1536, 576)] {
        let (w, w_c) = rand(&g, &mut rng, &[n, k]);
        for m in ROWS {
            let (x, x_c) = rand(&g, &mut rng, &[m, k]);
            let (r, r_c) = rand(&g, &mut rng, &[m, n]);
            let want = CpuBackend.matmul_nt_residual(&x_c, &w_c, &r_c).unwrap();
            let got = g.matmul_nt_residual(&x, &w, &r).unwrap();
            check(
                &g,
                &got,
                &want,
                TOL_F32_REDUCTION,
                &format!("matmul_nt_residual m={m} k={k} n={n}"),
            );
        }
    }
}

#[test]
fn norm_gate_up_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(33);
    for (k, f) in [(32, 47), (576, 1536)] {
        let (gate, gate_c) = rand(&g, &mut rng, &[f, k]);
        let (upw, up_c) = rand(&g, &mut rng, &[f, k]);
        let (norm, norm_c) = up(&g, &norm_weight(&mut rng, k), &[k]);
        for m in ROWS {
            let (h, h_c) = rand(&g, &mut rng, &[m, k]);
            let want = CpuBackend
                .norm_gate_up(&h_c, &norm_c, 1e-5, &gate_c, &up_c)
                .unwrap();
            let got = g.norm_gate_up(&h, &norm, 1e-5, &gate, &upw).unwrap();
            check(
                &g,
                &got,
                &want,
                TOL_F32_REDUCTION,
                &format!("norm_gate_up m={m} k={k} f={f}"),
            );
        }
    }
}

/// q, and both caches in full (rows before `pos0` must keep what they held), with and without
/// biases, at a `pos0` past the start.
#[test]
fn decode_qkv_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(34);
    let (d, hd, hq, hkv, capacity) = (64, 16, 4, 2, 24);
    let (nq, nkv) = (hq * hd, hkv * hd);
    let table = rope_table(10000.0, hd, capacity, None);
    let (table, table_c) = up(&g, &table, &[capacity, hd]);
    let (wq, wq_c) = rand(&g, &mut rng, &[nq, d]);
    let (wk, wk_c) = rand(&g, &mut rng, &[nkv, d]);
    let (wv, wv_c) = rand(&g, &mut rng, &[nkv, d]);
    let (bq, bq_c) = rand(&g, &mut rng, &[nq]);
    let (bk, bk_c) = rand(&g, &mut rng, &[nkv]);
    let (bv, bv_c) = rand(&g, &mut rng, &[nkv]);
    let (norm, norm_c) = up(&g, &norm_weight(&mut rng, d), &[d]);
    for with_bias in [false, true] {
        for (m, pos0) in [(1, 0), (1, 11), (3, 5), (8, 16), (9, 2)] {
            let (h, h_c) = rand(&g, &mut rng, &[m, d]);
            let pos: Vec<u32> = (pos0..pos0 + m).map(|p| p as u32).collect();
            let (positions, positions_c) = up_u32(&g, &pos, &[m]);
            let old = rng.vec(capacity * nkv);
            let (mut ck, mut ck_c) = up(&g, &old, &[capacity, nkv]);
            let (mut cv, mut cv_c) = up(&g, &old, &[capacity, nkv]);
            let p = QkvDecode {
                norm: &norm,
                eps: 1e-5,
                proj: [&wq, &wk, &wv],
                bias: with_bias.then_some([&bq, &bk, &bv]),
                positions: &positions,
                table: &table,
                head_dim: hd,
                pos0,
            };
            let p_c = QkvDecode {
                norm: &norm_c,
                eps: 1e-5,
                proj: [&wq_c, &wk_c, &wv_c],
                bias: with_bias.then_some([&bq_c, &bk_c, &bv_c]),
                positions: &positions_c,
                table: &table_c,
                head_dim: hd,
                pos0,
            };
            let want = CpuBackend
                .decode_qkv(&h_c, &p_c, &mut ck_c, &mut cv_c)
                .unwrap();
            let got = g.decode_qkv(&h, &p, &mut ck, &mut cv).unwrap();
            let what = format!("decode_qkv m={m} pos0={pos0} bias={with_bias}");
            check(&g, &got, &want, TOL_F32_REDUCTION, &format!("{what}: q"));
            check(
                &g,
                &ck,
                &ck_c,
                TOL_F32_REDUCTION,
                &format!("{what}: k cache"),
            );
            check(
                &g,
                &cv,
                &cv_c,
                TOL_F32_REDUCTION,
                &format!("{what}: v cache"),
            );
        }
    }
}

/// Rows past the caches' end are refused with an error, never written out of bounds.
#[test]
fn decode_qkv_past_the_cache_is_an_error() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(35);
    let (d, hd) = (16, 8);
    let (h, _) = rand(&g, &mut rng, &[2, d]);
    let (w, _) = rand(&g, &mut rng, &[hd, d]);
    let (norm, _) = up(&g, &vec![1.0; d], &[d]);
    let (table, _) = up(&g, &rope_table(10000.0, hd, 4, None), &[4, hd]);
    let (positions, _) = up_u32(&g, &[3, 4], &[2]);
    let (mut ck, _) = up(&g, &[0.0; 4 * 8], &[4, hd]);
    let (mut cv, _) = up(&g, &[0.0; 4 * 8], &[4, hd]);
    let p = QkvDecode {
        norm: &norm,
        eps: 1e-5,
        proj: [&w, &w, &w],
        bias: None,
        positions: &positions,
        table: &table,
        head_dim: hd,
        pos0: 3,
    };
    let err = g.decode_qkv(&h, &p, &mut ck, &mut cv).unwrap_err();
    assert!(err.to_string().contains("exceed the cache"), "{err}");
    assert_eq!(read(&g, &ck), vec![0.0; 32], "the cache was written");
}

/// The tiny model decodes the same tokens with the same logits on both backends, through a
/// 5-token prefill (the unfused path) and 12 single tokens (the fused one).
#[test]
fn decoding_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let tok = common::load_default_model().tokenizer;
    let config = tiny_config(tok.vocab_size());
    let cpu = Model::upload(CpuBackend, config.clone(), tiny_weights(&config, 7)).unwrap();
    let gpu = Model::upload(g, config.clone(), tiny_weights(&config, 7)).unwrap();
    let prompt = [504u32, 3575, 282, 4649, 314];
    let mut cache_c = cpu.new_cache(32).unwrap();
    let mut cache_g = gpu.new_cache(32).unwrap();
    let mut ids = prompt.to_vec();
    for step in 0..13 {
        let new = if step == 0 {
            &ids[..]
        } else {
            &ids[ids.len() - 1..]
        };
        let want = cpu.forward_cached(&mut cache_c, new).unwrap();
        let got = gpu.forward_cached(&mut cache_g, new).unwrap();
        check(
            gpu.backend(),
            &got,
            &want,
            TOL_F32_REDUCTION,
            &format!("logits at step {step}"),
        );
        let logits = want.f32();
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        ids.push(next as u32);
    }
}

/// `generate` queues each token's pass before it reads the token back (the embedding reads the
/// argmax on the device): the same greedy tokens as the cpu backend, and the same generation
/// whether it stops at the token limit or not.
#[test]
fn generation_with_the_next_pass_queued_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let tok = common::load_default_model().tokenizer;
    let config = tiny_config(tok.vocab_size());
    let cpu = Model::upload(CpuBackend, config.clone(), tiny_weights(&config, 7)).unwrap();
    let gpu = Model::upload(g, config.clone(), tiny_weights(&config, 7)).unwrap();
    let prompt = [504u32, 3575, 282, 4649, 314];
    let run = |max: usize| {
        let want =
            pollster::block_on(generate(&cpu, &prompt, max, Sampling::Greedy, |_| {})).unwrap();
        let got =
            pollster::block_on(generate(&gpu, &prompt, max, Sampling::Greedy, |_| {})).unwrap();
        assert_eq!(got.ids, want.ids, "greedy ids, {max} tokens");
        assert_eq!(got.stopped_at_eos, want.stopped_at_eos, "{max} tokens");
        let top: Vec<u32> = got.top5_first.iter().map(|t| t.0).collect();
        let top_c: Vec<u32> = want.top5_first.iter().map(|t| t.0).collect();
        assert_eq!(top, top_c, "first position's top 5");
        want.ids
    };
    let long = run(16);
    assert_eq!(long.len(), 16, "no end of text in 16 tokens: {long:?}");
    assert_eq!(run(1), long[..1], "one token");
    assert_eq!(run(5), long[..5], "five tokens");
}

/// The GEMVs' subgroup reductions (`+subgroups` variants, on where the device has subgroups:
/// lavapipe and SwiftShader do) and the portable ones, on the same device, against the cpu.
#[test]
fn gemvs_with_and_without_subgroups_match_the_cpu() {
    let Some(g) = gpu() else { return };
    // A device with subgroups uses them unless its startup check failed (which would mean its
    // subgroups are not runs of consecutive invocations): on lavapipe it must pass.
    assert_eq!(
        g.uses_subgroups(),
        g.subgroup_sizes().is_some(),
        "subgroups {:?} but not used",
        g.subgroup_sizes()
    );
    let mut rng = Rng::new(35);
    let (k, n) = (576, 130);
    let (w, w_c) = rand(&g, &mut rng, &[n, k]);
    let (w2, w2_c) = rand(&g, &mut rng, &[n, k]);
    let (norm, norm_c) = up(&g, &norm_weight(&mut rng, k), &[k]);
    for on in [true, false] {
        g.set_subgroups(on);
        for m in [1, 2, 5, 8] {
            let (h, h_c) = rand(&g, &mut rng, &[m, k]);
            let (r, r_c) = rand(&g, &mut rng, &[m, n]);
            let what = |op: &str| format!("{op} m={m} subgroups={on}");
            let got = g.matmul(&h, &w, nse::backend::Transpose::NT).unwrap();
            let want = CpuBackend
                .matmul(&h_c, &w_c, nse::backend::Transpose::NT)
                .unwrap();
            check(&g, &got, &want, TOL_F32_REDUCTION, &what("gemv"));
            let got = g.norm_matmul_nt(&h, &norm, 1e-5, &w).unwrap();
            let want = CpuBackend
                .norm_matmul_nt(&h_c, &norm_c, 1e-5, &w_c)
                .unwrap();
            check(&g, &got, &want, TOL_F32_REDUCTION, &what("norm_matmul_nt"));
            let got = g.matmul_nt_residual(&h, &w, &r).unwrap();
            let want = CpuBackend.matmul_nt_residual(&h_c, &w_c, &r_c).unwrap();
            check(
                &g,
                &got,
                &want,
                TOL_F32_REDUCTION,
                &what("matmul_nt_residual"),
            );
            let got = g.norm_gate_up(&h, &norm, 1e-5, &w, &w2).unwrap();
            let want = CpuBackend
                .norm_gate_up(&h_c, &norm_c, 1e-5, &w_c, &w2_c)
                .unwrap();
            check(&g, &got, &want, TOL_F32_REDUCTION, &what("norm_gate_up"));
        }
    }
    g.set_subgroups(true);
}
