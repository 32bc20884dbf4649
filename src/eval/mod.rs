//! Evaluation (spec §10) and the sequential benchmark.
//!
//! - [`probs`]: teacher-forced candidate NLLs, the reference's `test_batch_prediction`.
//! - [`counterfact`]: the CounterFact probability test and its aggregates (spec §10.1).
//! - [`zsre`]: zsRE token accuracy with the NQ neighbourhood prompts (spec §10.3, §2.3).
//! - [`fluency`], [`words`]: n-gram entropy of seeded top-k generations (spec §10.2, §10.4),
//!   with a Treebank word tokenizer standing in for NLTK's.
//! - [`realistic`]: generation-based success: does greedy decoding say the answer.
//! - [`collapse`]: wikitext-2 perplexity and the `down_proj` norms, a model-collapse monitor.
//! - [`evaluate`]: one evaluation of a model on a list of cases.
//! - [`sequential`]: edit N cases in batches, evaluating at checkpoints (spec §7), for several
//!   methods on the same cases; [`golden`] compares a run with the reference's.
//! - [`table`]: text tables of a run and of its comparison with a golden run.
//! - [`merge`]: one comparison from `nse eval` reports of the same requests run separately.
//! - `plot` (native): SVG plots of every metric against the number of edits.

pub mod collapse;
pub mod counterfact;
pub mod evaluate;
pub mod fluency;
pub mod golden;
pub mod merge;
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
pub mod probs;
pub mod realistic;
pub mod sequential;
pub mod table;
pub mod words;
pub mod zsre;

pub use evaluate::{Aggregate, DatasetKind, EvalOptions, EvalReport, EvalStep, evaluate};
pub use fluency::FluencyOptions;
pub use probs::{CandidateScore, new_vs_true, score_candidates};
pub use sequential::{
    Curve, MethodRun, MethodRunner, MethodSoFar, RunEvent, SequentialPlan, curves, run_method,
};
