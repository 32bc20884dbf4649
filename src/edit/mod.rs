//! Knowledge editing: NSE (spec §4–§7), with MEMIT-seq and AlphaEdit beside it.
//!
//! - [`request`], [`dataset`]: what to edit; [`hparams`]: how, one file per model.
//! - [`check`]: every reason a request or a request file cannot be edited, before any work.
//! - [`templates`], [`subject`], [`keys`]: context templates, the checked subject-last index,
//!   template-averaged keys.
//! - [`target`]: the target hidden state `z` (Adam through the upper blocks, weights rewinding).
//! - [`covariance`]: the corpus second moment `C_l`.
//! - [`select`], [`solve`]: neuron selection and the f64 least-squares update.
//! - [`method`]: NSE, MEMIT-seq, AlphaEdit behind one trait; [`batch`]: the shared procedure;
//!   [`state`]: `P_l` ([`past`]), the original weights and the ledger; [`patch`]: the ledger as a file;
//!   [`history`]: removing an entry from the middle of a ledger.

pub mod batch;
pub mod check;
pub mod covariance;
pub mod dataset;
pub mod history;
pub mod hparams;
pub mod keys;
pub mod method;
pub mod past;
pub mod patch;
pub mod request;
pub mod select;
pub mod solve;
pub mod state;
pub mod subject;
pub mod target;
pub mod templates;
pub mod zproblem;

pub use batch::{BatchOptions, BatchOutcome, EditContext, Progress, apply_batch};
pub use covariance::CovarianceSet;
pub use dataset::{Case, Probes};
pub use hparams::{Hparams, TargetSpace};
pub use method::{AlphaEdit, EditMethod, Memit, MemitSeq, MethodKind, Nse};
pub use past::PastKeys;
pub use request::EditRequest;
pub use state::{EditState, LedgerEntry, Measured, ROOT_DIGEST};
pub use templates::ContextTemplates;
