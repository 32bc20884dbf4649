//! What persists between batches: the past-key second moments `P_l` (spec §5.2), the original
//! `down_proj` of every edited layer (weights rewinding, and the "original model" on demand), and
//! the ledger of applied updates, from which any earlier state is rebuilt bit for bit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::method::MethodKind;
use super::past::PastKeys;
use super::request::EditRequest;
use super::solve::Factored;
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::model::Model;
use crate::{Error, Result};

/// One layer update as applied: `W_l[:, cols] += expand(update)` in round `round`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedUpdate {
    pub round: usize,
    pub layer: usize,
    pub update: Factored,
}

/// One applied batch: enough to replay it exactly and to export it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub method: MethodKind,
    pub requests: Vec<EditRequest>,
    /// Updates in application order.
    pub updates: Vec<AppliedUpdate>,
    /// Post-batch keys per layer, `(n, d_ff)`: the batch added `Kᵀ K` to `P_l`.
    pub p_keys: BTreeMap<usize, Vec<f32>>,
    /// [`EditState::head`] when the batch was computed: the digest of the entry before it
    /// ([`ROOT_DIGEST`] for the first). Its updates and keys are only valid on top of exactly
    /// that history, so a ledger whose entries do not chain is refused.
    pub parent: String,
    /// P(new) and P(true) of each request on its edit prompt, measured right after the batch
    /// (empty when the front end did not measure them). Not part of [`LedgerEntry::digest`].
    pub measured: Vec<Measured>,
}

/// P(new) and P(true) of one request on its edit prompt, measured right after its batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub p_new: f32,
    /// `None` for a request without a true target.
    pub p_true: Option<f32>,
}

/// The parent of the first ledger entry: the base model with no edit.
pub const ROOT_DIGEST: &str = "root";

