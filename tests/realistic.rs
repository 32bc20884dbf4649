//! The realistic score (issue 14): `greedy_says` decides from one teacher-forced pass over the
//! prompt's and the answer's own tokens what token-by-token greedy generation with the KV cache
//! says, on the default model, for answers it says and answers it does not.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use nse::eval::realistic::{greedy_says, rate};
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
