//! The one error type of the crate.
//!
//! Everything a user, a file, an adapter or a browser can cause is an [`Error`] whose message says
//! what went wrong and what to do next. A broken internal contract (a shape mismatch between two
//! of our own tensors, say) panics instead: that is a bug, not an input problem.

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every recoverable failure of the engine, the model loaders and the editor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file (GGUF, safetensors, config.json, tokenizer.json) is malformed or truncated.
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },

    /// The file uses a feature we do not implement (an unknown quantisation, an architecture).
    #[error("{path}: unsupported: {msg}")]
    Unsupported { path: String, msg: String },

    /// A tensor the architecture needs is missing from the checkpoint.
    #[error("{path}: missing tensor `{name}` (the checkpoint does not look like a {arch} model)")]
    MissingTensor {
        path: String,
        name: String,
        arch: String,
    },

    /// A tensor has the wrong shape for the architecture in the config.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {want:?} from the model config")]
    TensorShape {
        path: String,
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },

    /// Bad user input: an empty prompt, a prompt longer than the context, an invalid request.
    #[error("{0}")]
    Input(String),

    /// No GPU adapter, or the adapter cannot hold what we need.
    #[error("GPU: {0}")]
    Gpu(String),

    /// A tensor does not fit in one storage binding of this adapter.
    #[error(
        "GPU: tensor `{name}` needs {bytes} bytes but this adapter allows at most {limit} bytes per \
         storage buffer binding; use the cpu backend (--backend cpu) or a GPU with larger limits"
    )]
    BufferTooLarge {
        name: String,
        bytes: u64,
        limit: u64,
    },

    /// The GPU device was lost (driver reset, tab backgrounded too long, out of memory).
    #[error("GPU device lost: {0}; reload the model (the edit ledger is unaffected)")]
    DeviceLost(String),

    /// The numbers went bad: NaN or infinity where a finite value is required.
    #[error("numerical problem: {0}")]
    Numeric(String),

    /// An I/O failure, with the path involved.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },

    /// A JSON document could not be parsed or does not match its schema.
    #[error("{path}: {msg}")]
    Json { path: String, msg: String },
}

impl Error {
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

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
