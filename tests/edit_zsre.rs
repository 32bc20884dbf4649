//! zsRE answers are long: dates, numbers and names of five to a dozen tokens (digits split one
//! by one). The KL prompt `"{subject} is a"` is often shorter than such a target, and only the
//! rewriting prompts carry it (issue 18).
//!
//! On the real model, on both backends, with a short z loop: an edit whose target has 9 tokens
//! optimises `z` (the loss falls), raises P(target) and is undone bit for bit. On the tiny random
//! Llama with the real tokenizer: 24 real zsRE records (`tests/data/`) edited sequentially in
//! batches, each batch closing most of the gap `‖z − h‖` of every request.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tiny::{TINY_LAYERS, tiny};
use nse::Backend;
use nse::edit::dataset::parse_cases;
use nse::edit::target::{KL_PROMPT, target_ids};
use nse::edit::{
    ContextTemplates, CovarianceSet, EditContext, EditRequest, EditState, Hparams, Nse, apply_batch,
};
use nse::eval::{EvalOptions, SequentialPlan, run_method, score_candidates};
use nse::model::{Model, Tokenizer};

/// The request of the report: its answer is 9 tokens, " 1 3 June 1 9 7 1".
fn golaghat() -> EditRequest {
    EditRequest::from_sentence(
        "What date is associated with Golaghat massacre?",
        "Golaghat massacre",
        "13 June 1971",
        None,
    )
    .unwrap()
}

/// The edited layers' `down_proj`, read back from any backend.
fn down_projs<B: Backend>(model: &Model<B>, layers: &[usize]) -> Vec<Vec<f32>> {
    layers
        .iter()
        .map(|&l| pollster::block_on(model.backend().read(&model.weights.layers[l].down_proj)))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// P(target) after the request's prompt, as `exp(−mean token NLL)`.
fn p_target<B: Backend>(model: &Model<B>, tok: &Tokenizer, r: &EditRequest) -> f32 {
    let pairs = [(r.sentence(), r.target_new.clone())];
    pollster::block_on(score_candidates(model, tok, &pairs)).unwrap()[0].prob()
}

/// One NSE edit of [`golaghat`] on the real model, then undo; checks every property on this
/// backend.
fn edit_and_undo<B: Backend>(mut model: Model<B>, tok: &Tokenizer) {
    let mut hp = Hparams::for_model("SmolLM2-135M-Instruct").unwrap();
    // A short z loop and one round: the same code path as the full edit, in a fraction of the time.
    hp.v_num_grad_steps = 8;
    hp.max_iterations = 2;
    let templates = ContextTemplates::new(hp.context_templates.clone().unwrap()).unwrap();
    let cov: CovarianceSet = common::setup_covariance(&hp, model.config.d_ff);
    let r = golaghat();
    let target = target_ids(tok, &r, hp.target_space).unwrap();
    let kl_prompt = KL_PROMPT.replace("{}", &r.subject);
    let kl_len = tok.encode(&kl_prompt).unwrap().len();
    assert!(
        target.len() >= 5 && kl_len < target.len(),
        "the case must have a target ({} tokens) longer than the KL prompt ({kl_len})",
        target.len()
    );
    let before = down_projs(&model, &hp.layers);
    let p_before = p_target(&model, tok, &r);
    let mut state = EditState::new(&model, &hp.layers).unwrap();
    let ctx = EditContext {
        tok,
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
        Default::default(),
        |_| {},
    ))
    .unwrap();

    // z: every rewriting prompt ends with the target but its last token; the KL prompt, last,
    // is shorter than the target and takes none.
    let z = &out.z[0];
    assert_eq!(z.target_ids, target);
    assert_eq!(z.prompts.last().unwrap(), &kl_prompt);
    let suffix = tok.decode(&target[..target.len() - 1]).unwrap();
    let n_rewrite = z.prompts.len() - 1;
    assert!(z.prompts[..n_rewrite].iter().all(|p| p.ends_with(&suffix)));
    assert!(
        z.steps.windows(2).all(|w| w[1].loss < w[0].loss),
        "{:?}",
        z.steps
    );
    let (first, last) = (z.steps[0], *z.steps.last().unwrap());
    assert!(
        last.prob > 1.5 * first.prob,
        "P(target) in the z loop: {first:?} → {last:?}"
    );
    // The update moved h towards z, and the weights towards the target.
    let resid = |i: usize| out.rounds[i].residual_norms[0];
    assert!(
        resid(1) < 0.8 * resid(0),
        "‖z − h‖ {} → {}",
        resid(0),
        resid(1)
    );
    let p_after = p_target(&model, tok, &r);
    assert!(
        p_after > 1.3 * p_before,
        "P(13 June 1971) {p_before} → {p_after}"
    );
    assert_eq!(state.ledger.len(), 1);

    // Undo: the original weights and P, bit for bit.
    state.rewind_to(&mut model, 0).unwrap();
    assert_eq!(down_projs(&model, &hp.layers), before, "undo is not exact");
    assert!(
        state
            .p
            .values()
            .all(|p| p.dense().iter().all(|&x| x == 0.0))
    );
    assert!(state.ledger.is_empty());
    assert_eq!(p_target(&model, tok, &r), p_before);
}

