//! One patch, one history (patch format 2), on the tiny random Llama: continuing a patch keeps
//! the earlier edits and replays bit for bit, across methods; undo and remove-entry are exact; a
//! history that does not line up, or a replay that does not reproduce the recorded weights, is
//! refused with the model and ledger untouched.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tiny::{TINY_LAYERS, Tiny, down_projs, requests, tiny};
use nse::cpu::CpuTensor;
use nse::edit::patch::Patch;
use nse::edit::{
    EditContext, EditMethod, EditRequest, EditState, LedgerEntry, MemitSeq, Nse, ROOT_DIGEST,
    history,
};
use pollster::block_on;

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn ctx<'a>(t: &'a Tiny, method: &'a dyn EditMethod) -> EditContext<'a> {
    EditContext {
        tok: &t.tok,
        hp: &t.hp,
        templates: &t.templates,
        cov: &t.cov,
        method,
    }
}

fn edit(t: &mut Tiny, state: &mut EditState<CpuTensor>, reqs: &[EditRequest], m: &dyn EditMethod) {
    t.apply(state, reqs, m).unwrap();
}

/// The patch of `state` on `t`, with its weights digest, through the file format.
fn sealed(t: &Tiny, state: &EditState<CpuTensor>) -> Patch {
    let p = block_on(Patch::of_state("tiny", SHA, &t.hp, state, &t.model)).unwrap();
    Patch::from_bytes(&p.to_bytes(), "tiny.nsepatch").unwrap()
}

#[test]
fn a_continued_patch_holds_the_whole_history_and_replays_bit_for_bit() {
    let reqs = requests();
    // Run A: one NSE batch. Write its patch.
    let mut a = tiny(21);
    let mut state_a = EditState::new(&a.model, &TINY_LAYERS).unwrap();
    edit(&mut a, &mut state_a, &reqs[..1], &Nse);
    let patch_a = sealed(&a, &state_a);
    assert_eq!(patch_a.entries[0].parent, ROOT_DIGEST);

    // Run B, another process: the base model, patch A continued, one MEMIT-seq batch.
    let mut b = tiny(21);
    let mut state_b = EditState::new(&b.model, &TINY_LAYERS).unwrap();
    block_on(patch_a.apply(&mut b.model, &mut state_b, SHA)).unwrap();
    edit(&mut b, &mut state_b, &reqs[1..2], &MemitSeq);
    let patch_b = sealed(&b, &state_b);
    assert_eq!(patch_b.entries.len(), 2, "A's entry, then B's");
    assert_eq!(patch_b.entries[0], patch_a.entries[0]);
    assert_eq!(patch_b.entries[1].method, nse::edit::MethodKind::MemitSeq);
    assert_eq!(patch_b.entries[1].parent, patch_a.entries[0].digest());

    // One uninterrupted run of both batches gives the very same weights and P.
    let mut one = tiny(21);
    let mut state_one = EditState::new(&one.model, &TINY_LAYERS).unwrap();
    edit(&mut one, &mut state_one, &reqs[..1], &Nse);
    edit(&mut one, &mut state_one, &reqs[1..2], &MemitSeq);
    assert_eq!(
        down_projs(&b.model, &TINY_LAYERS),
        down_projs(&one.model, &TINY_LAYERS)
    );
    assert_eq!(state_b.p, state_one.p);

    // Replaying B alone on the base model reproduces them bit for bit (and its digest checks).
    let mut fresh = tiny(21);
    let mut state_f = EditState::new(&fresh.model, &TINY_LAYERS).unwrap();
    block_on(patch_b.apply(&mut fresh.model, &mut state_f, SHA)).unwrap();
    assert_eq!(
        down_projs(&fresh.model, &TINY_LAYERS),
        down_projs(&b.model, &TINY_LAYERS)
    );
    assert_eq!(state_f.p, state_b.p);
    assert_eq!(state_f.ledger, state_b.ledger);
}

