//! `nse bench …`: benchmarks that print a table and write JSON.
//!
//! Tests never time anything; these commands do. Each prints the reference's number for the same
//! work on the same kind of machine and the ratio, where such a number exists.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::json;

use super::common::{Loaded, ModelArgs, load, peak_rss_bytes, write_json};
use crate::backend::Backend;
use crate::gpu::GpuCounters;
use crate::model::Model;
use crate::{Error, Result, with_model};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prefill and decode speed, load time and peak memory.
    Forward(ForwardBenchArgs),
    /// Seconds per z optimisation, layer solve, batch of 10 and 10k covariance tokens.
    Edit(super::bench_edit::EditBenchArgs),
    /// CounterFact scoring: the teacher-forced pass, and the realistic rule with its own greedy
    /// pass and taken from the teacher-forced one.
    Eval(super::bench_eval::EvalBenchArgs),
}

#[derive(Args, Debug)]
pub struct ForwardBenchArgs {
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    prefill_tokens: usize,
    /// Number of decoded tokens.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Timed repetitions (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Where to write the JSON (default: artifacts/bench/forward-<backend>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// With compact weights, also run the same benchmark with every weight widened to f32 (in a second process, so that each peak is its own) and print both.
    /// Default on; `--compare-f32 false` turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    compare_f32: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Forward(args) => forward(args),
        BenchCommand::Edit(args) => super::bench_edit::run(args),
        BenchCommand::Eval(args) => super::bench_eval::run(args),
    }
}

/// The PyTorch numbers for the same work on this kind of machine, measured by
/// `scripts/torch_reference_bench.py` and committed.
const TORCH_REFERENCE: &str = include_str!("../../docs/results/torch-reference.json");

struct ForwardTimes {
    prefill_s: f64,
    decode_s: f64,
    /// Of `decode_s`: the host recording the forward pass and the argmax, and waiting for
    /// the token to come back (the device's work plus one round trip).
    decode_record_s: f64,
    decode_wait_s: f64,
    /// Decoding as `generate` does it: each token's pass is queued (reading the last token on
    /// the device) before the host reads that token back.
    decode_overlapped_s: f64,
}

async fn time_forward<B: Backend>(
    m: &Model<B>,
    prompt: &[u32],
    decode: usize,
    repeats: usize,
) -> Result<ForwardTimes> {
    let be = m.backend();
    let mut best = ForwardTimes {
        prefill_s: f64::INFINITY,
        decode_s: f64::INFINITY,
        decode_record_s: 0.0,
        decode_wait_s: 0.0,
        decode_overlapped_s: f64::INFINITY,
    };
    // One untimed round warms up pipelines, pools and caches.
    for round in 0..=repeats {
        let mut cache = m.new_cache(prompt.len() + decode)?;
        let t0 = Instant::now();
        let logits = m.forward_cached(&mut cache, prompt)?;
        let mut next = be.read_u32(&be.argmax(&logits)?).await?[0];
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut record = 0.0;
        for _ in 0..decode {
            let t = Instant::now();
            let logits = m.forward_cached(&mut cache, &[next])?;
            let id = be.argmax(&logits)?;
            record += t.elapsed().as_secs_f64();
            next = be.read_u32(&id).await?[0];
        }
        let decode_s = t1.elapsed().as_secs_f64();
        // The same tokens again, overlapped: the read of each token is started, then the next
        // pass (whose embedding reads the token on the device) is queued and submitted, and
        // only then does the host wait.
        let mut cache = m.new_cache(prompt.len() + decode)?;
        let mut token = be.argmax(&m.forward_cached(&mut cache, prompt)?)?;
        be.read_u32(&token).await?;
        let t2 = Instant::now();
        for _ in 0..decode {
            let read = be.read_u32(&token);
            let next = be.argmax(&m.forward_cached_ids(&mut cache, &token)?)?;
            be.submit();
            read.await?;
            token = next;
        }
        be.read_u32(&token).await?;
        let overlapped = t2.elapsed().as_secs_f64();
        if round > 0 {
            best.decode_overlapped_s = best.decode_overlapped_s.min(overlapped);
            best.prefill_s = best.prefill_s.min(prefill);
            if decode_s < best.decode_s {
                best.decode_s = decode_s;
                best.decode_record_s = record;
                best.decode_wait_s = decode_s - record;
            }
        }
    }
    Ok(best)
}

/// Milliseconds of one round trip to the device with no work: a 4-byte readback (the mean of
/// 20 after a warm-up).
async fn round_trip_ms<B: Backend>(be: &B) -> Result<f64> {
    let t = be.upload_u32("round trip", &[7], &[1])?;
    be.read_u32(&t).await?;
    let t0 = Instant::now();
    for _ in 0..20 {
        be.read_u32(&t).await?;
    }
    Ok(t0.elapsed().as_secs_f64() * 1000.0 / 20.0)
}

