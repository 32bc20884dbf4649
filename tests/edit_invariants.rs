//! Properties of the whole editing procedure on a tiny random Llama (spec §14, invariants 1, 6,
//! 8, 10, 11, 13, 15, 16), plus bit-exact undo and patches.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tiny::{TINY_LAYERS, Tiny, down_projs, requests, tiny};
use common::{Rng, Tol, assert_close};
use nse::backend::{Backend, TensorInfo};
use nse::cpu::CpuBackend;
use nse::edit::keys::{KeyPrompts, keys_and_h, keys_and_h_resumed, keys_at};
use nse::edit::patch::Patch;
use nse::edit::subject::subject_last_index;
use nse::edit::target::{ZOptions, ZProblem, compute_z, compute_zs, norm};
use nse::edit::{BatchOutcome, EditMethod, EditRequest, EditState, Memit, MemitSeq, Nse};

fn run(
    t: &mut Tiny,
    state: &mut EditState<nse::cpu::CpuTensor>,
    reqs: &[EditRequest],
    method: &dyn EditMethod,
) -> BatchOutcome {
    t.apply(state, reqs, method).unwrap()
}

#[test]
fn updates_touch_only_the_selected_columns() {
    // Invariant 1, and W_new k = W_old k for any k that is zero on the selected neurons.
    let mut t = tiny(1);
    let before = down_projs(&t.model, &TINY_LAYERS);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let out = run(&mut t, &mut state, &requests(), &Nse);
    let after = down_projs(&t.model, &TINY_LAYERS);
    let (d, f) = (t.model.config.d_model, t.model.config.d_ff);
    for &l in &TINY_LAYERS {
        let touched: Vec<usize> = out
            .rounds
            .iter()
            .flat_map(|r| &r.layers)
            .filter(|x| x.layer == l)
            .flat_map(|x| x.selected.iter().map(|&c| c as usize))
            .collect();
        assert!(touched.len() < 2 * f, "p = 0.8 must leave some neurons out");
        let mut k = Rng::new(l as u64).vec(f);
        for j in 0..f {
            let moved = (0..d).any(|i| after[&l][i * f + j] != before[&l][i * f + j]);
            if !touched.contains(&j) {
                assert!(!moved, "layer {l}: column {j} was not selected but changed");
            }
            if touched.contains(&j) {
                k[j] = 0.0;
            }
        }
        for i in 0..d {
            let dot = |w: &[f32]| (0..f).map(|j| w[i * f + j] * k[j]).sum::<f32>();
            assert_eq!(dot(&after[&l]), dot(&before[&l]), "layer {l}, row {i}");
        }
    }
}

#[test]
fn past_keys_accumulate_as_a_psd_sum() {
    // Invariant 6: P_l = Σ_b K_b K_bᵀ with post-edit keys; symmetric, PSD, trace non-decreasing.
    let mut t = tiny(2);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let reqs = requests();
    let f = t.model.config.d_ff;
    let mut traces = vec![0.0f64];
    for batch in [&reqs[..2], &reqs[2..]] {
        run(&mut t, &mut state, batch, &Nse);
        let l = TINY_LAYERS[0];
        traces.push(state.p[&l].trace());
    }
    assert!(
        traces.windows(2).all(|w| w[1] >= w[0]),
        "trace decreased: {traces:?}"
    );
    for &l in &TINY_LAYERS {
        let p = state.p[&l].dense();
        let mut want = vec![0.0f64; f * f];
        for entry in &state.ledger {
            for k in entry.p_keys[&l].chunks(f) {
                for a in 0..f {
                    for b in 0..f {
                        want[a * f + b] += k[a] as f64 * k[b] as f64;
                    }
                }
            }
        }
        for a in 0..f {
            for b in 0..f {
                assert!(
                    (p[a * f + b] as f64 - want[a * f + b]).abs()
                        <= 1e-5 * (1.0 + want[a * f + b].abs())
                );
                assert!((p[a * f + b] - p[b * f + a]).abs() <= 1e-6 * (1.0 + p[a * f + b].abs()));
            }
        }
        // PSD: xᵀ P x ≥ 0 for random x.
        let mut rng = Rng::new(5);
        for _ in 0..20 {
            let x = rng.vec(f);
            let q: f64 = (0..f)
                .map(|a| {
                    (0..f)
                        .map(|b| x[a] as f64 * p[a * f + b] as f64 * x[b] as f64)
                        .sum::<f64>()
                })
                .sum();
            assert!(q >= -1e-6, "xᵀPx = {q}");
        }
    }
}