#[test]
fn a_history_that_does_not_line_up_is_refused_and_nothing_changes() {
    let reqs = requests();
    let mut t = tiny(22);
    let base = down_projs(&t.model, &TINY_LAYERS);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    edit(&mut t, &mut state, &reqs[..1], &Nse);
    edit(&mut t, &mut state, &reqs[1..2], &Nse);
    let full = sealed(&t, &state);

    // The second entry alone: its parent (the first entry) is missing.
    let mut f = tiny(22);
    let mut fs = EditState::new(&f.model, &TINY_LAYERS).unwrap();
    let tail = Patch::new("tiny", SHA, &t.hp, full.entries[1..].to_vec());
    let err = block_on(tail.apply(&mut f.model, &mut fs, SHA))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not hold") && err.contains("missing"),
        "{err}"
    );
    assert_eq!(down_projs(&f.model, &TINY_LAYERS), base);
    assert!(fs.ledger.is_empty());

    // Out of order: decoding refuses it, naming the entry.
    let swapped = Patch::new(
        "tiny",
        SHA,
        &t.hp,
        vec![full.entries[1].clone(), full.entries[0].clone()],
    );
    let err = Patch::from_bytes(&swapped.to_bytes(), "swapped.nsepatch")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entry 2") && err.contains("out of order"),
        "{err}"
    );

    // A whole patch onto a state that already has edits of another history.
    let mut g = tiny(22);
    let mut gs = EditState::new(&g.model, &TINY_LAYERS).unwrap();
    edit(&mut g, &mut gs, &reqs[2..3], &Nse);
    let before = down_projs(&g.model, &TINY_LAYERS);
    let err = block_on(full.apply(&mut g.model, &mut gs, SHA))
        .unwrap_err()
        .to_string();
    assert!(err.contains("already applied"), "{err}");
    assert_eq!(down_projs(&g.model, &TINY_LAYERS), before);
    assert_eq!(gs.ledger.len(), 1);

    // A recorded weights digest that replay does not reproduce: rolled back, named.
    let mut wrong = full.clone();
    wrong.weights_sha256 = Some("f".repeat(64));
    let err = block_on(wrong.apply(&mut f.model, &mut fs, SHA))
        .unwrap_err()
        .to_string();
    assert!(err.contains("recorded ffffffffffff"), "{err}");
    assert_eq!(down_projs(&f.model, &TINY_LAYERS), base);
    assert!(fs.ledger.is_empty() && fs.p.values().all(|p| p.dense().iter().all(|&x| x == 0.0)));

    // Another base model: refused before anything is applied.
    let err = block_on(full.apply(&mut f.model, &mut fs, &"e".repeat(64)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not for the loaded model"), "{err}");
    assert_eq!(down_projs(&f.model, &TINY_LAYERS), base);
}

#[test]
fn undo_and_remove_entry_equal_the_runs_without_those_edits() {
    let reqs = requests();
    let mut t = tiny(23);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    for r in &reqs {
        edit(&mut t, &mut state, std::slice::from_ref(r), &Nse);
    }
    let all = sealed(&t, &state);

    // Remove entry 2 (index 1): entries 1 and 3 remain, 3 re-edited on top of 1.
    let mut m = tiny(23);
    let mut ms = EditState::new(&m.model, &TINY_LAYERS).unwrap();
    block_on(all.apply(&mut m.model, &mut ms, SHA)).unwrap();
    let c = ctx(&t, &Nse);
    block_on(history::remove_entry(
        &mut m.model,
        &mut ms,
        1,
        &c,
        &[&Nse],
        None,
        |_, _| {},
    ))
    .unwrap();
    let mut want = tiny(23);
    let mut ws = EditState::new(&want.model, &TINY_LAYERS).unwrap();
    edit(&mut want, &mut ws, &reqs[..1], &Nse);
    edit(&mut want, &mut ws, &reqs[2..3], &Nse);
    assert_eq!(
        down_projs(&m.model, &TINY_LAYERS),
        down_projs(&want.model, &TINY_LAYERS)
    );
    assert_eq!(ms.p, ws.p);
    assert_eq!(ms.ledger.len(), 2);
    assert_eq!(ms.ledger[1].parent, ms.ledger[0].digest());
    // The shortened history is a valid patch that replays to the same weights.
    let removed = sealed(&m, &ms);
    let mut r = tiny(23);
    let mut rs = EditState::new(&r.model, &TINY_LAYERS).unwrap();
    block_on(removed.apply(&mut r.model, &mut rs, SHA)).unwrap();
    assert_eq!(
        down_projs(&r.model, &TINY_LAYERS),
        down_projs(&want.model, &TINY_LAYERS)
    );

    // Undo the last entry: the state after the first one, bit for bit.
    ms.rewind_to(&mut m.model, 1).unwrap();
    let mut once = tiny(23);
    let mut os = EditState::new(&once.model, &TINY_LAYERS).unwrap();
    edit(&mut once, &mut os, &reqs[..1], &Nse);
    assert_eq!(
        down_projs(&m.model, &TINY_LAYERS),
        down_projs(&once.model, &TINY_LAYERS)
    );
    assert_eq!(ms.p, os.p);

    // Removing an entry that does not exist is an error that changes nothing.
    let before = down_projs(&m.model, &TINY_LAYERS);
    let err = block_on(history::remove_entry(
        &mut m.model,
        &mut ms,
        5,
        &c,
        &[&Nse],
        None,
        |_, _| {},
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("no entry 6"), "{err}");
    assert_eq!(down_projs(&m.model, &TINY_LAYERS), before);
}

#[test]
fn entries_that_do_not_fit_the_model_are_refused_before_anything_is_applied() {
    let reqs = requests();
    let mut t = tiny(24);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    edit(&mut t, &mut state, &reqs[..1], &Nse);
    let good: LedgerEntry = state.ledger[0].clone();
    let d_ff = t.model.config.d_ff;

    let mut f = tiny(24);
    let base = down_projs(&f.model, &TINY_LAYERS);
    let mut fs = EditState::new(&f.model, &TINY_LAYERS).unwrap();
    let mut refuse = |entry: LedgerEntry, want: &str| {
        // Through the file format: the crafted entry has a consistent digest, so decoding
        // accepts it and the model checks must catch it.
        let p = Patch::new("tiny", SHA, &t.hp, vec![entry]);
        let p = Patch::from_bytes(&p.to_bytes(), "crafted.nsepatch").unwrap();
        let err = block_on(p.apply(&mut f.model, &mut fs, SHA))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "want {want:?} in: {err}");
        assert_eq!(down_projs(&f.model, &TINY_LAYERS), base);
        assert!(fs.ledger.is_empty());
    };
    // Keys of a layer that is not edited (used to panic in add_to_p).
    let mut e = good.clone();
    let keys = e.p_keys.remove(&1).unwrap();
    e.p_keys.insert(0, keys);
    refuse(e, "keys of layer 0");
    // Keys whose length is not requests × d_ff (used to panic in the matmul, after the weights
    // had already changed).
    let mut e = good.clone();
    e.p_keys.get_mut(&2).unwrap().truncate(d_ff - 3);
    refuse(e, "keys of layer 2");
    // An update of layer 99, and one writing a neuron past d_ff.
    let mut e = good.clone();
    e.updates[0].layer = 99;
    refuse(e, "layer 99");
    let mut e = good.clone();
    e.updates[0].update.cols[0] = d_ff as u32 + 7;
    refuse(e, &format!("neuron {}", d_ff + 7));

    // Hyperparameters naming layer 99: no state can be built for them (used to panic).
    let err = EditState::new(&f.model, &[1, 99])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("layer 99") && err.contains("6 layers"),
        "{err}"
    );
    // …and a patch whose layers differ from the session's is refused.
    let mut hp = t.hp.clone();
    hp.layers = vec![1, 2, 4];
    let p = Patch::new("tiny", SHA, &hp, vec![]);
    let err = block_on(p.apply(&mut f.model, &mut fs, SHA))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 2, 4]"), "{err}");

    // NaN in an update is refused when decoding.
    let mut e = good;
    e.updates[0].update.y[0] = f64::NAN;
    let bytes = Patch::new("tiny", SHA, &t.hp, vec![e]).to_bytes();
    let err = Patch::from_bytes(&bytes, "nan.nsepatch")
        .unwrap_err()
        .to_string();
    assert!(err.contains("NaN"), "{err}");
}

