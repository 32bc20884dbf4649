//! What persists between batches: the past-key second moments `P_l` (spec §5.2), the original
//! `down_proj` of every edited layer (weights rewinding, and the "original model" on demand), and
//! the ledger of applied updates, from which any earlier state is rebuilt bit for bit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::method::MethodKind;
use super::request::EditRequest;
use super::solve::Factored;
use crate::Result;
use crate::backend::{Backend, Transpose};
use crate::model::Model;
use crate::ops::matmul::{MatmulDims, matmul_into};

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
}

/// The sequential-editing state of one model.
pub struct EditState<T> {
    /// Edited layers.
    pub layers: Vec<usize>,
    /// `P_l`, `(d_ff, d_ff)` f32 per edited layer.
    pub p: BTreeMap<usize, Vec<f32>>,
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
}

impl<T> EditState<T> {
    /// A fresh state for `layers` of `model`: `P = 0`, the current `down_proj` kept as original.
    pub fn new<B: Backend<Tensor = T>>(model: &Model<B>, layers: &[usize]) -> Result<Self> {
        let d_ff = model.config.d_ff;
        let mut originals = BTreeMap::new();
        for &l in layers {
            originals.insert(l, model.backend().copy(&model.weights.layers[l].down_proj)?);
        }
        Ok(EditState {
            layers: layers.to_vec(),
            p: layers
                .iter()
                .map(|&l| (l, vec![0.0; d_ff * d_ff]))
                .collect(),
            originals,
            ledger: vec![],
            d_ff,
        })
    }

    /// `P_l += Kᵀ K` for every layer of `p_keys`.
    pub fn add_to_p(&mut self, p_keys: &BTreeMap<usize, Vec<f32>>) {
        let f = self.d_ff;
        for (l, k) in p_keys {
            let n = k.len() / f;
            let p = self.p.get_mut(l).expect("P for every edited layer");
            matmul_into(
                p,
                k,
                k,
                MatmulDims { m: f, k: n, n: f },
                Transpose::TN,
                true,
            );
        }
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
        self.ledger.truncate(keep);
        for p in self.p.values_mut() {
            p.fill(0.0);
        }
        let keys: Vec<_> = self.ledger.iter().map(|e| e.p_keys.clone()).collect();
        for k in &keys {
            self.add_to_p(k);
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
