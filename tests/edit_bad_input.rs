//! Bad edit input gets a clear error, and the model, `P` and the ledger stay exactly as they were
//! before the failed batch (weights compared bit for bit).

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::BTreeMap;

use common::tiny::{TINY_LAYERS, Tiny, down_projs, requests, tiny};
use nse::edit::{
    CovarianceSet, EditContext, EditRequest, EditState, Nse, TargetSpace, apply_batch,
};
use nse::model::Tokenizer;

/// Runs a batch that must fail; checks the message and that nothing changed.
fn assert_rejected(
    t: &mut Tiny,
    state: &mut EditState<nse::cpu::CpuTensor>,
    tok: &Tokenizer,
    cov: &CovarianceSet,
    reqs: &[EditRequest],
    needle: &str,
) {
    let weights = down_projs(&t.model, &TINY_LAYERS);
    let p = state.p.clone();
    let ledger = state.ledger.clone();
    let ctx = EditContext {
        tok,
        hp: &t.hp,
        templates: &t.templates,
        cov,
        method: &Nse,
    };
    let err = pollster::block_on(apply_batch(
        &mut t.model,
        state,
        &ctx,
        reqs,
        Default::default(),
        |_| {},
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(needle),
        "expected an error mentioning {needle:?}, got: {err}"
    );
    assert_eq!(
        down_projs(&t.model, &TINY_LAYERS),
        weights,
        "weights changed after: {err}"
    );
    assert_eq!(state.p, p);
    assert_eq!(state.ledger, ledger);
}

fn request(prompt: &str, subject: &str, target: &str) -> EditRequest {
    EditRequest {
        case_id: Some(7),
        prompt: prompt.into(),
        subject: subject.into(),
        target_new: target.into(),
        target_true: None,
    }
}

/// One good batch, so that "as it was" includes an earlier edit.
fn edit_one(t: &mut Tiny, state: &mut EditState<nse::cpu::CpuTensor>) {
    t.apply(state, &requests()[..1], &Nse).unwrap();
}

#[test]
fn invalid_requests_are_rejected_before_anything_changes() {
    let mut t = tiny(21);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let (tok, cov) = (t.tok.clone(), t.cov.clone());
    edit_one(&mut t, &mut state);

    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[request("The capital is", "France", "Paris")],
        "exactly one",
    );
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[request("{} is in {}", "France", "Paris")],
        "exactly one",
    );
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[request("{} is located in", "Paris", "  ")],
        "target is empty",
    );
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[request("{} is located in", " ", "Rome")],
        "subject is empty",
    );
    let r = request("{} is located in", "The Eiffel Tower", "Rome");
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[r.clone(), r],
        "same prompt and subject",
    );
    assert_rejected(&mut t, &mut state, &tok, &cov, &[], "empty");

    let err = EditRequest::from_sentence("The Louvre is in Paris", "Eiffel Tower", "Rome", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not occur in the prompt"), "{err}");
}

#[test]
fn a_subject_that_ends_inside_a_token_is_rejected_before_any_work() {
    // Issue 10: BPE merges the subject's end with the text after it, so the subject-last index
    // of the reference points past the sentence (a typo cut mid-word) or at a token holding the
    // next character too (CJK). Each is refused with the split, and nothing changes.
    let mut t = tiny(25);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let (tok, cov) = (t.tok.clone(), t.cov.clone());
    edit_one(&mut t, &mut state);
    let typo =
        EditRequest::from_sentence("I live in Washington", "Washingto", "Paris", None).unwrap();
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        std::slice::from_ref(&typo),
        r#"the subject "Washingto" ends inside the token " Washington""#,
    );
    let cjk = EditRequest::from_sentence("大数据中心位于", "大数", "北京", None).unwrap();
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[cjk],
        r#"the subject "大数" ends inside the token "数据""#,
    );
    // Among good requests, the bad one is named by its place in the batch.
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[requests()[1].clone(), typo],
        "1 of 2 requests cannot be edited:\n  request 1: the subject \"Washingto\"",
    );
}

#[test]
fn a_target_with_no_tokens_is_rejected() {
    // A tokenizer whose normaliser deletes every "x": the target "xxx" encodes to nothing.
    let mut t = tiny(22);
    let mut json: serde_json::Value = serde_json::from_str(&t.tok.to_json().unwrap()).unwrap();
    json["normalizer"] =
        serde_json::json!({"type": "Replace", "pattern": {"String": "x"}, "content": ""});
    let tok = Tokenizer::from_json(&json.to_string(), "x-eating tokenizer").unwrap();
    t.hp.target_space = TargetSpace::None;
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let cov = t.cov.clone();
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &[request("{} is made of", "The Eiffel Tower", "xxx")],
        "encodes to no token",
    );
}

#[test]
fn nan_in_z_is_rejected() {
    // A NaN in an upper block makes the z loss NaN.
    let mut t = tiny(23);
    t.model.weights.layers[5].up_proj.f32_mut()[3] = f32::NAN;
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let (tok, cov) = (t.tok.clone(), t.cov.clone());
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &requests()[..1],
        "NaN or infinite",
    );
}

#[test]
fn a_non_positive_definite_system_is_rejected_and_rolled_back() {
    // Layer 2's statistic is −10·I, so G is indefinite there; layer 1 has already been updated
    // when the solve of layer 2 fails, and the rollback must restore it.
    let mut t = tiny(24);
    let cov = negative_at_layer_2(&t);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let tok = t.tok.clone();
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &cov,
        &requests()[..1],
        "not positive definite",
    );
}

#[test]
fn a_batch_failing_after_others_rolls_back_to_them_bit_for_bit() {
    // The rollback rebuilds the weights from the originals and the ledger: after a good batch,
    // a batch whose second layer's solve fails must leave batch 1's weights exactly.
    let mut t = tiny(25);
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    let (tok, good) = (t.tok.clone(), t.cov.clone());
    let ctx = EditContext {
        tok: &tok,
        hp: &t.hp,
        templates: &t.templates,
        cov: &good,
        method: &Nse,
    };
    pollster::block_on(apply_batch(
        &mut t.model,
        &mut state,
        &ctx,
        &requests()[..1],
        Default::default(),
        |_| {},
    ))
    .unwrap();
    assert_eq!(state.ledger.len(), 1);
    let corrupt = negative_at_layer_2(&t);
    assert_rejected(
        &mut t,
        &mut state,
        &tok,
        &corrupt,
        &requests()[1..2],
        "not positive definite",
    );
}

/// The tiny model's statistics with layer 2's replaced by −10·I: `G` is indefinite there, so
/// the solve of layer 2 fails after layer 1 has been updated.
fn negative_at_layer_2(t: &Tiny) -> CovarianceSet {
    let f = t.model.config.d_ff;
    let mut m: BTreeMap<usize, Vec<f32>> = t.cov.matrices().clone();
    let neg: Vec<f32> = (0..f * f)
        .map(|i| if i % (f + 1) == 0 { -10.0 } else { 0.0 })
        .collect();
    m.insert(2, neg);
    CovarianceSet::new(m, 1, "corrupt")
}
