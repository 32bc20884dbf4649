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

use super::check::refuse_bad_requests;
use super::common::write_json;
use super::common::{Loaded, ModelArgs, load};
use super::editor::{EditorArgs, batch_progress};
use crate::backend::{Backend, TensorInfo};
use crate::edit::dataset::parse_cases;
use crate::edit::patch::Patch;
use crate::edit::{Case, EditContext, EditState, MethodKind};
use crate::eval::collapse::{PPL_TOKENS, PerplexitySlice};
use crate::eval::golden::{Row, compare_run, summarise};
use crate::eval::table::{golden_table, summary_table};
use crate::eval::{
    DatasetKind, EvalOptions, EvalReport, EvalStep, FluencyOptions, MethodRun, MethodRunner,
    RunEvent, SequentialPlan, curves, evaluate,
};
use crate::model::{Model, ModelSource, Tokenizer};
use crate::session::EditSetup;
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
    /// Output directory: report.json and plots/*.svg (and, while the run is under way,
    /// resume.json and a patch, from which --resume continues it).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run that stopped in this output directory, from its last finished batch,
    /// with the options it was started with (give --resume DIR alone). Its results equal an
    /// uninterrupted run's; a run whose model, data, options or nse version differ is refused.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
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

/// `nse eval` with the saved options when resuming.
#[derive(clap::Parser, Debug)]
#[command(name = "nse eval")]
struct SavedArgs {
    #[command(flatten)]
    args: EvalArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let (args, saved) = match &args.resume {
        None => (args, None),
        Some(dir) => {
            if !super::resume::only_resume(&super::resume::own_argv()) {
                return Err(Error::input(
                    "--resume DIR takes every option from the run it continues; give it alone",
                ));
            }
            let saved = super::resume::read(dir)?;
            let mut argv = vec!["nse eval".to_string()];
            argv.extend(saved.argv.iter().cloned());
            let parsed = <SavedArgs as clap::Parser>::try_parse_from(&argv).map_err(|e| {
                Error::input(format!(
                    "the saved command line of {} does not parse with this nse ({}); start \
                     the run again",
                    dir.display(),
                    e.to_string().lines().next().unwrap_or("")
                ))
            })?;
            let mut args = parsed.args;
            args.out = Some(dir.clone());
            args.resume = Some(dir.clone());
            (args, Some(saved))
        }
    };
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
    let out = args
        .out
        .clone()
        .ok_or_else(|| Error::input("give --out DIR (or --resume DIR)"))?;
    let ctx = RunInputs {
        args: &args,
        out: &out,
        saved,
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
    out: &'a Path,
    /// The run being continued (`--resume`).
    saved: Option<super::resume::Saved>,
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
    let mut editor = args.editor.prepare(model, tok, source).await?;
    for &kind in run.kinds {
        editor.prepare_method(kind, model.config.d_ff)?;
    }
    let editor = editor;
    let perplexity = match run.wikitext {
        Some((path, text)) => Some(PerplexitySlice::wikitext_tail(
            text,
            tok,
            args.ppl_tokens,
            crate::eval::collapse::PPL_WINDOW.min(model.config.max_ctx),
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
    let fingerprint = fingerprint(run, source, &editor, model.backend().describe());
    let outputs = Outputs {
        run,
        source,
        backend: model.backend().describe(),
        editor: &editor,
        plan: &plan,
        perplexity: perplexity.as_ref(),
        prepare_seconds,
    };

    let mut saved = match run.saved.clone() {
        Some(saved) => {
            let diff = super::resume::differences(&saved.fingerprint, &fingerprint);
            if !diff.is_empty() {
                return Err(Error::input(format!(
                    "cannot resume the run in {}: it was started with a different {}; start a \
                     new run with --out, or resume with what it used",
                    run.out.display(),
                    diff.join("; ")
                )));
            }
            eprintln!(
                "resuming {}: {} method(s) finished{}",
                run.out.display(),
                saved.finished.len(),
                saved.current.as_ref().map_or(String::new(), |c| format!(
                    ", {} at batch {}",
                    c.method.name(),
                    c.done.batches.len()
                ))
            );
            saved
        }
        None => {
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
            let mut saved = super::resume::Saved::new(super::resume::own_argv(), fingerprint, pre);
            super::resume::write(run.out, &mut saved, None)?;
            saved
        }
    };

    for &kind in run.kinds.iter().skip(saved.finished.len()) {
        let method = editor.method(kind)?;
        let ctx = EditContext {
            tok,
            hp: &editor.hp,
            templates: editor.templates()?,
            cov: editor.cov()?,
            method,
        };
        let name = kind.name();
        // The method under way when the run stopped: its edits replayed, bit for bit.
        let done = match saved.current.take() {
            Some(c) if c.method == kind => {
                let patch = super::resume::read_patch(run.out, &c)?;
                patch.apply(model, &mut state, &source.sha256).await?;
                let done = c.done.clone();
                saved.current = Some(c);
                done
            }
            Some(c) => {
                return Err(Error::input(format!(
                    "the saved run was in method {} where this one runs {name}",
                    c.method.name()
                )));
            }
            None => Default::default(),
        };
        let mut runner = MethodRunner::new(run.cases, &plan, done, &state)?;
        let line = ProgressBar::new_spinner();
        let mut current: Option<(usize, _)> = None;
        let mut on_event = |e| match e {
            RunEvent::Edit {
                batch,
                of,
                progress,
            } => {
                if current.as_ref().is_none_or(|(b, _)| *b != batch) {
                    current = Some((
                        batch,
                        batch_progress(format!("{name} batch {}/{of}", batch + 1)),
                    ));
                }
                if let Some((_, report)) = current.as_mut() {
                    report(progress);
                }
            }
            RunEvent::BatchDone {
                batch,
                of,
                seconds,
                residual_after_mean,
            } => eprintln!(
                "{name} batch {}/{of}: {seconds:.1} s, mean ‖z − h‖ left {residual_after_mean:.1}",
                batch + 1
            ),
            RunEvent::Evaluating { edits, step } => {
                eval_step(&line, &format!("{name} after {edits} edits"), step)
            }
            RunEvent::CheckpointDone { edits, seconds } => {
                eprintln!("{name} checkpoint after {edits} edits: {seconds:.1} s")
            }
        };
        loop {
            poison_for_tests(model, &editor.hp, runner.done().batches.len() + 1).await?;
            let more = runner
                .step(model, &mut state, tok, &ctx, None, &mut on_event)
                .await?;
            // Saved after every batch: a stopped run loses at most the batch under way.
            let patch =
                Patch::of_state(&source.name, &source.sha256, &editor.hp, &state, model).await?;
            saved.current = Some(super::resume::Current {
                method: kind,
                done: runner.done().clone(),
                patch: saved.current.take().map(|c| c.patch).unwrap_or_default(),
            });
            super::resume::write(run.out, &mut saved, Some(&patch))?;
            stop_for_tests();
            if !more {
                break;
            }
        }
        line.finish_and_clear();
        let method_run = runner.finish(kind)?;
        // Back to the original weights for the next method (bit-exact).
        state.rewind_to(model, 0)?;
        if let Some(c) = saved.current.take() {
            let _ = std::fs::remove_file(run.out.join(c.patch));
        }
        saved.finished.push(method_run);
        super::resume::write(run.out, &mut saved, None)?;
        // Written after every method, so that a long comparison keeps what it has finished.
        outputs.write(&saved.pre, &saved.finished)?;
    }
    super::resume::finished(run.out, &saved);
    Ok(())
}

/// For the resume tests: `NSE_EVAL_STOP_AFTER_BATCHES=K` ends the process (exit code 3) right
/// after its K-th saved batch, as a stopped run would.
fn stop_for_tests() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SAVED: AtomicUsize = AtomicUsize::new(0);
    let saved = SAVED.fetch_add(1, Ordering::Relaxed) + 1;
    let stop = std::env::var("NSE_EVAL_STOP_AFTER_BATCHES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if stop == Some(saved) {
        eprintln!("stopping after {saved} saved batches (NSE_EVAL_STOP_AFTER_BATCHES)");
        std::process::exit(3);
    }
}

/// For the resume tests: `NSE_EVAL_POISON_BATCH=K` puts a NaN into the first edited layer's
/// `down_proj` (in memory only) before batch K, as a numerical failure mid-run would.
async fn poison_for_tests<B: Backend>(
    model: &mut Model<B>,
    hp: &crate::edit::Hparams,
    next_batch: usize,
) -> Result<()> {
    let poison = std::env::var("NSE_EVAL_POISON_BATCH")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if poison != Some(next_batch) {
        return Ok(());
    }
    let l = hp.layers[0];
    let (be, weights) = model.parts_mut();
    let w = &mut weights.layers[l].down_proj;
    let mut host = be.read(w).await?;
    host[0] = f32::NAN;
    *w = be.upload_owned("poisoned down_proj", host, w.shape())?;
    eprintln!("poisoned layer {l} before batch {next_batch} (NSE_EVAL_POISON_BATCH)");
    Ok(())
}

/// Everything the numbers of a run depend on, for `--resume` to check.
fn fingerprint(
    run: &RunInputs<'_>,
    source: &ModelSource,
    editor: &EditSetup,
    backend: String,
) -> Value {
    let args = run.args;
    let code = code_version();
    json!({
        "model sha256": source.sha256,
        "dataset sha256": run.dataset["sha256"],
        "cases": run.cases.len(),
        "batch size": args.batch,
        "checkpoint every": args.checkpoint_every,
        "methods": run.kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "seed": args.seed,
        "fluency cases": args.fluency,
        "perplexity tokens": args.ppl_tokens,
        "hparams": editor.hp,
        "context templates": editor.templates.as_ref().map(|t| &t.groups),
        "covariance": editor.cov.as_ref().map(|c| &c.source),
        "backend": backend.split_whitespace().next().unwrap_or(""),
        "nse version": code["crate_version"],
        "git commit": code["git_commit"],
    })
}

/// Everything the report needs besides the results.
struct Outputs<'a> {
    run: &'a RunInputs<'a>,
    source: &'a ModelSource,
    backend: String,
    editor: &'a EditSetup,
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
        std::fs::create_dir_all(run.out).map_err(|e| Error::io(run.out, e))?;
        let plots = crate::eval::plot::write_svgs(&run.out.join("plots"), &curves)?;
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
            "context_templates": editor.templates()?.groups,
            "covariance": editor.cov()?.source,
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
        let report_path = run.out.join("report.json");
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
            run.out.join("plots").display()
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
