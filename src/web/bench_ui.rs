//! The sequential benchmark panel: N CounterFact edits in batches from the original model, with
//! the success rates of the cases edited so far after every batch, drawn as an inline SVG plot
//! (one colour per metric, one dash pattern per run). The user's ledger is set aside for the run
//! and replayed back afterwards, bit for bit.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use web_sys::{HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlSelectElement};

use super::dom::{self, by_testid, set_attr, svg};
use super::session::Session;
use super::{App, apply_flow, ledger_ui, loader};
use crate::edit::{Case, MethodKind, Progress};
use crate::eval::{Aggregate, EvalOptions, RunEvent, SequentialPlan};
use crate::session::Rewind;
use crate::{Error, Result};

/// The CounterFact cases the page ships (copied by `scripts/setup.sh`).
const CASES_URL: &str = "models/counterfact-edit.json";
const METRICS: [(&str, &str); 3] = [
    ("rewrite", "#2f6fde"),
    ("paraphrase", "#1f7a3d"),
    ("neighborhood", "#c0392b"),
];
const DASHES: [&str; 4] = ["", "6 3", "2 3", "8 3 2 3"];
/// Line widths per metric, widest first, so that equal rates (all 100 % early on) stay visible.
const WIDTHS: [f64; 3] = [6.0, 3.5, 1.5];

/// One run: the method and, after each batch, `(edits so far, [rewrite, paraphrase, neighbourhood])`.
struct Run {
    method: MethodKind,
    points: Vec<(usize, [Option<f64>; 3])>,
}

/// Handles on the benchmark panel.
pub(crate) struct BenchView {
    n: HtmlInputElement,
    batch: HtmlInputElement,
    method: HtmlSelectElement,
    button: HtmlButtonElement,
    stop: HtmlButtonElement,
    status: HtmlElement,
    plot: HtmlElement,
    cancel: Cell<bool>,
    runs: RefCell<Vec<Run>>,
    cases: RefCell<Option<Rc<Vec<Case>>>>,
}

impl BenchView {
    pub(crate) fn find() -> Self {
        BenchView {
            n: by_testid("bench-n-input"),
            batch: by_testid("bench-batch-input"),
            method: by_testid("bench-method-select"),
            button: by_testid("bench-button"),
            stop: by_testid("bench-stop-button"),
            status: by_testid("bench-status"),
            plot: by_testid("bench-plot"),
            cancel: Cell::new(false),
            runs: RefCell::new(vec![]),
            cases: RefCell::new(None),
        }
    }

    pub(crate) fn set_enabled(&self, enabled: bool, editable: bool) {
        self.button.set_disabled(!(enabled && editable));
    }
}

pub(crate) fn wire(app: &Rc<App>) {
    let a = Rc::clone(app);
    dom::on(&app.bench.button, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { run_job(&a).await });
    });
    let a = Rc::clone(app);
    dom::on(&app.bench.stop, "click", move |_| {
        a.bench.cancel.set(true);
        a.bench.stop.set_disabled(true);
    });
}

async fn run_job(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    let view = &app.bench;
    view.cancel.set(false);
    view.stop.set_disabled(false);
    let Some(mut s) = app.take_session() else {
        app.end();
        return;
    };
    let t0 = dom::now_ms();
    match run(app, &mut s).await {
        Ok(done) => {
            let secs = (dom::now_ms() - t0) / 1000.0;
            view.status.set_inner_text(&format!(
                "Done: {done} edits in {secs:.1} s; your ledger is back."
            ));
            app.status
                .progress(Some(1.0), &format!("Benchmark done in {secs:.1} s."));
        }
        Err(e) => {
            view.status.set_inner_text(&format!("Stopped: {e}"));
            app.status.show_error(&format!("The benchmark failed: {e}"));
        }
    }
    view.stop.set_disabled(true);
    ledger_ui::render(app, &s);
    app.put_session(s);
    app.end();
}

/// The shipped cases, downloaded and parsed once.
async fn cases(app: &App) -> Result<Rc<Vec<Case>>> {
    if let Some(c) = app.bench.cases.borrow().as_ref() {
        return Ok(Rc::clone(c));
    }
    app.status
        .progress(None, &format!("Downloading {CASES_URL}…"));
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
    *app.bench.cases.borrow_mut() = Some(Rc::clone(&c));
    Ok(c)
}

async fn run(app: &App, s: &mut Session) -> Result<usize> {
    let view = &app.bench;
    let all = cases(app).await?;
    let n = dom::int_input(&view.n, "edits", 1, all.len())?;
    let batch = dom::int_input(&view.batch, "batch size", 1, 64)?;
    let kind = MethodKind::parse(&view.method.value())?;
    apply_flow::ensure_ready(app, s, kind, false).await?;

    // Set the user's ledger aside: the run starts from the original model.
    let saved = s.ledger_patch()?;
    let saved_meta = s.setup()?.meta.clone();
    s.rewind(Rewind::All, |_, _| {}).await?;
    view.runs.borrow_mut().push(Run {
        method: kind,
        points: vec![],
    });
    let result = edit_and_measure(app, s, &all[..n], batch, kind).await;

    // Put the user's ledger back, bit for bit.
    s.replace_ledger(&saved, saved_meta).await?;
    result
}

