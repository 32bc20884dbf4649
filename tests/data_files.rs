//! The committed run-time data (`data/`) and how `nse` finds it: the README's table, the sums
//! file and the files agree; `scripts/check-data.sh` refuses a wrong or missing file; a
//! `--data-dir` or `$NSE_DATA` that does not exist or lacks a file, and a missing default model,
//! get errors naming what is missing. No model is loaded.

// Native only (files, processes): in wasm32 this test crate is empty, and the browser tests are
// tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nse-data-files-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sha256sum` lines: relative path → sum.
fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sum, rel) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (rel.to_string(), sum.to_string())
        })
        .collect()
}

/// The README's table rows: first column `` `path` ``, last column `` `sha256` ``.
fn readme_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let unquote = |c: &str| c.trim_matches('`').to_string();
            (unquote(cells[0]), unquote(cells[cells.len() - 1]))
        })
        .collect()
}

fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else {
            let rel = path.strip_prefix(base).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn readme_sums_file_and_files_agree() {
    let data = root().join("data");
    let sums = parse_sums(&std::fs::read_to_string(data.join("nse-data.sha256")).unwrap());
    let readme = readme_sums(&std::fs::read_to_string(data.join("README.md")).unwrap());
    assert_eq!(
        readme, sums,
        "data/README.md's table and data/nse-data.sha256"
    );
    let mut files = vec![];
    files_under(&data, &data, &mut files);
    files.retain(|f| f != "README.md" && f != "nse-data.sha256");
    files.sort();
    assert_eq!(
        files,
        sums.keys().cloned().collect::<Vec<_>>(),
        "every file in data/ has a sum"
    );
    for (rel, want) in &sums {
        let bytes = std::fs::read(data.join(rel)).unwrap();
        assert_eq!(
            &nse::model::load::sha256_hex(&[&bytes]),
            want,
            "data/{rel} (`git checkout -- data/{rel}` restores it)"
        );
    }
}

#[test]
fn check_data_refuses_a_wrong_or_missing_file() {
    let dir = scratch("check");
    std::fs::write(dir.join("a.txt"), "hello\n").unwrap();
    // sha256 of "hello\n", computed independently (`printf 'hello\n' | sha256sum`).
    let hello = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let wrong = "0".repeat(64);
    let run = |sums: String| {
        std::fs::write(dir.join("nse-data.sha256"), sums).unwrap();
        Command::new("bash")
            .arg(root().join("scripts/check-data.sh"))
            .arg(&dir)
            .output()
            .unwrap()
    };
    let ok = run(format!("{hello}  a.txt\n"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = run(format!("{wrong}  a.txt\n{hello}  sub/b.txt\n"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    let a = dir.join("a.txt").display().to_string();
    assert!(
        err.contains(&format!("{a} has sha256 {hello}, expected {wrong}")),
        "{err}"
    );
    assert!(err.contains("git checkout -- data/a.txt"), "{err}");
    let b = dir.join("sub/b.txt").display().to_string();
    assert!(
        err.contains(&format!("{b} is missing (expected sha256 {hello})")),
        "{err}"
    );
}

/// Runs `nse ARGS` in `cwd` without $NSE_DATA / $NSE_MODEL (plus `env`); it must fail. Returns
/// stderr.
fn nse_fails(cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nse"));
    cmd.current_dir(cwd)
        .env_remove("NSE_DATA")
        .env_remove("NSE_MODEL")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running nse");
    assert!(!out.status.success(), "nse {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_data_dir_or_a_missing_file_is_named() {
    let tmp = scratch("cli");
    let empty = tmp.join("data");
    std::fs::create_dir_all(&empty).unwrap();
    let nowhere = tmp.join("no-such-dir");
    let (empty_s, nowhere_s) = (empty.display().to_string(), nowhere.display().to_string());
    let out = tmp.join("out").display().to_string();

    let err = nse_fails(
        &tmp,
        &[],
        &["--data-dir", &nowhere_s, "eval", "--out", &out],
    );
    assert!(
        err.contains(&format!("{nowhere_s} (from --data-dir) does not exist")),
        "{err}"
    );
    let err = nse_fails(&tmp, &[("NSE_DATA", &nowhere)], &["eval", "--out", &out]);
    assert!(
        err.contains(&format!("{nowhere_s} (from $NSE_DATA) does not exist")),
        "{err}"
    );

    // The flag after the command too, and the dataset named by its path in the data directory.
    let err = nse_fails(&tmp, &[], &["eval", "--data-dir", &empty_s, "--out", &out]);
    assert!(
        err.contains(&format!(
            "counterfact_easyedit/counterfact-edit.json is not in the data directory {empty_s}"
        )),
        "{err}"
    );
    let cf = root().join("data/counterfact_easyedit/counterfact-edit.json");
    let cf = cf.display().to_string();
    let err = nse_fails(
        &tmp,
        &[],
        &[
            "eval",
            "--data-dir",
            &empty_s,
            "--dataset",
            &cf,
            "--n",
            "1",
            "--out",
            &out,
        ],
    );
    assert!(
        err.contains("wikitext/wikitext-2-raw_wiki.test.raw is not in the data directory"),
        "{err}"
    );

    // The default model is looked for in ./models and beside the data directory.
    let err = nse_fails(
        &tmp,
        &[],
        &["generate", "--data-dir", &empty_s, "--prompt", "x"],
    );
    assert!(
        err.contains("SmolLM2-135M-Instruct.Q4_1.gguf is missing")
            && err.contains(&tmp.join("models").display().to_string())
            && err.contains("bash scripts/setup.sh"),
        "{err}"
    );
}

#[test]
fn the_data_beside_the_executable_is_found_from_anywhere() {
    // From a directory without data/, the checkout around target/…/nse provides the dataset:
    // the command gets as far as checking --n, which happens after reading the file.
    let tmp = scratch("anywhere");
    let out = tmp.join("out").display().to_string();
    let err = nse_fails(&tmp, &[], &["eval", "--n", "0", "--out", &out]);
    assert!(err.contains("--n must be at least 1"), "{err}");
}
