//! Where the command line finds its run-time files: one data root for the corpora and datasets
//! (the checkout's `data/`: wikitext-2, CounterFact, zsRE) and the default model in `models/`.
//!
//! The data root is `--data-dir DIR`, else `$NSE_DATA`, else the checkout's `data/`, found from
//! the current directory (`./data`, as under `cargo run` from the checkout) or from the
//! executable's location (`target/release/nse` → `../../data`). A directory counts as the
//! checkout's `data/` when it holds [`SUMS_FILE`], the checksum list `scripts/setup.sh` checks.
//! No path is compiled into the binary, so a copied binary behaves the same as the one in
//! `target/`: it needs a checkout beside it, below its working directory, or named by
//! `--data-dir`.
//!
//! The root is resolved once, in [`init`], and read by the commands through [`file`] and
//! [`default_model`], so that every command takes the same `--data-dir` without threading it
//! through each command's arguments.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{Error, Result};

/// The wikitext-2-raw test split: the covariance corpus and the perplexity text.
pub const WIKITEXT2_TEST: &str = "wikitext/wikitext-2-raw_wiki.test.raw";
/// The CounterFact editing split (EasyEdit schema) that `nse eval` and `nse bench edit` default to.
pub const COUNTERFACT_EDIT: &str = "counterfact_easyedit/counterfact-edit.json";
/// The sha256 list of the data files, in `sha256sum` format; it also marks a data root.
pub const SUMS_FILE: &str = "nse-data.sha256";

/// How far above the executable's directory the checkout may be (`target/<triple>/release/nse`
/// is three levels down).
const EXE_LEVELS: usize = 3;

/// The command that restores a checkout's run-time files.
const SETUP: &str = "bash scripts/setup.sh";

/// The resolved data root.
#[derive(Clone, Debug)]
pub enum DataRoot {
    /// Named by the user: `from` is `--data-dir` or `$NSE_DATA`.
    Given { dir: PathBuf, from: &'static str },
    /// The `data/` directory of the checkout around the working directory or the executable.
    Found { dir: PathBuf },
    /// No data root: the directories that were searched, for the error message.
    Missing { searched: Vec<PathBuf> },
}

static ROOT: OnceLock<DataRoot> = OnceLock::new();

/// Resolves the data root from `--data-dir` (`flag`), `$NSE_DATA` or the checkout, once per
/// process. A directory the user names must exist; a missing checkout is only an error when a
/// command needs a file from it.
pub fn init(flag: Option<PathBuf>) -> Result<()> {
    let root = DataRoot::resolve(flag, std::env::var_os("NSE_DATA").map(PathBuf::from))?;
    // A second call keeps the first root: the process has one data root.
    let _ = ROOT.set(root);
    Ok(())
}

/// The data root of this process ([`init`]'s, or the default one when `init` was not called).
pub fn root() -> &'static DataRoot {
    ROOT.get_or_init(|| {
        let env = std::env::var_os("NSE_DATA").map(PathBuf::from);
        // `init` reports a bad $NSE_DATA; here it just leaves no root, and the file errors say so.
        DataRoot::resolve(None, env.clone()).unwrap_or_else(|_| DataRoot::Missing {
            searched: env.into_iter().collect(),
        })
    })
}

/// The path of `rel` (e.g. [`WIKITEXT2_TEST`]) under the data root, or an error naming the file,
/// the directory searched and how to restore it.
pub fn file(rel: &str) -> Result<PathBuf> {
    root().file(rel)
}

/// The default model file `name`: `models/NAME` in the working directory, else in the checkout
/// (beside the data root). The error names the directories searched and `bash scripts/setup.sh`.
pub fn default_model(name: &str) -> Result<PathBuf> {
    let mut searched = vec![absolute(Path::new("models"))];
    if let Some(dir) = root().dir().and_then(Path::parent) {
        let beside = absolute(&dir.join("models"));
        if !searched.contains(&beside) {
            searched.push(beside);
        }
    }
    if let Some(found) = searched.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Ok(found);
    }
    Err(Error::input(format!(
        "the default model {name} is missing: searched {}; run `{SETUP}` in the nse checkout to \
         fetch it, or pass --model PATH (or set NSE_MODEL)",
        list(&searched)
    )))
}

/// The checkout holding the data root (its parent directory), for the git commit in reports.
pub fn checkout() -> Option<PathBuf> {
    root().dir().and_then(Path::parent).map(Path::to_path_buf)
}