#[test]
fn subject_last_token_ends_the_subject() {
    // Invariant 8 on 300 real CounterFact prompts.
    let tok = common::load_default_model().tokenizer;
    let text = common::data_text("counterfact_easyedit/counterfact-edit.json");
    let cases = nse::edit::dataset::parse_cases(&text, "counterfact-edit.json").unwrap();
    for case in cases.iter().take(300) {
        let r = &case.request;
        let idx = subject_last_index(&tok, &r.prompt, &r.subject).unwrap();
        let ids = tok.encode(&r.sentence()).unwrap();
        let upto = tok.decode(&ids[..=idx]).unwrap();
        let subject_end: String = r
            .subject
            .chars()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(
            upto.ends_with(&subject_end),
            "{:?}: tokens up to {idx} decode to {upto:?}",
            r.sentence()
        );
    }
}

#[test]
fn z_gradient_matches_finite_differences() {
    check_z_gradient(&tiny(3));
}

/// The z problem of requests 0 and 2 on `t`.
fn pair_problem(t: &Tiny) -> ZProblem<'_, CpuBackend> {
    let reqs = requests();
    let pair = [&reqs[0], &reqs[2]];
    pollster::block_on(ZProblem::new(
        &t.model,
        &t.tok,
        &pair,
        &t.templates,
        &t.hp,
        &[],
    ))
    .unwrap()
}

/// The z loop's tape keeps the MLP activations of the blocks that fit its budget and the
/// backward pass recomputes the others': the losses and the gradient are the same bit for bit
/// with every block's kept, none, or one (Llama-family and GPT-2 blocks).
#[test]
fn z_gradient_is_the_same_whatever_the_tape_keeps() {
    for t in [
        common::tiny::tiny(3),
        common::tiny::tiny_from_archs("gpt2.gguf"),
    ] {
        let d = t.model.config.d_model;
        let mut rng = Rng::new(5);
        let flat: Vec<f32> = rng.vec(2 * d).iter().map(|x| 0.3 * x).collect();
        let norms: Vec<f32> = flat.chunks(d).map(norm).collect();
        let delta = CpuBackend.upload("δ", &flat, &[2, d]).unwrap();
        let norms = CpuBackend.upload("‖δ‖", &norms, &[2]).unwrap();
        let run = |budget: usize| {
            let mut prob = pair_problem(&t);
            prob.set_mlp_tape_budget(budget);
            let (steps, _) = pollster::block_on(prob.forward(&delta, &norms)).unwrap();
            let grad = prob.backward().unwrap().f32().to_vec();
            (steps.iter().map(|s| s.loss).collect::<Vec<_>>(), grad)
        };
        let all = run(usize::MAX);
        // Room for 64 rows' `gate` and `up` of one block: some blocks kept, not all.
        let some = 8 * 64 * t.model.config.d_ff;
        for budget in [0, some] {
            let got = run(budget);
            assert!(
                got == all,
                "tape budget {budget}: losses or gradient differ"
            );
        }
    }
}

#[test]
fn z_gradient_matches_finite_differences_through_gpt2_blocks() {
    // LayerNorms, GELU, biases and no RoPE on the way back (tests/data/archs/gpt2).
    check_z_gradient(&common::tiny::tiny_from_archs("gpt2.gguf"));
}

