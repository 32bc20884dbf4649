//! The gpu backend's own behaviour: dispatches beyond the per-dimension limit, tensors over the
//! binding limit, batching of many ops, buffer recycling, device loss, the adapter description.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::gpu_vs_cpu::{assert_ids, check, rand, read, read_u32};
use common::{Rng, TOL_EXACT, TOL_F32_REDUCTION, fresh_gpu, gpu};
use nse::Error;
use nse::backend::{Backend, Transpose};
use nse::cpu::CpuBackend;

#[test]
fn dispatches_beyond_the_per_dimension_limit_fold() {
    let Some(g) = gpu() else { return };
    let rows = g.limits().max_compute_workgroups_per_dimension as usize + 7;
    assert!(
        rows < 1 << 20,
        "this test assumes the usual limit of 65535, not {rows}"
    );
    let mut rng = Rng::new(13);
    let (x, xc) = rand(&g, &mut rng, &[rows, 2]);
    let got = read_u32(&g, &g.argmax(&x).unwrap());
    assert_ids(
        &got,
        CpuBackend.argmax(&xc).unwrap().u32(),
        &format!("argmax over {rows} rows"),
    );
    let want = CpuBackend.log_softmax(&xc).unwrap();
    check(
        &g,
        &g.log_softmax(&x).unwrap(),
        &want,
        TOL_F32_REDUCTION,
        &format!("log_softmax over {rows} rows"),
    );
}

#[test]
fn tensors_over_the_binding_limit_are_refused_by_name() {
    let Some(g) = gpu() else { return };
    let limit = g.max_tensor_bytes();
    let n = (limit / 4 + 1) as usize;
    // A zeroed allocation is only reserved, not touched: the size is refused before the data
    // is read.
    let data = vec![0.0f32; n];
    match g.upload("too_big", &data, &[n]) {
        Err(Error::BufferTooLarge {
            name,
            bytes,
            limit: l,
        }) => {
            assert_eq!((name.as_str(), bytes, l), ("too_big", n as u64 * 4, limit));
        }
        other => panic!("expected BufferTooLarge, got {other:?}"),
    }
    drop(data);
    // An op output over the limit, from small inputs.
    let side = ((limit / 4) as f64).sqrt() as usize + 1;
    let a = g.zeros(&[side, 1]).unwrap();
    match g.matmul(&a, &a, Transpose::NT) {
        Err(Error::BufferTooLarge { name, .. }) => assert_eq!(name, "matmul output"),
        other => panic!("expected BufferTooLarge, got {other:?}"),
    }
}

#[test]
fn readback_after_many_batched_ops() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(14);
    let (mut x, mut xc) = rand(&g, &mut rng, &[3, 33]);
    let (b, bc) = rand(&g, &mut rng, &[3, 33]);
    // Several times the batch size, so submits happen mid-chain.
    for _ in 0..300 {
        x = g.add(&x, &b).unwrap();
        xc = CpuBackend.add(&xc, &bc).unwrap();
    }
    check(&g, &x, &xc, TOL_EXACT, "300 chained adds");
}

#[test]
fn recycled_buffers_do_not_corrupt_pending_results() {
    let Some(g) = fresh_gpu() else { return };
    let mut rng = Rng::new(15);
    let (a, ac) = rand(&g, &mut rng, &[5, 7]);
    let (b, bc) = rand(&g, &mut rng, &[5, 7]);
    let (c, cc) = rand(&g, &mut rng, &[5, 7]);
    let u = g.add(&a, &b).unwrap();
    let v = g.add(&u, &b).unwrap(); // reads u, not yet submitted
    let pooled = g.pooled_buffers();
    let bytes = g.buffer_bytes();
    drop(u);
    assert_eq!(
        g.pooled_buffers(),
        pooled + 1,
        "a dropped tensor's buffer goes to the pool"
    );
    let w = g.add(&c, &c).unwrap(); // takes u's buffer and overwrites it after v read it
    assert_eq!(
        g.pooled_buffers(),
        pooled,
        "the next tensor of that size reuses it"
    );
    assert_eq!(g.buffer_bytes(), bytes, "recycling allocates nothing");
    let z = g.zeros(&[5, 7]).unwrap();
    assert_eq!(
        g.buffer_bytes(),
        bytes + 144,
        "a new 35-element tensor: 140 bytes padded to 144"
    );
    assert_eq!(
        g.peak_buffer_bytes(),
        g.buffer_bytes(),
        "nothing was freed, so now is the peak"
    );
    let ab = CpuBackend.add(&ac, &bc).unwrap();
    check(
        &g,
        &v,
        &CpuBackend.add(&ab, &bc).unwrap(),
        TOL_EXACT,
        "pending result over a recycled buffer",
    );
    check(
        &g,
        &w,
        &CpuBackend.add(&cc, &cc).unwrap(),
        TOL_EXACT,
        "result in a recycled buffer",
    );
    assert_eq!(read(&g, &z), vec![0.0; 35], "zeros in a recycled buffer");
}

#[test]
fn a_destroyed_device_reports_device_lost() {
    let Some(g) = fresh_gpu() else { return };
    let t = g.upload("x", &[1.0, 2.0], &[2]).unwrap();
    g.destroy();
    let r = pollster::block_on(g.read(&t));
    assert!(
        matches!(r, Err(Error::DeviceLost(_))),
        "read after destroy: {r:?}"
    );
    assert!(
        matches!(g.add(&t, &t), Err(Error::DeviceLost(_))),
        "op after destroy"
    );
    assert!(
        matches!(g.upload("y", &[1.0], &[1]), Err(Error::DeviceLost(_))),
        "upload after destroy"
    );
}

#[test]
fn describe_names_the_adapter() {
    let Some(g) = gpu() else { return };
    let d = g.describe();
    assert!(
        d.starts_with("gpu: ") && d.contains(&format!("{:?}", g.adapter_info().backend)),
        "{d}"
    );
    assert!(
        g.limit_table()
            .iter()
            .any(|&(n, v)| n == "max_storage_buffer_binding_size" && v > 0)
    );
}

/// An adapter allowing less workgroup memory than a kernel declares gets a named error before
/// the dispatch, and the kernels that fit still run.
#[test]
fn kernels_over_the_workgroup_memory_limit_are_refused_by_name() {
    let Some(_) = gpu() else { return };
    let small = pollster::block_on(nse::gpu::GpuBackend::with_limits(|l| {
        l.max_compute_workgroup_storage_size = 4096;
    }))
    .unwrap();
    assert_eq!(small.limits().max_compute_workgroup_storage_size, 4096);
    let a = small.upload("a", &[1.0; 8], &[1, 8]).unwrap();
    let w = small.upload("w", &[0.5; 16], &[2, 8]).unwrap();
    // One row: the GEMV, which declares 8 KiB.
    let err = small.matmul(&a, &w, Transpose::NT).unwrap_err().to_string();
    assert!(
        err.contains("`gemv`") && err.contains("8192") && err.contains("4096"),
        "{err}"
    );
    // Nine rows: the tiled kernel, which needs none.
    let a9 = small.upload("a9", &[1.0; 72], &[9, 8]).unwrap();
    let c = small.matmul(&a9, &w, Transpose::NT).unwrap();
    assert_eq!(pollster::block_on(small.read(&c)).unwrap(), vec![4.0; 18]);
}
