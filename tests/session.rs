//! The library session layer (`nse::session`) that the command line and the page drive, on the
//! tiny random Llama: apply, undo, back to the original, remove edit k with replay, a cancelled
//! or failed job leaving the weights, `P`, the ledger and the records exactly as before, the
//! original against the edited model, patch export and import, streamed generation with stop.
//! Each expected value comes from the engine directly (apply_batch, history, generate) on a
//! second copy of the model.

// Native only (blocking on futures): the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::tiny::{TINY_LAYERS, Tiny, down_projs, requests, tiny};
use nse::cpu::{CpuBackend, CpuTensor};
use nse::edit::{EditRequest, EditState, MethodKind, Nse};
use nse::model::ModelSource;
use nse::model::generate::{Sampling, generate};
use nse::session::{
    ApplyOptions, EditSetup, Engine, Hooks, Probe, RequestProbes, Rewind, Session, Workbench,
};
use nse::{Error, Result};
use pollster::block_on;

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A session over the tiny model of `seed`, editing with the tiny hyperparameters.
fn session(seed: u64) -> Session {
    let t = tiny(seed);
    let source = ModelSource {
        name: "tiny-random-llama".into(),
        format: "gguf".into(),
        sha256: SHA.into(),
        bytes: 0,
        tensor_count: 0,
        tensor_types: vec![],
    };
    let config = t.model.config.clone();
    let engine = Engine::Cpu(Workbench {
        model: t.model,
        edits: None,
    });
    let mut s = Session::new(engine, t.tok, source, "cpu".into()).unwrap();
    // No hyperparameters ship for this name: the session derives them from the model's shape.
    assert_eq!(
        s.setup().expect("derived hparams").hp,
        nse::edit::Hparams::derived(&config, "tiny-random-llama")
    );
    let mut setup = EditSetup::new(t.hp).unwrap();
    setup.templates = Some(t.templates);
    setup.set_cov(t.cov);
    s.start_editing(setup).unwrap();
    s
}

fn cpu_model(s: &Session) -> &nse::model::Model<CpuBackend> {
    match &s.engine {
        Engine::Cpu(w) => &w.model,
        Engine::Gpu(_) => unreachable!("the tests run on the cpu backend"),
    }
}

fn cpu_state(s: &Session) -> &EditState<CpuTensor> {
    match &s.engine {
        Engine::Cpu(w) => w.edits.as_ref().expect("editing started"),
        Engine::Gpu(_) => unreachable!("the tests run on the cpu backend"),
    }
}

/// Everything a job may change: the edited weights, `P`, the ledger's digests, the records.
type Snapshot = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<String>, String);

fn snapshot(s: &Session) -> Snapshot {
    let w = down_projs(cpu_model(s), &TINY_LAYERS)
        .into_values()
        .collect();
    let st = cpu_state(s);
    let p = TINY_LAYERS
        .iter()
        .map(|l| st.p[l].dense().to_vec())
        .collect();
    let digests = st.ledger.iter().map(|e| e.digest()).collect();
    let meta = serde_json::to_string(&s.setup().unwrap().meta).unwrap();
    (w, p, digests, meta)
}

/// The engine alone: batches applied with apply_batch on a fresh tiny model.
fn engine_run(seed: u64, batches: &[&[EditRequest]]) -> (Tiny, EditState<CpuTensor>) {
    let mut t = tiny(seed);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    for b in batches {
        t.apply(&mut state, b, &Nse).unwrap();
    }
    (t, state)
}

fn apply(s: &mut Session, reqs: &[EditRequest]) -> Result<()> {
    let probes = vec![RequestProbes::default(); reqs.len()];
    block_on(s.apply(
        reqs,
        probes,
        MethodKind::Nse,
        ApplyOptions::default(),
        |_| {},
    ))
    .map(|_| ())
}