/// Invariant 10: the analytic gradient of the z loss (through 2 blocks, the final norm, the
/// head, the KL term and the weight decay) against central differences. Two requests share
/// the packed passes: each one's gradient is that of its own loss, whatever the other's δ.
fn check_z_gradient(t: &Tiny) {
    let mut prob = pair_problem(t);
    let d = t.model.config.d_model;
    // δ of both requests and their norms as the tensors the z loop keeps on the backend.
    let forward = |prob: &mut ZProblem<'_, CpuBackend>, ds: &[Vec<f32>]| {
        let flat: Vec<f32> = ds.concat();
        let norms: Vec<f32> = ds.iter().map(|x| norm(x)).collect();
        let delta = CpuBackend.upload("δ", &flat, &[ds.len(), d]).unwrap();
        let norms = CpuBackend.upload("‖δ‖", &norms, &[ds.len()]).unwrap();
        pollster::block_on(prob.forward(&delta, &norms)).unwrap().0
    };
    forward(&mut prob, &[vec![0.0; d], vec![0.0; d]]); // fixes the KL references at δ = 0
    let mut rng = Rng::new(11);
    let deltas: Vec<Vec<f32>> = (0..2)
        .map(|_| rng.vec(d).iter().map(|x| 0.3 * x).collect())
        .collect();
    forward(&mut prob, &deltas);
    let terms = prob.backward().unwrap();
    // backward() is the gradient of the loss terms; the weight decay's,
    // wd · δ / (‖δ‖ · ‖h‖²), is added by the optimiser step (Backend::z_adam).
    let grads: Vec<Vec<f32>> = terms
        .f32()
        .chunks(d)
        .zip(&deltas)
        .enumerate()
        .map(|(i, (g, x))| {
            let h = norm(prob.h_init(i));
            let c = t.hp.v_weight_decay / (h * h) / norm(x);
            g.iter().zip(x).map(|(g, x)| g + c * x).collect()
        })
        .collect();
    let eps = 1e-2f32;
    for trial in 0..6 {
        let which = trial % 2;
        let u = rng.vec(d);
        let un = norm(&u);
        let u: Vec<f32> = u.iter().map(|x| x / un).collect();
        let mut at = |s: f32| {
            let mut moved = deltas.clone();
            for (a, b) in moved[which].iter_mut().zip(&u) {
                *a += s * b;
            }
            forward(&mut prob, &moved)[which].loss as f64
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        let an: f64 = grads[which]
            .iter()
            .zip(&u)
            .map(|(g, x)| (*g as f64) * (*x as f64))
            .sum();
        // f32 loss values of size ~20 carry ~2e-6 absolute noise, i.e. ~2e-4 on the quotient.
        assert!(
            (fd - an).abs() <= 2e-3 * an.abs().max(0.25),
            "request {which}, direction {trial}: fd {fd} vs analytic {an}"
        );
    }
    // Moving one request's δ leaves the other's loss bit for bit.
    let base = forward(&mut prob, &deltas);
    for which in 0..2 {
        let mut moved = deltas.clone();
        moved[which].iter_mut().for_each(|x| *x *= -2.0);
        let other = forward(&mut prob, &moved);
        assert_eq!(other[1 - which], base[1 - which], "moving δ {which}");
        assert_ne!(other[which], base[which], "moving δ {which}");
    }
}

#[test]
fn batched_z_is_each_requests_own_z() {
    // Issue 14: optimising the targets of several requests in one packed pass gives each the z
    // it gets alone (own Adam state, early stop and clamp), up to the rounding of larger matrix
    // products, including after some requests stop early and leave the batch.
    let mut t = tiny(6);
    t.hp.v_num_grad_steps = 12;
    // The random model's losses start near 21–23 and fall by about 1 in 12 steps: this stops
    // two of the four requests early, after 3 and 5 evaluations.
    t.hp.early_stop_loss = 20.5;
    let mut reqs = requests();
    reqs.push(
        EditRequest::from_sentence(
            "Toko Yasuda plays the",
            "Toko Yasuda",
            "guitar",
            Some("piano"),
        )
        .unwrap(),
    );
    let all: Vec<&EditRequest> = reqs.iter().collect();
    let run = |chunk| {
        let mut seen = vec![];
        let zs = pollster::block_on(compute_zs(
            &t.model,
            &t.tok,
            &all,
            &t.templates,
            &t.hp,
            &[],
            ZOptions {
                chunk,
                ..Default::default()
            },
            |i, step, _| seen.push((i, step)),
        ))
        .unwrap();
        (zs, seen)
    };
    let (alone, _) = run(1);
    let counts: Vec<usize> = alone.iter().map(|z| z.steps.len()).collect();
    assert!(
        counts.iter().any(|&c| c != counts[0]),
        "the requests should stop at different steps so that the batch shrinks: {counts:?}"
    );
    for chunk in [3, 4] {
        let (together, seen) = run(chunk);
        assert_eq!(
            seen.len(),
            counts.iter().sum::<usize>(),
            "one report per evaluation"
        );
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            let what = format!("request {i}, chunk {chunk}");
            assert_eq!(b.steps.len(), a.steps.len(), "{what}: evaluations");
            assert_eq!(
                (&b.input_ids, &b.lookup_idxs, &b.target_ids),
                (&a.input_ids, &a.lookup_idxs, &a.target_ids),
                "{what}: prompts"
            );
            let losses = |z: &nse::edit::target::ZResult| -> Vec<f32> {
                z.steps.iter().map(|s| s.loss).collect()
            };
            assert_close(
                &losses(b),
                &losses(a),
                Tol::rel(1e-4),
                &format!("{what}: losses"),
            );
            assert_close(
                &b.h_init,
                &a.h_init,
                Tol::rel_of_max(1e-5),
                &format!("{what}: h_init"),
            );
            assert_close(&b.z, &a.z, Tol::rel_of_max(1e-4), &format!("{what}: z"));
        }
    }
}

