//! The one error type of the crate.
//!
//! Everything a user, a file, an adapter or a browser can cause is an [`Error`] whose message says
//! what went wrong and what to do next. A broken internal contract (a shape mismatch between two
//! of our own tensors, say) panics instead: that is a bug, not an input problem.
//!
//! Names and strings that come from a file (tensor names, metadata keys, request text) can hold
//! terminal escape sequences. Every message is therefore printed through [`printable`], which
//! writes control characters as `\u{..}` escapes, and names are quoted with [`escape`], which
//! also escapes line breaks and cuts very long names, so that no input can recolour, rewrite or
//! flood the terminal that shows the error.

use std::borrow::Cow;

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every recoverable failure of the engine, the model loaders and the editor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file (GGUF, safetensors, config.json, tokenizer.json) is malformed or truncated.
    #[error("{}: {}", printable(.path), printable(.msg))]
    Format { path: String, msg: String },

    /// The file uses a feature we do not implement (an unknown quantisation, an architecture).
    #[error("{}: unsupported: {}", printable(.path), printable(.msg))]
    Unsupported { path: String, msg: String },

    /// A tensor the architecture needs is missing from the checkpoint.
    #[error(
        "{}: missing tensor `{}` (the checkpoint does not look like a {} model)",
        printable(.path),
        escape(.name),
        escape(.arch)
    )]
    MissingTensor {
        path: String,
        name: String,
        arch: String,
    },

    /// A tensor has the wrong shape for the architecture in the config.
    #[error(
        "{}: tensor `{}` has shape {got:?}, expected {want:?} from the model config",
        printable(.path),
        escape(.name)
    )]
    TensorShape {
        path: String,
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },

    /// Bad user input: an empty prompt, a prompt longer than the context, an invalid request.
    #[error("{}", printable(.0))]
    Input(String),

    /// A request refused for a reason that programs tell apart by `code` (`SubjectNotFound`,
    /// `SubjectSplitsToken`, `PatchForAnotherModel`); the message says what to do.
    #[error("{}", printable(.msg))]
    Refused { code: &'static str, msg: String },

    /// No GPU adapter, or the adapter cannot hold what we need.
    #[error("GPU: {}", printable(.0))]
    Gpu(String),

    /// A tensor does not fit in one storage binding of this adapter.
    #[error(
        "GPU: tensor `{}` needs {bytes} bytes but this adapter allows at most {limit} bytes per \
         storage buffer binding; use the cpu backend (--backend cpu) or a GPU with larger limits",
        escape(.name)
    )]
    BufferTooLarge {
        name: String,
        bytes: u64,
        limit: u64,
    },

    /// The GPU device was lost (driver reset, tab backgrounded too long, out of memory).
    #[error(
        "GPU device lost: {}; reload the model (the edit ledger is unaffected)",
        printable(.0)
    )]
    DeviceLost(String),

    /// The numbers went bad: NaN or infinity where a finite value is required.
    #[error("numerical problem: {}", printable(.0))]
    Numeric(String),

    /// The user cancelled a running job (an edit, a benchmark, a covariance computation) at one
    /// of its steps; what it was changing is exactly as before it started.
    #[error("cancelled: {}", printable(.0))]
    Cancelled(String),

    /// An I/O failure, with the path involved.
    #[error("{}: {source}", printable(.path))]
    Io {
        path: String,
        source: std::io::Error,
    },

    /// A JSON document could not be parsed or does not match its schema.
    #[error("{}: {}", printable(.path), printable(.msg))]
    Json { path: String, msg: String },

    /// Something the input asks for would not fit in memory: its size was checked against the
    /// memory budget (see [`crate::budget`]) before anything was allocated.
    #[error(
        "{} needs {} of memory but the memory budget is {}: {}",
        printable(.what),
        crate::budget::fmt_bytes(*.needed),
        crate::budget::fmt_bytes(*.budget),
        crate::budget::RAISE_HINT
    )]
    TooLarge {
        /// What needs the memory and why (a tensor, a table, a statistic), from the input.
        what: String,
        /// Bytes needed; `u64::MAX` when the size does not even fit in 64 bits.
        needed: u64,
        /// The budget in force, in bytes.
        budget: u64,
    },
}

