//! Operations on a whole edit history: removing one entry from the middle of a ledger.
//!
//! Undo of the last entries is [`EditState::rewind_to`]; removing entry `k` is that rewind
//! followed by re-editing the requests of every later entry, because their updates and keys
//! were computed on top of entry `k` and are not valid without it.

use super::batch::{BatchOptions, BatchOutcome, EditContext, Progress, apply_batch};
use super::method::EditMethod;
use super::state::{EditState, LedgerEntry};
use super::target::Pause;
use crate::backend::Backend;
use crate::model::Model;
use crate::{Error, Result};

/// Removes ledger entry `k` (0-based) and re-applies the requests of each later entry as the
/// batch it was, with its own method (taken from `methods` by kind; `ctx` gives everything
/// else). `progress(j, p)` reports re-applied batch `j`; `pause` is awaited between steps, as in
/// [`apply_batch`] (a cancellation puts everything back too).
///
/// # Errors
/// `k` outside the ledger, a method missing from `methods`, or a failed batch; the model, `P`
/// and the ledger are then exactly as before the call.
pub async fn remove_entry<B: Backend>(
    model: &mut Model<B>,
    state: &mut EditState<B::Tensor>,
    k: usize,
    ctx: &EditContext<'_>,
    methods: &[&dyn EditMethod],
    pause: Option<Pause<'_>>,
    mut progress: impl FnMut(usize, Progress),
) -> Result<Vec<BatchOutcome>> {
    let n = state.ledger.len();
    if k >= n {
        return Err(Error::input(format!(
            "there is no entry {} to remove: the ledger has {n}",
            k + 1
        )));
    }
    let later: Vec<LedgerEntry> = state.ledger[k + 1..].to_vec();
    if let Some(e) = later
        .iter()
        .find(|e| !methods.iter().any(|m| m.kind() == e.method))
    {
        return Err(Error::input(format!(
            "re-applying the later edits needs the method {}, which was not prepared",
            e.method.name()
        )));
    }
    let removed = state.ledger[k..].to_vec();
    state.rewind_to(model, k)?;
    let mut outcomes = vec![];
    for (j, e) in later.iter().enumerate() {
        let method = methods
            .iter()
            .find(|m| m.kind() == e.method)
            .expect("checked above");
        let ctx = EditContext {
            method: *method,
            ..*ctx
        };
        let opts = BatchOptions {
            pause,
            ..Default::default()
        };
        match apply_batch(model, state, &ctx, &e.requests, opts, |p| progress(j, p)).await {
            Ok(out) => outcomes.push(out),
            Err(err) => {
                // Put the old history back: the removed entry and the later ones, bit for bit.
                state.rewind_to(model, k)?;
                state.replay(model, &removed)?;
                if let Error::Cancelled(_) = err {
                    return Err(Error::Cancelled(format!(
                        "removing entry {} stopped while re-applying entry {}; the ledger was put back as it was",
                        k + 1,
                        k + 2 + j
                    )));
                }
                return Err(Error::input(format!(
                    "removing entry {} failed while re-applying entry {} ({err}); the ledger \
                     was put back as it was",
                    k + 1,
                    k + 2 + j
                )));
            }
        }
    }
    Ok(outcomes)
}
