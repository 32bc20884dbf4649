//! The editing path on the gpu backend (lavapipe here) against the cpu backend, on the real
//! model: a short z optimisation, and one layer update from keys to `W[:, S] += Δ_S`.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{Tol, assert_close};
use nse::backend::Backend;
use nse::cpu::CpuBackend;
use nse::edit::target::{ZResult, compute_z};
use nse::edit::{ContextTemplates, EditContext, EditRequest, EditState, Hparams, Nse, apply_batch};
use nse::model::{Model, Tokenizer};

fn request() -> EditRequest {
    EditRequest::from_sentence(
        "The mother tongue of Danielle Darrieux is",
        "Danielle Darrieux",
        "English",
        Some("French"),
    )
    .unwrap()
}

/// The z of `r` on `model`'s backend.
fn z_on<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    r: &EditRequest,
    templates: &ContextTemplates,
    hp: &Hparams,
) -> ZResult {
    pollster::block_on(compute_z(model, tok, r, templates, hp, &[], |_, _| {})).unwrap()
}

#[test]
fn gpu_edit_matches_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let loaded = common::load_default_model();
    let tok = loaded.tokenizer.clone();
    let cpu_model = Model::upload(CpuBackend, loaded.config.clone(), loaded.weights).unwrap();
    let gpu_model =
        Model::upload(gpu, loaded.config, common::load_default_model().weights).unwrap();
    let mut hp = Hparams::for_model("SmolLM2-135M-Instruct").unwrap();
    hp.v_num_grad_steps = 4; // three Adam steps
    let templates = ContextTemplates::new(hp.context_templates.clone().unwrap()).unwrap();
    let r = request();

    // A short z optimisation: the same losses and z. Both sum in f32 in different orders, and
    // Adam's first steps (≈ lr · sign(g)) amplify differences, so compare at 1e-3.
    let z_cpu = z_on(&cpu_model, &tok, &r, &templates, &hp);
    let z_gpu = z_on(&gpu_model, &tok, &r, &templates, &hp);
    assert_eq!(z_cpu.steps.len(), 4);
    for (s, (a, b)) in z_cpu.steps.iter().zip(&z_gpu.steps).enumerate() {
        assert_close(
            &[b.loss, b.nll, b.kl, b.wd, b.prob],
            &[a.loss, a.nll, a.kl, a.wd, a.prob],
            Tol::abs(1e-3),
            &format!("z step {s}"),
        );
    }
    assert_close(
        &z_gpu.h_init,
        &z_cpu.h_init,
        Tol::rel_of_max(1e-4),
        "h_init",
    );
    assert_close(&z_gpu.z, &z_cpu.z, Tol::rel_of_max(1e-3), "z");

    // Early stops. The gpu backend enqueues each step's update before it reads the step's
    // loss, and a request found done gets back the δ it was evaluated at: stopping after the
    // third evaluation gives the cpu's z (one more Adam step would move it by ~lr per
    // coordinate), and stopping at the first gives δ = 0 exactly.
    let (l1, l2) = (z_cpu.steps[1].loss, z_cpu.steps[2].loss);
    assert!(l2 < l1, "the loss falls from step 1 to 2: {l1} → {l2}");
    for (threshold, evaluations) in [((l1 + l2) / 2.0, 3), (1e9, 1)] {
        let mut early = hp.clone();
        early.early_stop_loss = threshold;
        let cpu_z = z_on(&cpu_model, &tok, &r, &templates, &early);
        let gpu_z = z_on(&gpu_model, &tok, &r, &templates, &early);
        assert_eq!(
            cpu_z.steps.len(),
            evaluations,
            "cpu, stop below {threshold}"
        );
        assert_eq!(
            gpu_z.steps.len(),
            evaluations,
            "gpu, stop below {threshold}"
        );
        assert_close(
            &gpu_z.z,
            &cpu_z.z,
            Tol::rel_of_max(1e-3),
            &format!("z stopped after {evaluations} evaluations"),
        );
        if evaluations == 1 {
            assert_eq!(gpu_z.z, gpu_z.h_init, "δ = 0 after one evaluation");
        }
    }

    // One layer update (edited layers = [7], one round) from the same z: keys and h on each
    // backend, the f64 solve on the host, the column update on each backend.
    hp.layers = vec![7];
    hp.max_iterations = 2;
    let cov = common::setup_covariance(&hp, 1536);
    let zs = [z_cpu];
    let mut updated = vec![];
    macro_rules! edit_on {
        ($model:expr) => {{
            let mut model = $model;
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
                std::slice::from_ref(&r),
                nse::edit::BatchOptions {
                    precomputed_z: Some(&zs),
                    ..Default::default()
                },
                |_| {},
            ))
            .unwrap();
            let w = pollster::block_on(nse::Backend::read(
                model.backend(),
                &model.weights.layers[7].down_proj,
            ))
            .unwrap();
            updated.push((
                out.rounds[0].layers[0].selected.clone(),
                out.rounds[0].layers[0].dw_fro,
                w,
                state.p[&7].clone(),
            ));
        }};
    }
    edit_on!(cpu_model);
    edit_on!(gpu_model);
    let ((sel_c, fro_c, w_c, p_c), (sel_g, fro_g, w_g, p_g)) = (&updated[0], &updated[1]);
    let mut a = sel_c.clone();
    let mut b = sel_g.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "selected neurons");
    assert_close(&[*fro_g as f32], &[*fro_c as f32], Tol::rel(1e-4), "‖ΔW‖");
    assert_close(
        w_g,
        w_c,
        Tol::rel_of_max(1e-5),
        "down_proj after the update",
    );
    assert_close(
        &p_g.dense(),
        &p_c.dense(),
        Tol::rel_of_max(1e-5),
        "P after the batch",
    );
}
