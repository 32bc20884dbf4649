//! The four editing methods behind one trait. They share the batch procedure
//! ([`super::batch::apply_batch`]) and differ in where `z` comes from, how many rounds run,
//! which neurons are updated and how the update is solved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hparams::Hparams;
use super::select::{Selection, select_neurons};
use super::solve::{LayerSystem, Solved, nullspace_projector, solve_alphaedit, solve_nse};
use crate::{Error, Result};

/// Method names, as the command line and the page spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    Nse,
    MemitSeq,
    Memit,
    Alphaedit,
}

impl MethodKind {
    /// `nse`, `memit-seq`, `memit` or `alphaedit`.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Nse => "nse",
            MethodKind::MemitSeq => "memit-seq",
            MethodKind::Memit => "memit",
            MethodKind::Alphaedit => "alphaedit",
        }
    }

    /// Parses a method name.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nse" => Ok(MethodKind::Nse),
            "memit-seq" | "memit_seq" => Ok(MethodKind::MemitSeq),
            "memit" => Ok(MethodKind::Memit),
            "alphaedit" | "alpha-edit" => Ok(MethodKind::Alphaedit),
            other => Err(Error::input(format!(
                "unknown method {other:?}; use nse, memit-seq, memit or alphaedit"
            ))),
        }
    }
}

/// Which requests a round edits and how many rounds run (spec §6.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundPolicy {
    /// Edit a request when `alpha < ‖z − h‖ < upper_bound`.
    pub alpha: f32,
    pub upper_bound: f32,
    /// Passes of the loop; the last only checks.
    pub max_iterations: usize,
}

/// What distinguishes the methods.
pub trait EditMethod {
    /// The method's name.
    fn kind(&self) -> MethodKind;
    /// Whether `z` is optimised with the original `down_proj` of the edited layers (NSE's
    /// weights rewinding) rather than the current weights.
    fn rewinds(&self) -> bool;
    /// The round loop's policy.
    fn rounds(&self, hp: &Hparams) -> RoundPolicy;
    /// The neurons updated at one layer, given the keys `(n, d_ff)` of the edited requests.
    fn select(&self, keys: &[f32], d_ff: usize, hp: &Hparams) -> Selection;
    /// Solves one layer's update.
    fn solve(
        &self,
        layer: usize,
        sys: &LayerSystem,
        selection: &Selection,
        hp: &Hparams,
    ) -> Result<Solved>;
}

/// NSE: weights rewinding, α/U rounds, neuron selection, `λC + P + KKᵀ`.
pub struct Nse;

impl EditMethod for Nse {
    fn kind(&self) -> MethodKind {
        MethodKind::Nse
    }
    fn rewinds(&self) -> bool {
        true
    }
    fn rounds(&self, hp: &Hparams) -> RoundPolicy {
        RoundPolicy {
            alpha: hp.alpha,
            upper_bound: hp.upper_bound,
            max_iterations: hp.max_iterations,
        }
    }
    fn select(&self, keys: &[f32], d_ff: usize, hp: &Hparams) -> Selection {
        select_neurons(keys, d_ff, hp.neuron_threshold)
    }
    fn solve(
        &self,
        _layer: usize,
        sys: &LayerSystem,
        selection: &Selection,
        hp: &Hparams,
    ) -> Result<Solved> {
        solve_nse(sys, &selection.selected, hp.mom2_update_weight)
    }
}

/// MEMIT-seq: z from the current weights, all neurons, one round (spec §9).
pub struct MemitSeq;

/// One editing round for every request.
const ONE_ROUND: RoundPolicy = RoundPolicy {
    alpha: f32::NEG_INFINITY,
    upper_bound: f32::INFINITY,
    max_iterations: 2,
};

impl EditMethod for MemitSeq {
    fn kind(&self) -> MethodKind {
        MethodKind::MemitSeq
    }
    fn rewinds(&self) -> bool {
        false
    }
    fn rounds(&self, _hp: &Hparams) -> RoundPolicy {
        ONE_ROUND
    }
    fn select(&self, keys: &[f32], d_ff: usize, _hp: &Hparams) -> Selection {
        select_neurons(keys, d_ff, 1.0)
    }
    fn solve(
        &self,
        _layer: usize,
        sys: &LayerSystem,
        selection: &Selection,
        hp: &Hparams,
    ) -> Result<Solved> {
        solve_nse(sys, &selection.selected, hp.mom2_update_weight)
    }
}

/// MEMIT applied batch after batch with nothing of the earlier batches in its system: `z` from
/// the current weights, all neurons, one round, and `G = λC + K Kᵀ` without the past keys `P`
/// (spec §9's MEMIT-seq without its `P` term). The baseline that the NSE paper shows collapsing
/// over long sequences.
pub struct Memit;

impl EditMethod for Memit {
    fn kind(&self) -> MethodKind {
        MethodKind::Memit
    }
    fn rewinds(&self) -> bool {
        false
    }
    fn rounds(&self, _hp: &Hparams) -> RoundPolicy {
        ONE_ROUND
    }
    fn select(&self, keys: &[f32], d_ff: usize, _hp: &Hparams) -> Selection {
        select_neurons(keys, d_ff, 1.0)
    }
    fn solve(
        &self,
        _layer: usize,
        sys: &LayerSystem,
        selection: &Selection,
        hp: &Hparams,
    ) -> Result<Solved> {
        let no_past = super::past::PastKeys::new(sys.d_ff);
        let sys = LayerSystem {
            p: &no_past,
            ..*sys
        };
        solve_nse(&sys, &selection.selected, hp.mom2_update_weight)
    }
}

/// AlphaEdit: z from the current weights, all neurons, one round, the update projected onto
/// the null space of `C` (spec §5.3). Holds one projector per edited layer.
pub struct AlphaEdit {
    projectors: BTreeMap<usize, Vec<f64>>,
}

impl AlphaEdit {
    /// Builds the projectors from the covariance statistics (an eigendecomposition per layer).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the projectors and the solve would not fit the memory budget
    /// ([`super::hparams::alphaedit_memory_bytes`]); a failed eigendecomposition.
    pub fn new(cov: &BTreeMap<usize, Vec<f32>>, d_ff: usize, hp: &Hparams) -> Result<Self> {
        crate::budget::check(
            super::hparams::alphaedit_memory_bytes(cov.len(), d_ff),
            || {
                format!(
                    "AlphaEdit on {} layers of d_ff {d_ff} (a d_ff² f64 projector per layer and \
                     the f64 solve workspace)",
                    cov.len()
                )
            },
        )?;
        let projectors = cov
            .iter()
            .map(|(&l, c)| Ok((l, nullspace_projector(c, d_ff, hp.nullspace_threshold)?)))
            .collect::<Result<_>>()?;
        Ok(AlphaEdit { projectors })
    }
}

impl EditMethod for AlphaEdit {
    fn kind(&self) -> MethodKind {
        MethodKind::Alphaedit
    }
    fn rewinds(&self) -> bool {
        false
    }
    fn rounds(&self, _hp: &Hparams) -> RoundPolicy {
        ONE_ROUND
    }
    fn select(&self, keys: &[f32], d_ff: usize, _hp: &Hparams) -> Selection {
        select_neurons(keys, d_ff, 1.0)
    }
    fn solve(
        &self,
        layer: usize,
        sys: &LayerSystem,
        _selection: &Selection,
        hp: &Hparams,
    ) -> Result<Solved> {
        let proj = self
            .projectors
            .get(&layer)
            .expect("a projector for every edited layer");
        solve_alphaedit(sys, proj, hp.l2)
    }
}
