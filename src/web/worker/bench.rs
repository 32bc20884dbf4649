//! The benchmark job: N CounterFact edits in batches from the original model through the
//! library's sequential run ([`crate::eval::sequential`], as `nse eval` runs it), with the
//! success rates of the cases edited so far after every batch posted to the page's plot. The
//! user's ledger is set aside for the run and replayed back afterwards, bit for bit.

use std::rc::Rc;

use super::apply;
use super::session::{self, Session};
use super::{Ui, Worker, loader};
use crate::edit::{Case, MethodKind, Progress};
use crate::eval::{Aggregate, EvalOptions, RunEvent, SequentialPlan};
use crate::session::Rewind;
use crate::session::protocol::{Event, Failure, Outcome, Plan, Reply};
use crate::web::js::now_ms;
use crate::{Error, Result};

/// The CounterFact cases the page ships (copied by `scripts/setup.sh`).
const CASES_URL: &str = "models/counterfact-edit.json";

pub(crate) async fn run(w: &Worker, ui: &Ui, s: &mut Session, n: usize, plan: Plan) -> Outcome {
    let (batch, kind) = (plan.batch, plan.method);
    let t0 = now_ms();
    let result = async {
        let all = cases(w, ui).await?;
        if !(1..=all.len()).contains(&n) || !(1..=64).contains(&batch) {
            return Err(Error::input(format!(
                "edits: {n} must be from 1 to {}, and the batch size {batch} from 1 to 64",
                all.len()
            )));
        }
        apply::ensure_ready(w, ui, s, kind, false, plan.cov_budget).await?;

        // Set the user's ledger aside: the run starts from the original model.
        let saved = s.ledger_patch()?;
        let saved_meta = s.setup()?.meta.clone();
        s.rewind(Rewind::All, |_, _| {}).await?;
        let result = edit_and_measure(w, ui, s, &all[..n], batch, kind).await;

        // Put the user's ledger back, bit for bit (a cancel stopped the run, not this).
        session::clear_cancel();
        s.replace_ledger(&saved, saved_meta).await?;
        result
    };
    match result.await {
        Ok(edits) => {
            let secs = (now_ms() - t0) / 1000.0;
            ui.send(Event::BenchStatus {
                text: format!("Done: {edits} edits in {secs:.1} s; your ledger is back."),
            });
            ui.progress(Some(1.0), &format!("Benchmark done in {secs:.1} s."));
            Ok(Reply::Bench { edits, secs })
        }
        Err(e) => {
            ui.send(Event::BenchStatus {
                text: format!("Stopped: {e}"),
            });
            Err(Failure {
                code: e.code().into(),
                message: format!("The benchmark failed: {e}"),
            })
        }
    }
}

/// The shipped cases, downloaded and parsed once.
async fn cases(w: &Worker, ui: &Ui) -> Result<Rc<Vec<Case>>> {
    if let Some(c) = w.bench_cases.borrow().as_ref() {
        return Ok(Rc::clone(c));
    }
    ui.progress(None, &format!("Downloading {CASES_URL}…"));
    let bytes = loader::fetch_bytes(CASES_URL, |_, _| {})
        .await
        .map_err(|e| {
            Error::input(format!(
                "{e} (run `bash scripts/setup.sh`, which copies CounterFact there)"
            ))
        })?;
    let c = Rc::new(crate::edit::dataset::parse_cases(
        &String::from_utf8_lossy(&bytes),
        CASES_URL,
    )?);
    *w.bench_cases.borrow_mut() = Some(Rc::clone(&c));
    Ok(c)
}

/// The library's sequential run with a checkpoint after every batch: the CounterFact success
/// rates of the cases edited so far.
async fn edit_and_measure(
    w: &Worker,
    ui: &Ui,
    s: &mut Session,
    cases: &[Case],
    batch: usize,
    kind: MethodKind,
) -> Result<usize> {
    let plan = SequentialPlan {
        batch_size: batch,
        checkpoint_every: 1,
        eval: EvalOptions::default(),
    };
    let mut runner = s.sequential(cases, &plan)?;
    let n_batches = cases.len().div_ceil(batch);
    let mut done = 0;
    loop {
        if w.stop_bench.get() {
            break;
        }
        let b = runner.done().batches.len();
        let label = format!(
            "Benchmark ({}), batch {} of {n_batches}",
            kind.name(),
            b + 1
        );
        ui.send(Event::BenchStatus {
            text: format!("{label}: editing…"),
        });
        let base = b as f64 / n_batches as f64;
        let more = s
            .sequential_step(&mut runner, kind, |e| {
                let what = match e {
                    RunEvent::Edit { progress, .. } => match progress {
                        Progress::Z {
                            request,
                            step,
                            loss,
                            ..
                        } => {
                            format!("z {}: step {}, loss {loss:.3}", request + 1, step + 1)
                        }
                        Progress::Round { round, .. } => format!("round {}", round + 1),
                        Progress::Layer { layer, .. } => format!("layer {layer}"),
                        Progress::PastKeys => "past keys".into(),
                    },
                    RunEvent::BatchDone { .. } => "measuring the cases edited so far…".into(),
                    RunEvent::Evaluating { edits, .. } => {
                        format!("measuring the {edits} cases edited so far…")
                    }
                    RunEvent::CheckpointDone { .. } => "measured".into(),
                };
                ui.progress(Some(base), &format!("{label}: {what}"));
            })
            .await?;
        let Some(cp) = runner.done().checkpoints.last() else {
            break;
        };
        done = cp.edits;
        let rates = match &cp.eval.agg {
            Aggregate::CounterFact(a) => [
                Some(a.rewrite_success),
                Some(a.paraphrase_success),
                Some(a.neighborhood_success),
            ],
            Aggregate::Zsre(_) => [None; 3],
        };
        ui.send(Event::BenchPoint { edits: done, rates });
        let pct = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.0}%"));
        ui.send(Event::BenchStatus {
            text: format!(
                "{done} of {} edits: rewrite {}, paraphrase {}, neighbourhood {}.",
                cases.len(),
                pct(rates[0]),
                pct(rates[1]),
                pct(rates[2])
            ),
        });
        ui.progress(
            Some((b + 1) as f64 / n_batches as f64),
            &format!("{label}: measured."),
        );
        if !more {
            break;
        }
    }
    Ok(done)
}
