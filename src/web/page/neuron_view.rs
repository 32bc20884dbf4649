//! Which neurons the ledger moved: per edited layer, a bar chart (inline SVG) of
//! `‖ΔW[:, j]‖` over the `d_ff` neurons, and the most-moved neurons of all layers.

use super::dom::{self, by_testid, child, set_attr, svg};
use crate::session::protocol::ModelView;

/// Neurons listed in the top list.
const TOP: usize = 10;
/// Height of one layer's chart, in SVG units (the width is `d_ff`).
const HEIGHT: f32 = 40.0;

/// Draws the view for the model's ledger (`None`: no model, or editing unavailable); the engine
/// computed the norms.
pub(crate) fn render(model: Option<&ModelView>) {
    let view: web_sys::HtmlElement = by_testid("neuron-view");
    let top_list: web_sys::HtmlElement = by_testid("neuron-top-list");
    let summary: web_sys::HtmlElement = by_testid("neuron-summary");
    summary.set_inner_text("");
    dom::clear(&view);
    dom::clear(&top_list);
    let Some(m) = model else { return };
    let d_ff = m.d_ff;
    if m.entries.is_empty() {
        child(
            &view,
            "p",
            None,
            "No neuron has moved: the ledger is empty.",
        );
        return;
    }
    let norms = &m.neurons;
    let moved: usize = norms
        .iter()
        .map(|(_, n)| n.iter().filter(|&&x| x > 0.0).count())
        .sum();
    let layers_moved = norms
        .iter()
        .filter(|(_, n)| n.iter().any(|&x| x > 0.0))
        .count();
    summary.set_inner_text(&format!(
        "The ledger changed {moved} neuron{} in {layers_moved} layer{} (of {d_ff} neurons in each); \
         every other neuron, and every other layer, is as it was.",
        if moved == 1 { "" } else { "s" },
        if layers_moved == 1 { "" } else { "s" },
    ));
    let max = norms
        .iter()
        .flat_map(|(_, n)| n)
        .fold(0.0f32, |m, &x| m.max(x))
        .max(f32::MIN_POSITIVE);
    let mut all: Vec<(usize, usize, f32)> = vec![];
    for (l, n) in norms {
        let l = *l;
        let row = child(&view, "div", Some("neuron-layer"), "");
        set_attr(&row, "data-layer", &l.to_string());
        set_attr(&row, "class", "neuron-layer");
        let moved = n.iter().filter(|&&x| x > 0.0).count();
        let (arg, peak) = n
            .iter()
            .enumerate()
            .fold((0, 0.0f32), |b, (j, &x)| if x > b.1 { (j, x) } else { b });
        set_attr(&row, "data-moved", &moved.to_string());
        let label = if moved == 0 {
            format!("layer {l}: no neuron moved")
        } else {
            format!(
                "layer {l}: {moved} of {d_ff} neurons moved; largest ‖ΔW[:, j]‖ {peak:.4} at neuron {arg}"
            )
        };
        child(&row, "div", None, &label);
        let chart = svg("svg");
        set_attr(&chart, "viewBox", &format!("0 0 {d_ff} {HEIGHT}"));
        set_attr(&chart, "preserveAspectRatio", "none");
        set_attr(&chart, "role", "img");
        set_attr(&chart, "aria-label", &label);
        set_attr(&chart, "class", "neuron-chart");
        let mut path = String::new();
        for (j, &x) in n.iter().enumerate() {
            if x > 0.0 {
                let h = (HEIGHT * x / max).max(0.8);
                path.push_str(&format!("M{j}.5 {HEIGHT}V{:.2}", HEIGHT - h));
                all.push((l, j, x));
            }
        }
        let bars = svg("path");
        set_attr(&bars, "d", &path);
        set_attr(&bars, "class", "bars");
        let _ = chart.append_child(&bars);
        let _ = row.append_child(&chart);
    }
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    for (l, j, x) in all.into_iter().take(TOP) {
        let li = child(
            &top_list,
            "li",
            Some("neuron-top-row"),
            &format!("layer {l}, neuron {j}: ‖ΔW[:, {j}]‖ = {x:.4}"),
        );
        set_attr(&li, "data-layer", &l.to_string());
        set_attr(&li, "data-neuron", &j.to_string());
    }
}
