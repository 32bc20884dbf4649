//! Side-by-side comparison of a run with a reference run in the layout of
//! `tests/golden/seq100-*.json`: aggregates, per-case NLLs and per-batch internals.
//!
//! The comparison only pairs what is comparable: per-case entries and batches with the same
//! case ids, the post-edit aggregate only when the runs edited the same cases in the same
//! batches.

use serde_json::Value;

use super::evaluate::{Aggregate, CaseScores, EvalReport};
use super::sequential::{BatchRecord, MethodRun};

/// One compared number.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The quantity, e.g. `"pre rewrite_success"` or `"round 1 residual ‖z − h‖"`.
    pub group: String,
    /// Where inside the group, e.g. `"batch 2, request 7"` (empty for a single number).
    pub at: String,
    pub ours: f64,
    pub golden: f64,
}

impl Row {
    fn new(group: impl Into<String>, at: impl Into<String>, ours: f64, golden: f64) -> Self {
        Row {
            group: group.into(),
            at: at.into(),
            ours,
            golden,
        }
    }

    /// `|ours − golden|`.
    pub fn abs_diff(&self) -> f64 {
        (self.ours - self.golden).abs()
    }

    /// `|ours − golden| / |golden|` (the absolute difference when golden is 0).
    pub fn rel_diff(&self) -> f64 {
        if self.golden == 0.0 {
            self.abs_diff()
        } else {
            self.abs_diff() / self.golden.abs()
        }
    }
}

/// Per group: rows compared, the largest absolute and relative differences, and where the
/// largest absolute one is.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSummary {
    pub group: String,
    pub count: usize,
    pub max_abs: f64,
    pub max_rel: f64,
    pub worst_at: String,
}

