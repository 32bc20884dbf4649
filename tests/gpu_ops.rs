//! Every [`Backend`] op of the gpu backend against the cpu backend, on seeded random inputs at
//! awkward sizes (one row, widths that are not multiples of 4 or of the workgroup size).
//! Attention is in `gpu_attention.rs`; the backend's own behaviour in `gpu_device.rs`.
//!
//! Natively without a GPU: `WGPU_BACKEND=vulkan` with Mesa lavapipe. `NSE_GPU_OPTIONAL=1` turns
//! a missing adapter into a loud skip.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::gpu_vs_cpu::{assert_ids, check, rand, read, read_u32, up, up_u32};
use common::{Rng, TOL_EXACT, TOL_F32_ELEMENTWISE, TOL_F32_REDUCTION, gpu, gpu_software};
use nse::backend::{Backend, Transpose};
use nse::cpu::CpuBackend;
use nse::gpu::kernels::matmul::{gpu_matmul_kernel, split_k};
use nse::ops::matmul::MatmulDims;

const WIDTHS: [usize; 6] = [1, 3, 7, 33, 65, 129];

#[test]
fn upload_read_zeros_copy_roundtrip() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(1);
    for n in WIDTHS {
        let (t, want) = rand(&g, &mut rng, &[n]);
        check(&g, &t, &want, TOL_EXACT, &format!("upload/read {n}"));
        check(
            &g,
            &g.copy(&t).unwrap(),
            &want,
            TOL_EXACT,
            &format!("copy {n}"),
        );
        let z = g.zeros(&[2, n]).unwrap();
        assert_eq!(read(&g, &z), vec![0.0; 2 * n], "zeros {n}");
        let ids = rng.vec_below(n, u32::MAX);
        let t = g.upload_u32("ids", &ids, &[n]).unwrap();
        assert_eq!(read_u32(&g, &g.copy(&t).unwrap()), ids, "u32 copy {n}");
    }
}

#[test]
fn embedding_and_gather_rows() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(2);
    for d in WIDTHS {
        for n in [1, 5] {
            let (table, table_c) = rand(&g, &mut rng, &[7, d]);
            let (ids, ids_c) = up_u32(&g, &rng.vec_below(n, 7), &[n]);
            let want = CpuBackend.embedding(&table_c, &ids_c).unwrap();
            check(
                &g,
                &g.embedding(&table, &ids).unwrap(),
                &want,
                TOL_EXACT,
                &format!("embedding d={d} n={n}"),
            );
            let want = CpuBackend.gather_rows(&table_c, &ids_c).unwrap();
            check(
                &g,
                &g.gather_rows(&table, &ids).unwrap(),
                &want,
                TOL_EXACT,
                &format!("gather_rows d={d} n={n}"),
            );
        }
    }
}

#[test]
fn rms_norm_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(3);
    for d in WIDTHS {
        for n in [1, 3] {
            let (x, xc) = rand(&g, &mut rng, &[n, d]);
            let (w, wc) = rand(&g, &mut rng, &[d]);
            let (dy, dyc) = rand(&g, &mut rng, &[n, d]);
            let want = CpuBackend.rms_norm(&xc, &wc, 1e-5).unwrap();
            check(
                &g,
                &g.rms_norm(&x, &w, 1e-5).unwrap(),
                &want,
                TOL_F32_REDUCTION,
                &format!("rms_norm {n}x{d}"),
            );
            let want = CpuBackend.rms_norm_backward(&xc, &wc, &dyc, 1e-5).unwrap();
            let got = g.rms_norm_backward(&x, &w, &dy, 1e-5).unwrap();
            check(
                &g,
                &got,
                &want,
                TOL_F32_REDUCTION,
                &format!("rms_norm_backward {n}x{d}"),
            );
        }
    }
}

