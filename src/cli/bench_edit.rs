//! `nse bench edit`: the cost of editing, next to the reference implementation's CPU timings on
//! this kind of machine (`tests/golden/README.md`, "CPU timing anchors").

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::common::{Loaded, ModelArgs, load};
use super::common::{peak_rss_bytes, write_json};
use super::editor::EditorArgs;
use crate::backend::Backend;
use crate::edit::covariance::{second_moments, windows};
use crate::edit::dataset::load_cases;
use crate::edit::solve::{LayerSystem, solve_nse};
use crate::edit::target::{DEFAULT_Z_CHUNK, ZOptions, compute_z, compute_zs};
use crate::edit::{BatchOptions, EditContext, EditRequest, EditState, Nse, apply_batch};
use crate::gpu::GpuCounters;
use crate::model::{Model, ModelSource, Tokenizer};
use crate::session::Engine;
use crate::{Error, Result, with_model};

/// The reference's timings for the same work (seconds), from the golden README.
const REF_Z_SECONDS: f64 = 21.0; // 17.0, 24.9, 21.0 s for the three measured z (≈ 1.1 s per evaluation)
const REF_Z_EVAL_SECONDS: f64 = 1.1;
const REF_BATCH10_SECONDS: f64 = 12.0; // NSE batch of 10, z preloaded: 10.7–13.9 s, mean 12.0
const REF_COV_SECONDS_PER_10K: f64 = 504.48 / 15.0; // 150,000 tokens in 504.5 s, layers 1..=10

#[derive(Args, Debug)]
pub struct EditBenchArgs {
    /// CounterFact file the requests come from (default:
    /// counterfact_easyedit/counterfact-edit.json in the data directory).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Number of z optimisations timed one at a time, and the size of the timed batches.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Batches whose z are optimised together (packed passes), timed after the one-at-a-time z.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    z_batches: Vec<usize>,
    /// Requests per packed z pass (0: the engine's default).
    #[arg(long, default_value_t = 0)]
    z_chunk: usize,
    /// Tokens for the covariance timing (in 1024-token windows, layers 1..=10 like the reference).
    #[arg(long, default_value_t = 10_240)]
    cov_tokens: usize,
    /// Where to write the JSON (default: artifacts/bench/edit-<backend>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    editor: EditorArgs,
    #[command(flatten)]
    model: ModelArgs,
}

struct Timings {
    z_seconds: Vec<f64>,
    z_evals: Vec<usize>,
    /// Per batched size: seconds for all its z, and the evaluations they took.
    z_batched: Vec<(usize, f64, usize)>,
    end_to_end_seconds: f64,
    batch_seconds: f64,
    solve_seconds: f64,
    solve_size: usize,
    cov_seconds_per_10k: f64,
    /// gpu backend: the device's counts over the timed one-at-a-time z's Adam steps, and the
    /// number of steps.
    step_counts: Option<(GpuCounters, u64)>,
}