/// Summarises rows group by group, in first-appearance order.
pub fn summarise(rows: &[Row]) -> Vec<GroupSummary> {
    let mut out: Vec<GroupSummary> = vec![];
    for r in rows {
        let i = match out.iter().position(|g| g.group == r.group) {
            Some(i) => i,
            None => {
                out.push(GroupSummary {
                    group: r.group.clone(),
                    count: 0,
                    max_abs: 0.0,
                    max_rel: 0.0,
                    worst_at: String::new(),
                });
                out.len() - 1
            }
        };
        let g = &mut out[i];
        g.count += 1;
        if r.abs_diff() > g.max_abs || g.count == 1 {
            g.max_abs = r.abs_diff();
            g.worst_at = r.at.clone();
        }
        g.max_rel = g.max_rel.max(r.rel_diff());
    }
    out
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// The aggregate against a golden `agg` object (fields present in both).
pub fn compare_agg(label: &str, ours: &Aggregate, golden_agg: &Value) -> Vec<Row> {
    ours.values()
        .into_iter()
        .filter_map(|(k, v)| {
            num(&golden_agg[k]).map(|g| Row::new(format!("{label} {k}"), "", v, g))
        })
        .collect()
}

/// Per-case NLLs (`nll.{kind}.{candidate}`, first prompt of each kind) against a golden
/// `per_case` list, pairing cases by `case_id`.
pub fn compare_per_case_nll(label: &str, ours: &CaseScores, golden_per_case: &Value) -> Vec<Row> {
    let CaseScores::CounterFact(cases) = ours else {
        return vec![];
    };
    let Some(golden) = golden_per_case.as_array() else {
        return vec![];
    };
    let mut rows = vec![];
    for c in cases {
        let Some(g) = golden
            .iter()
            .find(|g| g["case_id"].as_u64().is_some() && g["case_id"].as_u64() == c.case_id)
        else {
            continue;
        };
        for (kind, pairs) in [
            ("rewrite", &c.nll.rewrite),
            ("paraphrase", &c.nll.paraphrase),
            ("neighborhood", &c.nll.neighborhood),
        ] {
            let Some(p) = pairs.first() else { continue };
            for (cand, v) in [("target_new", p.target_new), ("target_true", p.target_true)] {
                if let Some(want) = num(&g["nll"][kind][cand]) {
                    rows.push(Row::new(
                        format!("{label} NLL"),
                        format!("case {} {kind} {cand}", c.case_id.unwrap_or_default()),
                        f64::from(v),
                        want,
                    ));
                }
            }
        }
    }
    rows
}

/// Per-batch internals against golden `batches`, for batches with the same case ids.
pub fn compare_batches(ours: &[BatchRecord], golden_batches: &Value) -> Vec<Row> {
    let mut rows = vec![];
    let Some(golden) = golden_batches.as_array() else {
        return rows;
    };
    for (b, (o, g)) in ours.iter().zip(golden).enumerate() {
        let ids: Vec<Option<u64>> = g["case_ids"]
            .as_array()
            .map(|a| a.iter().map(Value::as_u64).collect())
            .unwrap_or_default();
        if ids != o.case_ids {
            continue;
        }
        let at = |what: String| format!("batch {}{what}", b + 1);
        let vec_rows = |rows: &mut Vec<Row>, group: &str, ours: &[f64], golden: &Value| {
            for (i, (x, y)) in ours
                .iter()
                .zip(golden.as_array().into_iter().flatten())
                .enumerate()
            {
                if let Some(y) = num(y) {
                    rows.push(Row::new(group, at(format!(", #{i}")), *x, y));
                }
            }
        };
        if let Some(grounds) = g["rounds"].as_array() {
            for (m, (or, gr)) in o.rounds.iter().zip(grounds).enumerate() {
                let r: Vec<f64> = or.residual_norms.iter().map(|&x| f64::from(x)).collect();
                vec_rows(
                    &mut rows,
                    &format!("round {} ‖z − h‖", m + 1),
                    &r,
                    &gr["residual_norms"],
                );
                let g_edited = gr["edited"].as_array().map_or(0, Vec::len);
                rows.push(Row::new(
                    format!("round {} edited", m + 1),
                    at(String::new()),
                    or.edited.len() as f64,
                    g_edited as f64,
                ));
                for (ol, gl) in or
                    .layers
                    .iter()
                    .zip(gr["layers"].as_array().into_iter().flatten())
                {
                    let l = ol.layer;
                    let at_l = at(format!(", layer {l}"));
                    for (name, ours, key) in [
                        ("n_selected", ol.n_selected as f64, "n_selected"),
                        ("upd_fro", ol.upd_fro, "upd_fro"),
                        ("resid_mean_norm", ol.resid_mean_norm, "resid_mean_norm"),
                    ] {
                        if let Some(want) = num(&gl[key]) {
                            rows.push(Row::new(
                                format!("round {} {name}", m + 1),
                                at_l.clone(),
                                ours,
                                want,
                            ));
                        }
                    }
                }
            }
        }
        let after: Vec<f64> = o.residual_after.iter().map(|&x| f64::from(x)).collect();
        vec_rows(&mut rows, "residual_after", &after, &g["residual_after"]);
        vec_rows(
            &mut rows,
            "cache_c_trace",
            &o.cache_c_trace,
            &g["cache_c_trace"],
        );
        for (layer, v) in &o.dw_fro_cum {
            if let Some(want) = num(&g["dW_fro_cum"][layer]) {
                rows.push(Row::new(
                    "dW_fro_cum",
                    at(format!(", layer {layer}")),
                    *v,
                    want,
                ));
            }
        }
    }
    rows
}

/// Everything comparable between our pre-edit evaluation plus one method's run and a golden
/// file: per-case NLLs by case id; the pre and post aggregates only when the golden run has
/// the same `n_cases` (and, for post, the same `batch_size`); batches pairwise by case ids.
pub fn compare_run(
    pre: &EvalReport,
    run: Option<&MethodRun>,
    batch_size: usize,
    golden: &Value,
) -> Vec<Row> {
    let mut rows = vec![];
    if golden["n_cases"].as_u64() == Some(pre.n_cases as u64) {
        rows.extend(compare_agg("pre", &pre.agg, &golden["pre"]["agg"]));
    }
    rows.extend(compare_per_case_nll(
        "pre",
        &pre.per_case,
        &golden["pre"]["per_case"],
    ));
    if let Some(run) = run {
        let same_plan = golden["n_cases"].as_u64() == Some(run.post.n_cases as u64)
            && golden["batch_size"].as_u64() == Some(batch_size as u64);
        if same_plan {
            rows.extend(compare_agg("post", &run.post.agg, &golden["post"]["agg"]));
            rows.extend(compare_per_case_nll(
                "post",
                &run.post.per_case,
                &golden["post"]["per_case"],
            ));
        }
        rows.extend(compare_batches(&run.batches, &golden["batches"]));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_the_worst_row() {
        let rows = [
            Row::new("a", "x", 1.0, 1.5),
            Row::new("a", "y", 2.0, 4.0),
            Row::new("b", "", 0.0, 0.0),
        ];
        let s = summarise(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].count, s[0].max_abs, s[0].worst_at.as_str()),
            (2, 2.0, "y")
        );
        assert_eq!(s[0].max_rel, 0.5);
        assert_eq!(s[1].max_abs, 0.0);
    }
}
