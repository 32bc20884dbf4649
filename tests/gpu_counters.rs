//! Upper bounds on what the gpu backend asks of the device per decode token, per prefill and
//! per z Adam step (dispatches, passes, copies, submits, readbacks, uploads, bind groups,
//! buffers created). Counts, not time: they are the same on lavapipe as on a real GPU, so a
//! change that adds launches or round trips fails here. The bounds are today's counts for the
//! tiny 6-block model (the baseline the GPU work of issue 16 is to lower); lower them as the
//! launch code improves.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tiny::{requests, tiny_config, tiny_hparams, tiny_weights};
use nse::backend::Backend;
use nse::edit::ContextTemplates;
use nse::edit::target::compute_z;
use nse::gpu::GpuCounters;
use nse::model::Model;

/// `got` field by field at most `bound`, naming the first count over it.
#[track_caller]
fn within(got: &GpuCounters, bound: &GpuCounters, what: &str) {
    if std::env::var("NSE_PRINT_COUNTS").is_ok() {
        eprintln!("{what}: {got:?}");
    }
    let pairs = [
        ("dispatches", got.dispatches, bound.dispatches),
        ("passes", got.passes, bound.passes),
        ("copies", got.copies, bound.copies),
        ("submits", got.submits, bound.submits),
        ("readbacks", got.readbacks, bound.readbacks),
        ("readback_bytes", got.readback_bytes, bound.readback_bytes),
        ("uploads", got.uploads, bound.uploads),
        ("upload_bytes", got.upload_bytes, bound.upload_bytes),
        ("bind_groups", got.bind_groups, bound.bind_groups),
        (
            "buffers_created",
            got.buffers_created,
            bound.buffers_created,
        ),
    ];
    for (name, g, b) in pairs {
        assert!(
            g <= b,
            "{what}: {name} {g} > the bound {b} (all counts: {got:?})"
        );
    }
}

fn gpu_tiny() -> Option<(Model<nse::gpu::GpuBackend>, nse::model::Tokenizer)> {
    // A device of its own: the counters are per device, and tests run in parallel.
    let gpu = common::fresh_gpu()?;
    let tok = common::load_default_model().tokenizer;
    let config = tiny_config(tok.vocab_size());
    Some((
        Model::upload(gpu, config.clone(), tiny_weights(&config, 7)).unwrap(),
        tok,
    ))
}

#[test]
fn decode_and_prefill_counts_stay_within_bounds() {
    let Some((model, _)) = gpu_tiny() else { return };
    let be = model.backend();
    let prompt = [504u32, 3575, 282, 4649, 314];
    let mut cache = model.new_cache(prompt.len() + 8).unwrap();
    let c0 = be.counters();
    let logits = model.forward_cached(&mut cache, &prompt).unwrap();
    let mut next = pollster::block_on(be.read_u32(&be.argmax(&logits).unwrap())).unwrap()[0];
    let c1 = be.counters();
    let mut decode = |n: usize| {
        for _ in 0..n {
            let logits = model.forward_cached(&mut cache, &[next]).unwrap();
            next = pollster::block_on(be.read_u32(&be.argmax(&logits).unwrap())).unwrap()[0];
        }
    };
    // Two tokens create the decode pipelines and bind groups; the next four are steady state.
    decode(2);
    let c_warm = be.counters();
    decode(4);
    let c2 = be.counters();
    // 6 blocks: 5 dispatches each (q, k, v with RoPE and the cache write; attention; o_proj
    // with the residual add; gate and up with SiLU; down_proj with the residual add: the
    // fused GEMVs of gemv_fused.wgsl), plus the embedding, the final norm with the head, and
    // the argmax; one 4-byte readback (the argmax, its one copy) and three small uploads (ids,
    // positions, ranges) per token. One compute pass and one submit per token (before the
    // fused kernels: 94 dispatches, 8 passes and 14 copies; the session-14 baseline: 94
    // passes, 2 submits, 94 bind groups, 101 buffers per token). In steady state nothing is
    // created: uploads and readback staging recycle, the pool hands each token the same
    // buffers, and their bind groups are cached.
    let per_token = GpuCounters {
        dispatches: 33,
        passes: 1,
        copies: 1,
        submits: 1,
        readbacks: 1,
        readback_bytes: 4,
        uploads: 3,
        upload_bytes: 16,
        bind_groups: 0,
        buffers_created: 0,
    };
    let d = c2 - c_warm;
    let n = 4;
    let per = GpuCounters {
        dispatches: d.dispatches.div_ceil(n),
        passes: d.passes.div_ceil(n),
        copies: d.copies.div_ceil(n),
        submits: d.submits.div_ceil(n),
        readbacks: d.readbacks.div_ceil(n),
        readback_bytes: d.readback_bytes.div_ceil(n),
        uploads: d.uploads.div_ceil(n),
        upload_bytes: d.upload_bytes.div_ceil(n),
        bind_groups: d.bind_groups.div_ceil(n),
        buffers_created: d.buffers_created.div_ceil(n),
    };
    within(&per, &per_token, "per decode token");
    // The 5-token prompt takes the fused kernels too (at most 8 rows), and the prompt's four
    // index uploads; on a fresh device it creates its pipelines' bind groups and the tensors
    // (before the fused kernels: 95 dispatches, 7 passes, 13 copies, 75 bind groups, 24
    // buffers; the session-14 baseline: 95 passes, 2 submits, 95 bind groups, 116 buffers).
    let prefill = GpuCounters {
        dispatches: 34,
        passes: 1,
        copies: 1,
        submits: 1,
        readbacks: 1,
        readback_bytes: 4,
        uploads: 4,
        upload_bytes: 84,
        bind_groups: 34,
        buffers_created: 16,
    };
    within(&(c1 - c0), &prefill, "per prefill");
}

