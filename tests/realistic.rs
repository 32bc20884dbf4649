//! The realistic score (issue 14): `greedy_says` decides from one teacher-forced pass over the
//! prompt's and the answer's own tokens what token-by-token greedy generation with the KV cache
//! says, on the default model, for answers it says and answers it does not.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use nse::eval::CandidateScore;
use nse::eval::realistic::{greedy_says, greedy_says_scored, rate};
use nse::eval::score_candidates;
use nse::model::{Sampling, generate};

#[test]
fn greedy_says_is_what_generation_says() {
    let (model, tok) = common::cpu_model();
    let mut pairs: Vec<(String, String)> = vec![];
    // Prompts of the committed CounterFact data with both of their candidates, then the
    // model's own greedy continuations (which it must be found to say), one and three tokens.
    let cases = common::counterfact_edit_cases(8);
    for c in &cases {
        let r = &c.request;
        pairs.push((r.sentence(), r.target_new.clone()));
        pairs.push((r.sentence(), r.target_true.clone().unwrap()));
    }
    for (i, c) in cases.iter().enumerate() {
        let prompt = c.request.sentence();
        let ids = tok.encode(&prompt).unwrap();
        let n = 1 + 2 * (i % 2);
        let g = pollster::block_on(generate(&model, &ids, n, Sampling::Greedy, |_| {})).unwrap();
        let said = tok.decode(&g.ids).unwrap();
        if said.starts_with(' ')
            && said.len() > 1
            && tok.encode_continuation(&said).unwrap() == g.ids
        {
            pairs.push((prompt, said.trim_start().to_string()));
        }
    }
    let got = pollster::block_on(greedy_says(&model, &tok, &pairs)).unwrap();
    let mut want = vec![];
    for (prompt, answer) in &pairs {
        let ids = tok.encode(prompt).unwrap();
        let t = tok.encode_continuation(&format!(" {answer}")).unwrap();
        let g =
            pollster::block_on(generate(&model, &ids, t.len(), Sampling::Greedy, |_| {})).unwrap();
        want.push(g.ids == t);
    }
    assert_eq!(got, want, "{pairs:?}");
    let (yes, no) = (
        want.iter().filter(|&&w| w).count(),
        want.iter().filter(|&&w| !w).count(),
    );
    assert!(
        yes >= 4 && no >= 8,
        "both outcomes must be exercised: {yes} said, {no} not"
    );
    assert_eq!(rate(&[true, false, true, true]), 0.75);
    assert_eq!(rate(&[]), 0.0);
}

#[test]
fn scored_prompts_take_their_answer_from_the_teacher_forced_pass() {
    let (model, tok) = common::cpu_model();
    let mut pairs: Vec<(String, String)> = vec![];
    for c in &common::counterfact_edit_cases(8) {
        let r = &c.request;
        pairs.push((r.sentence(), r.target_new.clone()));
        pairs.push((r.sentence(), r.target_true.clone().unwrap()));
    }
    let scored = pollster::block_on(score_candidates(&model, &tok, &pairs)).unwrap();
    let want = pollster::block_on(greedy_says(&model, &tok, &pairs)).unwrap();
    let got = pollster::block_on(greedy_says_scored(&model, &tok, &pairs, &scored)).unwrap();
    assert_eq!(got, want, "{pairs:?}");
    assert!(
        want.iter().any(|&w| w) && want.iter().any(|&w| !w),
        "both outcomes must be exercised: {want:?}"
    );

    // With every score's verdict flipped, the answers follow the scores: each CounterFact
    // prompt took the shortcut (no second pass decided it).
    let flipped: Vec<CandidateScore> = scored
        .iter()
        .map(|s| CandidateScore {
            argmax_all: !s.argmax_all,
            ..*s
        })
        .collect();
    let got = pollster::block_on(greedy_says_scored(&model, &tok, &pairs, &flipped)).unwrap();
    assert_eq!(got, want.iter().map(|w| !w).collect::<Vec<_>>());

    // A tie at the top of a row, or a prompt that is not the scored one (a trailing space),
    // goes through the greedy pass: the flipped verdicts are not used.
    let tied: Vec<CandidateScore> = flipped
        .iter()
        .map(|s| CandidateScore {
            top_tied: true,
            ..*s
        })
        .collect();
    let got = pollster::block_on(greedy_says_scored(&model, &tok, &pairs, &tied)).unwrap();
    assert_eq!(got, want);
    let spaced: Vec<(String, String)> = pairs
        .iter()
        .map(|(p, a)| (format!("{p} "), a.clone()))
        .collect();
    let want_spaced = pollster::block_on(greedy_says(&model, &tok, &spaced)).unwrap();
    let got = pollster::block_on(greedy_says_scored(&model, &tok, &spaced, &flipped)).unwrap();
    assert_eq!(got, want_spaced);

    let short = pollster::block_on(greedy_says_scored(&model, &tok, &pairs, &scored[1..]));
    assert!(
        short
            .unwrap_err()
            .to_string()
            .contains("teacher-forced scores for 16 prompts"),
    );
}
