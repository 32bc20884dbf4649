//! Weights kept compact on the gpu backend (`src/gpu/packed.rs`, `shaders/include/weights.wgsl`):
//! for every storage type with a packed layout, the kernels that decode a weight themselves (the
//! GEMV, the vec4 `nt` and `nn` products, the embedding gather, the fused decoding kernels) give
//! exactly what the same kernels give on the weight widened to f32 by the cpu's dequantiser, and
//! every other op, readback, copy and the first edit of a matrix see those same values.
//!
//! Natively without a GPU: `WGPU_BACKEND=vulkan` with Mesa lavapipe. `NSE_GPU_OPTIONAL=1` turns
//! a missing adapter into a loud skip.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::gpu_vs_cpu::{check, rand, read, up, up_u32};
use common::{Rng, TOL_F32_REDUCTION, gpu};
use nse::backend::{Backend, QkvDecode, TensorInfo, Transpose};
use nse::cpu::CpuBackend;
use nse::gpu::packed::PackedFormat;
use nse::gpu::{GpuBackend, GpuTensor};
use nse::model::HostTensor;
use nse::model::gguf::GgmlType;
use nse::model::host::Stored;
use nse::ops::rope::rope_table;

/// Every storage type with a packed layout: its byte offsets of f16 fields in a block, and the
/// layout it gets.
const TYPES: [(GgmlType, &[usize], PackedFormat); 10] = [
    (GgmlType::F16, &[], PackedFormat::F16),
    (GgmlType::BF16, &[], PackedFormat::Bf16),
    (GgmlType::Q4_0, &[0], PackedFormat::Int4),
    (GgmlType::Q4_1, &[0, 2], PackedFormat::Int4),
    (GgmlType::Q8_0, &[0], PackedFormat::Int8),
    (GgmlType::Q5_0, &[0], PackedFormat::Int8),
    (GgmlType::Q5_1, &[0, 2], PackedFormat::Int8),
    (GgmlType::Q4_K, &[0, 2], PackedFormat::Int4),
    (GgmlType::Q5_K, &[0, 2], PackedFormat::Int8),
    (GgmlType::Q6_K, &[208], PackedFormat::Int8),
];

/// The matrix on the gpu twice, packed and widened to f32 by the cpu's dequantiser, and on the
/// cpu backend as the cpu keeps it (in its storage type).
fn three(
    g: &GpuBackend,
    s: &Stored,
    format: PackedFormat,
) -> (GpuTensor, GpuTensor, nse::cpu::CpuTensor) {
    let host = HostTensor::stored("w", s.clone());
    let packed = g.upload_host(host.clone()).unwrap();
    let layout = packed.packing().expect("the gpu keeps it packed");
    assert_eq!(layout.format, format, "{}", s.ty);
    assert!(
        packed.buffer_bytes() < 4 * (s.rows * s.cols) as u64,
        "{}: packed takes less than f32",
        s.ty
    );
    let dense = g.upload("w", &s.to_f32(), &[s.rows, s.cols]).unwrap();
    (packed, dense, CpuBackend.upload_host(host).unwrap())
}

fn exact(g: &GpuBackend, got: &GpuTensor, want: &GpuTensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (got, want) = (read(g, got), read(g, want));
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at {i}: packed {} vs f32 {}",
            got[i], want[i]
        );
    }
}