#[test]
fn z_is_clamped_and_improves_the_target() {
    // Invariant 11: ‖z − h_init‖ ≤ 0.75 ‖h_init‖, and the target probability rises.
    let t = tiny(4);
    for r in requests() {
        let z = pollster::block_on(compute_z(
            &t.model,
            &t.tok,
            &r,
            &t.templates,
            &t.hp,
            &[],
            |_, _| {},
        ))
        .unwrap();
        let limit = t.hp.clamp_norm_factor * norm(&z.h_init) * (1.0 + 1e-5);
        assert!(norm(&z.delta) <= limit, "‖δ‖ {} > {limit}", norm(&z.delta));
        assert!(
            z.steps.last().unwrap().prob > z.steps[0].prob,
            "{:?}",
            z.steps
        );
        assert_eq!(z.steps[0].kl, 0.0);
        assert_eq!(z.steps[0].wd, 0.0);
    }
}

#[test]
fn rewinding_reproduces_the_original_z_bit_for_bit() {
    // Invariant 13: after an edit, z computed with the original down_proj swapped in equals the
    // z computed on the unedited model, bit for bit; with the current weights it differs.
    let mut t = tiny(5);
    let reqs = requests();
    let z_before = pollster::block_on(compute_z(
        &t.model,
        &t.tok,
        &reqs[2],
        &t.templates,
        &t.hp,
        &[],
        |_, _| {},
    ))
    .unwrap();
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    run(&mut t, &mut state, &reqs[..2], &Nse);
    let rewound = pollster::block_on(compute_z(
        &t.model,
        &t.tok,
        &reqs[2],
        &t.templates,
        &t.hp,
        &state.original_overrides(),
        |_, _| {},
    ))
    .unwrap();
    assert_eq!(rewound.z, z_before.z);
    let current = pollster::block_on(compute_z(
        &t.model,
        &t.tok,
        &reqs[2],
        &t.templates,
        &t.hp,
        &[],
        |_, _| {},
    ))
    .unwrap();
    assert_ne!(
        current.z, z_before.z,
        "the edit should have moved the current model's z"
    );
}

#[test]
fn requests_outside_alpha_and_u_are_left_out() {
    // Invariant 15: with U just below the largest initial residual, that request is not edited
    // in round 0 and does not enter the solve (the update's rank is |A|).
    let mut t = tiny(6);
    let reqs = requests();
    let mut probe = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let first = run(&mut t, &mut probe, &reqs, &Nse);
    probe.rewind_to(&mut t.model, 0).unwrap();
    let r0 = &first.rounds[0].residual_norms;
    let big = (0..3).max_by(|&a, &b| r0[a].total_cmp(&r0[b])).unwrap();
    let small = (0..3).min_by(|&a, &b| r0[a].total_cmp(&r0[b])).unwrap();
    t.hp.upper_bound = r0[big] - 1e-3;
    t.hp.alpha = r0[small] + 1e-3;
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let out = run(&mut t, &mut state, &reqs, &Nse);
    let edited = &out.rounds[0].edited_request_positions;
    assert!(
        !edited.contains(&big) && !edited.contains(&small),
        "{edited:?} from residuals {r0:?}"
    );
    assert_eq!(edited.len(), 1);
    assert!(
        state.ledger[0]
            .updates
            .iter()
            .filter(|u| u.round == 0)
            .all(|u| u.update.n == 1)
    );
}

