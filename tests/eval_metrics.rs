//! Evaluation metrics on the real default model and tokenizer (the pure arithmetic is unit
//! tested in `src/eval/*`): zsRE probes built by hand, a CounterFact case the model gets right,
//! the perplexity slice, seeded fluency generations.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use nse::edit::dataset::parse_cases;
use nse::edit::{EditState, Probes};
use nse::eval::collapse::{PPL_WINDOW, PerplexitySlice, perplexity};
use nse::eval::counterfact::counterfact_cases;
use nse::eval::fluency::{FluencyOptions, ngram_entropy, sample_text};
use nse::eval::zsre::{answer_probes, last_token_argmax, zsre_cases};
use nse::eval::{Aggregate, EvalOptions, evaluate};
use nse::model::{Sampling, generate};

#[test]
fn zsre_probes_follow_the_reference_by_hand() {
    let (model, tok) = common::cpu_model();
    // " Walter Sobchak": one probe per answer token, each input the prompt plus the decoded
    // tokens before it (spec §2.3 for the NQ neighbourhood: `loc + "?" + decode(a_<p)`).
    let answer = tok.encode(" Walter Sobchak").unwrap();
    assert!(answer.len() >= 3, "{answer:?}");
    let loc = "nq question: john goodman's character in the big lebowski";
    let probes = answer_probes(&tok, &format!("{loc}?"), "Walter Sobchak").unwrap();
    assert_eq!(probes.len(), answer.len());
    assert_eq!(probes[0].input, format!("{loc}?"));
    assert_eq!(probes[1].input, format!("{loc}? Walter"));
    for (p, t) in probes.iter().zip(&answer) {
        // Each expected id is the first token of the piece encoded alone: for these pieces it is
        // the piece's own token.
        assert_eq!(p.expected, *t, "{p:?}");
        assert!(p.input.starts_with(loc));
    }
    // The prediction is the argmax after the input's last token: the greedy next token.
    let pred =
        pollster::block_on(last_token_argmax(&model, &tok, &[probes[0].input.clone()])).unwrap();
    let ids = tok.encode(&probes[0].input).unwrap();
    let greedy = pollster::block_on(generate(&model, &ids, 1, Sampling::Greedy, |_| {})).unwrap();
    assert_eq!(pred[0], greedy.ids[0]);

    // A zsRE record end to end: accuracies are fractions of the answer's positions.
    let text = common::data_text("zsre/zsre_mend_train-1k.json");
    let cases = parse_cases(&text, "zsre").unwrap();
    let cases = &cases[..2];
    assert!(matches!(cases[0].probes, Probes::Zsre { .. }));
    let scores = pollster::block_on(zsre_cases(&model, &tok, cases)).unwrap();
    for s in &scores {
        for (acc, correct) in [
            (s.rewrite_acc, &s.rewrite_correct),
            (s.paraphrase_acc, &s.paraphrase_correct),
            (s.neighborhood_acc, &s.neighborhood_correct),
        ] {
            let want = correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64;
            assert_eq!(acc, want);
        }
    }
    assert_eq!(scores[0].neighborhood_correct.len(), answer.len());
    let state = EditState::new(&model, &[3]).unwrap();
    let report = pollster::block_on(evaluate(
        &model,
        &tok,
        cases,
        &state,
        &EvalOptions::default(),
        |_| {},
    ))
    .unwrap();
    let Aggregate::Zsre(agg) = report.agg else {
        panic!("a zsRE dataset gets zsRE metrics")
    };
    let mean = 50.0 * (scores[0].rewrite_acc + scores[1].rewrite_acc);
    assert!((agg.rewrite_acc - mean).abs() < 1e-9);
}

#[test]
fn counterfact_prefers_the_true_capital() {
    let (model, tok) = common::cpu_model();
    // "Paris" as the new target, "London" as the "true" one: the model prefers Paris, so the
    // rewrite counts as a success with a positive margin, on the paraphrase too; the
    // neighbourhood prompt asks for London's country, where the true target must win.
    let text = r#"[{"case_id": 1, "prompt": "The capital of France is", "subject": "France",
        "target_new": "Paris", "ground_truth": "London",
        "rephrase_prompt": "France's capital city is called",
        "locality_prompt": "The capital of the United Kingdom is"}]"#;
    let cases = parse_cases(text, "inline").unwrap();
    let c = &pollster::block_on(counterfact_cases(&model, &tok, &cases)).unwrap()[0];
    eprintln!("{c:?}");
    assert_eq!(c.rewrite_success, 1.0);
    assert!(c.rewrite_diff > 0.0);
    assert_eq!(c.neighborhood_success, 1.0, "London beats Paris for the UK");
    let p_new = (-f64::from(c.nll.rewrite[0].target_new)).exp();
    let p_true = (-f64::from(c.nll.rewrite[0].target_true)).exp();
    assert!((c.rewrite_diff - (p_new - p_true)).abs() < 1e-12);
}