impl Error {
    /// A stable name of the kind of error, for programs (the page's protocol, the JS API): the
    /// message may change wording, the code does not.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Format { .. } | Error::MissingTensor { .. } | Error::TensorShape { .. } => {
                "BadModelFile"
            }
            Error::Unsupported { .. } => "Unsupported",
            Error::Input(_) => "BadInput",
            Error::Refused { code, .. } => code,
            Error::Gpu(_) => "Gpu",
            Error::BufferTooLarge { .. } => "ModelTooLarge",
            Error::DeviceLost(_) => "DeviceLost",
            Error::Numeric(_) => "Numeric",
            Error::Cancelled(_) => "Cancelled",
            Error::Io { .. } => "Io",
            Error::Json { .. } => "BadJson",
            Error::TooLarge { .. } => "TooLarge",
        }
    }

    /// A [`Error::Format`] for `path`.
    pub fn format(path: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An [`Error::Input`].
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    /// An [`Error::Refused`] with `code`.
    pub fn refused(code: &'static str, msg: impl Into<String>) -> Self {
        Error::Refused {
            code,
            msg: msg.into(),
        }
    }

    /// An [`Error::TooLarge`] for `what`, needing `needed` bytes against `budget`.
    pub fn too_large(what: impl Into<String>, needed: u64, budget: u64) -> Self {
        Error::TooLarge {
            what: what.into(),
            needed,
            budget,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Longest name [`escape`] shows in full; names from a hostile file can be megabytes long.
const MAX_NAME_CHARS: usize = 200;

/// Characters that a terminal or a text view would act on rather than show: C0/C1 controls and
/// DEL, and the bidirectional overrides and isolates that reorder the text around them.
fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A name or short string from an untrusted file, made safe to quote in a message: every control
/// character (line breaks included) and bidirectional control is written as a `\u{..}` escape,
/// and a name longer than 200 characters is cut with `…`.
///
/// Use it wherever a tensor name, metadata key, file name or any other string read from input is
/// put into an error message.
pub fn escape(s: &str) -> Cow<'_, str> {
    if s.chars().count() <= MAX_NAME_CHARS && !s.chars().any(is_hostile) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(4 * MAX_NAME_CHARS));
    for (i, c) in s.chars().enumerate() {
        if i == MAX_NAME_CHARS {
            out.push('…');
            break;
        }
        if is_hostile(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A whole message made safe to print: like [`escape`] but keeping line breaks (our own messages
/// may span lines) and never cutting. Every [`Error`] message goes through it when displayed.
pub fn printable(s: &str) -> Cow<'_, str> {
    let bad = |c: char| c != '\n' && is_hostile(c);
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_bidi() {
        assert_eq!(escape("blk.0.ffn_down.weight"), "blk.0.ffn_down.weight");
        assert_eq!(escape("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\u{a}");
        assert_eq!(escape("x\u{202e}y\u{9b}"), "x\\u{202e}y\\u{9b}");
        assert_eq!(
            printable("line 1\nline\r2\u{7}"),
            "line 1\nline\\u{d}2\\u{7}"
        );
        let long = "n".repeat(1000);
        assert_eq!(escape(&long).chars().count(), MAX_NAME_CHARS + 1);
    }

    #[test]
    fn display_escapes_every_field() {
        let e = Error::MissingTensor {
            path: "m\u{1b}]0;title\u{7}.gguf".into(),
            name: "t\u{1b}[2J".into(),
            arch: "llama".into(),
        };
        let text = e.to_string();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(text.contains("t\\u{1b}[2J"), "{text}");
    }
}
