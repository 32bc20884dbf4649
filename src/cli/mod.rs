//! The native command line: `nse generate`, `nse info`, `nse check`, `nse edit`, `nse eval`,
//! `nse export`, `nse report`, `nse patch`, `nse bench`.
//!
//! Every command that takes a model takes `--model PATH` (a `.gguf` file, or a directory with
//! `config.json`, `tokenizer.json` and `*.safetensors`) and `--backend auto|cpu|gpu`; every
//! command takes `--data-dir DIR` (see [`data`]).

mod bench;
mod bench_edit;
mod bench_eval;
mod check;
mod common;
mod covariance;
mod data;
mod edit;
mod editor;
mod eval;
mod export;
mod generate;
mod hparams;
mod info;
mod patch;
mod report;
mod resume;

use clap::{Parser, Subcommand};

pub use common::{BackendChoice, ModelArgs};

/// Knowledge editing for language models on your own GPU.
#[derive(Parser, Debug)]
#[command(name = "nse", version, about)]
struct Cli {
    /// Directory of the run-time data (wikitext-2, CounterFact, zsRE). Default: $NSE_DATA, else
    /// the checkout's data/, found from the current directory or beside the executable.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a continuation and print the top-5 next-token probabilities.
    Generate(generate::GenerateArgs),
    /// Print the architecture, the tensors and the GPU adapter with its limits.
    Info(info::InfoArgs),
    /// Check every request of a file (schema, subject, target, context, duplicates per batch)
    /// in seconds, before any editing; lists every problem with its record number.
    Check(check::CheckArgs),
    /// Edit facts into the model (NSE, MEMIT-seq or AlphaEdit) and write a patch.
    Edit(edit::EditArgs),
    /// The sequential editing benchmark: CounterFact/zsRE metrics before, during and after
    /// N edits in batches, for one or several methods; writes JSON and SVG plots.
    Eval(eval::EvalArgs),
    /// Merge `nse eval` reports of methods run separately on the same requests into one
    /// comparison (report.json, summary.md, plots).
    Report(report::ReportArgs),
    /// Print (or write) the hyperparameters nse edits this model with: the shipped file, or
    /// defaults derived from the model's depth and width.
    Hparams(hparams::HparamsArgs),
    /// Compute (or load from the cache) the covariance statistics and write them as .npy files.
    Covariance(covariance::CovarianceArgs),
    /// Inspect a patch's history, undo or remove entries, or verify it against the base model.
    #[command(subcommand)]
    Patch(patch::PatchCommand),
    /// Write the (patched) model as Hugging Face safetensors + config.json + tokenizer.json.
    Export(export::ExportArgs),
    /// Benchmarks that print a table and write JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Entry point of the `nse` binary: parses arguments, runs, and exits non-zero with the error's
/// message on failure.
pub fn main() {
    quiet_headless_vulkan();
    let cli = Cli::parse();
    if let Err(e) = data::init(cli.data_dir) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Info(args) => info::run(args),
        Command::Check(args) => check::run(args),
        Command::Edit(args) => edit::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Export(args) => export::run(args),
        Command::Patch(cmd) => patch::run(cmd),
        Command::Report(args) => report::run(args),
        Command::Covariance(args) => covariance::run(args),
        Command::Hparams(args) => hparams::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// On a headless machine the Vulkan loader's Wayland support prints "error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment." (twice) whenever the GPU is probed: noise that reads
/// as a failure. When the variable is unset or not a directory, point it at a private directory
/// of ours, which silences it; the backend chosen is said in one line instead (`common::load`).
fn quiet_headless_vulkan() {
    let set = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .is_some_and(|p| p.is_dir());
    if set {
        return;
    }
    #[cfg(unix)]
    let owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
    };
    #[cfg(not(unix))]
    let owner = 0;
    let dir = std::env::temp_dir().join(format!("nse-runtime-{owner}"));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    // SAFETY: the first thing `main` does, before any other thread exists.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
}
