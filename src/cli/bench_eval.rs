//! `nse bench eval`: what scoring CounterFact cases costs, and what taking the realistic rule from
//! the teacher-forced pass saves, both ways in one run.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::common::{Loaded, ModelArgs, load, write_json};
use crate::backend::Backend;
use crate::edit::dataset::load_cases;
use crate::eval::counterfact::CfQuestions;
use crate::eval::realistic::{greedy_says, greedy_says_scored};
use crate::model::{Model, Tokenizer};
use crate::{Error, Result, with_model};

#[derive(Args, Debug)]
pub struct EvalBenchArgs {
    /// CounterFact file the cases come from (default:
    /// counterfact_easyedit/counterfact-edit.json in the data directory).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Cases scored (the EasyEdit file has three prompts per case: rewrite, paraphrase,
    /// neighbourhood).
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Where to write the JSON (default: artifacts/bench/eval-<backend>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

struct Timings {
    prompts: usize,
    scored_seconds: f64,
    greedy_seconds: f64,
    reused_seconds: f64,
    /// Prompts whose verdict is the same both ways.
    equal: usize,
}

pub fn run(args: EvalBenchArgs) -> Result<()> {
    super::common::refuse_patch(&args.model, "it measures the evaluation of the base model")?;
    let dataset = match &args.dataset {
        Some(p) => p.clone(),
        None => super::data::file(super::data::COUNTERFACT_EDIT)?,
    };
    if args.n == 0 {
        return Err(Error::input("--n 0 scores nothing; give at least 1 case"));
    }
    let cases: Vec<_> = load_cases(&dataset)?.into_iter().take(args.n).collect();
    if cases.len() < args.n {
        return Err(Error::input(format!(
            "need {} cases from {}; it holds {}",
            args.n,
            dataset.display(),
            cases.len()
        )));
    }
    let q = CfQuestions::of(&cases)?;
    let Loaded {
        model,
        tokenizer,
        source,
        ..
    } = load(&args.model)?;
    let (device, kind) =
        with_model!(&model, m => (m.backend().describe(), super::bench::kind_of(m.backend())));
    let t = with_model!(&model, m => pollster::block_on(measure(m, &tokenizer, &q)))?;

    let before = t.scored_seconds + t.greedy_seconds;
    let now = t.scored_seconds + t.reused_seconds;
    println!(
        "nse bench eval — {} on {device}: CounterFact scoring of {} cases ({} prompts)",
        source.name, args.n, t.prompts
    );
    println!("{:<58} {:>10}", "work", "seconds");
    let row = |name: &str, s: f64| println!("{name:<58} {s:>10.3}");
    row(
        "teacher-forced pass (new and true target per prompt)",
        t.scored_seconds,
    );
    row(
        "realistic rule, its own greedy pass (before)",
        t.greedy_seconds,
    );
    row(
        "realistic rule, from the teacher-forced pass (now)",
        t.reused_seconds,
    );
    row("scoring before (both passes)", before);
    row("scoring now", now);
    println!("speed-up {:.2}x", before / now);
    println!(
        "realistic verdicts equal both ways: {} of {}",
        t.equal, t.prompts
    );

    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("artifacts/bench/eval-{kind}.json")));
    write_json(
        &out,
        &json!({
            "bench": "eval", "model": source.name, "model_sha256": source.sha256, "backend": kind, "device": device,
            "dataset": dataset.display().to_string(), "cases": args.n, "prompts": t.prompts,
            "results": {
                "teacher_forced_seconds": t.scored_seconds,
                "greedy_pass_seconds": t.greedy_seconds,
                "realistic_from_teacher_forced_seconds": t.reused_seconds,
                "scoring_before_seconds": before, "scoring_now_seconds": now, "speed_up": before / now,
                "verdicts_equal": t.equal,
            },
        }),
    )?;
    println!("wrote {}", out.display());
    if t.equal != t.prompts {
        return Err(Error::input(format!(
            "the realistic verdicts differ on {} of {} prompts between the two ways",
            t.prompts - t.equal,
            t.prompts
        )));
    }
    Ok(())
}

async fn measure<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    q: &CfQuestions,
) -> Result<Timings> {
    let t0 = Instant::now();
    let scores = q.score(model, tok).await?;
    let scored_seconds = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let greedy = greedy_says(model, tok, &q.said).await?;
    let greedy_seconds = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let reused = greedy_says_scored(model, tok, &q.said, &q.said_scores(&scores)).await?;
    let reused_seconds = t0.elapsed().as_secs_f64();
    Ok(Timings {
        prompts: q.said.len(),
        scored_seconds,
        greedy_seconds,
        reused_seconds,
        equal: greedy.iter().zip(&reused).filter(|(a, b)| a == b).count(),
    })
}