/// LayerNorm at widths below, at and past the workgroup's 64 invocations (576 and 1000: several
/// strides, the last partial), on rows centred on 0 and on rows shifted far from it (where a
/// one-pass variance would cancel).
#[test]
fn layer_norm_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(13);
    for d in [1, 3, 7, 33, 64, 65, 129, 576, 1000] {
        for (n, shift) in [(1, 0.0), (3, 0.0), (4, 8.0)] {
            let data: Vec<f32> = rng.vec(n * d).iter().map(|x| 3.0 * x + shift).collect();
            let (x, xc) = up(&g, &data, &[n, d]);
            let (w, wc) = rand(&g, &mut rng, &[d]);
            let (b, bc) = rand(&g, &mut rng, &[d]);
            let (dy, dyc) = rand(&g, &mut rng, &[n, d]);
            let what = format!("{n}x{d}, shift {shift}");
            let want = CpuBackend.layer_norm(&xc, &wc, &bc, 1e-5).unwrap();
            check(
                &g,
                &g.layer_norm(&x, &w, &b, 1e-5).unwrap(),
                &want,
                TOL_F32_REDUCTION,
                &format!("layer_norm {what}"),
            );
            let want = CpuBackend
                .layer_norm_backward(&xc, &wc, &dyc, 1e-5)
                .unwrap();
            check(
                &g,
                &g.layer_norm_backward(&x, &w, &dy, 1e-5).unwrap(),
                &want,
                TOL_F32_REDUCTION,
                &format!("layer_norm_backward {what}"),
            );
        }
    }
}

/// GELU and its gradient on random inputs, at sizes that are not multiples of 4, and in the
/// tails, where a tanh built on `exp(2u)` overflows to NaN.
#[test]
fn gelu_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(14);
    // Compares both ops with the cpu backend; returns the gpu's GELU.
    let mut compare = |data: &[f32], shape: [usize; 2], scale: &str| -> Vec<f32> {
        let (x, xc) = up(&g, data, &shape);
        let (dy, dyc) = rand(&g, &mut rng, &shape);
        let what = format!("{}x{} {scale}", shape[0], shape[1]);
        let got = g.gelu(&x).unwrap();
        let want = CpuBackend.gelu(&xc).unwrap();
        check(
            &g,
            &got,
            &want,
            TOL_F32_ELEMENTWISE,
            &format!("gelu {what}"),
        );
        let want = CpuBackend.gelu_backward(&xc, &dyc).unwrap();
        check(
            &g,
            &g.gelu_backward(&x, &dy).unwrap(),
            &want,
            TOL_F32_ELEMENTWISE,
            &format!("gelu_backward {what}"),
        );
        read(&g, &got)
    };
    let mut inputs = Rng::new(15);
    for (n, f) in [(1, 1), (1, 3), (2, 7), (3, 33), (5, 129), (2, 1000)] {
        let data: Vec<f32> = inputs.vec(n * f).iter().map(|x| 8.0 * x).collect();
        compare(&data, [n, f], "in ±8");
    }
    let data: Vec<f32> = inputs.vec(4 * 101).iter().map(|x| 50.0 * x).collect();
    compare(&data, [4, 101], "in ±50");
    let tails = [
        50.0, -50.0, 1e4, -1e4, 11.0, -11.0, 9.5, -9.5, 6.0, -6.0, 0.0, 1e-3, -1e-3,
    ];
    let y = compare(&tails, [1, tails.len()], "tails");
    // The identity on the right, 0 on the left, by hand.
    assert_eq!(y[..4], [50.0, 0.0, 1e4, 0.0], "gelu(±50), gelu(±1e4)");
}

/// Stored shapes of `a` and `b` for a logical `(m, k) · (k, n)` under `t`.
fn stored(m: usize, k: usize, n: usize, t: Transpose) -> ([usize; 2], [usize; 2]) {
    (
        if t.a { [k, m] } else { [m, k] },
        if t.b { [n, k] } else { [k, n] },
    )
}

#[test]
fn matmul_all_transposes_general_vec4_and_gemv_paths() {
    let (Some(hw), Some(sw)) = (gpu(), gpu_software()) else {
        return;
    };
    // The hardware kernels (GEMV, split-K), and the software adapters' (tiled everywhere).
    for g in [hw, sw] {
        matmul_cases(g);
    }
}