#[test]
fn every_packed_type_reads_copies_and_multiplies_as_its_f32_values() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(71);
    let (rows, cols) = (12, 512);
    for (ty, fields, format) in TYPES {
        let s = common::stored::random_stored(ty, fields, (rows, cols), || rng.next_u64());
        let (packed, dense, cpu) = three(&g, &s, format);
        let want = s.to_f32();
        let got = read(&g, &packed);
        assert!(got.iter().zip(&want).all(|(a, b)| a == b), "{ty}: read");
        exact(
            &g,
            &g.copy(&packed).unwrap(),
            &dense,
            &format!("{ty}: copy"),
        );
        assert!(
            g.copy(&packed).unwrap().packing().is_some(),
            "{ty}: a copy stays packed"
        );
        // x · Wᵀ: the GEMV (≤ 8 rows) and the vec4 `nt` product (more).
        for m in [1, 3, 8, 37] {
            let (x, x_c) = rand(&g, &mut rng, &[m, cols]);
            let got = g.matmul(&x, &packed, Transpose::NT).unwrap();
            exact(
                &g,
                &got,
                &g.matmul(&x, &dense, Transpose::NT).unwrap(),
                &format!("{ty}: nt m={m}"),
            );
            let want = CpuBackend.matmul(&x_c, &cpu, Transpose::NT).unwrap();
            check(
                &g,
                &got,
                &want,
                TOL_F32_REDUCTION,
                &format!("{ty}: nt m={m} vs the cpu"),
            );
            let mut acc = g.matmul(&x, &dense, Transpose::NT).unwrap();
            let mut acc_dense = g.copy(&acc).unwrap();
            g.matmul_acc(&mut acc, &x, &packed, Transpose::NT).unwrap();
            g.matmul_acc(&mut acc_dense, &x, &dense, Transpose::NT)
                .unwrap();
            exact(&g, &acc, &acc_dense, &format!("{ty}: nt accumulate m={m}"));
        }
        // dy · W: the backward pass through a linear layer (the vec4 `nn` product).
        for m in [1, 5] {
            let (dy, _) = rand(&g, &mut rng, &[m, rows]);
            exact(
                &g,
                &g.matmul(&dy, &packed, Transpose::NN).unwrap(),
                &g.matmul(&dy, &dense, Transpose::NN).unwrap(),
                &format!("{ty}: nn m={m}"),
            );
        }
        // Wᵀ · A (no kernel decodes it): made dense first.
        let (a, _) = rand(&g, &mut rng, &[rows, 4]);
        exact(
            &g,
            &g.matmul(&packed, &a, Transpose::TN).unwrap(),
            &g.matmul(&dense, &a, Transpose::TN).unwrap(),
            &format!("{ty}: tn"),
        );
        // The embedding gather, ids out of order and repeated.
        let (ids, _) = up_u32(&g, &[5, 0, 11, 5, 3], &[5]);
        exact(
            &g,
            &g.embedding(&packed, &ids).unwrap(),
            &g.embedding(&dense, &ids).unwrap(),
            &format!("{ty}: embedding"),
        );
    }
}

/// The first edit of a packed matrix widens it to the dequantiser's values, then edits it.
#[test]
fn editing_a_packed_matrix_widens_it_first() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(72);
    let (rows, cols) = (16, 256);
    for (ty, fields, format) in [TYPES[3], TYPES[9]] {
        let s = common::stored::random_stored(ty, fields, (rows, cols), || rng.next_u64());
        let (mut packed, mut dense, _) = three(&g, &s, format);
        let (cols_t, _) = up_u32(&g, &[7, 200, 3], &[3]);
        let (delta, _) = rand(&g, &mut rng, &[rows, 3]);
        g.add_columns(&mut packed, &cols_t, &delta).unwrap();
        g.add_columns(&mut dense, &cols_t, &delta).unwrap();
        assert!(packed.packing().is_none(), "{ty}: an edited matrix is f32");
        exact(&g, &packed, &dense, &format!("{ty}: add_columns"));
    }
}

