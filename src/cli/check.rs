//! `nse check`: every reason the requests of a file cannot be edited, found in seconds with the
//! tokenizer alone, before any editing (`edit::check`). `nse edit` and `nse eval` run the same
//! check first ([`refuse_bad_requests`]) and refuse to start a run that would fail part-way.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::common::{BackendChoice, Loaded, ModelArgs};
use super::editor::EditorArgs;
use crate::cpu::CpuBackend;
use crate::edit::check::{CheckReport, CheckSpec};
use crate::edit::dataset::parse_records;
use crate::edit::{Case, Hparams, Probes};
use crate::model::Model;
use crate::{Error, Result, with_model};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Requests: CounterFact (ROME or EasyEdit schema), zsRE, or [{prompt, subject, target_new}].
    #[arg(long)]
    requests: PathBuf,
    /// Also check that no batch of N consecutive requests (as `nse edit --batch N` and
    /// `nse eval --batch N` make them) edits the same prompt and subject twice.
    #[arg(long)]
    batch: Option<usize>,
    /// Check only the first N requests of the file.
    #[arg(long)]
    n: Option<usize>,
    /// Hyperparameter file (default: the shipped file for the model, see hparams/).
    #[arg(long)]
    hparams: Option<PathBuf>,
    /// Context templates file (default: the hyperparameter file's templates, else sampled).
    #[arg(long)]
    templates: Option<PathBuf>,
    /// A .gguf file, or a directory with config.json, tokenizer.json and *.safetensors.
    /// Default: $NSE_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf.
    #[arg(long)]
    model: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let t0 = Instant::now();
    if args.batch == Some(0) {
        return Err(Error::input("--batch must be at least 1"));
    }
    let path = args.requests.display().to_string();
    let text = std::fs::read_to_string(&args.requests).map_err(|e| Error::io(&args.requests, e))?;
    let mut records = parse_records(&text, &path)?;
    if let Some(n) = args.n {
        if n == 0 || n > records.len() {
            return Err(Error::input(format!(
                "--n {n} but {path} holds {} records; give 1 to {0}",
                records.len()
            )));
        }
        records.truncate(n);
    }
    let model_args = ModelArgs {
        model: args.model.clone(),
        backend: BackendChoice::Cpu,
        patch: None,
        memory_budget: None,
        tokenizer: None,
        weights: Default::default(),
    };
    let host = model_args.load_host()?;
    let t_loaded = t0.elapsed().as_secs_f64();
    let editor = EditorArgs {
        hparams: args.hparams.clone(),
        templates: args.templates.clone(),
        corpus: None,
        cov_dir: None,
    };
    let model = Model::upload(CpuBackend, host.config, host.weights)?;
    let (hp, templates) = pollster::block_on(editor.hparams_and_templates(
        &model,
        &host.tokenizer,
        &host.source,
        None,
    ))?;
    let t_check = Instant::now();
    let report = CheckSpec {
        tok: &host.tokenizer,
        templates: &templates,
        target_space: hp.target_space,
        max_ctx: model.config.max_ctx,
    }
    .check_records(&records, args.batch, true);
    let check_seconds = t_check.elapsed().as_secs_f64();
    let n = report.n_records;
    let kinds = kind_counts(&records);
    eprintln!(
        "checked {n} records of {path} against {} ({} templates, context {} tokens) in {check_seconds:.2} s \
         (model read in {t_loaded:.1} s)",
        host.source.name,
        templates.len(),
        model.config.max_ctx
    );
    if !report.is_ok() {
        return report.into_result();
    }
    let batches = match args.batch {
        Some(b) => format!("no duplicate within batches of {b}"),
        None => "duplicates not checked (give --batch N)".into(),
    };
    println!(
        "OK: all {n} records can be edited ({kinds}); longest prompt {} of {} tokens; {batches}",
        report.longest_prompt, model.config.max_ctx
    );
    Ok(())
}

/// "1000 zsRE" / "10 CounterFact, 2 plain requests".
fn kind_counts(records: &[std::result::Result<Case, String>]) -> String {
    let mut counts = [0usize; 3];
    for case in records.iter().flatten() {
        counts[match case.probes {
            Probes::CounterFact { .. } => 0,
            Probes::Zsre { .. } => 1,
            Probes::None => 2,
        }] += 1;
    }
    let names = ["CounterFact", "zsRE", "plain requests"];
    let parts: Vec<String> = counts
        .iter()
        .zip(names)
        .filter(|(c, _)| **c > 0)
        .map(|(c, name)| format!("{c} {name}"))
        .collect();
    parts.join(", ")
}

/// The check `nse edit` and `nse eval` run after loading the model and before any other work:
/// `cases` (the first N of the file) in batches of `batch`, with their evaluation probes when
/// `with_probes`, under the hyperparameters of the patch a run continues (`continuing`).
///
/// # Errors
/// Every record that cannot be edited, each with its reason; or the hyperparameters/templates
/// cannot be read.
pub fn refuse_bad_requests(
    editor: &EditorArgs,
    loaded: &Loaded,
    cases: &[Case],
    batch: usize,
    with_probes: bool,
    continuing: Option<&Hparams>,
) -> Result<()> {
    let (tok, source) = (&loaded.tokenizer, &loaded.source);
    with_model!(&loaded.model, m => {
        let (hp, templates) = pollster::block_on(editor.hparams_and_templates(m, tok, source, continuing))?;
        let report = CheckSpec {
            tok,
            templates: &templates,
            target_space: hp.target_space,
            max_ctx: m.config.max_ctx,
        }
        .check_cases(cases, Some(batch), with_probes);
        refuse(report)
    })
}

fn refuse(report: CheckReport) -> Result<()> {
    report.into_result().map_err(|e| {
        Error::input(format!(
            "{e}\nNothing was edited; fix or remove these records (`nse check --requests FILE` \
             lists the same problems)"
        ))
    })
}
