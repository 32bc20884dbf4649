//! `nse eval --resume` (issue 14): a run stopped twice, mid-method and across the change of
//! method, and resumed gives the report of an uninterrupted run, bit for bit except timings; a
//! resume of another run, of a finished run, or with options of its own is refused.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn nse(args: &[&str], stop_after: Option<usize>) -> Output {
    nse_env(args, stop_after, None)
}

fn nse_env(args: &[&str], stop_after: Option<usize>, poison: Option<usize>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nse"));
    cmd.args(args);
    match poison {
        Some(b) => cmd.env("NSE_EVAL_POISON_BATCH", b.to_string()),
        None => cmd.env_remove("NSE_EVAL_POISON_BATCH"),
    };
    match stop_after {
        Some(k) => cmd.env("NSE_EVAL_STOP_AFTER_BATCHES", k.to_string()),
        None => cmd.env_remove("NSE_EVAL_STOP_AFTER_BATCHES"),
    };
    cmd.output().expect("running nse")
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The report without what differs between runs of the same numbers: timings and the
/// process's wall clock.
fn results(dir: &Path) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !k.contains("seconds") && k != "timing");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    strip(&mut v);
    v
}

#[test]
fn a_stopped_run_resumes_to_the_same_report() {
    let root: PathBuf = std::env::temp_dir().join(format!("nse-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (whole, parts) = (root.join("whole"), root.join("parts"));
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/zsre-first24.json");
    let run = |out: &Path| {
        vec![
            "eval".to_string(),
            "--dataset".into(),
            fixture.into(),
            "--n".into(),
            "4".into(),
            "--batch".into(),
            "2".into(),
            "--compare".into(),
            "nse,memit-seq".into(),
            "--checkpoint-every".into(),
            "2".into(),
            "--ppl-tokens".into(),
            "0".into(),
            "--backend".into(),
            "cpu".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let w = run(&whole);
    let o = nse(&args(&w), None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !whole.join("resume.json").exists(),
        "a finished run leaves no resume file"
    );

    // Stopped by a NaN in the weights before NSE's 2nd batch (the error names the batch and
    // the layer, and the 1st batch stays saved), then after MEMIT-seq's 1st (across the change
    // of method), then resumed to the end.
    let p = run(&parts);
    let o = nse_env(&args(&p), None, Some(2));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("batch 2 of 2: layer "), "{e}");
    assert!(e.contains("not finite"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(parts.join("resume.json")).unwrap()).unwrap();
    assert_eq!(saved["current"]["method"], "nse");
    assert_eq!(
        saved["current"]["done"]["batches"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(parts.join("resume-nse-1.nsepatch").exists());
    let resume = ["eval", "--resume", parts.to_str().unwrap()];
    let o = nse(&resume, Some(2));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("nse at batch 1"), "{}", stderr(&o));
    assert!(
        !parts.join("resume-nse-1.nsepatch").exists(),
        "old patches are removed"
    );
    let o = nse(&resume, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 method(s) finished, memit-seq at batch 1"),
        "{}",
        stderr(&o)
    );
    let (a, b) = (results(&whole), results(&parts));
    assert_eq!(a["methods"].as_array().unwrap().len(), 2);
    assert_eq!(
        a, b,
        "the resumed run's results differ from the uninterrupted run's"
    );

    // Refused: a finished run, options beside --resume, another run's fingerprint.
    let o = nse(&resume, None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("resume.json cannot be read"),
        "{}",
        stderr(&o)
    );
    let o = nse(
        &["eval", "--resume", parts.to_str().unwrap(), "--n", "4"],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("give it alone"), "{}", stderr(&o));

    let other = root.join("other");
    let o = nse(&args(&run(&other)), Some(1));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let file = other.join("resume.json");
    let mut saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    saved["fingerprint"]["model sha256"] = "0".repeat(64).into();
    saved["fingerprint"]["batch size"] = 5.into();
    std::fs::write(&file, saved.to_string()).unwrap();
    let o = nse(&["eval", "--resume", other.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("batch size: saved 5, now 2"), "{e}");
    assert!(e.contains("model sha256: saved \"000"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}