fn matmul_cases(g: nse::gpu::GpuBackend) {
    let mut rng = Rng::new(4);
    let tt = Transpose { a: true, b: true };
    let sizes = [
        (1, 1, 1),
        (1, 7, 3),
        (3, 33, 7),
        (33, 65, 1),
        (65, 3, 129),
        (4, 8, 12),
        (33, 64, 65),
        (36, 9, 68),
        (5, 0, 8),
        // GEMV (x · Wᵀ, M ≤ 8, K % 4 = 0): K shorter and longer than a workgroup's 64 vec4s,
        // N not a multiple of its 4 columns, every M the pipeline constant takes at the edges.
        (1, 576, 49),
        (2, 260, 3),
        (8, 1540, 13),
        (7, 4, 5),
        (9, 64, 5),
        // Split-K (few tiles, K ≥ 1024): slices of a whole number of vec4s, the last shorter,
        // and K % 4 ≠ 0 on the scalar `nn` and general paths.
        (9, 2048, 40),
        (2, 1101, 8),
        (4, 1030, 8),
    ];
    let mut kernels = std::collections::BTreeSet::new();
    let mut split = 0;
    for (m, k, n) in sizes {
        for t in [Transpose::NN, Transpose::NT, Transpose::TN, tt] {
            let kernel = gpu_matmul_kernel(MatmulDims { m, k, n }, t, false);
            kernels.insert(kernel);
            let tiles = m.div_ceil(32) * n.div_ceil(32);
            if kernel.0 == "matmul_vec4" && split_k(tiles, k, m * n * 4, u64::MAX) > 1 {
                split += 1;
            }
            let (sa, sb) = stored(m, k, n, t);
            let (a, ac) = rand(&g, &mut rng, &sa);
            let (b, bc) = rand(&g, &mut rng, &sb);
            let what = format!("matmul {m}x{k}x{n} {t:?}");
            let want = CpuBackend.matmul(&ac, &bc, t).unwrap();
            check(
                &g,
                &g.matmul(&a, &b, t).unwrap(),
                &want,
                TOL_F32_REDUCTION,
                &what,
            );
            let (mut c, mut cc) = rand(&g, &mut rng, &[m, n]);
            CpuBackend.matmul_acc(&mut cc, &ac, &bc, t).unwrap();
            g.matmul_acc(&mut c, &a, &b, t).unwrap();
            check(&g, &c, &cc, TOL_F32_REDUCTION, &format!("{what} acc"));
        }
    }
    let want = [
        ("gemv", "nt"),
        ("matmul", "main"),
        ("matmul_vec4", "nn"),
        ("matmul_vec4", "nt"),
        ("matmul_vec4", "tn"),
    ];
    assert_eq!(
        kernels.into_iter().collect::<Vec<_>>(),
        want,
        "every matmul kernel was exercised"
    );
    assert!(split >= 4, "{split} split-K products");
}

#[test]
fn rope_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(5);
    for (n, heads, hd) in [(1, 1, 2), (4, 3, 6), (5, 2, 64), (3, 1, 130)] {
        let n_pos = 9;
        let (table, table_c) = up(
            &g,
            &nse::ops::rope::rope_table(10000.0, hd, n_pos, None),
            &[n_pos, hd],
        );
        let (pos, pos_c) = up_u32(&g, &rng.vec_below(n, n_pos as u32), &[n]);
        let (x, xc) = rand(&g, &mut rng, &[n, heads * hd]);
        let want = CpuBackend.rope(&xc, &pos_c, &table_c, hd).unwrap();
        check(
            &g,
            &g.rope(&x, &pos, &table, hd).unwrap(),
            &want,
            TOL_F32_ELEMENTWISE,
            &format!("rope {n}x{heads}x{hd}"),
        );
        let want = CpuBackend.rope_backward(&xc, &pos_c, &table_c, hd).unwrap();
        let got = g.rope_backward(&x, &pos, &table, hd).unwrap();
        check(
            &g,
            &got,
            &want,
            TOL_F32_ELEMENTWISE,
            &format!("rope_backward {n}x{heads}x{hd}"),
        );
    }
}

