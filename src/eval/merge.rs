//! One comparison from several `nse eval` reports: methods run separately (one process each,
//! or on different machines) on the same requests, merged into the curves, table and plots that
//! `nse eval --compare` would have written.
//!
//! The reports must agree on what makes their numbers comparable: the model, the dataset file,
//! the number of cases, the batch size and the seed. A method may appear in only one of them.

use serde_json::{Value, json};

use super::sequential::Curve;
use crate::{Error, Result};

/// The fields that must be equal in every merged report, as JSON pointers.
const MUST_AGREE: [(&str, &str); 5] = [
    ("/model/sha256", "model"),
    ("/dataset/sha256", "dataset file"),
    ("/dataset/n_cases", "number of cases"),
    ("/batch_size", "batch size"),
    ("/seed", "seed"),
];

/// Merged reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// Every metric of every method, metric by metric in the first report's order.
    pub curves: Vec<Curve>,
    /// The merged report (the first report's header, every report's methods and curves).
    pub report: Value,
    /// The same without the per-case, per-batch and per-checkpoint details: the header, the
    /// curves (every aggregate at every checkpoint) and the timings. Small enough to commit.
    pub summary: Value,
}

/// Merges `reports` (each with the name it is reported under, e.g. its path).
///
/// # Errors
/// No reports; a report without curves; reports that disagree on a field of [`MUST_AGREE`];
/// a method that appears in two reports.
pub fn merge(reports: &[(String, Value)]) -> Result<Merged> {
    let Some((first_name, first)) = reports.first() else {
        return Err(Error::Input(
            "no reports to merge: pass at least one report.json".into(),
        ));
    };
    for (name, r) in &reports[1..] {
        for (pointer, what) in MUST_AGREE {
            let (a, b) = (first.pointer(pointer), r.pointer(pointer));
            if a != b {
                return Err(Error::Input(format!(
                    "{name} and {first_name} differ in the {what} ({pointer}: {} vs {}); only \
                     runs of the same requests on the same model can be compared",
                    b.map_or("missing".into(), Value::to_string),
                    a.map_or("missing".into(), Value::to_string),
                )));
            }
        }
    }
    let mut curves: Vec<Curve> = vec![];
    let mut methods: Vec<Value> = vec![];
    let mut timing: Vec<Value> = vec![];
    let mut seen: Vec<(String, String)> = vec![];
    for (name, r) in reports {
        let these: Vec<Curve> = serde_json::from_value(r["curves"].clone()).map_err(|e| {
            Error::Input(format!(
                "{name} has no readable `curves` ({e}): is it an nse eval report?"
            ))
        })?;
        for c in &these {
            if let Some((_, other)) = seen.iter().find(|(m, _)| *m == c.method)
                && other != name
            {
                return Err(Error::Input(format!(
                    "the method {} is in both {other} and {name}; merge each method once",
                    c.method
                )));
            }
        }
        for c in &these {
            if !seen.iter().any(|(m, _)| *m == c.method) {
                seen.push((c.method.clone(), name.clone()));
            }
        }
        curves.extend(these);
        methods.extend(r["methods"].as_array().cloned().unwrap_or_default());
        timing.push(json!({"from": name, "timing_seconds": r["timing_seconds"]}));
    }
    // Metric by metric (the order of the first report), then method by method.
    let mut order: Vec<String> = vec![];
    for c in &curves {
        if !order.contains(&c.metric) {
            order.push(c.metric.clone());
        }
    }
    curves.sort_by_key(|c| order.iter().position(|m| *m == c.metric));
    let mut report = first.clone();
    if let Some(obj) = report.as_object_mut() {
        obj.insert("tool".into(), json!("nse report (merged nse eval reports)"));
        obj.insert(
            "merged_from".into(),
            json!(reports.iter().map(|(n, _)| n).collect::<Vec<_>>()),
        );
        obj.insert("methods".into(), Value::Array(methods));
        obj.insert(
            "curves".into(),
            serde_json::to_value(&curves).unwrap_or(Value::Null),
        );
        obj.insert("timing_seconds".into(), Value::Array(timing));
        obj.insert(
            "complete".into(),
            json!(reports.iter().all(|(_, r)| r["complete"] != json!(false))),
        );
        obj.remove("golden");
    }
    let summary = match report.as_object() {
        Some(obj) => Value::Object(
            obj.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "methods" | "pre"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => report.clone(),
    };
    Ok(Merged {
        curves,
        report,
        summary,
    })
}

/// A Markdown table: one row per metric; its value before editing, then each method's value at
/// every checkpoint (`edits` columns), so that the table reads like the plot.
pub fn markdown_table(curves: &[Curve]) -> String {
    let mut methods: Vec<&str> = vec![];
    let mut edits: Vec<usize> = vec![];
    for c in curves {
        if !methods.contains(&c.method.as_str()) {
            methods.push(&c.method);
        }
        for &(x, _) in &c.points[1.min(c.points.len())..] {
            if !edits.contains(&x) {
                edits.push(x);
            }
        }
    }
    edits.sort_unstable();
    let mut s = String::from("| metric | method | before |");
    for e in &edits {
        s.push_str(&format!(" {e} edits |"));
    }
    s.push_str("\n| --- | --- | ---: |");
    s.push_str(&" ---: |".repeat(edits.len()));
    s.push('\n');
    for c in curves {
        let at = |x: usize| c.points.iter().find(|p| p.0 == x).map(|p| p.1);
        s.push_str(&format!("| {} | {} | {} |", c.metric, c.method, fmt(at(0))));
        for &e in &edits {
            s.push_str(&format!(" {} |", fmt(at(e))));
        }
        s.push('\n');
    }
    s
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(method: &str, batch: usize, rewrite: f64) -> Value {
        json!({
            "model": {"sha256": "ab"}, "dataset": {"sha256": "cd", "n_cases": 20},
            "batch_size": batch, "seed": 0, "complete": true,
            "methods": [{"method": method}],
            "timing_seconds": {"process_wall": 1.0},
            "curves": [
                {"metric": "rewrite_success", "method": method, "points": [[0, 30.0], [10, rewrite], [20, rewrite - 1.0]]},
                {"metric": "perplexity", "method": method, "points": [[0, 20.5], [20, 21.25]]},
            ],
        })
    }

    #[test]
    fn merges_methods_metric_by_metric() {
        let m = merge(&[
            ("a".into(), report("nse", 10, 100.0)),
            ("b".into(), report("memit-seq", 10, 90.0)),
        ])
        .unwrap();
        let order: Vec<(&str, &str)> = m
            .curves
            .iter()
            .map(|c| (c.metric.as_str(), c.method.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("rewrite_success", "nse"),
                ("rewrite_success", "memit-seq"),
                ("perplexity", "nse"),
                ("perplexity", "memit-seq"),
            ]
        );
        assert_eq!(m.report["methods"].as_array().unwrap().len(), 2);
        assert_eq!(m.report["merged_from"], json!(["a", "b"]));
        assert!(m.summary.get("methods").is_none() && m.summary["curves"] == m.report["curves"]);
        let table = markdown_table(&m.curves);
        assert!(
            table.starts_with("| metric | method | before | 10 edits | 20 edits |"),
            "{table}"
        );
        assert!(
            table.contains("| rewrite_success | memit-seq | 30.00 | 90.00 | 89.00 |"),
            "{table}"
        );
        assert!(
            table.contains("| perplexity | nse | 20.50 | – | 21.25 |"),
            "{table}"
        );
    }

    #[test]
    fn refuses_reports_that_are_not_comparable() {
        let err = merge(&[
            ("a".into(), report("nse", 10, 100.0)),
            ("b".into(), report("memit-seq", 5, 90.0)),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("batch size") && err.contains("b and a"),
            "{err}"
        );
        let err = merge(&[
            ("a".into(), report("nse", 10, 100.0)),
            ("b".into(), report("nse", 10, 90.0)),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("nse is in both a and b"), "{err}");
        assert!(merge(&[]).unwrap_err().to_string().contains("no reports"));
        let err = merge(&[("x".into(), json!({"curves": 3}))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("x has no readable `curves`"), "{err}");
    }
}