#[test]
fn z_adam_step_counts_stay_within_bounds() {
    let Some((model, tok)) = gpu_tiny() else {
        return;
    };
    let be = model.backend();
    let hp = tiny_hparams();
    let templates =
        ContextTemplates::new(hp.context_templates.clone().expect("shipped templates")).unwrap();
    let (mut first, mut last, mut steps) = (None, None, 0u64);
    pollster::block_on(compute_z(
        &model,
        &tok,
        &requests()[1],
        &templates,
        &hp,
        &[],
        |_, _| {
            let now = be.counters();
            if first.is_none() {
                first = Some(now);
            } else {
                steps += 1;
            }
            last = Some(now);
        },
    ))
    .unwrap();
    assert!(steps >= 2, "the z loop took {steps} steps after the first");
    let d = last.unwrap() - first.unwrap();
    let per = |x: u64| x.div_ceil(steps);
    let got = GpuCounters {
        dispatches: per(d.dispatches),
        passes: per(d.passes),
        copies: per(d.copies),
        submits: per(d.submits),
        readbacks: per(d.readbacks),
        readback_bytes: per(d.readback_bytes),
        uploads: per(d.uploads),
        upload_bytes: per(d.upload_bytes),
        bind_groups: per(d.bind_groups),
        buffers_created: per(d.buffers_created),
    };
    // The whole step runs on the device: the loss terms and d loss / d log p (`z_loss`), the
    // δ gradient summed per request (`add_rows`), and Adam with the weight decay and the clamp
    // (`z_adam`); δ stays there. One transfer comes back: the loss terms (7 rows) and ‖δ‖ (1
    // request), 32 bytes. Uploads: the stepping requests' indices, and the recomputed rows'
    // references once per layout. Rows with more than 64 keys take a second attention pass,
    // and the LM head's backward (K = the vocabulary) a split-K sum. The backward pass rebuilds
    // each recomputed block's full keys and values from the fixed ones (a copy and an
    // `add_rows` each, 2 blocks here: +4 dispatches, +4 copies) instead of keeping them for the
    // whole step, which kept ~40 MB of the default model's z loop alive on the cpu backend (461 →
    // 401 MiB for `nse edit` of 10 requests). The step's update is submitted before its loss
    // terms are awaited, so that the device runs it while the host waits (a second submit), with
    // two more copies: δ before the update, kept in case a request turns out done, and ‖δ‖ as
    // evaluated, read with the terms while the update overwrites it. (Before Adam moved to the
    // device: 2 readbacks of 924 bytes and 2 submits; the session-14 baseline: 87 dispatches,
    // 87 passes, 87 bind groups, 95 buffers, 1,377,152 bytes read back and 1,377,180 uploaded.)
    let bound = GpuCounters {
        dispatches: 97,
        passes: 12,
        copies: 13,
        submits: 2,
        readbacks: 1,
        readback_bytes: 32,
        uploads: 2,
        upload_bytes: 32,
        bind_groups: 12,
        buffers_created: 6,
    };
    within(&got, &bound, "per z Adam step");
}
