//! NSE on the real model against the reference implementation's dumps (`tests/golden/`): one
//! batch of 3 requests with the reference's templates, at p = 0.8 (`micro-3.json`) and p = 1.0
//! (`micro-3-p1.json`). The covariance statistic is the one `scripts/setup.sh` computes from the
//! same corpus (`golden_covariance.rs` ties it to the reference's). On the cpu backend;
//! `gpu_edit.rs` checks the gpu backend against the cpu one.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{Tol, assert_close, golden_json};
use nse::backend::Backend;
use nse::cpu::CpuBackend;
use nse::edit::{ContextTemplates, EditContext, EditRequest, EditState, Hparams, Nse, apply_batch};
use nse::eval::score_candidates;
use nse::model::Model;
use serde_json::Value;

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn requests(g: &Value) -> Vec<EditRequest> {
    g["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| EditRequest {
            case_id: r["case_id"].as_u64(),
            prompt: r["prompt"].as_str().unwrap().into(),
            subject: r["subject"].as_str().unwrap().into(),
            target_new: r["target_new"]["str"].as_str().unwrap().into(),
            target_true: Some(r["target_true"]["str"].as_str().unwrap().into()),
        })
        .collect()
}

/// Checks the post-edit probabilities of target_new / target_true on the three probes.
fn check_probabilities(
    model: &Model<CpuBackend>,
    tok: &nse::model::Tokenizer,
    g: &Value,
    key: &str,
) {
    for (i, rec) in g["records"].as_array().unwrap().iter().enumerate() {
        let sentence = rec["prompt"]
            .as_str()
            .unwrap()
            .replace("{}", rec["subject"].as_str().unwrap());
        let new = rec["target_new"]["str"].as_str().unwrap().to_string();
        let truth = rec["target_true"]["str"].as_str().unwrap().to_string();
        let probes = [
            ("rewrite", sentence),
            (
                "paraphrase",
                rec["paraphrase_prompt"].as_str().unwrap().to_string(),
            ),
            (
                "neighborhood",
                rec["neighborhood_prompt"].as_str().unwrap().to_string(),
            ),
        ];
        for (kind, prefix) in probes {
            let s = pollster::block_on(score_candidates(
                model,
                tok,
                &[(prefix.clone(), new.clone()), (prefix, truth.clone())],
            ))
            .unwrap();
            let want = &g[key][i][kind];
            let got = [s[0].prob(), s[1].prob()];
            let want = [
                want["p_new"].as_f64().unwrap() as f32,
                want["p_true"].as_f64().unwrap() as f32,
            ];
            assert_close(
                &got,
                &want,
                Tol::abs(1e-3),
                &format!("{key} case {i} {kind} [p_new, p_true]"),
            );
        }
    }
}