#[test]
fn nse_reduces_to_memit_seq() {
    // Invariant 16: p = 1, α = −∞, U = +∞, one round and z from the current weights (the first
    // batch) make NSE identical to MEMIT-seq.
    let mut t = tiny(7);
    let reqs = requests();
    t.hp.neuron_threshold = 1.0;
    t.hp.alpha = f32::NEG_INFINITY;
    t.hp.upper_bound = f32::INFINITY;
    t.hp.max_iterations = 2;
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    run(&mut t, &mut state, &reqs, &Nse);
    let nse_w = down_projs(&t.model, &TINY_LAYERS);
    let nse_p = state.p.clone();
    state.rewind_to(&mut t.model, 0).unwrap();
    run(&mut t, &mut state, &reqs, &MemitSeq);
    assert_eq!(down_projs(&t.model, &TINY_LAYERS), nse_w);
    assert_eq!(state.p, nse_p);
}

#[test]
fn plain_memit_forgets_the_past_keys() {
    // Plain MEMIT is MEMIT-seq without P: on the first batch (P = 0) the two agree bit for bit;
    // on a later batch MEMIT equals MEMIT-seq started afresh (P = 0) from the edited weights,
    // and differs from MEMIT-seq continued with the first batch's keys in P.
    let mut t = tiny(9);
    let reqs = requests();
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    run(&mut t, &mut state, &reqs[..2], &MemitSeq);
    let seq_w1 = down_projs(&t.model, &TINY_LAYERS);
    state.rewind_to(&mut t.model, 0).unwrap();
    run(&mut t, &mut state, &reqs[..2], &Memit);
    assert_eq!(down_projs(&t.model, &TINY_LAYERS), seq_w1, "first batch");
    assert!(
        state
            .p
            .values()
            .any(|p| p.dense().iter().any(|&x| x != 0.0)),
        "P holds batch 1's keys"
    );

    let after1 = down_projs(&t.model, &TINY_LAYERS);
    run(&mut t, &mut state, &reqs[2..], &Memit);
    let memit_w2 = down_projs(&t.model, &TINY_LAYERS);
    state.rewind_to(&mut t.model, 1).unwrap();
    assert_eq!(down_projs(&t.model, &TINY_LAYERS), after1);
    run(&mut t, &mut state, &reqs[2..], &MemitSeq);
    assert_ne!(
        down_projs(&t.model, &TINY_LAYERS),
        memit_w2,
        "MEMIT-seq uses P"
    );
    state.rewind_to(&mut t.model, 1).unwrap();
    let mut fresh = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    run(&mut t, &mut fresh, &reqs[2..], &MemitSeq);
    assert_eq!(
        down_projs(&t.model, &TINY_LAYERS),
        memit_w2,
        "MEMIT = MEMIT-seq with P = 0"
    );
}

