//! `nse eval --resume DIR`: a long run saves itself after every batch, and continues from there.
//!
//! `DIR/resume.json` holds the run's command line, a fingerprint of everything its numbers
//! depend on, the pre-edit evaluation, the methods already finished and the method under way
//! ([`MethodSoFar`]); `DIR/resume-<method>-<batches>.nsepatch` holds that method's edits. A
//! resumed run replays the patch (bit for bit, its weights digest checked) and goes on with the
//! next batch, so its results equal an uninterrupted run's; only the timings differ.
//!
//! Each save writes the new patch, then the new `resume.json` (to a temporary name, then
//! renamed), then removes the old patch: a process stopped at any point leaves a consistent pair.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::edit::MethodKind;
use crate::edit::patch::Patch;
use crate::eval::{EvalReport, MethodRun, MethodSoFar};
use crate::{Error, Result};

/// The file a run saves itself in, inside its output directory.
pub const RESUME_FILE: &str = "resume.json";

/// The layout version of [`RESUME_FILE`].
const FORMAT: &str = "nse-eval-resume-1";

/// What `resume.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Saved {
    pub format: String,
    /// The `nse eval` arguments of the run (after `eval`).
    pub argv: Vec<String>,
    /// Everything the run's numbers depend on, by name (see [`differences`]).
    pub fingerprint: Value,
    pub pre: EvalReport,
    pub finished: Vec<MethodRun>,
    pub current: Option<Current>,
}

/// The method under way.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Current {
    pub method: MethodKind,
    pub done: MethodSoFar,
    /// Its edits so far: a patch file in the same directory.
    pub patch: String,
}

impl Saved {
    /// A save of a run that has evaluated the unedited model and nothing else.
    pub fn new(argv: Vec<String>, fingerprint: Value, pre: EvalReport) -> Self {
        Saved {
            format: FORMAT.to_string(),
            argv,
            fingerprint,
            pre,
            finished: vec![],
            current: None,
        }
    }
}

/// The `nse eval` arguments this process was started with (those after `eval`).
pub fn own_argv() -> Vec<String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    match all.iter().position(|a| a == "eval") {
        Some(i) => all[i + 1..].to_vec(),
        None => all,
    }
}

/// Whether `argv` (after `eval`) gives `--resume` and nothing else.
pub fn only_resume(argv: &[String]) -> bool {
    match argv {
        [flag, _] => flag == "--resume",
        [one] => one.starts_with("--resume="),
        _ => false,
    }
}

/// Reads `dir`'s saved run.
///
/// # Errors
/// No `resume.json` (not an `nse eval` output directory, or a run that finished and removed
/// it), a file that cannot be read or parsed, another layout version.
pub fn read(dir: &Path) -> Result<Saved> {
    let path = dir.join(RESUME_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::input(format!(
            "cannot resume from {}: {} cannot be read ({e}); give the --out directory of an \
             nse eval run that stopped before it finished",
            dir.display(),
            path.display()
        ))
    })?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.display().to_string(),
        msg: format!("{e} (not a resume file this nse can read; start the run again)"),
    })?;
    if saved.format != FORMAT {
        return Err(Error::input(format!(
            "{} has layout {:?}; this nse reads {FORMAT:?}: start the run again",
            path.display(),
            saved.format
        )));
    }
    Ok(saved)
}

/// The patch of the method under way.
///
/// # Errors
/// The patch file is missing or corrupt.
pub fn read_patch(dir: &Path, current: &Current) -> Result<Patch> {
    let path = patch_path(dir, &current.patch)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Patch::from_bytes(&bytes, &path.display().to_string())
}

/// `dir/name`, for a plain file name.
fn patch_path(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::input(format!(
            "{RESUME_FILE} names the patch {:?}, which is not a file name in {}",
            crate::error::printable(name),
            dir.display()
        )));
    }
    Ok(dir.join(name))
}

/// Saves `saved` in `dir`, with `patch` as the current method's edits (see the module docs for
/// the order of the writes).
///
/// # Errors
/// Files that cannot be written.
pub fn write(dir: &Path, saved: &mut Saved, patch: Option<&Patch>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let old = saved.current.as_ref().map(|c| c.patch.clone());
    if let (Some(current), Some(patch)) = (saved.current.as_mut(), patch) {
        current.patch = format!(
            "resume-{}-{}.nsepatch",
            current.method.name(),
            current.done.batches.len()
        );
        let path = dir.join(&current.patch);
        std::fs::write(&path, patch.to_bytes()).map_err(|e| Error::io(&path, e))?;
    }
    let text = serde_json::to_string(saved).map_err(|e| Error::Json {
        path: RESUME_FILE.into(),
        msg: e.to_string(),
    })?;
    let tmp = dir.join(format!("{RESUME_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    let path = dir.join(RESUME_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    let new = saved.current.as_ref().map(|c| c.patch.clone());
    if let Some(old) = old.filter(|o| Some(o) != new.as_ref()) {
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(())
}

/// Removes the resume files of a finished run.
pub fn finished(dir: &Path, saved: &Saved) {
    if let Some(c) = &saved.current {
        let _ = std::fs::remove_file(dir.join(&c.patch));
    }
    let _ = std::fs::remove_file(dir.join(RESUME_FILE));
}

/// The fingerprint fields whose values differ, as "name: saved …, now …" lines (empty when
/// the runs agree).
pub fn differences(saved: &Value, now: &Value) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (saved, now) else {
        return vec!["the saved fingerprint is not an object".into()];
    };
    let show = |v: Option<&Value>| match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(80).collect::<String>())
            } else {
                s
            }
        }
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: saved {}, now {}", show(a.get(k)), show(b.get(k))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_every_difference() {
        let a = json!({"model sha256": "aa", "batch size": 10, "methods": ["nse"]});
        let b = json!({"model sha256": "bb", "batch size": 10, "methods": ["memit"], "x": 1});
        assert_eq!(
            differences(&a, &b),
            [
                "methods: saved [\"nse\"], now [\"memit\"]",
                "model sha256: saved \"aa\", now \"bb\"",
                "x: saved (absent), now 1"
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }

    #[test]
    fn resume_alone() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(only_resume(&v(&["--resume", "d"])));
        assert!(only_resume(&v(&["--resume=d"])));
        assert!(!only_resume(&v(&["--resume", "d", "--n", "3"])));
        assert!(!only_resume(&v(&["--out", "d"])));
    }

    #[test]
    fn patch_names_stay_inside_the_directory() {
        let d = Path::new("run");
        assert!(patch_path(d, "resume-nse-3.nsepatch").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a\\b"] {
            assert!(patch_path(d, bad).is_err(), "{bad:?}");
        }
    }
}