#[test]
fn perplexity_slice_is_the_last_article() {
    let (model, tok) = common::cpu_model();
    let text = common::wikitext();
    let slice = PerplexitySlice::wikitext_tail(&text, &tok, 4096, PPL_WINDOW, "wikitext").unwrap();
    assert_eq!(slice.tokens, 4096);
    assert_eq!(slice.windows.len(), 4);
    assert!(slice.windows.iter().all(|w| w.len() == PPL_WINDOW));
    assert!(
        slice.description.contains("The Hustler"),
        "{}",
        slice.description
    );
    // The slice starts at the final article's heading line.
    let heading = tok.encode(" = The Hustler ( film ) =").unwrap();
    assert_eq!(&slice.windows[0][..heading.len()], &heading[..]);

    // A short slice keeps the test fast; ordinary Wikipedia text has a moderate perplexity.
    let short = PerplexitySlice::wikitext_tail(&text, &tok, 256, PPL_WINDOW, "wikitext").unwrap();
    assert_eq!(short.windows, vec![slice.windows[0][..256].to_vec()]);
    let ppl = pollster::block_on(perplexity(&model, &short)).unwrap();
    eprintln!("perplexity on 256 tokens: {ppl:.2}");
    assert!((3.0..200.0).contains(&ppl), "{ppl}");

    // A model with a shorter context gets shorter windows of the same tokens (tiny GPT-2: 128).
    let narrow = PerplexitySlice::wikitext_tail(&text, &tok, 256, 100, "wikitext").unwrap();
    assert_eq!(
        narrow.windows,
        [
            &slice.windows[0][..100],
            &slice.windows[0][100..200],
            &slice.windows[0][200..256]
        ]
    );
    assert!(
        narrow.description.ends_with("windows of 100"),
        "{}",
        narrow.description
    );
    assert!(PerplexitySlice::wikitext_tail(&text, &tok, 256, 1, "wikitext").is_err());
}

#[test]
fn fluency_generations_are_seeded() {
    let (model, tok) = common::cpu_model();
    let opts = FluencyOptions {
        max_out_len: 40,
        ..FluencyOptions::reference(1, 0)
    };
    let prompt = "The mother tongue of Danielle Darrieux is";
    let a = pollster::block_on(sample_text(&model, &tok, prompt, &opts, 7)).unwrap();
    let b = pollster::block_on(sample_text(&model, &tok, prompt, &opts, 7)).unwrap();
    let c = pollster::block_on(sample_text(&model, &tok, prompt, &opts, 8)).unwrap();
    eprintln!("{a:?}\n{c:?}");
    assert_eq!(a, b, "same seed, same text");
    assert_ne!(a, c, "another seed, another text");
    assert!(a.starts_with(prompt));
    // 40 tokens in all, prompt included (9 tokens): about 30 new words and pieces.
    assert!(a.len() > prompt.len() + 60, "{a:?}");
    assert!(ngram_entropy(&a) > 3.0, "{}", ngram_entropy(&a));
}

#[test]
fn shared_probe_sequences_predict_what_each_probe_alone_does() {
    // last_token_argmax runs the probes of one answer as one sequence (each probe's tokens
    // extend the previous one's); every prediction must be the probe's own greedy next token.
    let (model, tok) = common::cpu_model();
    let text = common::data_text("zsre/zsre_mend_train-1k.json");
    let cases = parse_cases(&text, "zsre").unwrap();
    let mut inputs = vec![];
    for c in &cases[..6] {
        for kind in nse::eval::zsre::case_probes(&tok, c).unwrap() {
            inputs.extend(kind.into_iter().map(|p| p.input));
        }
    }
    assert!(inputs.len() >= 40, "{} probes", inputs.len());
    let together = pollster::block_on(last_token_argmax(&model, &tok, &inputs)).unwrap();
    let alone: Vec<u32> = inputs
        .iter()
        .map(|i| {
            let ids = tok.encode(i).unwrap();
            pollster::block_on(generate(&model, &ids, 1, Sampling::Greedy, |_| {}))
                .unwrap()
                .ids[0]
        })
        .collect();
    assert_eq!(together, alone);
}