#[test]
fn add_bias_broadcasts_over_rows() {
    // By hand: each row plus the bias.
    let x = nse::cpu::CpuTensor::from_f32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = nse::cpu::CpuTensor::from_f32(vec![10.0, 20.0, 30.0], &[3]);
    let y = CpuBackend.add_bias(&x, &b).unwrap();
    assert_eq!(y.f32(), [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
}

#[test]
fn silu_mul_add_and_add_bias() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(8);
    for (n, f) in [(1, 1), (1, 3), (2, 7), (3, 33), (1, 65), (5, 129)] {
        let (a, ac) = up(
            &g,
            &rng.vec(n * f).iter().map(|x| 8.0 * x).collect::<Vec<_>>(),
            &[n, f],
        );
        let (b, bc) = rand(&g, &mut rng, &[n, f]);
        let (dy, dyc) = rand(&g, &mut rng, &[n, f]);
        let what = format!("{n}x{f}");
        check(
            &g,
            &g.add(&a, &b).unwrap(),
            &CpuBackend.add(&ac, &bc).unwrap(),
            TOL_EXACT,
            &format!("add {what}"),
        );
        let (bias, biasc) = rand(&g, &mut rng, &[f]);
        check(
            &g,
            &g.add_bias(&a, &bias).unwrap(),
            &CpuBackend.add_bias(&ac, &biasc).unwrap(),
            TOL_EXACT,
            &format!("add_bias {what}"),
        );
        let want = CpuBackend.silu_mul(&ac, &bc).unwrap();
        check(
            &g,
            &g.silu_mul(&a, &b).unwrap(),
            &want,
            TOL_F32_ELEMENTWISE,
            &format!("silu_mul {what}"),
        );
        let (dg, du) = g.silu_mul_backward(&a, &b, &dy).unwrap();
        let (wg, wu) = CpuBackend.silu_mul_backward(&ac, &bc, &dyc).unwrap();
        check(
            &g,
            &dg,
            &wg,
            TOL_F32_ELEMENTWISE,
            &format!("silu_mul_backward d gate {what}"),
        );
        check(
            &g,
            &du,
            &wu,
            TOL_F32_ELEMENTWISE,
            &format!("silu_mul_backward d up {what}"),
        );
    }
}

#[test]
fn add_rows_write_rows_add_columns_zero_rows_in_place() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(9);
    for d in WIDTHS {
        let (mut x, mut xc) = rand(&g, &mut rng, &[6, d]);
        // Rows repeat: their vectors add up, in order.
        let (rows, rows_c) = up_u32(&g, &[5, 0, 5, 2, 5], &[5]);
        let (v, vc) = rand(&g, &mut rng, &[5, d]);
        g.add_rows(&mut x, &rows, &v).unwrap();
        CpuBackend.add_rows(&mut xc, &rows_c, &vc).unwrap();
        check(&g, &x, &xc, TOL_EXACT, &format!("add_rows d={d}"));
        let (src, src_c) = rand(&g, &mut rng, &[2, d]);
        g.write_rows(&mut x, 3, &src).unwrap();
        CpuBackend.write_rows(&mut xc, 3, &src_c).unwrap();
        check(&g, &x, &xc, TOL_EXACT, &format!("write_rows d={d}"));
        let cols: Vec<u32> = [d - 1, 0, d / 2].iter().map(|&c| c as u32).collect();
        let cols: Vec<u32> = cols
            .iter()
            .enumerate()
            .filter(|(i, c)| !cols[..*i].contains(c))
            .map(|(_, &c)| c)
            .collect();
        let (cols_g, cols_c) = up_u32(&g, &cols, &[cols.len()]);
        let (delta, delta_c) = rand(&g, &mut rng, &[6, cols.len()]);
        g.add_columns(&mut x, &cols_g, &delta).unwrap();
        CpuBackend.add_columns(&mut xc, &cols_c, &delta_c).unwrap();
        check(
            &g,
            &x,
            &xc,
            TOL_EXACT,
            &format!("add_columns d={d} cols={cols:?}"),
        );
        // Rows repeat; the others stay as they were.
        let (zero, zero_c) = up_u32(&g, &[4, 1, 4], &[3]);
        g.zero_rows(&mut x, &zero).unwrap();
        CpuBackend.zero_rows(&mut xc, &zero_c).unwrap();
        assert!(xc.f32()[d..2 * d].iter().all(|&v| v == 0.0));
        assert!(xc.f32()[..d].iter().any(|&v| v != 0.0));
        check(&g, &x, &xc, TOL_EXACT, &format!("zero_rows d={d}"));
    }
}

#[test]
fn log_softmax_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(10);
    for v in [1, 3, 7, 33, 129, 1000] {
        for n in [1, 3] {
            let (x, xc) = up(
                &g,
                &rng.vec(n * v).iter().map(|x| 20.0 * x).collect::<Vec<_>>(),
                &[n, v],
            );
            let want = CpuBackend.log_softmax(&xc).unwrap();
            let logp = g.log_softmax(&x).unwrap();
            check(
                &g,
                &logp,
                &want,
                TOL_F32_REDUCTION,
                &format!("log_softmax {n}x{v}"),
            );
            let (dy, dyc) = rand(&g, &mut rng, &[n, v]);
            let want = CpuBackend.log_softmax_backward(&want, &dyc).unwrap();
            let (logp, _) = up(&g, &read(&g, &logp), &[n, v]); // both sides from the same logp
            let got = g.log_softmax_backward(&logp, &dy).unwrap();
            check(
                &g,
                &got,
                &want,
                TOL_F32_REDUCTION,
                &format!("log_softmax_backward {n}x{v}"),
            );
        }
    }
}