#[test]
fn multi_token_target_edits_and_undoes_on_cpu() {
    let (model, tok) = common::cpu_model();
    edit_and_undo(model, &tok);
}

#[test]
fn multi_token_target_edits_and_undoes_on_gpu() {
    let Some(gpu) = common::gpu() else { return };
    let loaded = common::load_default_model();
    let model = Model::upload(gpu, loaded.config, loaded.weights).unwrap();
    edit_and_undo(model, &loaded.tokenizer);
}

#[test]
fn zsre_records_with_long_answers_edit_sequentially() {
    let mut t = tiny(31);
    let cases = parse_cases(
        include_str!("data/zsre-first24.json"),
        "tests/data/zsre-first24.json",
    )
    .unwrap();
    assert_eq!(cases.len(), 24);
    let kl_shorter = cases
        .iter()
        .filter(|c| {
            let target = target_ids(&t.tok, &c.request, t.hp.target_space).unwrap();
            let kl = KL_PROMPT.replace("{}", &c.request.subject);
            target.len() >= 5 && t.tok.encode(&kl).unwrap().len() < target.len()
        })
        .count();
    assert!(
        kl_shorter >= 3,
        "only {kl_shorter} answers of 5 tokens or more that are longer than their KL prompt"
    );
    let plan = SequentialPlan {
        batch_size: 8,
        checkpoint_every: 3,
        eval: EvalOptions::default(),
    };
    let mut state = EditState::new(&t.model, &TINY_LAYERS).unwrap();
    // The vocabulary-sized head dominates the tiny model's z loop: two templates and four
    // evaluations keep the 24 edits to seconds.
    let mut hp = t.hp.clone();
    hp.v_num_grad_steps = 4;
    let templates = ContextTemplates::new(vec![
        vec!["{}".into()],
        vec![t.templates.groups[1][0].clone()],
    ])
    .unwrap();
    let ctx = EditContext {
        tok: &t.tok,
        hp: &hp,
        templates: &templates,
        cov: &t.cov,
        method: &Nse,
    };
    let run = pollster::block_on(run_method(
        &mut t.model,
        &mut state,
        &t.tok,
        &cases,
        &ctx,
        &plan,
        |_| {},
    ))
    .unwrap();
    assert_eq!(run.batches.len(), 3);
    assert_eq!(state.n_requests(), 24);
    assert_eq!(run.post.n_cases, 24);
    // Each batch wrote its requests: ‖z − h‖ of every one of them shrank, on average to about a
    // quarter (a solve over 48 neurons for 8 requests does not close every gap).
    let mut ratios = vec![];
    for (b, batch) in run.batches.iter().enumerate() {
        let start = &batch.rounds[0].residual_norms;
        for (i, (after, before)) in batch.residual_after.iter().zip(start).enumerate() {
            assert!(
                *after < 0.75 * before,
                "batch {b}, request {i}: ‖z − h‖ {before} → {after}"
            );
            ratios.push(after / before);
        }
    }
    let mean = ratios.iter().sum::<f32>() / ratios.len() as f32;
    assert!(mean < 0.4, "‖z − h‖ after / before: mean {mean}");
}
