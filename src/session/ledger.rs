//! Whole-ledger operations of a session: undo, back to the original, remove edit k and re-apply
//! the later ones, the patch of the current ledger (export), replacing the ledger with a patch
//! (import, restore, the benchmark's set-aside), model export, and the neurons the ledger moved.

use std::collections::BTreeMap;

use super::work::{context, edit_prompt_scores, entry_meta, scores_of};
use super::{EditSetup, EntryMeta, Session, Workbench, setup_of, setup_of_mut};
use crate::backend::Backend;
use crate::edit::patch::Patch;
use crate::edit::{EditMethod, EditState, LedgerEntry, Measured, MethodKind, history};
use crate::model::ModelSource;
use crate::model::export::export_safetensors;
use crate::{Error, Result, with_bench, with_model};

/// What to take back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "take", content = "entry", rename_all = "snake_case")]
pub enum Rewind {
    /// The last entry (bit-exact).
    Last,
    /// Every entry: the original model (bit-exact).
    All,
    /// Entry `k` (0-based); the later ones are re-applied, each as the batch it was, with its
    /// own method.
    Remove(usize),
}

impl Session {
    /// Takes back `what`; `on_reapply(j, count)` is called when the `j`-th of the `count` later
    /// entries starts being re-applied (after a removal). Returns a sentence saying what was done.
    ///
    /// # Errors
    /// Editing unavailable, `k` past the ledger, or a failure while re-applying the later edits
    /// (cancellation included): the ledger, the weights and the records are then as they were
    /// before, bit for bit.
    pub async fn rewind(
        &mut self,
        what: Rewind,
        mut on_reapply: impl FnMut(usize, usize),
    ) -> Result<String> {
        let n = self.n_entries();
        if let Rewind::Remove(k) = what
            && k >= n
        {
            return Err(Error::input(format!(
                "there is no edit #{} to remove: the ledger holds {n}",
                k + 1
            )));
        }
        if n == 0 {
            return Ok("No edits to take back: the model is the original".into());
        }
        let k = match what {
            Rewind::Last | Rewind::All => {
                let keep = if what == Rewind::All { 0 } else { n - 1 };
                let setup = setup_of_mut(&mut self.editing)?;
                with_bench!(&mut self.engine, w => {
                    w.edits.as_mut().expect("editing is available").rewind_to(&mut w.model, keep)?;
                });
                setup.meta.truncate(keep);
                return Ok(if keep == 0 {
                    "Back to the original model: every edit was taken back, bit-exact".into()
                } else {
                    format!("Undid edit #{n}: weights and P are bit-exact as before it")
                });
            }
            Rewind::Remove(k) => k,
        };
        // Every method the later entries were made with, ready before anything changes.
        let mut kinds: Vec<MethodKind> = vec![];
        for e in &self.ledger()[k + 1..] {
            if !kinds.contains(&e.method) {
                kinds.push(e.method);
            }
        }
        let count = self.n_entries() - k - 1;
        for &kind in &kinds {
            self.ready_for(kind).await?;
        }
        let setup = setup_of(&self.editing)?;
        let methods = kinds
            .iter()
            .map(|&kind| setup.method(kind))
            .collect::<Result<Vec<&dyn EditMethod>>>()?;
        // remove_entry takes each later entry's method from `methods`.
        let ctx = context(&self.tokenizer, setup, MethodKind::Nse)?;
        let clock = self.hooks.clock;
        let mut started = vec![];
        let pause = self.hooks.pause();
        let (outcomes, scores) = with_bench!(&mut self.engine, w => {
            let state = w.edits.as_mut().expect("editing is available");
            let outcomes = history::remove_entry(&mut w.model, state, k, &ctx, &methods, pause, |j, _| {
                if started.len() == j {
                    started.push(clock());
                    on_reapply(j, count);
                }
            }).await?;
            let mut scores = vec![];
            for e in state.ledger[k..].iter_mut() {
                e.measured = edit_prompt_scores(&w.model, &self.tokenizer, &e.requests).await;
                scores.push(scores_of(&e.measured));
            }
            (outcomes, scores)
        });
        started.push(clock());
        let setup = setup_of_mut(&mut self.editing)?;
        let old: Vec<EntryMeta> = setup
            .meta
            .drain(k.min(setup.meta.len())..)
            .skip(1)
            .collect();
        let note = format!("re-applied after removing edit #{}", k + 1);
        for (j, (outcome, scores)) in outcomes.iter().zip(scores).enumerate() {
            let probes = old.get(j).map(|m| m.probes.clone()).unwrap_or_default();
            let seconds = (started[j + 1] - started[j]) / 1000.0;
            setup
                .meta
                .push(entry_meta(outcome, probes, scores, seconds, note.clone()));
        }
        Ok(format!(
            "Removed edit #{} and re-applied the {count} later edit{}",
            k + 1,
            if count == 1 { "" } else { "s" }
        ))
    }