#[test]
fn argmax_lowest_index_on_ties() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(11);
    let v = 300;
    let mut rows = [
        rng.vec(v),
        vec![0.5; v],
        rng.vec(v),
        rng.vec(v).iter().map(|x| x - 3.0).collect(),
    ];
    rows[2][17] = 2.0; // a tie between indices far apart, in different invocations' strides
    rows[2][250] = 2.0;
    rows[2][145] = 2.0;
    rows[3][299] = 5.0;
    let data: Vec<f32> = rows.concat();
    let (x, xc) = up(&g, &data, &[4, v]);
    let got = read_u32(&g, &g.argmax(&x).unwrap());
    assert_ids(&got, CpuBackend.argmax(&xc).unwrap().u32(), "argmax");
    assert_eq!(got[1..4], [0, 17, 299], "ties go to the lowest index");
    for w in WIDTHS {
        let (x, xc) = rand(&g, &mut rng, &[2, w]);
        let got = read_u32(&g, &g.argmax(&x).unwrap());
        assert_ids(
            &got,
            CpuBackend.argmax(&xc).unwrap().u32(),
            &format!("argmax width {w}"),
        );
    }
}

#[test]
fn sample_top_k_matches_reference() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(12);
    let v = 257;
    let n = 8;
    let mut data = rng.vec(n * v).iter().map(|x| 4.0 * x).collect::<Vec<f32>>();
    for j in [3, 40, 200] {
        data[v + j] = 9.0; // row 1: a three-way tie at the top
    }
    data[2 * v..3 * v].fill(1.0); // row 2: all equal
    // Row 3: all negative but a −0 and a +0; in the reference's total order +0 ranks first.
    for x in &mut data[3 * v..4 * v] {
        *x = *x / 2.0 - 3.0;
    }
    data[3 * v + 5] = -0.0;
    data[3 * v + 6] = 0.0;
    let uniforms = [0.0, 0.3, 0.7, 0.999, 0.5, 0.1, 0.9, 0.45];
    let (x, xc) = up(&g, &data, &[n, v]);
    let (u, uc) = up(&g, &uniforms, &[n]);
    for k in [1, 5, 300] {
        let got = read_u32(&g, &g.sample_top_k(&x, k, &u).unwrap());
        let want = CpuBackend.sample_top_k(&xc, k, &uc).unwrap();
        assert_ids(&got, want.u32(), &format!("sample_top_k k={k}"));
        if k == 1 {
            assert_eq!(got[3], 6, "+0 beats −0 in the total order");
            let mut argmax = read_u32(&g, &g.argmax(&x).unwrap());
            assert_eq!(argmax[3], 5, "argmax: −0 == +0, lowest index");
            argmax[3] = 6;
            assert_ids(&got, &argmax, "top-1 is the argmax elsewhere");
        }
    }
}

/// The z loss's terms and gradient (with respect to the logits): target rows (a label, a weight) and KL rows against
/// reference rows, at vocabularies below, at and above a workgroup's 128 invocations.
#[test]
fn z_loss_terms_and_gradient() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(12);
    for v in [5, 128, 1000] {
        let r = 5;
        let logits: Vec<f32> = rng.vec(r * v).iter().map(|x| 8.0 * x).collect();
        let (_, xc) = up(&g, &logits, &[r, v]);
        let logp_c = CpuBackend.log_softmax(&xc).unwrap();
        let (logp, _) = up(&g, logp_c.f32(), &[r, v]);
        let refs_host: Vec<f32> = {
            let (y, _) = up(&g, &rng.vec(2 * v), &[2, v]);
            read(&g, &g.log_softmax(&y).unwrap())
        };
        let (refs, refs_c) = up(&g, &refs_host, &[2, v]);
        let kl = u32::MAX;
        let label_rows = [0, (v - 1) as u32, kl, (v / 2) as u32, kl];
        let (labels, labels_c) = up_u32(&g, &label_rows, &[r]);
        let (weights, weights_c) = up(&g, &[-0.25, -0.25, 0.0, -0.5, 0.0], &[r]);
        let (kl_rows, kl_rows_c) = up_u32(&g, &[0, 0, 1, 0, 0], &[r]);
        let (dlogits, values) = g
            .z_loss(logp, &labels, &weights, &refs, &kl_rows, 0.0625)
            .unwrap();
        let (want_d, want_v) = CpuBackend
            .z_loss(
                logp_c.clone(),
                &labels_c,
                &weights_c,
                &refs_c,
                &kl_rows_c,
                0.0625,
            )
            .unwrap();
        // A target row's term is its label's log-probability.
        assert_eq!(want_v.f32()[1], logp_c.f32()[2 * v - 1]);
        check(
            &g,
            &values,
            &want_v,
            TOL_F32_REDUCTION,
            &format!("z_loss terms v={v}"),
        );
        check(
            &g,
            &dlogits,
            &want_d,
            TOL_F32_REDUCTION,
            &format!("z_loss gradient v={v}"),
        );
    }
}