#[test]
fn apply_undo_and_remove_equal_the_engine_runs_bit_for_bit() {
    let r = requests();
    let mut s = session(31);
    let original = snapshot(&s);
    for req in &r {
        apply(&mut s, std::slice::from_ref(req)).unwrap();
    }
    let (want, want_state) = engine_run(31, &[&r[..1], &r[1..2], &r[2..3]]);
    assert_eq!(
        down_projs(cpu_model(&s), &TINY_LAYERS),
        down_projs(&want.model, &TINY_LAYERS)
    );
    assert_eq!(cpu_state(&s).p, want_state.p);
    let meta = &s.setup().unwrap().meta;
    assert_eq!(meta.len(), 3);
    // The records hold the scores measured right after each batch, from the edited model.
    for (k, m) in meta.iter().enumerate() {
        let (p_new, p_true) = m.scores[0].expect("every request has a true target");
        assert!((0.0..=1.0).contains(&p_new) && (0.0..=1.0).contains(&p_true));
        assert_eq!(m.residuals.len(), m.rounds_used + 1, "entry {k}");
    }

    // Remove edit #2: edits 1 and 3 remain, 3 re-edited on top of 1, exactly as the engine does.
    let mut events = vec![];
    let text = block_on(s.rewind(Rewind::Remove(1), |j, n| events.push((j, n)))).unwrap();
    assert!(text.contains("Removed edit #2"), "{text}");
    assert_eq!(events, vec![(0, 1)]);
    let (want, want_state) = engine_run(31, &[&r[..1], &r[2..3]]);
    assert_eq!(
        down_projs(cpu_model(&s), &TINY_LAYERS),
        down_projs(&want.model, &TINY_LAYERS)
    );
    assert_eq!(cpu_state(&s).p, want_state.p);
    let meta = &s.setup().unwrap().meta;
    assert_eq!(meta.len(), 2);
    assert!(meta[1].note.contains("re-applied after removing edit #2"));

    // Undo: the state after the first edit alone.
    block_on(s.rewind(Rewind::Last, |_, _| {})).unwrap();
    let (want, want_state) = engine_run(31, &[&r[..1]]);
    assert_eq!(
        down_projs(cpu_model(&s), &TINY_LAYERS),
        down_projs(&want.model, &TINY_LAYERS)
    );
    assert_eq!(cpu_state(&s).p, want_state.p);
    assert_eq!(s.setup().unwrap().meta.len(), 1);

    // Back to the original: bit for bit, records gone.
    block_on(s.rewind(Rewind::All, |_, _| {})).unwrap();
    assert_eq!(snapshot(&s), original);

    // Removing an edit that does not exist names the problem and changes nothing.
    let err = block_on(s.rewind(Rewind::Remove(4), |_, _| {})).unwrap_err();
    assert!(err.to_string().contains("no edit #5"), "{err}");
    assert_eq!(snapshot(&s), original);
}

/// A pause hook that cancels at its `at`-th call (counting from 1), counting every call.
fn cancel_at(at: usize) -> (Hooks, Rc<Cell<usize>>) {
    let calls = Rc::new(Cell::new(0));
    let c = Rc::clone(&calls);
    let hooks = Hooks {
        pause: Some(Box::new(move || {
            c.set(c.get() + 1);
            let n = c.get();
            Box::pin(async move {
                if n >= at {
                    Err(Error::Cancelled(format!("test cancel at step {n}")))
                } else {
                    Ok(())
                }
            })
        })),
        ..Default::default()
    };
    (hooks, calls)
}