#[test]
fn undo_and_patches_are_bit_exact() {
    let mut t = tiny(8);
    let reqs = requests();
    let original = down_projs(&t.model, &TINY_LAYERS);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    run(&mut t, &mut state, &reqs[..1], &Nse);
    let (w1, p1) = (down_projs(&t.model, &TINY_LAYERS), state.p.clone());
    run(&mut t, &mut state, &reqs[1..], &Nse);
    let (w2, p2) = (down_projs(&t.model, &TINY_LAYERS), state.p.clone());
    assert_ne!(w1, w2);

    // A patch replays both batches on a fresh copy of the base model, bit for bit.
    let sha = &"0123456789abcdef".repeat(4);
    let patch = Patch::new("tiny", sha, &t.hp, state.ledger.clone());
    let bytes = patch.to_bytes();
    let decoded = Patch::from_bytes(&bytes, "tiny.nsepatch").unwrap();
    let mut fresh = tiny(8);
    let mut fresh_state = EditState::new(&fresh.model, &TINY_LAYERS).unwrap();
    pollster::block_on(decoded.apply(&mut fresh.model, &mut fresh_state, sha)).unwrap();
    assert_eq!(down_projs(&fresh.model, &TINY_LAYERS), w2);
    assert_eq!(fresh_state.p, p2);
    // …and refuses another model, or a corrupt file, leaving the model as it was.
    let err = pollster::block_on(decoded.apply(&mut fresh.model, &mut fresh_state, "ffff"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not for the loaded model"), "{err}");
    let mut corrupt = bytes.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    let err = Patch::from_bytes(&corrupt, "x").unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    assert_eq!(down_projs(&fresh.model, &TINY_LAYERS), w2);

    // Undo the last batch, then everything: bit-exact.
    state.rewind_to(&mut t.model, 1).unwrap();
    assert_eq!(down_projs(&t.model, &TINY_LAYERS), w1);
    assert_eq!(state.p, p1);
    state.rewind_to(&mut t.model, 0).unwrap();
    assert_eq!(down_projs(&t.model, &TINY_LAYERS), original);
    assert!(
        state
            .p
            .values()
            .all(|p| p.dense().iter().all(|&x| x == 0.0))
    );
    let _ = t.model.backend().describe();
}

#[test]
fn alphaedit_updates_leave_the_preserved_keys_alone() {
    // AlphaEdit's Δᵀ lies in the range of Π (the null space of C), so Δ k = 0 for every
    // eigenvector k of C whose eigenvalue is above the threshold.
    let mut t = tiny(9);
    let f = t.model.config.d_ff;
    let l = TINY_LAYERS[0];
    let c = faer::Mat::<f64>::from_fn(f, f, |a, b| t.cov.layer(l).unwrap()[a * f + b] as f64);
    let evd = c.self_adjoint_eigen(faer::Side::Lower).unwrap();
    let mut eig: Vec<f64> = (0..f).map(|i| evd.S()[i]).collect();
    eig.sort_by(f64::total_cmp);
    t.hp.nullspace_threshold = eig[f / 2]; // half the space preserved
    let method = nse::edit::AlphaEdit::new(t.cov.matrices(), f, &t.hp).unwrap();
    let before = down_projs(&t.model, &TINY_LAYERS);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    run(&mut t, &mut state, &requests(), &method);
    let after = down_projs(&t.model, &TINY_LAYERS);
    let d = t.model.config.d_model;
    let delta: Vec<f64> = after[&l]
        .iter()
        .zip(&before[&l])
        .map(|(a, b)| (a - b) as f64)
        .collect();
    let dnorm = delta.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(dnorm > 1e-3, "AlphaEdit did not move layer {l}");
    let u = evd.U();
    for i in (0..f).filter(|&i| evd.S()[i] > t.hp.nullspace_threshold * 1.01) {
        let moved = (0..d)
            .map(|r| {
                (0..f)
                    .map(|j| delta[r * f + j] * u[(j, i)])
                    .sum::<f64>()
                    .powi(2)
            })
            .sum::<f64>()
            .sqrt();
        assert!(
            moved <= 1e-4 * dnorm,
            "eigenvector {i} (λ = {:.3e}) moved by {moved:e}",
            evd.S()[i]
        );
    }
}

#[test]
fn resumed_key_passes_equal_full_passes() {
    // A round's key passes restart at the last updated layer (keys_and_h_resumed) and must give
    // the full passes' keys and h bit for bit, while each layer is changed after its pass, as
    // a round changes it; keys_at gives every layer's keys of one pass.
    let mut t = tiny(10);
    let reqs = requests();
    let all: Vec<&EditRequest> = reqs.iter().collect();
    let kp = KeyPrompts::new(&t.tok, &t.templates, &all).unwrap();
    let l0 = *TINY_LAYERS.last().unwrap();
    let mut cache = None;
    for &l in &TINY_LAYERS {
        let full = pollster::block_on(keys_and_h(&t.model, &kp, l, l0)).unwrap();
        let resumed =
            pollster::block_on(keys_and_h_resumed(&t.model, &kp, l, l0, &mut cache)).unwrap();
        assert_eq!(
            (&resumed.keys, &resumed.h),
            (&full.keys, &full.h),
            "layer {l}"
        );
        assert_eq!(cache.as_ref().map(|(k, _)| *k), Some(l));
        let be = *t.model.backend();
        let w = &mut t.model.weights.layers[l].down_proj;
        let mut host = pollster::block_on(be.read(w)).unwrap();
        host.iter_mut().for_each(|x| *x *= 1.5);
        let shape = w.shape().to_vec();
        *w = be.upload("changed down_proj", &host, &shape).unwrap();
    }
    let at = pollster::block_on(keys_at(&t.model, &kp, &TINY_LAYERS)).unwrap();
    for &l in &TINY_LAYERS {
        let one = pollster::block_on(keys_and_h(&t.model, &kp, l, l)).unwrap();
        assert_eq!(at[&l], one.keys, "keys_at layer {l}");
    }
}
