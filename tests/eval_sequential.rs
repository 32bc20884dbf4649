//! The sequential runner on the real model, made fast with a 3-evaluation z loop: two runs with
//! the same seed give identical reports (timings aside), rewinding to 0 restores the unedited
//! model exactly, and two methods run one after the other on the same cases.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use nse::Backend;
use nse::cpu::CpuBackend;
use nse::edit::{ContextTemplates, EditContext, EditMethod, EditState, MemitSeq, Nse};
use nse::eval::collapse::PerplexitySlice;
use nse::eval::{EvalOptions, FluencyOptions, SequentialPlan, curves, evaluate, run_method};
use nse::model::Model;
use serde_json::Value;

type Tensor = <CpuBackend as Backend>::Tensor;

/// The report without wall-clock times, which are the only thing allowed to differ.
fn without_timings(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.retain(|k, _| !k.contains("seconds") && k != "timing");
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn same_seed_same_report_and_rewind_restores_the_model() {
    let (mut model, tok) = common::cpu_model();
    let mut hp = common::default_hparams();
    // Three z evaluations instead of twenty: the run's arithmetic is the same, only shorter.
    hp.v_num_grad_steps = 3;
    let templates = ContextTemplates::new(hp.context_templates.clone().unwrap()).unwrap();
    let cov = common::setup_covariance(&hp, model.config.d_ff);
    let cases = common::counterfact_edit_cases(3);
    let text = common::wikitext();
    let plan = SequentialPlan {
        batch_size: 2,
        checkpoint_every: 1,
        eval: EvalOptions {
            fluency: Some(FluencyOptions {
                max_out_len: 24,
                ..FluencyOptions::reference(2, 11)
            }),
            perplexity: Some(
                PerplexitySlice::wikitext_tail(
                    &text,
                    &tok,
                    128,
                    nse::eval::collapse::PPL_WINDOW,
                    "wikitext",
                )
                .unwrap(),
            ),
        },
    };
    let mut state = EditState::new(&model, &hp.layers).unwrap();
    let pre =
        pollster::block_on(evaluate(&model, &tok, &cases, &state, &plan.eval, |_| {})).unwrap();
    assert!(pre.collapse.layers.iter().all(|l| l.dw_fro == 0.0));

    let run_once = |method: &dyn EditMethod,
                    state: &mut EditState<Tensor>,
                    model: &mut Model<CpuBackend>| {
        let ctx = EditContext {
            tok: &tok,
            hp: &hp,
            templates: &templates,
            cov: &cov,
            method,
        };
        let run = pollster::block_on(run_method(model, state, &tok, &cases, &ctx, &plan, |_| {}))
            .unwrap();
        state.rewind_to(model, 0).unwrap();
        run
    };
    let first = run_once(&Nse, &mut state, &mut model);
    let second = run_once(&Nse, &mut state, &mut model);
    assert_eq!(first.batches.len(), 2);
    assert_eq!(
        first
            .checkpoints
            .iter()
            .map(|c| c.edits)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(first.post.collapse.layers.iter().all(|l| l.dw_fro > 0.0));
    assert!(first.post.fluency.is_some() && first.post.collapse.wikitext_ppl.is_some());
    assert_eq!(
        without_timings(serde_json::to_value(&first).unwrap()),
        without_timings(serde_json::to_value(&second).unwrap()),
        "two runs with the same seed differ"
    );

    // After rewinding, the model is the unedited one: the same pre-edit report, bit for bit.
    let again =
        pollster::block_on(evaluate(&model, &tok, &cases, &state, &plan.eval, |_| {})).unwrap();
    assert_eq!(
        without_timings(serde_json::to_value(&pre).unwrap()),
        without_timings(serde_json::to_value(&again).unwrap())
    );

    // A second method on the same cases, and the curves of both start at the pre-edit value.
    let memit = run_once(&MemitSeq, &mut state, &mut model);
    assert_eq!(memit.method.name(), "memit-seq");
    let all = curves(&pre, &[first, memit]);
    let rewrite: Vec<_> = all
        .iter()
        .filter(|c| c.metric == "rewrite_success")
        .collect();
    assert_eq!(rewrite.len(), 2);
    for c in rewrite {
        assert_eq!(c.points.len(), 3, "x = 0, 2, 3 edits");
        assert_eq!(c.points[0], (0, pre.agg.get("rewrite_success").unwrap()));
        assert_eq!(c.points[2].0, 3);
    }
}