#[test]
fn micro3_batch_matches_the_reference() {
    let loaded = common::load_default_model();
    let tok = loaded.tokenizer;
    let mut model = Model::upload(CpuBackend, loaded.config, loaded.weights).unwrap();
    let g = golden_json("micro-3.json");
    let hp = Hparams::parse(&g["hparams"].to_string(), "micro-3.json hparams").unwrap();
    let templates = ContextTemplates::parse(&g.to_string(), "micro-3.json").unwrap();
    let cov = common::setup_covariance(&hp, 1536);
    let reqs = requests(&g);
    check_probabilities(&model, &tok, &g, "pre_eval");

    let mut state = EditState::new(&model, &hp.layers).unwrap();
    let ctx = EditContext {
        tok: &tok,
        hp: &hp,
        templates: &templates,
        cov: &cov,
        method: &Nse,
    };
    let out = pollster::block_on(apply_batch(
        &mut model,
        &mut state,
        &ctx,
        &reqs,
        Default::default(),
        |_| {},
    ))
    .unwrap();

    // z: token ids, lookup indices, per-step losses, h_init, z.
    for (i, z) in out.z.iter().enumerate() {
        let gz = &g["z"][i];
        let ids: Vec<Vec<u32>> = gz["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(u32s)
            .collect();
        assert_eq!(z.input_ids, ids, "case {i}: z prompt ids");
        assert_eq!(
            z.lookup_idxs,
            gz["lookup_idxs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect::<Vec<_>>()
        );
        let steps = gz["steps_loss_nll_kl_wd_prob"].as_array().unwrap();
        assert_eq!(
            z.steps.len(),
            steps.len(),
            "case {i}: number of z evaluations"
        );
        // Invariant 9: at δ = 0 the loss is the NLL; it matches the reference to ~1e-5.
        assert_eq!(
            (z.steps[0].kl, z.steps[0].wd, z.steps[0].loss),
            (0.0, 0.0, z.steps[0].nll)
        );
        assert_close(
            &[z.steps[0].nll],
            &[steps[0][1].as_f64().unwrap() as f32],
            Tol::rel(1e-5),
            "NLL at δ = 0",
        );
        for (s, (ours, theirs)) in z.steps.iter().zip(steps).enumerate() {
            assert_close(
                &[ours.loss, ours.nll, ours.kl, ours.wd, ours.prob],
                &f32s(theirs)[..5],
                Tol::abs(1e-3),
                &format!("case {i} z step {s}"),
            );
        }
        assert_close(
            &z.h_init,
            &f32s(&gz["h_init"]),
            Tol::rel_of_max(1e-4),
            &format!("case {i} h_init"),
        );
        assert_close(
            &z.z,
            &f32s(&gz["z"]),
            Tol::rel_of_max(1e-3),
            &format!("case {i} z"),
        );
    }
    // Rounds: residuals, selected neuron sets (identical as sets; the order of near-equal scores
    // may differ), update norms. Invariant 14: round 1 lowers every residual.
    assert_eq!(out.rounds.len(), 3);
    for (m, round) in out.rounds.iter().enumerate() {
        let gr = &g["rounds"][m];
        assert_close(
            &round.residual_norms,
            &f32s(&gr["residual_norms"]),
            Tol::rel(1e-3),
            &format!("round {m} residuals"),
        );
        for (i, layer) in round.layers.iter().enumerate() {
            let gl = &gr["layers"][i];
            let mut ours = layer.selected.clone();
            let mut theirs = u32s(&gl["selected"]);
            ours.sort_unstable();
            theirs.sort_unstable();
            assert_eq!(
                ours, theirs,
                "round {m} layer {}: selected neurons",
                layer.layer
            );
            assert_close(
                &[layer.dw_fro as f32],
                &[gl["dW_fro"].as_f64().unwrap() as f32],
                Tol::rel(1e-3),
                &format!("round {m} layer {} ‖ΔW‖", layer.layer),
            );
        }
    }
    let (r0, r1) = (&out.rounds[0].residual_norms, &out.rounds[1].residual_norms);
    assert!(r0.iter().zip(r1).all(|(a, b)| b < a), "{r0:?} → {r1:?}");
    // W − W_orig and P after the batch.
    for &l in &hp.layers {
        let w = model.weights.layers[l].down_proj.f32();
        // The original is still in the file's storage type (Q4_1); a read decodes it.
        let w0 = pollster::block_on(model.backend().read(&state.originals[&l])).unwrap();
        let fro = w
            .iter()
            .zip(w0)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt() as f32;
        assert_close(
            &[fro],
            &[g["dW_total"][l.to_string()]["fro"].as_f64().unwrap() as f32],
            Tol::rel(1e-3),
            &format!("layer {l} total ΔW"),
        );
        let trace = state.p[&l].trace();
        assert_close(
            &[trace as f32],
            &[g["cache_c_after"][l.to_string()]["trace"].as_f64().unwrap() as f32],
            Tol::rel(1e-3),
            &format!("layer {l} trace P"),
        );
    }
    check_probabilities(&model, &tok, &g, "post_eval");

    // The same batch at p = 1.0 (micro-3-p1.json): z and round-1 keys are identical, so reuse z.
    let g1 = golden_json("micro-3-p1.json");
    let hp1 = Hparams::parse(&g1["hparams"].to_string(), "micro-3-p1.json hparams").unwrap();
    state.rewind_to(&mut model, 0).unwrap();
    let ctx1 = EditContext { hp: &hp1, ..ctx };
    let out1 = pollster::block_on(apply_batch(
        &mut model,
        &mut state,
        &ctx1,
        &reqs,
        nse::edit::BatchOptions {
            precomputed_z: Some(&out.z),
            ..Default::default()
        },
        |_| {},
    ))
    .unwrap();
    for (m, round) in out1.rounds.iter().enumerate() {
        let gr = &g1["rounds"][m];
        assert_close(
            &round.residual_norms,
            &f32s(&gr["residual_norms"]),
            Tol::rel(1e-3),
            &format!("p=1 round {m} residuals"),
        );
        for (i, layer) in round.layers.iter().enumerate() {
            let gl = &gr["layers"][i];
            assert_eq!(layer.n_selected as u64, gl["n_selected"].as_u64().unwrap());
            assert_close(
                &[layer.dw_fro as f32],
                &[gl["dW_fro"].as_f64().unwrap() as f32],
                Tol::rel(1e-3),
                &format!("p=1 round {m} layer {} ‖ΔW‖", layer.layer),
            );
        }
    }
    check_probabilities(&model, &tok, &g1, "post_eval");
}
