//! `nse eval`: the sequential editing benchmark. Evaluates N cases on the unedited model, edits
//! them in batches with one or several methods (rewinding the weights between methods),
//! evaluates at checkpoints, and writes `report.json`, one SVG per metric and a summary table.
//!
//! The golden CounterFact run (`tests/golden/seq100-nse.json`), about 35 min on the CPU
//! (one z ≈ 20 s), on the first 100 records of the default dataset with the covariance
//! statistic `scripts/setup.sh` writes:
//! ```text
//! nse eval --n 100 --batch 10 --method nse --cov-dir www/models/cov --backend cpu \
//!     --ppl-tokens 0 --out artifacts/eval/seq100-nse --golden tests/golden/seq100-nse.json
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::ProgressBar;
use serde_json::{Value, json};

use super::bench::write_json;
use super::check::refuse_bad_requests;
use super::common::{Loaded, ModelArgs, load};
use super::editor::{Editor, EditorArgs, batch_progress, method_for};
use crate::backend::Backend;
use crate::edit::dataset::parse_cases;
use crate::edit::{Case, EditContext, EditState, MethodKind};
use crate::eval::collapse::{PPL_TOKENS, PerplexitySlice};
use crate::eval::golden::{Row, compare_run, summarise};
use crate::eval::table::{golden_table, summary_table};
use crate::eval::{
    DatasetKind, EvalOptions, EvalReport, EvalStep, FluencyOptions, MethodRun, RunEvent,
    SequentialPlan, curves, evaluate, run_method,
};
use crate::model::{Model, ModelSource, Tokenizer};
use crate::{Error, Result, with_model};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// CounterFact (ROME or EasyEdit schema) or zsRE records (default:
    /// counterfact_easyedit/counterfact-edit.json in the data directory).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Use the first N records (default: all of them).
    #[arg(long)]
    n: Option<usize>,
    /// Requests per batch.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Editing method: nse, memit-seq, memit (no past keys) or alphaedit (default nse).
    #[arg(long)]
    method: Option<String>,
    /// Run several methods on the same requests, e.g. `nse,memit-seq` (instead of --method).
    #[arg(long, value_delimiter = ',')]
    compare: Vec<String>,
    /// Seed of the fluency generations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate the edited cases after every K batches (and after the last).
    #[arg(long, default_value_t = 1)]
    checkpoint_every: usize,
    /// Score fluency (n-gram entropy of one 100-token top-5 generation from the rewrite prompt)
    /// on the first N cases; 0 turns it off. About 2–4 s per generation on the CPU.
    #[arg(long, default_value_t = 0)]
    fluency: usize,
    /// Tokens of the wikitext-2 perplexity slice of the collapse monitor (the start of the
    /// file's last article; ≈ 35 s per evaluation on 2 CPU cores for 4096); 0 turns it off.
    #[arg(long, default_value_t = PPL_TOKENS)]
    ppl_tokens: usize,
    /// The wikitext-2-raw test file (default: wikitext/wikitext-2-raw_wiki.test.raw in the data
    /// directory).
    #[arg(long)]
    wikitext: Option<PathBuf>,
    /// A reference run in the golden layout (e.g. tests/golden/seq100-nse.json): print
    /// our numbers beside its.
    #[arg(long)]
    golden: Option<PathBuf>,
    /// Output directory: report.json and plots/*.svg.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    editor: EditorArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// The methods to run: `--compare`, else `--method`, else NSE.
fn methods(args: &EvalArgs) -> Result<Vec<MethodKind>> {
    if args.method.is_some() && !args.compare.is_empty() {
        return Err(Error::input("give either --method or --compare, not both"));
    }
    let names: Vec<String> = if args.compare.is_empty() {
        vec![args.method.clone().unwrap_or_else(|| "nse".into())]
    } else {
        args.compare.clone()
    };
    let mut kinds = vec![];
    for n in names.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let k = MethodKind::parse(n)?;
        if kinds.contains(&k) {
            return Err(Error::input(format!(
                "method {n} is listed twice in --compare"
            )));
        }
        kinds.push(k);
    }
    if kinds.is_empty() {
        return Err(Error::input("--compare lists no method"));
    }
    Ok(kinds)
}