#[test]
fn a_cancelled_job_leaves_weights_p_ledger_and_records_bit_identical() {
    let r = requests();
    let mut s = session(32);
    apply(&mut s, &r[..1]).unwrap();
    let before = snapshot(&s);
    // Count the steps of a whole batch, then cancel at every kind of place: the first z step,
    // inside the rounds, and at the very last step (before the past keys are added).
    let mut probe = session(32);
    apply(&mut probe, &r[..1]).unwrap();
    let (hooks, calls) = cancel_at(usize::MAX);
    probe.hooks = hooks;
    apply(&mut probe, &r[1..3]).unwrap();
    let total = calls.get();
    assert!(
        total > 3,
        "a batch pauses at every z step, round and layer ({total})"
    );
    for at in [1, total / 2, total] {
        let (hooks, _) = cancel_at(at);
        s.hooks = hooks;
        let err = apply(&mut s, &r[1..3]).unwrap_err();
        assert!(matches!(err, Error::Cancelled(_)), "step {at}: {err}");
        assert!(err.to_string().starts_with("cancelled:"), "{err}");
        assert_eq!(snapshot(&s), before, "cancelled at step {at} of {total}");
    }

    // A removal cancelled while re-applying puts the history back as it was.
    s.hooks = Hooks::default();
    apply(&mut s, &r[1..2]).unwrap();
    apply(&mut s, &r[2..3]).unwrap();
    let before = snapshot(&s);
    let (hooks, _) = cancel_at(3);
    s.hooks = hooks;
    let err = block_on(s.rewind(Rewind::Remove(0), |_, _| {})).unwrap_err();
    assert!(matches!(err, Error::Cancelled(_)), "{err}");
    assert_eq!(snapshot(&s), before);

    // A covariance computation stops at its next window, and nothing is installed.
    let (hooks, calls) = cancel_at(2);
    s.hooks = hooks;
    let text = common::wikitext();
    let wins = nse::edit::covariance::windows(&text, &s.tokenizer, 64, 512).unwrap();
    let err = block_on(s.compute_covariance(&wins, "wikitext", |_, _| {})).unwrap_err();
    assert!(matches!(err, Error::Cancelled(_)), "{err}");
    assert_eq!(
        calls.get(),
        2,
        "stopped at the second window of {}",
        wins.len()
    );
    assert_eq!(snapshot(&s), before);
}

#[test]
fn compare_runs_the_original_and_the_edited_model_on_the_same_probes() {
    let r = requests();
    let mut s = session(33);
    let probes: Vec<Probe> = r
        .iter()
        .map(|q| Probe {
            prompt: q.sentence(),
            target_new: q.target_new.clone(),
            target_true: q.target_true.clone(),
        })
        .collect();
    let (o0, e0) = block_on(s.compare(&probes)).unwrap();
    assert_eq!(o0, e0, "without edits both sides are the same model");
    apply(&mut s, &r[1..2]).unwrap();
    let (original, edited) = block_on(s.compare(&probes)).unwrap();
    // The original side is the unedited model, whatever the ledger.
    assert_eq!(original, o0);
    // The edited side is the edited weights: its scores equal a direct score on them.
    let items: Vec<(String, String, Option<String>)> = r
        .iter()
        .map(|q| (q.sentence(), q.target_new.clone(), q.target_true.clone()))
        .collect();
    let direct = block_on(nse::eval::new_vs_true(cpu_model(&s), &s.tokenizer, &items)).unwrap();
    for (e, (p_new, p_true)) in edited.iter().zip(&direct) {
        assert_eq!(e.p_new, p_new.prob());
        assert_eq!(e.p_true, p_true.map(|t| t.prob()));
    }
    assert!(
        edited[1].p_new > original[1].p_new,
        "the edit raised P(new) on its own prompt: {} → {}",
        original[1].p_new,
        edited[1].p_new
    );
    // The ledger is untouched by comparing.
    assert_eq!(s.n_entries(), 1);
}

#[test]
fn export_and_import_a_patch_replays_the_ledger_and_refuses_another_model() {
    let r = requests();
    let mut s = session(34);
    apply(&mut s, &r[..2]).unwrap();
    apply(&mut s, &r[2..3]).unwrap();
    let edited = snapshot(&s);
    let patch = block_on(s.export_patch()).unwrap();
    assert_eq!(patch.entries.len(), 2);
    assert!(patch.weights_sha256.is_some());
    // Scores measured after each batch travel in the patch.
    assert!(patch.entries[0].measured[0].p_new.is_finite());
    let bytes = patch.to_bytes();

    let mut other = session(34);
    let patch = nse::edit::patch::Patch::from_bytes(&bytes, "exported.nsepatch").unwrap();
    block_on(other.import_patch(&patch, "imported")).unwrap();
    let (w, p, digests, _) = snapshot(&other);
    assert_eq!((w, p, digests), (edited.0, edited.1, edited.2));
    assert_eq!(other.setup().unwrap().meta[0].note, "imported");

    // A patch made for another base model is refused and changes nothing.
    let mut foreign = patch.clone();
    foreign.model_sha256 = "f".repeat(64);
    let before = snapshot(&other);
    let err = block_on(other.import_patch(&foreign, "foreign")).unwrap_err();
    assert!(err.to_string().contains("model"), "{err}");
    assert_eq!(snapshot(&other), before);

    // The model export carries the edited weights.
    let file = block_on(other.export_model()).unwrap();
    assert!(file.len() > 8);
}