/// The library's sequential run ([`crate::eval::sequential`], as `nse eval` runs it) with a
/// checkpoint after every batch: the CounterFact success rates of the cases edited so far.
async fn edit_and_measure(
    app: &App,
    s: &mut Session,
    cases: &[Case],
    batch: usize,
    kind: MethodKind,
) -> Result<usize> {
    let view = &app.bench;
    let plan = SequentialPlan {
        batch_size: batch,
        checkpoint_every: 1,
        eval: EvalOptions::default(),
    };
    let mut runner = s.sequential(cases, &plan)?;
    let n_batches = cases.len().div_ceil(batch);
    let mut done = 0;
    loop {
        if view.cancel.get() {
            break;
        }
        let b = runner.done().batches.len();
        let label = format!(
            "Benchmark ({}), batch {} of {n_batches}",
            kind.name(),
            b + 1
        );
        view.status.set_inner_text(&format!("{label}: editing…"));
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
                app.status.progress(Some(base), &format!("{label}: {what}"));
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
        if let Some(run) = view.runs.borrow_mut().last_mut() {
            run.points.push((done, rates));
        }
        draw(view, cases.len());
        let pct = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.0}%"));
        view.status.set_inner_text(&format!(
            "{done} of {} edits: rewrite {}, paraphrase {}, neighbourhood {}.",
            cases.len(),
            pct(rates[0]),
            pct(rates[1]),
            pct(rates[2])
        ));
        app.status.progress(
            Some((b + 1) as f64 / n_batches as f64),
            &format!("{label}: measured."),
        );
        if !more {
            break;
        }
    }
    Ok(done)
}

/// Redraws the plot: success (%) of the cases edited so far against the number of edits.
fn draw(view: &BenchView, n_max: usize) {
    let (w, h, left, right, top, bottom) = (680.0, 260.0, 44.0, 200.0, 12.0, 34.0);
    let runs = view.runs.borrow();
    let x_max = runs
        .iter()
        .flat_map(|r| r.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(n_max)
        .max(1) as f64;
    let x = |n: usize| left + (w - left - right) * n as f64 / x_max;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / 100.0);
    dom::clear(&view.plot);
    let root = svg("svg");
    set_attr(&root, "viewBox", &format!("0 0 {w} {h}"));
    set_attr(&root, "role", "img");
    set_attr(
        &root,
        "aria-label",
        "Success rates of the cases edited so far against the number of edits",
    );
    let add = |parent: &web_sys::Element, tag: &str, attrs: &[(&str, String)], text: &str| {
        let el = svg(tag);
        for (k, v) in attrs {
            set_attr(&el, k, v);
        }
        if !text.is_empty() {
            el.set_text_content(Some(text));
        }
        let _ = parent.append_child(&el);
        el
    };
    for v in [0.0, 25.0, 50.0, 75.0, 100.0] {
        add(
            &root,
            "line",
            &[
                ("x1", left.to_string()),
                ("x2", (w - right).to_string()),
                ("y1", y(v).to_string()),
                ("y2", y(v).to_string()),
                ("class", "grid".into()),
            ],
            "",
        );
        add(
            &root,
            "text",
            &[
                ("x", (left - 6.0).to_string()),
                ("y", (y(v) + 4.0).to_string()),
                ("text-anchor", "end".into()),
            ],
            &format!("{v:.0}%"),
        );
    }
    for i in 0..=4 {
        let n = (x_max * i as f64 / 4.0).round() as usize;
        add(
            &root,
            "text",
            &[
                ("x", x(n).to_string()),
                ("y", (h - bottom + 16.0).to_string()),
                ("text-anchor", "middle".into()),
            ],
            &n.to_string(),
        );
    }
    add(
        &root,
        "text",
        &[
            ("x", ((left + w - right) / 2.0).to_string()),
            ("y", (h - 4.0).to_string()),
            ("text-anchor", "middle".into()),
        ],
        "edits so far",
    );
    let mut legend_y = top + 10.0;
    for (r, run) in runs.iter().enumerate() {
        let dash = DASHES[(runs.len() - 1 - r) % DASHES.len()];
        for (m, (metric, colour)) in METRICS.iter().enumerate() {
            let pts: Vec<(usize, f64)> = run
                .points
                .iter()
                .filter_map(|(n, v)| v[m].map(|v| (*n, v)))
                .collect();
            add(
                &root,
                "polyline",
                &[
                    (
                        "points",
                        pts.iter()
                            .map(|&(n, v)| format!("{:.1},{:.1}", x(n), y(v)))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    ("stroke", (*colour).into()),
                    ("stroke-dasharray", dash.into()),
                    ("class", "series".into()),
                    ("stroke-width", WIDTHS[m].to_string()),
                    ("data-metric", (*metric).into()),
                    ("data-run", r.to_string()),
                    ("data-testid", "bench-series".into()),
                ],
                "",
            );
            for &(n, v) in &pts {
                let dot = add(
                    &root,
                    "circle",
                    &[
                        ("cx", format!("{:.1}", x(n))),
                        ("cy", format!("{:.1}", y(v))),
                        ("r", "3".into()),
                        ("fill", (*colour).into()),
                    ],
                    "",
                );
                add(
                    &dot,
                    "title",
                    &[],
                    &format!(
                        "{} run {}: {metric} {v:.0}% after {n} edits",
                        run.method.name(),
                        r + 1
                    ),
                );
            }
            add(
                &root,
                "line",
                &[
                    ("x1", (w - right + 10.0).to_string()),
                    ("x2", (w - right + 34.0).to_string()),
                    ("y1", legend_y.to_string()),
                    ("y2", legend_y.to_string()),
                    ("stroke", (*colour).into()),
                    ("stroke-dasharray", dash.into()),
                    ("class", "series".into()),
                    ("stroke-width", WIDTHS[m].to_string()),
                ],
                "",
            );
            add(
                &root,
                "text",
                &[
                    ("x", (w - right + 38.0).to_string()),
                    ("y", (legend_y + 4.0).to_string()),
                ],
                &format!("{metric}, {} run {}", run.method.name(), r + 1),
            );
            legend_y += 14.0;
        }
    }
    let _ = view.plot.append_child(&root);
}