pub fn run(args: EditBenchArgs) -> Result<()> {
    super::common::refuse_patch(&args.model, "it measures editing from the base model")?;
    let dataset = match &args.dataset {
        Some(p) => p.clone(),
        None => super::data::file(super::data::COUNTERFACT_EDIT)?,
    };
    let wanted = args
        .z_batches
        .iter()
        .copied()
        .chain([args.batch])
        .max()
        .unwrap_or(0);
    let requests: Vec<EditRequest> = load_cases(&dataset)?
        .into_iter()
        .take(wanted)
        .map(|c| c.request)
        .collect();
    if requests.len() < wanted || args.batch == 0 || args.z_batches.contains(&0) {
        return Err(Error::input(format!(
            "need {} requests from {} (and no batch of 0)",
            wanted.max(1),
            dataset.display()
        )));
    }
    let Loaded {
        mut model,
        tokenizer,
        source,
        ..
    } = load(&args.model)?;
    let device = with_model!(&model, m => m.backend().describe());
    let t = with_model!(&mut model, m => pollster::block_on(measure(m, &tokenizer, &source, &requests, &args)))?;
    let peak_gpu = match &model {
        Engine::Gpu(w) => Some(w.model.backend().peak_buffer_bytes()),
        Engine::Cpu(_) => None,
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let z_mean = mean(&t.z_seconds);
    let per_eval = t.z_seconds.iter().sum::<f64>() / t.z_evals.iter().sum::<usize>() as f64;

    println!("nse bench edit — {} on {device}", source.name);
    if let Some(path) = super::bench::gpu_path(&model) {
        println!("gpu path: {path}");
    }
    println!(
        "{:<44} {:>10} {:>16} {:>8}",
        "work", "nse (s)", "reference (s)", "speed-up"
    );
    let row = |name: &str, ours: f64, theirs: Option<f64>| {
        println!(
            "{name:<44} {ours:>10.3} {:>16} {:>8}",
            theirs.map_or("—".into(), |x| format!("{x:.3}")),
            theirs.map_or("—".into(), |x| format!("{:.2}x", x / ours))
        );
    };
    row("z optimisation (mean)", z_mean, Some(REF_Z_SECONDS));
    row(
        "z: one forward+backward evaluation",
        per_eval,
        Some(REF_Z_EVAL_SECONDS),
    );
    for &(size, seconds, evals) in &t.z_batched {
        row(
            &format!("z, batch of {size} packed (per request, {evals} evals)"),
            seconds / size as f64,
            Some(z_mean),
        );
    }
    row(
        &format!(
            "layer solve (|S| = {}, n = {}, f64)",
            t.solve_size, args.batch
        ),
        t.solve_seconds,
        None,
    );
    row(
        &format!("NSE batch of {}, z preloaded", args.batch),
        t.batch_seconds,
        (args.batch == 10).then_some(REF_BATCH10_SECONDS),
    );
    row(
        &format!("NSE batch of {}, end to end (packed z)", args.batch),
        t.end_to_end_seconds,
        (args.batch == 10).then_some(REF_BATCH10_SECONDS + 10.0 * REF_Z_SECONDS),
    );
    row(
        "covariance per 10k tokens (layers 1..=10)",
        t.cov_seconds_per_10k,
        Some(REF_COV_SECONDS_PER_10K),
    );
    let host = peak_rss_bytes() as f64 / 1048576.0;
    println!(
        "peak host memory {host:.1} MiB{}",
        peak_gpu.map_or(String::new(), |g| format!(
            ", peak GPU buffers {:.1} MiB",
            g as f64 / 1048576.0
        ))
    );
    println!(
        "(reference: the public NSE code on PyTorch 1.13 CPU, one thread, same model and data; golden README;\n \
         the packed-z rows compare with this run's one-at-a-time z mean instead)"
    );

    let per_step = t.step_counts.map(|(c, n)| c.per(n));
    if let Some(per) = &per_step {
        println!("\ndevice work per z Adam step (gpu backend; counts, not time)");
        for (name, v) in per {
            println!("{name:<18} {v:>10}");
        }
    }

    let kind = if peak_gpu.is_some() { "gpu" } else { "cpu" };
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("artifacts/bench/edit-{kind}.json")));
    write_json(
        &out,
        &json!({
            "bench": "edit", "model": source.name, "model_sha256": source.sha256, "backend": kind, "device": device, "gpu_path": super::bench::gpu_path(&model),
            "results": {
                "z_seconds": t.z_seconds, "z_evaluations": t.z_evals, "z_seconds_mean": z_mean, "z_seconds_per_evaluation": per_eval,
                "z_packed": t.z_batched.iter().map(|&(size, seconds, evals)| json!({
                    "requests": size, "seconds": seconds, "seconds_per_request": seconds / size as f64, "evaluations": evals,
                })).collect::<Vec<_>>(),
                "z_chunk": if args.z_chunk == 0 { DEFAULT_Z_CHUNK } else { args.z_chunk },
                "end_to_end_batch_seconds": t.end_to_end_seconds,
                "layer_solve_seconds": t.solve_seconds, "layer_solve_neurons": t.solve_size,
                "batch_seconds": t.batch_seconds, "batch_size": args.batch,
                "covariance_seconds_per_10k_tokens": t.cov_seconds_per_10k,
                "peak_rss_mib": host, "peak_gpu_buffer_mib": peak_gpu.map(|g| g as f64 / 1048576.0),
            },
            "device_work_per_z_step": per_step.map(|p| p.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()),
            "reference_seconds": {
                "z": REF_Z_SECONDS, "z_evaluation": REF_Z_EVAL_SECONDS, "batch_of_10_z_preloaded": REF_BATCH10_SECONDS,
                "covariance_per_10k_tokens": REF_COV_SECONDS_PER_10K,
            },
        }),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}