    /// The patch of the current ledger, each entry carrying the P values measured right after
    /// it, and the digest of the edited weights (so that every replay can prove it reproduced
    /// them).
    ///
    /// # Errors
    /// Editing unavailable, a backend failure reading the weights back.
    pub async fn export_patch(&self) -> Result<Patch> {
        let setup = self.setup()?;
        with_bench!(&self.engine, w => {
            let state = w.edits.as_ref().expect("editing is available");
            let mut patch = current_patch(&self.source, setup, state);
            patch.weights_sha256 = Some(state.weights_digest(&w.model).await?);
            Ok(patch)
        })
    }

    /// The patch of the current ledger without the weights digest (cheap: nothing is read back).
    ///
    /// # Errors
    /// Editing unavailable.
    pub fn ledger_patch(&self) -> Result<Patch> {
        let setup = self.setup()?;
        with_bench!(&self.engine, w => Ok(current_patch(&self.source, setup, w.edits.as_ref().expect("editing is available"))))
    }

    /// Replaces the ledger with `patch` (replayed bit for bit on the original weights) and its
    /// records `meta` (padded or cut to the patch's entries). Into an empty ledger, a patch made
    /// with other hyperparameters brings them along ([`Session::set_hparams`]), as a ledger and
    /// its hyperparameters go together.
    ///
    /// # Errors
    /// Editing unavailable, a patch for another model (nothing changed), one made with other
    /// edited layers while the ledger holds edits, or a replay failure (the previous ledger and
    /// hyperparameters are then back).
    pub async fn replace_ledger(&mut self, patch: &Patch, meta: Vec<EntryMeta>) -> Result<()> {
        let before = self.setup()?.hp.clone();
        let adopt = self.n_entries() == 0
            && patch.hparams != before
            && patch.model_sha256 == self.source.sha256;
        if adopt {
            self.set_hparams(patch.hparams.clone())?;
        }
        let setup = setup_of_mut(&mut self.editing)?;
        let replaced = with_bench!(&mut self.engine, w => replace_in(w, setup, &self.source, patch, meta).await);
        if replaced.is_err() && adopt {
            self.set_hparams(before)?;
        }
        replaced
    }

    /// [`Session::replace_ledger`] with records made from the patch (see [`imported_meta`]).
    ///
    /// # Errors
    /// As [`Session::replace_ledger`].
    pub async fn import_patch(&mut self, patch: &Patch, note: &str) -> Result<()> {
        let meta = imported_meta(patch, note);
        self.replace_ledger(patch, meta).await
    }

    /// The current weights as one F32 safetensors file (Hugging Face names), with the base
    /// model's sha256 and the number of ledger entries in its metadata.
    ///
    /// # Errors
    /// A backend failure reading the weights back.
    pub async fn export_model(&self) -> Result<Vec<u8>> {
        let edits = self.n_entries().to_string();
        let meta = [
            ("base_model_sha256", self.source.sha256.as_str()),
            ("nse_ledger_entries", edits.as_str()),
        ];
        with_model!(&self.engine, m => export_safetensors(m, &meta).await)
    }
}

/// Per edited layer, `‖ΔW[:, j]‖` of every neuron `j` for the sum of the ledger's updates,
/// expanded from their factors exactly as they were applied.
pub fn neuron_norms(
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

/// The patch of the current ledger, each entry carrying the P values measured right after it
/// (so that `nse patch show` and another page can show them).
pub fn current_patch<T>(source: &ModelSource, setup: &EditSetup, state: &EditState<T>) -> Patch {
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

/// The records of a patch's entries: each noted with where it came from, and with the P values
/// measured when it was made, when the patch has them.
pub fn imported_meta(patch: &Patch, note: &str) -> Vec<EntryMeta> {
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

async fn replace_in<B: Backend>(
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
            "the patch edits layers {:?} but this session edits layers {:?}; it cannot be applied here",
            patch.hparams.layers, setup.hp.layers
        )));
    }
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
        return Err(e);
    }
    meta.resize_with(patch.entries.len(), EntryMeta::default);
    setup.meta = meta;
    Ok(())
}