/// `bytes` (a valid patch) with its manifest changed by `f` and the checksum made valid again,
/// so that the checks behind the checksum are reached.
fn resealed(bytes: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let json_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&bytes[20..20 + json_len]).unwrap();
    f(&mut manifest);
    let json = serde_json::to_vec(&manifest).unwrap();
    let mut out = bytes[..12].to_vec();
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[20 + json_len..bytes.len() - 32]);
    reseal_tail(out)
}

fn reseal_tail(mut body: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let sum: [u8; 32] = Sha256::digest(&body).into();
    body.extend_from_slice(&sum);
    body
}

#[test]
fn crafted_patch_files_get_named_errors_not_panics() {
    let reqs = requests();
    let mut t = tiny(25);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    edit(&mut t, &mut state, &reqs[..1], &Nse);
    let good = block_on(Patch::of_state("tiny", SHA, &t.hp, &state, &t.model))
        .unwrap()
        .to_bytes();
    assert!(Patch::from_bytes(&good, "good").is_ok());
    let err = |bytes: &[u8]| {
        Patch::from_bytes(bytes, "crafted.nsepatch")
            .unwrap_err()
            .to_string()
    };

    // A non-ASCII model hash (used to panic while the "wrong model" error was built).
    let e = err(&resealed(&good, |m| {
        m["model_sha256"] = "é".repeat(40).into()
    }));
    assert!(e.contains("64 hexadecimal"), "{e}");
    // An edited layer number: the manifest is covered by the checksum now.
    let mut flipped = good.clone();
    let at = flipped
        .windows(9)
        .position(|w| w == b"\"layer\":1")
        .unwrap()
        + 8;
    flipped[at] = b'4';
    assert!(err(&flipped).contains("checksum"));
    // An edited layer with a valid checksum: the entry no longer matches its digest.
    let e = err(&resealed(&good, |m| {
        m["entries"][0]["updates"][0]["layer"] = 4.into()
    }));
    assert!(e.contains("digest"), "{e}");
    // n · d overflowing, and sizes that do not agree.
    let e = err(&resealed(&good, |m| {
        m["entries"][0]["updates"][0]["n"] = (u64::MAX / 2).into()
    }));
    assert!(e.contains("inconsistent sizes"), "{e}");
    // Two arrays on the same bytes (a small file demanding huge allocations), one past the end,
    // one whose byte length overflows.
    let e = err(&resealed(&good, |m| {
        let r = m["entries"][0]["updates"][0]["r"].clone();
        m["entries"][0]["updates"][0]["y"] = r;
    }));
    assert!(e.contains("overlap"), "{e}");
    let e = err(&resealed(&good, |m| {
        m["entries"][0]["updates"][0]["r"]["len"] = 1_000_000_000u64.into()
    }));
    assert!(e.contains("past the end"), "{e}");
    let e = err(&resealed(&good, |m| {
        m["entries"][0]["updates"][0]["r"]["len"] = (u64::MAX / 4).into()
    }));
    assert!(e.contains("past the end"), "{e}");
    // Hyperparameters that make no sense, and a field of the wrong type.
    let e = err(&resealed(&good, |m| {
        m["hparams"]["layers"] = serde_json::json!([3, 1])
    }));
    assert!(e.contains("ascending"), "{e}");
    let e = err(&resealed(&good, |m| {
        m["entries"][0]["updates"][0]["layer"] = (-1).into()
    }));
    assert!(e.contains("manifest"), "{e}");
    // A manifest length pointing past the end, a truncated file, a version-1 file.
    let mut long = good[..good.len() - 32].to_vec();
    long[12..20].copy_from_slice(&(u64::MAX - 5).to_le_bytes());
    assert!(err(&reseal_tail(long)).contains("manifest length"));
    assert!(err(&good[..good.len() / 2]).contains("checksum"));
    assert!(err(&good[..15]).contains("truncated"));
    let mut v1 = good.clone();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    let e = err(&v1);
    assert!(e.contains("version-1") && e.contains("Re-create"), "{e}");
    let mut v9 = good;
    v9[8..12].copy_from_slice(&9u32.to_le_bytes());
    assert!(err(&v9).contains("format version 9"));
}