impl LedgerEntry {
    /// sha256 (hex) of everything that determines what the entry does to the weights and to
    /// `P`: its parent, method, requests, updates (rounds, layers, columns, factors) and keys.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(self.parent.as_bytes());
        field(self.method.name().as_bytes());
        field(&serde_json::to_vec(&self.requests).expect("requests serialise"));
        for u in &self.updates {
            let dims = [u.round, u.layer, u.update.n, u.update.d].map(|x| x as u64);
            field(bytemuck::cast_slice(&dims));
            field(bytemuck::cast_slice(&u.update.cols));
            field(bytemuck::cast_slice(&u.update.r));
            field(bytemuck::cast_slice(&u.update.y));
        }
        for (&l, k) in &self.p_keys {
            field(&(l as u64).to_le_bytes());
            field(bytemuck::cast_slice(k));
        }
        hex(&h.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sequential-editing state of one model.
pub struct EditState<T> {
    /// Edited layers.
    pub layers: Vec<usize>,
    /// `P_l` per edited layer (its keys while they are few, then `(d_ff, d_ff)` f32).
    pub p: BTreeMap<usize, PastKeys>,
    /// Original `down_proj` of each edited layer, on the backend.
    pub originals: BTreeMap<usize, T>,
    /// Applied batches, oldest first.
    pub ledger: Vec<LedgerEntry>,
    d_ff: usize,
}

impl<T> EditState<T> {
    /// Number of requests edited so far.
    pub fn n_requests(&self) -> usize {
        self.ledger.iter().map(|e| e.requests.len()).sum()
    }

    /// The digest of the last ledger entry ([`ROOT_DIGEST`] when the ledger is empty): the
    /// parent that the next batch records.
    pub fn head(&self) -> String {
        self.ledger
            .last()
            .map_or_else(|| ROOT_DIGEST.to_string(), LedgerEntry::digest)
    }

    /// `d_ff` of the model this state edits.
    pub fn d_ff(&self) -> usize {
        self.d_ff
    }
}

impl<T> EditState<T> {
    /// A fresh state for `layers` of `model`: `P = 0`, the current `down_proj` kept as original.
    ///
    /// # Errors
    /// A layer the model does not have, or one named twice.
    pub fn new<B: Backend<Tensor = T>>(model: &Model<B>, layers: &[usize]) -> Result<Self> {
        let (d_ff, n_layers) = (model.config.d_ff, model.config.n_layers);
        if let Some(&l) = layers.iter().find(|&&l| l >= n_layers) {
            return Err(Error::input(format!(
                "layer {l} cannot be edited: the model has {n_layers} layers (0..={}); fix the \
                 hyperparameters' `layers`",
                n_layers.saturating_sub(1)
            )));
        }
        if let Some((i, &l)) = layers
            .iter()
            .enumerate()
            .find(|(i, l)| layers[..*i].contains(l))
        {
            return Err(Error::input(format!(
                "layer {l} is named twice in the edited layers {layers:?} (position {i})"
            )));
        }
        let mut originals = BTreeMap::new();
        for &l in layers {
            originals.insert(l, model.backend().copy(&model.weights.layers[l].down_proj)?);
        }
        Ok(EditState {
            layers: layers.to_vec(),
            p: layers.iter().map(|&l| (l, PastKeys::new(d_ff))).collect(),
            originals,
            ledger: vec![],
            d_ff,
        })
    }

    /// sha256 (hex) of the edited layers' `down_proj` (f32, little-endian, in layer order): the
    /// fingerprint of the weights a ledger produced, recorded in patches and checked on replay.
    ///
    /// # Errors
    /// A backend failure reading the weights back.
    pub async fn weights_digest<B: Backend<Tensor = T>>(&self, model: &Model<B>) -> Result<String> {
        let mut h = Sha256::new();
        for &l in &self.layers {
            let w = model
                .backend()
                .read(&model.weights.layers[l].down_proj)
                .await?;
            h.update((l as u64).to_le_bytes());
            for x in w {
                h.update(x.to_le_bytes());
            }
        }
        Ok(hex(&h.finalize()))
    }

    /// `P_l += Kᵀ K` for every layer of `p_keys`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when a layer's `P` is due to become dense and does not fit the memory
    /// budget; `P` is then unchanged.
    ///
    /// # Panics
    /// A layer that this state does not edit, or keys whose length is not a multiple of `d_ff`:
    /// callers check entries from files first ([`crate::edit::patch::Patch::check_fits`]).
    pub fn add_to_p(&mut self, p_keys: &BTreeMap<usize, Vec<f32>>) -> Result<()> {
        for (l, k) in p_keys {
            self.p[l].check_add(k)?;
        }
        for (l, k) in p_keys {
            self.p
                .get_mut(l)
                .expect("P for every edited layer")
                .add(k)?;
        }
        Ok(())
    }

    /// Appends `entries` to the ledger, replaying their updates on `model` and adding their keys
    /// to `P`: the same f32 additions in the same order as when they were first applied, so the
    /// weights are bit for bit those of the run that made them.
    ///
    /// Entries from files must pass [`crate::edit::patch::Patch::check_fits`] first.
    ///
    /// # Errors
    /// A backend failure; the entries replayed before it stay applied (callers rewind).
    pub fn replay<B: Backend<Tensor = T>>(
        &mut self,
        model: &mut Model<B>,
        entries: &[LedgerEntry],
    ) -> Result<()> {
        for e in entries {
            for u in &e.updates {
                let (be, w) = model.parts_mut();
                apply_update(be, &mut w.layers[u.layer].down_proj, &u.update)?;
            }
            self.add_to_p(&e.p_keys)?;
            self.ledger.push(e.clone());
        }
        Ok(())
    }

    /// Swaps the original `down_proj` matrices into `model` (and the edited ones into this state);
    /// a second call swaps them back. O(1): no copy, so "the original model" costs no memory.
    /// Callers must swap back before editing again.
    pub fn swap_originals<B: Backend<Tensor = T>>(&mut self, model: &mut Model<B>) {
        for (&l, t) in self.originals.iter_mut() {
            std::mem::swap(&mut model.weights.layers[l].down_proj, t);
        }
    }

    /// The original `down_proj` of the edited layers, as forward overrides.
    pub fn original_overrides(&self) -> Vec<(usize, &T)> {
        self.originals.iter().map(|(&l, t)| (l, t)).collect()
    }

    /// Rebuilds weights and `P` from the originals and the first `keep` ledger entries, dropping
    /// the rest. Bit-exact: the same f32 additions happen in the same order as when the edits
    /// were first applied.
    pub fn rewind_to<B: Backend<Tensor = T>>(
        &mut self,
        model: &mut Model<B>,
        keep: usize,
    ) -> Result<()> {
        self.rebuild_weights(model, keep)?;
        self.ledger.truncate(keep);
        for p in self.p.values_mut() {
            p.clear();
        }
        let keys: Vec<_> = self.ledger.iter().map(|e| e.p_keys.clone()).collect();
        for k in &keys {
            self.add_to_p(k)?;
        }
        Ok(())
    }
}

impl<T> EditState<T> {
    /// Sets the edited layers' `down_proj` to the originals with the updates of the first
    /// `keep` ledger entries applied, bit for bit as when they were first applied; the ledger
    /// and `P` stay as they are. A batch that fails half-way is undone this way (its updates are
    /// not in the ledger), with no copy of the weights kept while it runs.
    ///
    /// # Errors
    /// A backend failure; the model's weights are then unchanged.
    pub fn rebuild_weights<B: Backend<Tensor = T>>(
        &self,
        model: &mut Model<B>,
        keep: usize,
    ) -> Result<()> {
        let be = model.backend();
        let mut weights = BTreeMap::new();
        for (&l, orig) in &self.originals {
            weights.insert(l, be.copy(orig)?);
        }
        for entry in &self.ledger[..keep] {
            for u in &entry.updates {
                apply_update(
                    be,
                    weights.get_mut(&u.layer).expect("edited layer"),
                    &u.update,
                )?;
            }
        }
        for (l, w) in weights {
            model.weights.layers[l].down_proj = w;
        }
        Ok(())
    }
}

/// `W[:, cols] += expand(update)` on the backend.
pub fn apply_update<B: Backend>(be: &B, w: &mut B::Tensor, update: &Factored) -> Result<()> {
    let s = update.cols.len();
    let cols = be.upload_u32("update columns", &update.cols, &[s])?;
    let delta = be.upload_owned("update", update.expand(), &[update.d, s])?;
    be.add_columns(w, &cols, &delta)
}