/// Decoding's fused kernels with packed weights (q, k, v of different types, as a `Q4_K_M` file
/// mixes Q4_K and Q6_K) give what they give on the f32 values.
#[test]
fn fused_decoding_kernels_decode_packed_weights() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(73);
    let k = 256;
    let mut w = |ty: usize, rows: usize| {
        let (t, fields, format) = TYPES[ty];
        let s = common::stored::random_stored(t, fields, (rows, k), || rng.next_u64());
        let (p, d, _) = three(&g, &s, format);
        (p, d)
    };
    let (lm, lm_d) = w(4, 40);
    let (down, down_d) = w(9, 24);
    let (gate, gate_d) = w(7, 36);
    let (upw, up_d) = w(3, 36);
    let (hd, hq, hkv, capacity) = (16, 4, 2, 8);
    let (wq, wq_d) = w(7, hq * hd);
    let (wk, wk_d) = w(7, hkv * hd);
    let (wv, wv_d) = w(9, hkv * hd);
    let mut rng = Rng::new(74);
    let norm_values: Vec<f32> = rng.vec(k).iter().map(|x| 1.0 + 0.2 * x).collect();
    let (norm, _) = up(&g, &norm_values, &[k]);
    let table = rope_table(10000.0, hd, capacity, None);
    let (table, _) = up(&g, &table, &[capacity, hd]);
    for m in [1, 3] {
        let (h, _) = rand(&g, &mut rng, &[m, k]);
        exact(
            &g,
            &g.norm_matmul_nt(&h, &norm, 1e-5, &lm).unwrap(),
            &g.norm_matmul_nt(&h, &norm, 1e-5, &lm_d).unwrap(),
            &format!("norm_matmul_nt m={m}"),
        );
        let (r, _) = rand(&g, &mut rng, &[m, 24]);
        exact(
            &g,
            &g.matmul_nt_residual(&h, &down, &r).unwrap(),
            &g.matmul_nt_residual(&h, &down_d, &r).unwrap(),
            &format!("matmul_nt_residual m={m}"),
        );
        exact(
            &g,
            &g.norm_gate_up(&h, &norm, 1e-5, &gate, &upw).unwrap(),
            &g.norm_gate_up(&h, &norm, 1e-5, &gate_d, &up_d).unwrap(),
            &format!("norm_gate_up m={m}"),
        );
        let positions: Vec<u32> = (2..2 + m as u32).collect();
        let (positions, _) = up_u32(&g, &positions, &[m]);
        let run = |proj: [&GpuTensor; 3]| {
            let mut ck = g.zeros(&[capacity, hkv * hd]).unwrap();
            let mut cv = g.zeros(&[capacity, hkv * hd]).unwrap();
            let p = QkvDecode {
                norm: &norm,
                eps: 1e-5,
                proj,
                bias: None,
                positions: &positions,
                table: &table,
                head_dim: hd,
                pos0: 2,
            };
            let q = g.decode_qkv(&h, &p, &mut ck, &mut cv).unwrap();
            [read(&g, &q), read(&g, &ck), read(&g, &cv)]
        };
        let got = run([&wq, &wk, &wv]);
        let want = run([&wq_d, &wk_d, &wv_d]);
        for (what, (a, b)) in ["q", "cache k", "cache v"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert!(
                a.iter().zip(b).all(|(x, y)| x == y),
                "decode_qkv m={m}: {what}"
            );
        }
    }
}

