//! `nse check` lists every problem of a request file with its record number and exits non-zero;
//! on a good file it says OK with the counts. `nse edit` and `nse eval` run the same check after
//! loading the model and refuse to start: nothing is written, and every bad record is named.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `nse` with `args` on the default model.
fn nse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nse"))
        .args(args)
        .args(["--model", &common::model_path().display().to_string()])
        .output()
        .expect("running nse")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nse-check-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture() -> Vec<Value> {
    serde_json::from_str(include_str!("data/zsre-first24.json")).unwrap()
}

fn write(dir: &Path, name: &str, records: &[Value]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string(records).unwrap()).unwrap();
    p.display().to_string()
}

/// The 24 zsRE records with three that cannot be edited: a subject cut mid-word (3), a
/// duplicate in the same batch of 10 (17 repeats 16), and a subject whose last character BPE
/// merges with the next one (22).
fn with_bad_records() -> Vec<Value> {
    let mut records = fixture();
    records[3]["subject"] = "Munic".into();
    records[17] = records[16].clone();
    records[22]["src"] = CJK_PROMPT.into();
    records[22]["subject"] = CJK_SUBJECT.into();
    records
}

/// A CJK question whose subject's last character merges with the character after it.
const CJK_PROMPT: &str = "大数据中心位于哪里?";
const CJK_SUBJECT: &str = "大数";

fn assert_lists_the_bad_records(err: &str, n_bad: usize) {
    assert!(
        err.contains(&format!("{n_bad} of 24 records cannot be edited")),
        "{err}"
    );
    assert!(
        err.contains("record 3:") && err.contains("\"Munic\" ends inside the token"),
        "{err}"
    );
    assert!(
        err.contains("record 17:") && err.contains("as record 16 of the same batch of 10"),
        "{err}"
    );
    assert!(
        err.contains("record 22:") && err.contains(&format!("{CJK_SUBJECT:?} ends inside")),
        "{err}"
    );
}

#[test]
fn check_lists_every_problem_and_says_ok_on_a_good_file() {
    let dir = scratch("check");
    let good = write(&dir, "good.json", &fixture());
    let out = nse(&["check", "--requests", &good, "--batch", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("OK: all 24 records can be edited (24 zsRE)")
            && stdout.contains("no duplicate within batches of 8"),
        "{stdout}"
    );

    // Schema problems are listed with the others, not instead of them.
    let mut records = with_bad_records();
    records[9].as_object_mut().unwrap().remove("loc");
    let bad = write(&dir, "bad.json", &records);
    let out = nse(&["check", "--requests", &bad, "--batch", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_lists_the_bad_records(&err, 4);
    assert!(err.contains("record 9: missing field `loc`"), "{err}");
}

#[test]
fn edit_and_eval_refuse_to_start_on_bad_records() {
    let dir = scratch("refuse");
    let bad = write(&dir, "bad.json", &with_bad_records());
    let out_dir = dir.join("out");
    let out_arg = out_dir.display().to_string();
    // A covariance directory that does not exist: if the check let the run start, it would fail
    // there with another message instead of listing the records.
    let no_cov = dir.join("no-cov").display().to_string();
    for cmd in [
        vec!["edit", "--requests", &bad],
        vec!["eval", "--dataset", &bad, "--ppl-tokens", "0"],
    ] {
        let mut args = cmd.clone();
        args.extend(["--batch", "10", "--backend", "cpu", "--cov-dir", &no_cov]);
        args.extend(["--out", &out_arg]);
        let out = nse(&args);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_lists_the_bad_records(&err, 3);
        assert!(err.contains("Nothing was edited"), "{err}");
        assert!(!out_dir.exists(), "{cmd:?} wrote {}", out_dir.display());
    }
}

#[test]
fn a_typo_in_the_subject_is_an_error_not_a_panic() {
    // Issue 10: this request panicked at model/batch.rs ("sequence 0 has no position 5").
    let dir = scratch("typo");
    let typo = serde_json::json!([{
        "prompt": "I live in Washington", "subject": "Washingto", "target_new": "Paris"
    }]);
    let file = write(&dir, "typo.json", typo.as_array().unwrap());
    let out = nse(&[
        "edit",
        "--requests",
        &file,
        "--backend",
        "cpu",
        "--out",
        &dir.join("out").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("record 0: the subject \"Washingto\" ends inside the token \" Washington\""),
        "{err}"
    );
}
