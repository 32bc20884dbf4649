//! The sequential benchmark panel: N CounterFact edits in batches from the original model, with
//! the success rates of the cases edited so far after every batch, drawn as an inline SVG plot
//! (one colour per metric, one dash pattern per run). The user's ledger is set aside for the run
//! and replayed back afterwards, bit for bit.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use web_sys::{HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlSelectElement};

use super::App;
use super::dom::{self, by_testid, set_attr, svg};
use crate::edit::MethodKind;
use crate::session::protocol::{Plan, Request};
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
    runs: RefCell<Vec<Run>>,
    /// The number of edits of the running benchmark (the plot's x range).
    n_edits: Cell<usize>,
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
            runs: RefCell::new(vec![]),
            n_edits: Cell::new(1),
        }
    }

    pub(crate) fn set_enabled(&self, enabled: bool, editable: bool) {
        self.button.set_disabled(!(enabled && editable));
    }

    /// The benchmark's status line (an engine event).
    pub(crate) fn set_status(&self, text: &str) {
        self.status.set_inner_text(text);
    }

    /// A measurement after a batch (an engine event): added to the running run and drawn.
    pub(crate) fn add_point(&self, edits: usize, rates: [Option<f64>; 3]) {
        if let Some(run) = self.runs.borrow_mut().last_mut() {
            run.points.push((edits, rates));
        }
        draw(self, self.n_edits.get());
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
        a.send(Request::StopBench);
        a.bench.stop.set_disabled(true);
    });
}

/// Runs the benchmark in the engine; its measurements arrive as events and are drawn as they
/// come.
async fn run_job(app: &Rc<App>) {
    let view = &app.bench;
    let read = || -> crate::Result<(usize, usize, MethodKind)> {
        Ok((
            dom::int_input(&view.n, "edits", 1, 100_000)?,
            dom::int_input(&view.batch, "batch size", 1, 64)?,
            MethodKind::parse(&view.method.value())?,
        ))
    };
    let (n, batch, method) = match read() {
        Ok(x) => x,
        Err(e) => return app.status.show_error(&e.to_string()),
    };
    if !app.begin() {
        return;
    }
    view.stop.set_disabled(false);
    view.n_edits.set(n);
    view.runs.borrow_mut().push(Run {
        method,
        points: vec![],
    });
    let request = Request::Bench {
        n,
        plan: Plan {
            batch,
            method,
            cov_budget: app.edit.cov_budget.value().trim().parse().unwrap_or(0),
        },
    };
    if let Err(f) = app.call(request).await {
        app.status.show_error(&f.message);
    }
    view.stop.set_disabled(true);
    app.end();
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