#[test]
fn generation_streams_tokens_and_a_stop_keeps_what_was_generated() {
    let s = session(35);
    let ids = s.tokenizer.encode("The Eiffel Tower is in").unwrap();
    let want = block_on(generate(cpu_model(&s), &ids, 6, Sampling::Greedy, |_| {})).unwrap();
    let mut seen = vec![];
    let got = block_on(
        s.generate("The Eiffel Tower is in", 6, Sampling::Greedy, |g| {
            seen.push(g.ids.clone())
        }),
    )
    .unwrap();
    assert_eq!(got, want);
    assert_eq!(seen.last(), Some(&want.ids));
    assert_eq!(seen.len(), want.ids.len());

    let mut s = s;
    let (hooks, _) = cancel_at(4);
    s.hooks = hooks;
    let stopped =
        block_on(s.generate("The Eiffel Tower is in", 6, Sampling::Greedy, |_| {})).unwrap();
    assert!(stopped.cancelled);
    assert_eq!(stopped.ids, want.ids[..3], "three tokens before the stop");
}

#[test]
fn hyperparameters_change_before_the_first_edit_only() {
    let mut s = session(21);
    let before = s.setup().unwrap().hp.clone();
    // Fewer layers: taken, with a fresh covariance (the old one was for other layers) and the
    // same templates.
    let mut fewer = before.clone();
    fewer.layers = vec![1, 2];
    s.set_hparams(fewer.clone()).unwrap();
    let setup = s.setup().unwrap();
    assert_eq!(setup.hp, fewer);
    assert!(setup.cov.is_none() && setup.templates.is_some());
    assert_eq!(cpu_state(&s).layers, [1, 2]);
    // A layer the model does not have: refused, nothing changes.
    let mut bad = fewer.clone();
    bad.layers = vec![2, 9];
    let err = s.set_hparams(bad).unwrap_err().to_string();
    assert!(err.contains('9'), "{err}");
    assert_eq!(s.setup().unwrap().hp, fewer);
    // Back to the test's own (with its covariance), one edit, and then no change is taken.
    s.set_hparams(before.clone()).unwrap();
    s.setup_mut().unwrap().set_cov(common::tiny::tiny(21).cov);
    apply(&mut s, &requests()[..1]).unwrap();
    let err = s.set_hparams(fewer.clone()).unwrap_err().to_string();
    assert!(err.contains("before the first edit"), "{err}");
    assert_eq!(s.setup().unwrap().hp, before);
    assert_eq!(s.n_entries(), 1);

    // A ledger made with other hyperparameters brings them into an empty session (a reload's
    // restore, an import), and replays bit for bit.
    let mut custom = session(22);
    custom.set_hparams(fewer.clone()).unwrap();
    custom
        .setup_mut()
        .unwrap()
        .set_cov(common::tiny::tiny(22).cov);
    apply(&mut custom, &requests()[..1]).unwrap();
    let patch = block_on(custom.export_patch()).unwrap();
    let mut fresh = session(22);
    assert_ne!(fresh.setup().unwrap().hp, fewer);
    block_on(fresh.import_patch(&patch, "restored")).unwrap();
    assert_eq!(fresh.setup().unwrap().hp, fewer);
    assert_eq!(fresh.n_entries(), 1);
    assert_eq!(
        cpu_model(&fresh).weights.layers[2].down_proj.f32_decoded(),
        cpu_model(&custom).weights.layers[2].down_proj.f32_decoded()
    );
}
