//! Locating the subject's last token with the real tokenizer (issue 10), and the library's
//! request checks (issue 18) on crafted requests: every problem is found, with its record.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use nse::edit::check::CheckSpec;
use nse::edit::dataset::parse_records;
use nse::edit::subject::locate_subject;
use nse::edit::{ContextTemplates, EditRequest, TargetSpace};
use nse::model::Tokenizer;

fn tok() -> Tokenizer {
    common::load_default_model().tokenizer
}

fn token(tok: &Tokenizer, id: u32) -> String {
    tok.token_str(id).unwrap()
}

#[test]
fn a_subject_cut_mid_word_is_refused_with_the_split_it_found() {
    let tok = tok();
    let err = locate_subject(&tok, "I live in {}n", "Washingto")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#"the subject "Washingto" ends inside the token " Washington" of "I live in Washington""#)
            && err.contains(r#""I" | " live" | " in" | " Washington""#)
            && err.contains("type the whole word"),
        "{err}"
    );
    // The same mistake in the middle of a sentence.
    let err = locate_subject(&tok, "The {}ity of Paris", "univers")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#""univers" ends inside the token " university""#),
        "{err}"
    );
}

#[test]
fn a_subject_at_the_very_end_is_located_at_the_last_token() {
    let tok = tok();
    let s = locate_subject(&tok, "I live in {}", "Washington").unwrap();
    assert_eq!(s.text, "I live in Washington");
    assert_eq!(s.last, s.ids.len() - 1);
    assert_eq!(token(&tok, s.ids[s.last]), " Washington");
    // Text after the subject that BPE keeps apart: the index does not move.
    let s = locate_subject(&tok, "I live in {}, the capital", "Washington").unwrap();
    assert_eq!(token(&tok, s.ids[s.last]), " Washington");
    assert_eq!(token(&tok, s.ids[s.last + 1]), ",");
}

#[test]
fn a_subject_whose_end_merges_with_punctuation_keeps_the_reference_index() {
    // Real zsRE and CounterFact subjects: BPE merges their closing punctuation with the prompt's
    // (")?", ".,", ".'"). The token ends the subject and adds no word, so it is accepted at the
    // reference's index len(encode(prefix + subject)) − 1.
    let tok = tok();
    for (template, subject, last_token) in [
        ("What vessel type is {}?", "USS Bumper (SS-333)", ")?"),
        ("{}, whose headquarters are in", "Keshavarz F.C.", ".,"),
        ("{}'s profession is an", "Desi Arnaz, Jr.", ".'"),
    ] {
        let s = locate_subject(&tok, template, subject).unwrap();
        let prefix = &template[..template.find("{}").unwrap()];
        let reference = tok.encode(&format!("{prefix}{subject}")).unwrap().len() - 1;
        assert_eq!(s.last, reference, "{template:?} with {subject:?}");
        assert_eq!(token(&tok, s.ids[s.last]), last_token);
    }
}

#[test]
fn cjk_subjects_are_placed_only_where_a_token_ends() {
    let tok = tok();
    // "大数" followed by "据": BPE merges "数据" (data) into one token. The reference's
    // len(encode(prefix + subject)) − 1 = 1 would silently point at "数据", which holds the next
    // character too.
    let err = locate_subject(&tok, "{}据中心位于", "大数")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#"the subject "大数" ends inside the token "数据" of "大数据中心位于""#),
        "{err}"
    );
    // The whole word is placed, and the tokens up to its last one decode to exactly the subject.
    let s = locate_subject(&tok, "{}中心位于", "大数据").unwrap();
    assert_eq!(s.last, 1);
    assert_eq!(tok.decode(&s.ids[..=s.last]).unwrap(), "大数据");
    // Byte-level pieces of one character are not a merge across the boundary: "数" followed by
    // "中" ends at a token boundary.
    let s = locate_subject(&tok, "{}中心位于", "大数").unwrap();
    assert_eq!(tok.decode(&s.ids[..=s.last]).unwrap(), "大数");
}

fn request(prompt: &str, subject: &str, target: &str) -> EditRequest {
    EditRequest {
        case_id: None,
        prompt: prompt.into(),
        subject: subject.into(),
        target_new: target.into(),
        target_true: None,
    }
}

#[test]
fn the_check_finds_every_problem_of_every_record() {
    let tok = tok();
    let templates = ContextTemplates::new(vec![
        vec!["{}".into()],
        vec!["Because of this. {}".into(), "I think. {}".into()],
    ])
    .unwrap();
    let spec = CheckSpec {
        tok: &tok,
        templates: &templates,
        target_space: TargetSpace::Space,
        max_ctx: 24,
    };
    let good = request("{} is located in", "The Eiffel Tower", "Rome");
    assert!(spec.request_problems(&good).is_empty());
    // A nine-token target: the KL prompt "The Eiffel Tower is a" is shorter, which is fine.
    let long = request("{} was built on", "The Eiffel Tower", "13 June 1971");
    assert!(spec.request_problems(&long).is_empty());
    // Too long for a 24-token context once a template and the target are added.
    let too_long = request(
        "{} is located in the city that is the capital of the country that borders the sea of",
        "The Eiffel Tower",
        "Rome",
    );
    let p = spec.request_problems(&too_long);
    assert!(
        p.len() == 1 && p[0].contains("more than the model's context of 24"),
        "{p:?}"
    );

    let text = r#"[
      {"prompt": "{} is located in", "subject": "The Eiffel Tower", "target_new": "Rome"},
      {"prompt": "{} is located in", "subject": "The Eiffel Tower", "target_new": "Paris"},
      {"prompt": "I live in {}n", "subject": "Washingto", "target_new": "Paris"},
      {"prompt": "{} is located in", "subject": "The Eiffel Tower"},
      {"prompt": "{} is located in", "subject": "The Eiffel Tower", "target_new": "Rome"},
      {"prompt": "{} is located in", "subject": "The Eiffel Tower", "target_new": " "}
    ]"#;
    let records = parse_records(text, "crafted.json").unwrap();
    let report = spec.check_records(&records, Some(4), false);
    let lines = report.lines();
    assert_eq!(report.n_bad(), 4, "{lines:#?}");
    assert!(
        lines[0].starts_with("record 1: it edits the same prompt and subject"),
        "{lines:#?}"
    );
    assert!(
        lines[0].contains("as record 0 of the same batch of 4"),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("record 2: the subject \"Washingto\" ends inside"),
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with("record 3: missing field `target_new`"),
        "{lines:#?}"
    );
    // Record 4 repeats record 0, but in the next batch: allowed.
    assert!(
        lines[3].starts_with("record 5: ") && lines[3].contains("target is empty"),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 4);
    let err = report.into_result().unwrap_err().to_string();
    assert!(
        err.starts_with("4 of 6 records cannot be edited:\n  record 1: "),
        "{err}"
    );
}