/// One z Adam step for some of the requests: rows that step and rows that do not (they must
/// not change), a zero δ (no weight-decay term), a δ that the clamp scales back, widths below
/// and above a workgroup's 64 invocations.
#[test]
fn z_adam_step() {
    use nse::backend::{ZAdamState, ZAdamStep};
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(41);
    for d in [3, 64, 576] {
        let n = 4;
        let mut delta = rng.vec(n * d);
        delta[d..2 * d].fill(0.0); // request 1: δ = 0
        let moments = |rng: &mut Rng| {
            rng.vec(n * d)
                .iter()
                .map(|x| x.abs() * 0.01)
                .collect::<Vec<f32>>()
        };
        let (m, v) = (moments(&mut rng), moments(&mut rng));
        let grad = rng.vec(n * d);
        // Request 2's limit is below its norm after the step: the clamp applies.
        let coef = vec![0.3, 100.0, 0.3, 100.0, 0.2, 0.05, 0.1, 100.0];
        let rows = [0u32, 1, 2];
        let (step, bc2_sqrt) = nse::ops::adam::step_constants(0.5, 3);
        let mut gs = ZAdamState {
            delta: up(&g, &delta, &[n, d]).0,
            m: up(&g, &m, &[n, d]).0,
            v: up(&g, &v, &[n, d]).0,
            norms: up(&g, &[7.0; 4], &[n]).0,
        };
        let mut cs = ZAdamState {
            delta: up(&g, &delta, &[n, d]).1,
            m: up(&g, &m, &[n, d]).1,
            v: up(&g, &v, &[n, d]).1,
            norms: up(&g, &[7.0; 4], &[n]).1,
        };
        let (grad_g, grad_c) = up(&g, &grad, &[n, d]);
        let (coef_g, coef_c) = up(&g, &coef, &[n, 2]);
        let (rows_g, rows_c) = up_u32(&g, &rows, &[3]);
        let sg = ZAdamStep {
            grad: &grad_g,
            rows: &rows_g,
            coef: &coef_g,
            step,
            bc2_sqrt,
        };
        let sc = ZAdamStep {
            grad: &grad_c,
            rows: &rows_c,
            coef: &coef_c,
            step,
            bc2_sqrt,
        };
        g.z_adam(&mut gs, &sg).unwrap();
        CpuBackend.z_adam(&mut cs, &sc).unwrap();
        let norms = cs.norms.f32();
        assert!(
            (norms[2] - 0.05).abs() < 1e-6,
            "the clamp applied: {}",
            norms[2]
        );
        assert_eq!(norms[3], 7.0, "a request that does not step keeps its norm");
        assert_eq!(&cs.delta.f32()[3 * d..], &delta[3 * d..], "and its δ");
        let tol = TOL_F32_REDUCTION;
        check(&g, &gs.delta, &cs.delta, tol, &format!("z_adam δ, d={d}"));
        check(
            &g,
            &gs.m,
            &cs.m,
            TOL_F32_ELEMENTWISE,
            &format!("z_adam m, d={d}"),
        );
        check(
            &g,
            &gs.v,
            &cs.v,
            TOL_F32_ELEMENTWISE,
            &format!("z_adam v, d={d}"),
        );
        check(
            &g,
            &gs.norms,
            &cs.norms,
            tol,
            &format!("z_adam norms, d={d}"),
        );
    }
}
