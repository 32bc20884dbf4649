//! `nse eval` rejects bad input with a message that says what to do, before loading a model.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

use std::process::Command;

fn data(rel: &str) -> String {
    format!("{}/data/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `nse eval` with `args` (plus `--out`) and returns its stderr; it must fail.
fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nse"))
        .arg("eval")
        .args(args)
        .args([
            "--out",
            &std::env::temp_dir()
                .join("nse-eval-cli-test")
                .display()
                .to_string(),
        ])
        .output()
        .expect("running nse");
    assert!(!out.status.success(), "nse eval {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_is_explained() {
    let cf = data("counterfact_easyedit/counterfact-edit.json");
    let dir = std::env::temp_dir().join("nse-eval-cli-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    let err = fails(&["--dataset", &cf, "--batch", "0"]);
    assert!(err.contains("batch size must be at least 1"), "{err}");
    let err = fails(&["--dataset", &cf, "--checkpoint-every", "0"]);
    assert!(err.contains("checkpoint interval"), "{err}");
    let err = fails(&["--dataset", &cf, "--n", "20000"]);
    assert!(
        err.contains("--n 20000") && err.contains("10000 records"),
        "{err}"
    );
    let err = fails(&["--dataset", &cf, "--n", "0"]);
    assert!(err.contains("--n must be at least 1"), "{err}");
    let err = fails(&[
        "--dataset",
        &cf,
        "--method",
        "nse",
        "--compare",
        "nse,memit-seq",
    ]);
    assert!(err.contains("either --method or --compare"), "{err}");
    let err = fails(&["--dataset", &cf, "--compare", "nse,rome"]);
    assert!(err.contains("unknown method \"rome\""), "{err}");

    let err = fails(&["--dataset", &write("empty.json", "[]")]);
    assert!(err.contains("no records"), "{err}");
    let missing = r#"[{"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is",
        "subject": "Danielle Darrieux", "target_new": "English", "ground_truth": "French",
        "rephrase_prompt": "r"}]"#;
    let err = fails(&["--dataset", &write("missing.json", missing)]);
    assert!(
        err.contains("record 0") && err.contains("locality_prompt"),
        "{err}"
    );
    let plain = r#"[{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome"}]"#;
    let err = fails(&["--dataset", &write("plain.json", plain)]);
    assert!(err.contains("CounterFact or zsRE records"), "{err}");
    let err = fails(&["--dataset", &dir.join("absent.json").display().to_string()]);
    assert!(err.contains("absent.json"), "{err}");
}
