//! Editing across runs on the command line, on the default model: `nse edit --patch A` writes one
//! history (A's edit, then the new one) that `generate`, `patch show|verify|undo|remove` use,
//! bit-exact against runs that never had the removed edits.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nse::edit::patch::Patch;

/// Runs `nse ARGS` on the cpu backend; returns its output.
fn nse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nse"))
        .args(args)
        .output()
        .expect("running nse")
}

/// Runs `nse ARGS`, which must succeed; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = nse(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "nse {args:?} failed:\n{stderr}\n{stdout}"
    );
    stdout
}

/// Runs `nse ARGS`, which must fail without a panic; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = nse(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "nse {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn read(dir: &Path) -> Patch {
    let file = dir.join("patch.nsepatch");
    Patch::from_bytes(&std::fs::read(&file).unwrap(), "test").unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_history_continued_on_the_command_line_is_one_faithful_patch() {
    let dir: PathBuf = std::env::temp_dir().join(format!("nse-patch-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let first = write(
        "first.json",
        r#"[{"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux", "target_new": "English", "target_true": "French"}]"#,
    );
    let second = write(
        "second.json",
        r#"[{"prompt": "{} is located in the city of", "subject": "The Eiffel Tower", "target_new": "Rome", "target_true": "Paris"}]"#,
    );
    let (a, b, c, d, e) = (
        dir.join("A"),
        dir.join("B"),
        dir.join("C"),
        dir.join("D"),
        dir.join("E"),
    );
    let cpu = ["--backend", "cpu"];
    let edit = |requests: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec!["edit", "--requests", s(requests), "--out", s(out)];
        args.extend(cpu);
        args.extend(extra);
        ok(&args)
    };

    edit(&first, &a, &[]);
    let out = edit(&second, &b, &["--patch", s(&a)]);
    assert!(out.contains("1 from the continued patch + 1 new"), "{out}");
    let (pa, pb) = (read(&a), read(&b));
    assert_eq!(pb.entries.len(), 2);
    assert_eq!(pb.entries[0], pa.entries[0], "A's entry is kept as it was");
    assert_eq!(pb.entries[1].parent, pa.entries[0].digest());

    // Generating with B keeps A's edit.
    let out = ok(&[
        "generate",
        "--backend",
        "cpu",
        "--patch",
        s(&b),
        "--prompt",
        "The mother tongue of Danielle Darrieux is",
        "--max-tokens",
        "2",
    ]);
    assert!(out.contains("English"), "{out}");

    let out = ok(&["patch", "show", s(&b)]);
    assert!(
        out.contains("#1 nse") && out.contains("#2 nse") && out.contains("Danielle Darrieux"),
        "{out}"
    );
    assert!(
        out.contains("P(new) 0.") && out.contains("neurons changed per layer"),
        "{out}"
    );
    let out = ok(&["patch", "verify", s(&b), "--backend", "cpu"]);
    assert!(out.contains("reproduces the recorded weights"), "{out}");

    // Undo the last entry: exactly A's weights. Remove the first: exactly a run of the second alone.
    ok(&[
        "patch",
        "undo",
        s(&b),
        "--last",
        "1",
        "--out",
        s(&c),
        "--backend",
        "cpu",
    ]);
    assert_eq!(read(&c).weights_sha256, pa.weights_sha256);
    assert_eq!(read(&c).entries, pa.entries);
    ok(&[
        "patch",
        "remove",
        s(&b),
        "--entry",
        "1",
        "--out",
        s(&d),
        "--backend",
        "cpu",
    ]);
    edit(&second, &e, &[]);
    let (pd, pe) = (read(&d), read(&e));
    assert_eq!(pd.entries.len(), 1);
    assert_eq!(
        pd.weights_sha256, pe.weights_sha256,
        "remove = a run without the entry"
    );
    assert_eq!(pd.entries[0].updates, pe.entries[0].updates);

    // Refused, naming the problem: B's second entry alone (its parent is missing), a continued
    // run with other hyperparameters, and commands that must start from the base model.
    let tail = Patch::new(
        &pb.model_name,
        &pb.model_sha256,
        &pb.hparams,
        pb.entries[1..].to_vec(),
    );
    let tail_file = dir.join("tail.nsepatch");
    std::fs::write(&tail_file, tail.to_bytes()).unwrap();
    let err = fails(&["patch", "verify", s(&tail_file), "--backend", "cpu"]);
    assert!(err.contains("no weights digest"), "{err}");
    let err = fails(&[
        "generate",
        "--backend",
        "cpu",
        "--patch",
        s(&tail_file),
        "--prompt",
        "x",
    ]);
    assert!(err.contains("missing"), "{err}");
    let mut hp = pb.hparams.clone();
    hp.v_num_grad_steps += 1;
    let hp_file = write("hp.json", &serde_json::to_string(&hp).unwrap());
    let err = fails(&[
        "edit",
        "--requests",
        s(&second),
        "--out",
        s(&dir.join("F")),
        "--backend",
        "cpu",
        "--patch",
        s(&b),
        "--hparams",
        s(&hp_file),
    ]);
    assert!(err.contains("`v_num_grad_steps`"), "{err}");
    let err = fails(&["patch", "undo", s(&b), "--last", "3", "--out", s(&c)]);
    assert!(err.contains("1..=2"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