/// The device's counts for one prefill of `prompt` and per decoded token (an untimed run on the
/// gpu backend; `None` on the cpu backend).
async fn count_forward<B: Backend>(
    m: &Model<B>,
    prompt: &[u32],
    decode: usize,
) -> Result<Option<(GpuCounters, GpuCounters)>> {
    let be = m.backend();
    let Some(c0) = be.device_counters() else {
        return Ok(None);
    };
    let mut cache = m.new_cache(prompt.len() + decode)?;
    let logits = m.forward_cached(&mut cache, prompt)?;
    let mut next = be.read_u32(&be.argmax(&logits)?).await?[0];
    let c1 = be.device_counters().unwrap_or_default();
    for _ in 0..decode {
        let logits = m.forward_cached(&mut cache, &[next])?;
        next = be.read_u32(&be.argmax(&logits)?).await?[0];
    }
    let c2 = be.device_counters().unwrap_or_default();
    Ok(Some((c1 - c0, c2 - c1)))
}

/// Prints the device counts per prefill and per decode token, and returns them as JSON.
fn print_counts(counts: &(GpuCounters, GpuCounters), decode: usize) -> serde_json::Value {
    let (prefill, decoded) = counts;
    let per_token = decoded.per(decode as u64);
    println!("\ndevice work (gpu backend; counts, not time)");
    println!(
        "{:<18} {:>14} {:>18}",
        "", "per prefill", "per decode token"
    );
    for ((name, p), (_, d)) in prefill.per(1).iter().zip(&per_token) {
        println!("{name:<18} {p:>14} {d:>18}");
    }
    json!({
        "per_prefill": prefill,
        "per_decode_token": per_token.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Runs this benchmark again in a child process with `--weights f32` and returns its JSON.
fn f32_run() -> Result<serde_json::Value> {
    let out = std::env::temp_dir().join(format!("nse-bench-f32-{}.json", std::process::id()));
    // Our own arguments without --weights, --out and --compare-f32 (each with its value).
    let mut argv: Vec<String> = vec![];
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        let flag = a.split('=').next().unwrap_or("");
        if matches!(flag, "--weights" | "--out" | "--compare-f32") {
            skip = !a.contains('=');
            continue;
        }
        argv.push(a);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("the nse executable", e))?;
    let status = std::process::Command::new(&exe)
        .args(&argv)
        .args(["--weights", "f32", "--compare-f32", "false", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::io(&exe, e))?;
    if !status.success() {
        return Err(Error::input(format!(
            "the f32 comparison run ({} {}) failed: {status}",
            exe.display(),
            argv.join(" ")
        )));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| Error::io(&out, e))?;
    let _ = std::fs::remove_file(&out);
    serde_json::from_str(&text).map_err(|e| Error::format(out.display().to_string(), e.to_string()))
}

fn forward(args: ForwardBenchArgs) -> Result<()> {
    let Loaded {
        model,
        tokenizer,
        source,
        load_seconds,
    } = load(&args.model)?;
    // A fixed English prompt from wikitext-2, cut to the requested length.
    let text = include_str!("bench_prompt.txt");
    let mut prompt = tokenizer.encode(text)?;
    if prompt.len() < args.prefill_tokens {
        return Err(Error::input(format!(
            "the bench prompt has only {} tokens",
            prompt.len()
        )));
    }
    prompt.truncate(args.prefill_tokens);
    // The exact ids, so that scripts/torch_reference_bench.py times the same work.
    write_json(
        std::path::Path::new("artifacts/bench/prompt-ids.json"),
        &json!({ "prompt_ids": prompt }),
    )?;
    let (backend_name, backend_kind) =
        with_model!(&model, m => (m.backend().describe(), kind_of(m.backend())));
    let times = with_model!(&model, m => pollster::block_on(time_forward(m, &prompt, args.decode_tokens, args.repeats)))?;
    let counts = with_model!(&model, m => pollster::block_on(count_forward(m, &prompt, args.decode_tokens)))?;
    let round_trip = with_model!(&model, m => pollster::block_on(round_trip_ms(m.backend())))?;
    let prefill_tps = args.prefill_tokens as f64 / times.prefill_s;
    let decode_tps = args.decode_tokens as f64 / times.decode_s;
    let overlapped_tps = args.decode_tokens as f64 / times.decode_overlapped_s;
    let peak_host = peak_rss_bytes();
    let by_type = model.weight_bytes_by_type();
    let compare = (args.compare_f32 && args.model.weights == super::common::WeightStorage::Compact)
        .then(f32_run)
        .transpose()?;
    let peak_gpu = match &model {
        crate::session::Engine::Gpu(w) => Some(w.model.backend().peak_buffer_bytes()),
        crate::session::Engine::Cpu(_) => None,
    };
    let reference: serde_json::Value =
        serde_json::from_str(TORCH_REFERENCE).expect("committed JSON parses");
    let r = |k: &str| reference["results"][k].as_f64();

    println!("nse bench forward — {} on {backend_name}", source.name);
    if let Some(path) = gpu_path(&model) {
        println!("gpu path: {path}");
    }
    println!(
        "{:<34} {:>12} {:>14} {:>8}",
        "metric", "nse", "PyTorch (ref)", "ratio"
    );
    let row = |name: &str, ours: f64, theirs: Option<f64>, higher_is_better: bool| {
        let ratio = theirs.map(|t| if higher_is_better { ours / t } else { t / ours });
        println!(
            "{name:<34} {ours:>12.2} {:>14} {:>8}",
            theirs.map_or("—".into(), |t| format!("{t:.2}")),
            ratio.map_or("—".into(), |x| format!("{x:.2}x"))
        );
    };
    row(
        &format!("prefill tokens/s ({} tokens)", args.prefill_tokens),
        prefill_tps,
        r("prefill_tokens_per_s"),
        true,
    );
    row(
        &format!("decode tokens/s ({} tokens)", args.decode_tokens),
        decode_tps,
        r("decode_tokens_per_s"),
        true,
    );
    let per_token_ms = |s: f64| s * 1000.0 / args.decode_tokens as f64;
    println!(
        "{:<34} {:>12.2}",
        "  of which recording, ms per token",
        per_token_ms(times.decode_record_s)
    );
    println!(
        "{:<34} {:>12.2}",
        "  of which waiting, ms per token",
        per_token_ms(times.decode_wait_s)
    );
    println!(
        "{:<34} {:>12.2}",
        "decode tokens/s, next pass queued", overlapped_tps
    );
    println!("{:<34} {:>12.3}", "empty round trip, ms", round_trip);
    row("model load seconds", load_seconds, r("load_seconds"), false);
    row(
        "peak host memory MiB",
        peak_host as f64 / 1048576.0,
        r("peak_rss_mib"),
        false,
    );
    if let Some(g) = peak_gpu {
        println!(
            "{:<34} {:>12.2}",
            "peak GPU buffer MiB",
            g as f64 / 1048576.0
        );
    }
    println!(
        "(ratio > 1 means nse is better; the reference is {})",
        reference["what"].as_str().unwrap_or("?")
    );
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "\nweights in memory ({}): {}",
        match args.model.weights {
            super::common::WeightStorage::Compact => "compact",
            super::common::WeightStorage::F32 => "f32",
        },
        by_type
            .iter()
            .map(|(t, b)| format!("{t} {:.1} MiB", mib(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(f) = &compare {
        let g = |k: &str| f["results"][k].as_f64().unwrap_or(f64::NAN);
        println!("\nsame benchmark, same threads: compact weights vs all f32 (a second process)");
        println!("{:<34} {:>12} {:>12}", "", "compact", "f32");
        let gpu_row = peak_gpu.map(|p| ("peak GPU buffer MiB", mib(p), g("peak_gpu_buffer_mib")));
        for (name, ours, theirs) in [
            ("peak host memory MiB", mib(peak_host), g("peak_rss_mib")),
            ("prefill tokens/s", prefill_tps, g("prefill_tokens_per_s")),
            ("decode tokens/s", decode_tps, g("decode_tokens_per_s")),
            ("model load seconds", load_seconds, g("load_seconds")),
        ]
        .into_iter()
        .chain(gpu_row)
        {
            println!("{name:<34} {ours:>12.2} {theirs:>12.2}");
        }
    }
    let device_work = counts.as_ref().map(|c| print_counts(c, args.decode_tokens));

    let out_path = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("artifacts/bench/forward-{backend_kind}.json")));
    let report = json!({
        "bench": "forward",
        "model": source.name, "model_sha256": source.sha256,
        "backend": backend_kind, "device": backend_name, "gpu_path": gpu_path(&model),
        "prefill_tokens": args.prefill_tokens, "decode_tokens": args.decode_tokens, "repeats": args.repeats,
        "results": {
            "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps,
            "prefill_seconds": times.prefill_s, "decode_seconds": times.decode_s,
            "decode_record_ms_per_token": per_token_ms(times.decode_record_s),
            "decode_wait_ms_per_token": per_token_ms(times.decode_wait_s),
            "decode_overlapped_tokens_per_s": overlapped_tps,
            "round_trip_ms": round_trip,
            "load_seconds": load_seconds, "peak_rss_mib": peak_host as f64 / 1048576.0,
            "peak_gpu_buffer_mib": peak_gpu.map(|g| g as f64 / 1048576.0),
        },
        "device_work": device_work,
        "weights": match args.model.weights {
            super::common::WeightStorage::Compact => "compact",
            super::common::WeightStorage::F32 => "f32",
        },
        "weight_mib_by_storage": by_type.iter().map(|(t, b)| (t.clone(), json!(mib(*b)))).collect::<serde_json::Map<_, _>>(),
        "f32_comparison": compare.as_ref().map(|f| f["results"].clone()),
        "reference": reference,
    });
    write_json(&out_path, &report)?;
    println!("wrote {}", out_path.display());
    Ok(())
}

/// The gpu backend's dispatch design and matmul path (`None` on the cpu backend).
pub(super) fn gpu_path(model: &crate::session::Engine) -> Option<String> {
    match model {
        crate::session::Engine::Gpu(w) => Some(w.model.backend().path_description()),
        crate::session::Engine::Cpu(_) => None,
    }
}

pub(super) fn kind_of<B: Backend>(b: &B) -> &'static str {
    if b.describe().starts_with("cpu") {
        "cpu"
    } else {
        "gpu"
    }
}