impl DataRoot {
    /// `flag`, else `env`, else [`DataRoot::search`]. A named directory that does not exist is an
    /// error naming where it came from.
    pub fn resolve(flag: Option<PathBuf>, env: Option<PathBuf>) -> Result<Self> {
        let given = match (flag, env) {
            (Some(dir), _) => Some((dir, "--data-dir")),
            (None, Some(dir)) if !dir.as_os_str().is_empty() => Some((dir, "$NSE_DATA")),
            _ => None,
        };
        let Some((dir, from)) = given else {
            return Ok(Self::search());
        };
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(Error::input(format!(
                "the data directory {} (from {from}) {what}; give the `data/` directory of an nse \
                 checkout, or leave {from} unset to use the checkout's own",
                dir.display()
            )));
        }
        Ok(DataRoot::Given { dir, from })
    }

    /// The checkout's `data/`: `./data`, else `data/` in the executable's directory or one of
    /// its [`EXE_LEVELS`] parents; the first that holds [`SUMS_FILE`].
    pub fn search() -> Self {
        let mut searched = vec![absolute(Path::new("data"))];
        if let Some(exe) = std::env::current_exe()
            .ok()
            .and_then(|e| e.canonicalize().ok())
        {
            for dir in exe.ancestors().skip(1).take(EXE_LEVELS + 1) {
                let data = dir.join("data");
                if !searched.contains(&data) {
                    searched.push(data);
                }
            }
        }
        match searched.iter().find(|d| d.join(SUMS_FILE).is_file()) {
            Some(dir) => DataRoot::Found { dir: dir.clone() },
            None => DataRoot::Missing { searched },
        }
    }

    /// The root directory, unless none was found.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            DataRoot::Given { dir, .. } | DataRoot::Found { dir } => Some(dir),
            DataRoot::Missing { .. } => None,
        }
    }

    /// The path of `rel` under the root, or an error naming the file, the directory searched
    /// and the command that restores it.
    pub fn file(&self, rel: &str) -> Result<PathBuf> {
        match self {
            DataRoot::Given { dir, from } => {
                let path = dir.join(rel);
                if path.is_file() {
                    return Ok(path);
                }
                Err(Error::input(format!(
                    "{rel} is not in the data directory {} (from {from}); copy it there from an \
                     nse checkout's data/, or leave {from} unset to use the checkout's own",
                    dir.display()
                )))
            }
            DataRoot::Found { dir } => {
                let path = dir.join(rel);
                if path.is_file() {
                    return Ok(path);
                }
                Err(Error::input(format!(
                    "{rel} is missing from the data directory {}; restore it with `git checkout \
                     -- data/{rel}` in the checkout (`{SETUP}` checks every data file)",
                    dir.display()
                )))
            }
            DataRoot::Missing { searched } => Err(Error::input(format!(
                "{rel} is needed but no nse data directory was found (searched {} for {SUMS_FILE}); \
                 run nse from its checkout, or pass --data-dir DIR (or set NSE_DATA) to the \
                 checkout's data/",
                list(searched)
            ))),
        }
    }
}

/// `path` made absolute against the working directory, for messages and comparisons.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nse-data-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_named_directory_must_exist() {
        let nowhere = temp("exists").join("no-such-dir");
        let e = DataRoot::resolve(Some(nowhere.clone()), None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&nowhere.display().to_string()), "{msg}");
        assert!(
            msg.contains("--data-dir") && msg.contains("does not exist"),
            "{msg}"
        );
        let e = DataRoot::resolve(None, Some(nowhere)).unwrap_err();
        assert!(e.to_string().contains("$NSE_DATA"), "{e}");
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let (a, b) = (temp("flag-a"), temp("flag-b"));
        let root = DataRoot::resolve(Some(a.clone()), Some(b)).unwrap();
        assert_eq!(root.dir(), Some(a.as_path()));
    }

    #[test]
    fn a_missing_file_names_the_file_and_the_directory() {
        let dir = temp("missing");
        std::fs::write(dir.join("present.txt"), "x").unwrap();
        let root = DataRoot::resolve(Some(dir.clone()), None).unwrap();
        assert_eq!(root.file("present.txt").unwrap(), dir.join("present.txt"));
        let msg = root.file(WIKITEXT2_TEST).unwrap_err().to_string();
        assert!(msg.contains(WIKITEXT2_TEST), "{msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");

        let found = DataRoot::Found { dir: dir.clone() };
        let msg = found.file(COUNTERFACT_EDIT).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("git checkout -- data/{COUNTERFACT_EDIT}")),
            "{msg}"
        );
        let missing = DataRoot::Missing {
            searched: vec![dir.join("data")],
        };
        let msg = missing.file(WIKITEXT2_TEST).unwrap_err().to_string();
        assert!(
            msg.contains(&dir.join("data").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("--data-dir"), "{msg}");
    }
}
