//! What the page does with a whole ledger: the record it saves in IndexedDB, the patch of the
//! current ledger, replacing the ledger (restore, import, the benchmark's set-aside), the neurons
//! the ledger moved, and the success rates of edited cases.

use std::collections::BTreeMap;

use super::dom;
use super::editing::{EditSetup, EntryMeta, RequestProbes, pair_probs};
use super::session::Workbench;
use super::storage::LedgerRecord;
use crate::backend::Backend;
use crate::edit::patch::Patch;
use crate::edit::{EditRequest, EditState, LedgerEntry, Measured, MethodKind};
use crate::model::{Model, ModelSource, Tokenizer};
use crate::{Error, Result};

/// Per edited layer, `‖ΔW[:, j]‖` of every neuron `j` for the sum of the ledger's updates,
/// expanded from their factors exactly as they were applied.
pub(crate) fn neuron_norms(
    ledger: &[LedgerEntry],
    layers: &[usize],
    d: usize,
    d_ff: usize,
) -> BTreeMap<usize, Vec<f32>> {
    let mut dw: BTreeMap<usize, Vec<f32>> =
        layers.iter().map(|&l| (l, vec![0.0; d * d_ff])).collect();
    for u in ledger.iter().flat_map(|e| &e.updates) {
        let Some(w) = dw.get_mut(&u.layer) else {
            continue;
        };
        let delta = u.update.expand(); // (d, |S|)
        let s = u.update.cols.len();
        for i in 0..d {
            for (j, &c) in u.update.cols.iter().enumerate() {
                w[i * d_ff + c as usize] += delta[i * s + j];
            }
        }
    }
    dw.into_iter()
        .map(|(l, w)| {
            let norms = (0..d_ff)
                .map(|j| {
                    (0..d)
                        .map(|i| (w[i * d_ff + j] as f64).powi(2))
                        .sum::<f64>()
                        .sqrt() as f32
                })
                .collect();
            (l, norms)
        })
        .collect()
}

/// The ledger as the page saves it.
pub(crate) fn ledger_record<T>(
    source: &ModelSource,
    setup: &EditSetup,
    state: &EditState<T>,
    method: MethodKind,
) -> LedgerRecord {
    let patch = current_patch(source, setup, state);
    LedgerRecord {
        patch: patch.to_bytes(),
        meta: serde_json::to_string(&setup.meta).expect("page records serialise"),
        method: method.name().into(),
    }
}

/// The patch of the current ledger, each entry carrying the P values the page measured right
/// after it (so `nse patch show` and another page can show them).
pub(crate) fn current_patch<T>(
    source: &ModelSource,
    setup: &EditSetup,
    state: &EditState<T>,
) -> Patch {
    let mut entries = state.ledger.clone();
    for (e, meta) in entries.iter_mut().zip(&setup.meta) {
        if e.measured.is_empty() && meta.scores.len() == e.requests.len() {
            e.measured = e
                .requests
                .iter()
                .zip(&meta.scores)
                .map(|(r, s)| match s {
                    Some((p_new, p_true)) => Measured {
                        p_new: *p_new,
                        p_true: r.target_true.as_ref().map(|_| *p_true),
                    },
                    None => Measured {
                        p_new: f32::NAN,
                        p_true: None,
                    },
                })
                .collect();
        }
    }
    Patch::new(&source.name, &source.sha256, &setup.hp, entries)
}

/// The page records of a patch's entries: each noted with where it came from, and with the P
/// values measured when it was made, when the patch has them.
pub(crate) fn imported_meta(patch: &Patch, note: &str) -> Vec<EntryMeta> {
    patch
        .entries
        .iter()
        .map(|e| EntryMeta {
            note: note.to_string(),
            scores: e
                .measured
                .iter()
                .map(|m| {
                    m.p_new
                        .is_finite()
                        .then(|| (m.p_new, m.p_true.unwrap_or(f32::NAN)))
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// Replaces the ledger with `patch` (replayed bit for bit on the original weights) and its
/// page records `meta` (padded or cut to the patch's entries).
///
/// # Errors
/// A patch for another model (Patch::apply's message, nothing changed), one made with other
/// edited layers, or a backend failure (the previous ledger is then replayed back).
pub(crate) async fn replace_ledger<B: Backend>(
    wb: &mut Workbench<B>,
    setup: &mut EditSetup,
    source: &ModelSource,
    patch: &Patch,
    mut meta: Vec<EntryMeta>,
) -> Result<()> {
    let state = wb.edits.as_mut().expect("editing is available");
    if patch.model_sha256 != source.sha256 {
        // Patch::apply refuses another base model before touching anything; this is its message.
        patch.check_fits(&wb.model, state, &source.sha256)?;
    }
    if patch.hparams.layers != setup.hp.layers {
        return Err(Error::input(format!(
            "the patch edits layers {:?} but this page edits layers {:?}; it cannot be applied here",
            patch.hparams.layers, setup.hp.layers
        )));
    }
    let previous = state.ledger.len();
    let old_ledger = Patch::new(
        &source.name,
        &source.sha256,
        &setup.hp,
        state.ledger.clone(),
    );
    state.rewind_to(&mut wb.model, 0)?;
    if let Err(e) = patch.apply(&mut wb.model, state, &source.sha256).await {
        state.rewind_to(&mut wb.model, 0)?;
        old_ledger
            .apply(&mut wb.model, state, &source.sha256)
            .await?;
        debug_assert_eq!(state.ledger.len(), previous);
        return Err(e);
    }
    meta.resize_with(patch.entries.len(), EntryMeta::default);
    setup.meta = meta;
    Ok(())
}

/// Success rates in percent of CounterFact-style cases on the current model:
/// `[rewrite, paraphrase, neighbourhood]` — P(new) > P(true) on the edit prompt and on the
/// paraphrases, P(true) > P(new) on the neighbourhood prompts (averaged per case, then over
/// cases). Cases without a true target or without probes of a kind are left out of that kind.
pub(crate) async fn success_rates<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    cases: &[(EditRequest, RequestProbes)],
) -> Result<[Option<f64>; 3]> {
    let mut per_kind: [Vec<f64>; 3] = [vec![], vec![], vec![]];
    for (r, probes) in cases {
        let Some(truth) = &r.target_true else {
            continue;
        };
        let kinds: [(&[String], bool); 3] = [
            (&[r.sentence()], true),
            (&probes.paraphrase, true),
            (&probes.neighborhood, false),
        ];
        for (k, (prompts, new_wins)) in kinds.into_iter().enumerate() {
            if prompts.is_empty() {
                continue;
            }
            let mut ok = 0;
            for p in prompts {
                let (p_new, p_true) = pair_probs(model, tok, p, &r.target_new, truth).await?;
                ok += usize::from((p_new > p_true) == new_wins);
            }
            per_kind[k].push(100.0 * ok as f64 / prompts.len() as f64);
            dom::yield_now().await;
        }
    }
    Ok(per_kind.map(|v| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)))
}