async fn measure<B: Backend>(
    model: &mut Model<B>,
    tok: &Tokenizer,
    source: &ModelSource,
    requests: &[EditRequest],
    args: &EditBenchArgs,
) -> Result<Timings> {
    let editor = args.editor.prepare(model, tok, source).await?;
    let hp = &editor.hp;

    // Covariance: the reference's pass ran layers 1..=10 over 1024-token windows.
    let corpus_path = crate::cli::editor::resolve_corpus(&hp.mom2_dataset)?;
    let corpus = std::fs::read_to_string(&corpus_path).map_err(|e| Error::io(&corpus_path, e))?;
    let wins = windows(&corpus, tok, 1024, args.cov_tokens)?;
    let layers: Vec<usize> = (1..=10).filter(|&l| l < model.config.n_layers).collect();
    let t0 = Instant::now();
    let (_, n) = second_moments(model, &wins, &layers, |_, _| {}).await?;
    let cov_seconds_per_10k = t0.elapsed().as_secs_f64() * 10_000.0 / n as f64;

    // z for every request of the batch, one at a time, with the original weights.
    let mut zs = vec![];
    let (mut z_seconds, mut z_evals) = (vec![], vec![]);
    // On the gpu backend, the device's counts from the first step's report to the last: the
    // work of the Adam steps between them, set-up excluded.
    let mut step_counts: Option<(GpuCounters, u64)> = None;
    for (i, r) in requests.iter().take(args.batch).enumerate() {
        let t0 = Instant::now();
        let (mut first, mut last, mut steps) = (None, None, 0u64);
        let be = model.backend();
        let z = compute_z(model, tok, r, editor.templates()?, hp, &[], |_, _| {
            let now = be.device_counters();
            if first.is_none() {
                first = now;
            } else {
                steps += 1;
            }
            last = now;
        })
        .await?;
        if let (Some(a), Some(b)) = (first, last)
            && steps > 0
        {
            let (sum, n) = step_counts.unwrap_or_default();
            step_counts = Some((sum + (b - a), n + steps));
        }
        z_seconds.push(t0.elapsed().as_secs_f64());
        z_evals.push(z.steps.len());
        eprintln!(
            "z {}/{}: {:.1} s, {} evaluations",
            i + 1,
            args.batch,
            z_seconds[i],
            z.steps.len()
        );
        zs.push(z);
    }

    // The same, packed: the first `size` requests' z together, `z_chunk` per pass.
    let z_opts = ZOptions {
        chunk: args.z_chunk,
        ..Default::default()
    };
    let mut z_batched = vec![];
    for &size in &args.z_batches {
        let batch: Vec<&EditRequest> = requests[..size].iter().collect();
        let t0 = Instant::now();
        let packed = compute_zs(
            model,
            tok,
            &batch,
            editor.templates()?,
            hp,
            &[],
            z_opts,
            |_, _, _| {},
        )
        .await?;
        let seconds = t0.elapsed().as_secs_f64();
        let evals = packed.iter().map(|z| z.steps.len()).sum();
        eprintln!("z, {size} packed: {seconds:.1} s, {evals} evaluations");
        z_batched.push((size, seconds, evals));
    }
    let requests = &requests[..args.batch];

    // One layer solve of the size NSE meets (p = 0.8 of 1536 neurons ≈ 1030).
    let d_ff = model.config.d_ff;
    let l = hp.layers[0];
    let sel: Vec<usize> = (0..d_ff).filter(|j| j % 3 != 2).collect();
    let keys: Vec<f32> = (0..requests.len() * d_ff)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let resid = vec![0.5f64; requests.len() * model.config.d_model];
    let zero = crate::edit::PastKeys::new(d_ff);
    let sys = LayerSystem {
        c: editor.cov()?.layer(l)?,
        p: &zero,
        d_ff,
        keys: &keys,
        resid: &resid,
        d: model.config.d_model,
        n: requests.len(),
    };
    let t0 = Instant::now();
    solve_nse(&sys, &sel, hp.mom2_update_weight)?;
    let solve_seconds = t0.elapsed().as_secs_f64();

    // The NSE batch with z preloaded, as the reference's batch timing.
    let mut original = vec![];
    for &l in &hp.layers {
        original.push((l, model.backend().copy(&model.weights.layers[l].down_proj)?));
    }
    let mut state = EditState::new(model, &hp.layers)?;
    let ctx = EditContext {
        tok,
        hp,
        templates: editor.templates()?,
        cov: editor.cov()?,
        method: &Nse,
    };
    let t0 = Instant::now();
    apply_batch(
        model,
        &mut state,
        &ctx,
        requests,
        crate::edit::BatchOptions {
            precomputed_z: Some(&zs),
            ..Default::default()
        },
        |_| {},
    )
    .await?;
    let batch_seconds = t0.elapsed().as_secs_f64();
    for (l, w) in original {
        model.weights.layers[l].down_proj = w;
    }
    let mut state = EditState::new(model, &hp.layers)?;

    // The whole batch from the original weights, z included (packed), as a user runs it.
    let t0 = Instant::now();
    let opts = BatchOptions {
        z_chunk: args.z_chunk,
        ..Default::default()
    };
    apply_batch(model, &mut state, &ctx, requests, opts, |_| {}).await?;
    let end_to_end_seconds = t0.elapsed().as_secs_f64();
    Ok(Timings {
        z_seconds,
        z_evals,
        z_batched,
        end_to_end_seconds,
        batch_seconds,
        solve_seconds,
        solve_size: sel.len(),
        cov_seconds_per_10k,
        step_counts,
    })
}