/// F16 weights read as `f16` (the `+f16` variants, on a device with shader-f16: lavapipe has it)
/// and decoded by hand give the same bits: every f16 that is not a NaN, as the cpu widens it, and
/// every kernel that decodes a weight.
#[test]
fn f16_weights_read_as_f16_and_decoded_by_hand_agree_bit_for_bit() {
    let Some(g) = gpu() else { return };
    // A device with shader-f16 reads F16 as f16 unless its startup check failed (which would
    // mean it flushes f16 subnormals): on lavapipe it must pass.
    assert_eq!(g.uses_f16(), g.has_f16(), "shader-f16 present but not used");
    if !g.has_f16() {
        eprintln!("this adapter has no shader-f16: only the by-hand decoding is tested");
    }
    let f16_layout = Some(nse::gpu::Packing {
        format: PackedFormat::F16,
        group: 1,
    });
    let chosen = g.variant("gemv", &[f16_layout]);
    assert_eq!(chosen.ends_with("+f16"), g.has_f16(), "{chosen}");
    assert!(
        !g.variant("gemv", &[f16_layout, None]).ends_with("+f16"),
        "a dense weight beside an F16 one keeps the portable decoding"
    );
    // Every non-NaN f16, as the cpu widens it.
    let mut halves: Vec<u16> = (0..=u16::MAX)
        .filter(|h| h & 0x7c00 != 0x7c00 || h & 0x3ff == 0)
        .collect();
    halves.resize(halves.len().next_multiple_of(512), 0);
    let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    let all = Stored {
        ty: GgmlType::F16,
        rows: halves.len() / 512,
        cols: 512,
        bytes,
    };
    let want: Vec<u32> = halves
        .iter()
        .map(|&h| half::f16::from_bits(h).to_f32().to_bits())
        .collect();
    let packed = g.upload_host(HostTensor::stored("all f16", all)).unwrap();
    assert_eq!(packed.packing(), f16_layout);
    for on in [true, false] {
        g.set_f16(on);
        let got: Vec<u32> = read(&g, &packed).iter().map(|x| x.to_bits()).collect();
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!(
                "f16={on}: {:#06x} read as {:#010x}, the cpu widens it to {:#010x}",
                halves[i], got[i], want[i]
            );
        }
    }
    // Each kernel that decodes a weight, both ways, on random F16 matrices.
    let mut rng = Rng::new(75);
    let k = 256;
    let mut w = |rows: usize| {
        let s = common::stored::random_stored(GgmlType::F16, &[], (rows, k), || rng.next_u64());
        g.upload_host(HostTensor::stored("w", s)).unwrap()
    };
    let (lm, down, gate, upw) = (w(40), w(24), w(36), w(36));
    let (hd, hq, hkv, capacity) = (16, 4, 2, 12);
    let (wq, wk, wv) = (w(hq * hd), w(hkv * hd), w(hkv * hd));
    let mut rng = Rng::new(76);
    let norm_values: Vec<f32> = rng.vec(k).iter().map(|x| 1.0 + 0.2 * x).collect();
    let (norm, _) = up(&g, &norm_values, &[k]);
    let table = rope_table(10000.0, hd, capacity, None);
    let (table, _) = up(&g, &table, &[capacity, hd]);
    let (ids, _) = up_u32(&g, &[5, 0, 39, 5, 3], &[5]);
    let inputs: Vec<_> = [1, 3, 8, 37]
        .iter()
        .map(|&m| {
            (
                rand(&g, &mut rng, &[m, k]).0,
                rand(&g, &mut rng, &[m, 24]).0,
            )
        })
        .collect();
    let (dy, _) = rand(&g, &mut rng, &[5, 40]);
    let run = |on: bool| -> Vec<(String, Vec<f32>)> {
        g.set_f16(on);
        let mut out = vec![];
        let mut put = |what: String, t: &GpuTensor| out.push((what, read(&g, t)));
        put("embedding".into(), &g.embedding(&lm, &ids).unwrap());
        put("nn".into(), &g.matmul(&dy, &lm, Transpose::NN).unwrap());
        for (h, r) in &inputs {
            let m = h.shape()[0];
            put(
                format!("nt m={m}"),
                &g.matmul(h, &lm, Transpose::NT).unwrap(),
            );
            if m > 8 {
                continue;
            }
            let t = g.norm_matmul_nt(h, &norm, 1e-5, &lm).unwrap();
            put(format!("norm_matmul_nt m={m}"), &t);
            let t = g.matmul_nt_residual(h, &down, r).unwrap();
            put(format!("matmul_nt_residual m={m}"), &t);
            let t = g.norm_gate_up(h, &norm, 1e-5, &gate, &upw).unwrap();
            put(format!("norm_gate_up m={m}"), &t);
            let positions: Vec<u32> = (2..2 + m as u32).collect();
            let (positions, _) = up_u32(&g, &positions, &[m]);
            let mut ck = g.zeros(&[capacity, hkv * hd]).unwrap();
            let mut cv = g.zeros(&[capacity, hkv * hd]).unwrap();
            let p = QkvDecode {
                norm: &norm,
                eps: 1e-5,
                proj: [&wq, &wk, &wv],
                bias: None,
                positions: &positions,
                table: &table,
                head_dim: hd,
                pos0: 2,
            };
            let q = g.decode_qkv(h, &p, &mut ck, &mut cv).unwrap();
            put(format!("decode_qkv q m={m}"), &q);
            put(format!("decode_qkv cache k m={m}"), &ck);
            put(format!("decode_qkv cache v m={m}"), &cv);
        }
        out
    };
    let (with, without) = (run(true), run(false));
    g.set_f16(true);
    for ((what, a), (_, b)) in with.iter().zip(&without) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b), "{what}: f16 vs by hand");
    }
}
