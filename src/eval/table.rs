//! Plain-text tables of a benchmark run, for terminals and logs.

use std::fmt::Write;

use super::evaluate::EvalReport;
use super::golden::{Row, summarise};
use super::sequential::MethodRun;

/// The metrics table: one row per metric, the pre-edit value, then each method after all
/// edits; then evaluation, editing and total seconds.
pub fn summary_table(pre: &EvalReport, runs: &[MethodRun]) -> String {
    let mut s = String::new();
    let row = |s: &mut String, name: &str, first: String, rest: Vec<String>| {
        let _ = write!(s, "{name:<22} {first:>10}");
        for v in rest {
            let _ = write!(s, " {v:>12}");
        }
        s.push('\n');
    };
    let names = runs.iter().map(|r| r.method.name().to_string()).collect();
    row(&mut s, "metric", "pre".into(), names);
    for (name, v) in pre.metrics() {
        let post = runs
            .iter()
            .map(|r| {
                let m = r.post.metrics().into_iter().find(|(n, _)| *n == name);
                format!("{:.2}", m.map_or(f64::NAN, |p| p.1))
            })
            .collect();
        row(&mut s, &name, format!("{v:.2}"), post);
    }
    let secs = |f: fn(&MethodRun) -> f64| runs.iter().map(|r| format!("{:.1}", f(r))).collect();
    row(
        &mut s,
        "eval seconds",
        format!("{:.1}", pre.seconds),
        secs(|r| r.post.seconds),
    );
    row(
        &mut s,
        "edit seconds (all)",
        String::new(),
        secs(|r| r.timing.edit_seconds.iter().sum()),
    );
    row(
        &mut s,
        "run seconds (total)",
        String::new(),
        secs(|r| r.timing.total_seconds),
    );
    s
}

/// A comparison with a golden run: single numbers row by row, per-item quantities summarised
/// (count, largest absolute and relative differences, where the largest is).
pub fn golden_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let singles: Vec<&Row> = rows.iter().filter(|r| r.at.is_empty()).collect();
    if !singles.is_empty() {
        let _ = writeln!(
            s,
            "{:<34} {:>12} {:>12} {:>10}",
            "aggregate", "ours", "golden", "diff"
        );
    }
    for r in singles {
        let _ = writeln!(
            s,
            "{:<34} {:>12.3} {:>12.3} {:>10.3}",
            r.group,
            r.ours,
            r.golden,
            r.ours - r.golden
        );
    }
    let items: Vec<Row> = rows.iter().filter(|r| !r.at.is_empty()).cloned().collect();
    let groups = summarise(&items);
    if !groups.is_empty() {
        let _ = writeln!(
            s,
            "{:<34} {:>6} {:>12} {:>10}  worst at",
            "quantity", "count", "max |diff|", "max rel"
        );
        for g in groups {
            let _ = writeln!(
                s,
                "{:<34} {:>6} {:>12.3e} {:>10.2e}  {}",
                g.group, g.count, g.max_abs, g.max_rel, g.worst_at
            );
        }
    }
    s
}