/// Reads the dataset (`path`), keeps the first N records and checks that they can be evaluated.
fn read_cases(args: &EvalArgs, path: &Path) -> Result<(Vec<Case>, usize, String, DatasetKind)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha256 = crate::model::load::sha256_hex(&[&bytes]);
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::input(format!("{} is not UTF-8 text", path.display())))?;
    let mut cases = parse_cases(&text, &path.display().to_string())?;
    let in_file = cases.len();
    if let Some(n) = args.n {
        if n == 0 {
            return Err(Error::input("--n must be at least 1"));
        }
        if n > in_file {
            return Err(Error::input(format!(
                "--n {n} but {} holds only {in_file} records",
                path.display()
            )));
        }
        cases.truncate(n);
    }
    let kind = DatasetKind::of(&cases)?;
    if kind == DatasetKind::CounterFact {
        for c in &cases {
            crate::eval::counterfact::case_prompts(c)?;
        }
    }
    Ok((cases, in_file, sha256, kind))
}

/// The crate version and the git commit of the checkout nse runs in (the one holding the data
/// directory; "unknown" outside a git checkout).
fn code_version() -> Value {
    let checkout = super::data::checkout();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(checkout.as_ref()?)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    json!({
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
        "git_dirty": git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    super::common::refuse_patch(&args.model, "it measures editing from the base model")?;
    let t_process = Instant::now();
    let kinds = methods(&args)?;
    let plan_check = SequentialPlan {
        batch_size: args.batch,
        checkpoint_every: args.checkpoint_every,
        eval: EvalOptions::default(),
    };
    plan_check.validate(1)?;
    let dataset_path = match &args.dataset {
        Some(p) => p.clone(),
        None => super::data::file(super::data::COUNTERFACT_EDIT)?,
    };
    let (cases, in_file, dataset_sha, kind) = read_cases(&args, &dataset_path)?;
    let golden = match &args.golden {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            Some(
                serde_json::from_str::<Value>(&text).map_err(|e| Error::Json {
                    path: p.display().to_string(),
                    msg: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let wikitext = if args.ppl_tokens > 0 {
        let p = match &args.wikitext {
            Some(p) => p.clone(),
            None => super::data::file(super::data::WIKITEXT2_TEST)?,
        };
        let text = std::fs::read_to_string(&p).map_err(|e| {
            Error::input(format!(
                "cannot read the perplexity text {}: {e}; pass --wikitext FILE or --ppl-tokens 0",
                p.display()
            ))
        })?;
        Some((p, text))
    } else {
        None
    };
    let loaded = load(&args.model)?;
    refuse_bad_requests(&args.editor, &loaded, &cases, args.batch, true, None)?;
    let Loaded {
        mut model,
        tokenizer,
        source,
        load_seconds,
    } = loaded;
    let ctx = RunInputs {
        args: &args,
        kinds: &kinds,
        cases: &cases,
        kind,
        dataset: json!({
            "path": dataset_path.display().to_string(), "sha256": dataset_sha,
            "kind": kind, "n_cases": cases.len(), "records_in_file": in_file,
        }),
        wikitext: wikitext.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
        golden: golden.as_ref(),
        load_seconds,
        t_process,
    };
    with_model!(&mut model, m => pollster::block_on(eval(m, &tokenizer, &source, &ctx)))
}

/// What `run` hands to the generic part.
struct RunInputs<'a> {
    args: &'a EvalArgs,
    kinds: &'a [MethodKind],
    cases: &'a [Case],
    kind: DatasetKind,
    dataset: Value,
    wikitext: Option<(&'a Path, &'a str)>,
    golden: Option<&'a Value>,
    load_seconds: f64,
    t_process: Instant,
}

/// Progress of an evaluation on a spinner line.
fn eval_step(line: &ProgressBar, label: &str, step: EvalStep) {
    let msg = match step {
        EvalStep::Scoring { cases } => format!("{label}: scoring {cases} cases"),
        EvalStep::Generated { done, total } => format!("{label}: fluency {done}/{total}"),
        EvalStep::Monitor => format!("{label}: collapse monitor"),
    };
    line.set_message(msg);
    line.tick();
}

async fn eval<B: Backend>(
    model: &mut Model<B>,
    tok: &Tokenizer,
    source: &ModelSource,
    run: &RunInputs<'_>,
) -> Result<()> {
    let args = run.args;
    let t_prepare = Instant::now();
    let editor = args.editor.prepare(model, tok, source).await?;
    let perplexity = match run.wikitext {
        Some((path, text)) => Some(PerplexitySlice::wikitext_tail(
            text,
            tok,
            args.ppl_tokens,
            &path.display().to_string(),
        )?),
        None => None,
    };
    let fluency = (args.fluency > 0).then(|| FluencyOptions::reference(args.fluency, args.seed));
    let plan = SequentialPlan {
        batch_size: args.batch,
        checkpoint_every: args.checkpoint_every,
        eval: EvalOptions {
            fluency,
            perplexity: perplexity.clone(),
        },
    };
    let prepare_seconds = t_prepare.elapsed().as_secs_f64();
    let mut state = EditState::new(model, &editor.hp.layers)?;

    let line = ProgressBar::new_spinner();
    let pre = evaluate(model, tok, run.cases, &state, &plan.eval, |s| {
        eval_step(&line, "pre-edit", s)
    })
    .await?;
    line.finish_and_clear();
    let parts = pre.seconds_by_part;
    eprintln!(
        "pre-edit evaluation of {} cases: {:.1} s (scoring {:.1}, fluency {:.1}, monitor {:.1})",
        pre.n_cases, pre.seconds, parts.scoring, parts.fluency, parts.monitor
    );

    let mut runs: Vec<MethodRun> = vec![];
    for &kind in run.kinds {
        let method = method_for(kind, &editor, model.config.d_ff)?;
        let ctx = EditContext {
            tok,
            hp: &editor.hp,
            templates: &editor.templates,
            cov: &editor.cov,
            method: method.as_ref(),
        };
        let name = kind.name();
        let line = ProgressBar::new_spinner();
        let mut current: Option<(usize, _)> = None;
        let result = run_method(model, &mut state, tok, run.cases, &ctx, &plan, |e| match e {
            RunEvent::Edit { batch, of, progress } => {
                if current.as_ref().is_none_or(|(b, _)| *b != batch) {
                    current = Some((batch, batch_progress(format!("{name} batch {}/{of}", batch + 1))));
                }
                if let Some((_, report)) = current.as_mut() {
                    report(progress);
                }
            }
            RunEvent::BatchDone { batch, of, seconds, residual_after_mean } => eprintln!(
                "{name} batch {}/{of}: {seconds:.1} s, mean ‖z − h‖ left {residual_after_mean:.1}",
                batch + 1
            ),
            RunEvent::Evaluating { edits, step } => {
                eval_step(&line, &format!("{name} after {edits} edits"), step)
            }
            RunEvent::CheckpointDone { edits, seconds } => {
                eprintln!("{name} checkpoint after {edits} edits: {seconds:.1} s")
            }
        })
        .await;
        line.finish_and_clear();
        let method_run = result?;
        // Back to the original weights for the next method (bit-exact).
        state.rewind_to(model, 0)?;
        runs.push(method_run);
        // Written after every method, so that a long comparison keeps what it has finished.
        let outputs = Outputs {
            run,
            source,
            backend: model.backend().describe(),
            editor: &editor,
            plan: &plan,
            perplexity: perplexity.as_ref(),
            prepare_seconds,
        };
        outputs.write(&pre, &runs)?;
    }
    Ok(())
}

/// Everything the report needs besides the results.
struct Outputs<'a> {
    run: &'a RunInputs<'a>,
    source: &'a ModelSource,
    backend: String,
    editor: &'a Editor,
    plan: &'a SequentialPlan,
    perplexity: Option<&'a PerplexitySlice>,
    prepare_seconds: f64,
}

impl Outputs<'_> {
    /// Writes `report.json` and the plots for the methods run so far (`complete` says whether
    /// that is all of them), and prints the summary table.
    fn write(&self, pre: &EvalReport, runs: &[MethodRun]) -> Result<()> {
        let (run, source, editor, plan) = (self.run, self.source, self.editor, self.plan);
        let (args, perplexity, prepare_seconds) = (run.args, self.perplexity, self.prepare_seconds);
        let curves = curves(pre, runs);
        let golden_rows: Vec<(String, Vec<Row>)> = match run.golden {
            Some(g) => golden_rows(g, pre, runs, args.batch),
            None => vec![],
        };
        std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
        let plots = crate::eval::plot::write_svgs(&args.out.join("plots"), &curves)?;
        let report = json!({
            "tool": "nse eval",
            "code": code_version(),
            "model": {"name": source.name, "format": source.format, "sha256": source.sha256, "bytes": source.bytes},
            "backend": self.backend,
                "complete": runs.len() == run.kinds.len(),
            "dataset": run.dataset,
            "seed": args.seed,
            "batch_size": args.batch,
            "checkpoint_every": args.checkpoint_every,
            "fluency": plan.eval.fluency,
            "perplexity_slice": perplexity,
            "hparams": editor.hp,
            "context_templates": editor.templates.groups,
            "covariance": editor.cov.source,
            "pre": pre,
            "methods": runs,
            "curves": curves,
            "golden": args.golden.as_ref().map(|p| json!({
                "file": p.display().to_string(),
                "compared": golden_rows.iter().map(|(m, rows)| json!({
                    "method": m,
                    "groups": summarise(rows).iter().map(|g| json!({
                        "group": g.group, "count": g.count, "max_abs": g.max_abs, "max_rel": g.max_rel, "worst_at": g.worst_at,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })),
            "timing_seconds": {
                "load_model": run.load_seconds,
                "prepare": prepare_seconds,
                "pre_eval": pre.seconds,
                "methods": runs.iter().map(|r| json!({"method": r.method, "timing": r.timing})).collect::<Vec<_>>(),
                "process_wall": run.t_process.elapsed().as_secs_f64(),
            },
        });
        let report_path = args.out.join("report.json");
        write_json(&report_path, &report)?;

        println!(
            "\n{:?}, {} cases (aggregates: mean over cases × 100; diffs in probability points)",
            run.kind, pre.n_cases
        );
        print!("{}", summary_table(pre, runs));
        for (method, rows) in &golden_rows {
            println!("\ncompared with the golden run ({method}):");
            print!("{}", golden_table(rows));
        }
        println!(
            "wrote {} and {} plots in {}",
            report_path.display(),
            plots.len(),
            args.out.join("plots").display()
        );
        Ok(())
    }
}

/// Rows compared with the golden run: the pre-edit part once, plus the run of the golden file's
/// method when it was run.
fn golden_rows(
    golden: &Value,
    pre: &EvalReport,
    runs: &[MethodRun],
    batch: usize,
) -> Vec<(String, Vec<Row>)> {
    let alg = golden["alg"].as_str().unwrap_or("");
    let golden_kind = MethodKind::parse(&alg.replace('_', "-")).ok();
    match runs.iter().find(|r| Some(r.method) == golden_kind) {
        Some(r) => vec![(
            r.method.name().to_string(),
            compare_run(pre, Some(r), batch, golden),
        )],
        None => vec![(
            "pre-edit only".to_string(),
            compare_run(pre, None, batch, golden),
        )],
    }
}
