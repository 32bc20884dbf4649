//! Typed hyperparameters, one JSON file per model in `hparams/` (spec §8).
//!
//! Field names are the reference's, so a reference config can be read directly; fields the
//! reference does not have (our policies) have documented defaults. One flat struct serves the
//! three methods: MEMIT-seq ignores `alpha`, `upper_bound`, `max_iterations` and
//! `neuron_threshold`; AlphaEdit also ignores `mom2_update_weight` and reads its own two.

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;
use crate::{Error, Result};

/// Which string the target `z` is optimised for (spec hazard H1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetSpace {
    /// `" " + target_new`: the string the editor and the evaluation use.
    Space,
    /// `target_new` as written (what the reference's z precomputation actually used).
    None,
}

/// Editing hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hparams {
    /// Which model this file is for (informational).
    pub model_name: String,
    /// Edited layers, ascending; the last is the z layer `l0`.
    pub layers: Vec<usize>,
    /// `‖δ‖ ≤ clamp_norm_factor · ‖h_init‖`.
    pub clamp_norm_factor: f32,
    /// z optimisation: evaluations (at most `v_num_grad_steps − 1` Adam steps).
    pub v_num_grad_steps: usize,
    /// Adam learning rate for `δ`.
    pub v_lr: f32,
    /// Last block (the loss is on the final logits).
    pub v_loss_layer: usize,
    /// Weight of `‖δ‖ / ‖h_init‖²`.
    pub v_weight_decay: f32,
    /// Weight of the KL term on `"{subject} is a"`.
    pub kl_factor: f32,
    /// λ, the weight of the corpus second moment `C`.
    pub mom2_update_weight: f64,
    /// Covariance token budget.
    pub mom2_n_samples: usize,
    /// Covariance corpus: a text file, or `wikitext2_raw_test` for the bundled wikitext-2 test split.
    #[serde(default = "default_mom2_dataset")]
    pub mom2_dataset: String,
    /// Covariance window length in tokens.
    #[serde(default = "default_window")]
    pub mom2_window: usize,
    /// A request counts as done when `‖z − h‖ ≤ alpha` (`"-inf"` allowed).
    #[serde(default, with = "float_or_inf")]
    pub alpha: f32,
    /// Requests with `‖z − h‖ ≥ upper_bound` are not edited in that round (`"inf"` allowed).
    #[serde(default = "infinity", with = "float_or_inf")]
    pub upper_bound: f32,
    /// Passes of the round loop; the last only checks (≤ `max_iterations − 1` editing rounds).
    #[serde(default = "default_iterations")]
    pub max_iterations: usize,
    /// Neuron selection threshold `p` (fraction of the summed |key| score).
    #[serde(default = "one")]
    pub neuron_threshold: f32,
    /// Target string policy (hazard H1).
    #[serde(default = "default_space")]
    pub target_space: TargetSpace,
    /// The z loop stops when the loss falls below this.
    #[serde(default = "default_early_stop")]
    pub early_stop_loss: f32,
    /// AlphaEdit: eigenvalues of `C` below this span the null space.
    #[serde(default = "default_nullspace")]
    pub nullspace_threshold: f64,
    /// AlphaEdit: ridge term.
    #[serde(rename = "L2", default = "default_l2")]
    pub l2: f64,
    /// Fixed context templates (`[["{}"], [five prefixes ending in ". {}"]]`); sampled from the
    /// model with `template_seed` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_templates: Option<Vec<Vec<String>>>,
    /// Seed of the template sampler.
    #[serde(default)]
    pub template_seed: u64,
}

fn default_mom2_dataset() -> String {
    "wikitext2_raw_test".into()
}
fn default_window() -> usize {
    1024
}
fn infinity() -> f32 {
    f32::INFINITY
}
fn default_iterations() -> usize {
    3
}
fn one() -> f32 {
    1.0
}
fn default_space() -> TargetSpace {
    TargetSpace::Space
}
fn default_early_stop() -> f32 {
    0.05
}
fn default_nullspace() -> f64 {
    0.02
}
fn default_l2() -> f64 {
    10.0
}

/// JSON has no infinities: they are written as the strings `"inf"` and `"-inf"`.
mod float_or_inf {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        match *x {
            f32::INFINITY => s.serialize_str("inf"),
            f32::NEG_INFINITY => s.serialize_str("-inf"),
            v => s.serialize_f32(v),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f32),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" | "+inf" | "Infinity" => Ok(f32::INFINITY),
                "-inf" | "-Infinity" => Ok(f32::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\" or \"-inf\", got {other:?}"
                ))),
            },
        }
    }
}

/// The default model's file, built from `tests/golden/smollm2-config.json`.
pub const SMOLLM2_135M: &str = include_str!("../../hparams/SmolLM2-135M-Instruct.json");

impl Hparams {
    /// Parses a hyperparameter file and checks its values on their own ([`Hparams::validate`]:
    /// layers, policies, finite numbers); the fit to a model's depth and memory is
    /// [`Hparams::check_model`].
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let h: Hparams = serde_json::from_str(text).map_err(|e| Error::Json {
            path: path.into(),
            msg: format!("hyperparameters: {e}"),
        })?;
        h.validate(path)?;
        Ok(h)
    }

    /// Defaults for a model without a shipped file, from its depth and width. The rule and its
    /// reasons are in `hparams/README.md`; for SmolLM2-135M it gives the shipped file's values
    /// (whose context templates are the reference run's; here they are left to be sampled from
    /// the model with `template_seed`).
    ///
    /// - edited layers: five consecutive blocks from `round(L / 10)` (GPT-2: `round(0.27 L)`,
    ///   the paper's 13–17 of GPT2-XL's 48) (at least 1), ending before the last block;
    ///   `v_loss_layer = L − 1`;
    /// - `alpha` and `upper_bound` (thresholds on `‖z − h‖`, which grows with the residual
    ///   width) scaled by `sqrt(d_model / 576)` from SmolLM2's 22 and 225;
    /// - the covariance window: 1,024 tokens or the context, whichever is shorter;
    /// - everything else as SmolLM2's file.
    pub fn derived(config: &ModelConfig, model_name: &str) -> Self {
        let mut hp = Hparams::parse(SMOLLM2_135M, "hparams/SmolLM2-135M-Instruct.json")
            .expect("the shipped file parses");
        let n = config.n_layers;
        // Where the published ranges start: a tenth of the depth in the Llama family, 13 of 48
        // for GPT2-XL (MEMIT's and NSE's GPT-2 setting).
        let from = if config.arch.is_gpt2() { 0.27 } else { 0.1 };
        let start = ((n as f64 * from).round() as usize).max(1);
        let end = (start + 5).min(n.saturating_sub(1)).max(start + 1);
        hp.layers = (start..end).collect();
        hp.v_loss_layer = n.saturating_sub(1);
        let scale = (config.d_model as f64 / 576.0).sqrt();
        hp.alpha = (22.0 * scale) as f32;
        hp.upper_bound = (225.0 * scale) as f32;
        hp.mom2_window = hp.mom2_window.min(config.max_ctx);
        hp.model_name = model_name.to_string();
        hp.context_templates = None;
        hp
    }

    /// The shipped file for a model if there is one, else [`Hparams::derived`] (the second
    /// value says which).
    pub fn for_model_or_derived(config: &ModelConfig, name: &str) -> (Self, bool) {
        match Hparams::for_model(name) {
            Ok(hp) => (hp, true),
            Err(_) => (Hparams::derived(config, name), false),
        }
    }

    /// The shipped file for a model, chosen by name.
    pub fn for_model(name: &str) -> Result<Self> {
        if name.to_lowercase().contains("smollm2-135m") {
            return Hparams::parse(SMOLLM2_135M, "hparams/SmolLM2-135M-Instruct.json");
        }
        Err(Error::input(format!(
            "no hyperparameter file ships for the model {name:?}; pass --hparams FILE \
             (start from hparams/SmolLM2-135M-Instruct.json and adapt `layers`)"
        )))
    }

    /// The z layer `l0` (the last edited layer).
    pub fn z_layer(&self) -> usize {
        *self.layers.last().expect("checked non-empty")
    }

    /// Checks the values that the editor relies on (also for hyperparameters read from a patch).
    ///
    /// # Errors
    /// Empty or unsorted layers, a non-positive threshold, too few iterations or steps, a bad
    /// template; the error names `path`.
    pub fn validate(&self, path: &str) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::Json {
                path: path.into(),
                msg,
            })
        };
        if self.layers.is_empty() || self.layers.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!(
                "`layers` must be a non-empty ascending list, got {:?}",
                self.layers
            ));
        }
        // Every float must survive being written back to JSON (patches embed this file):
        // numbers beyond f32's range parse as infinity, which JSON writes as `null`; and
        // serde_json parses a number with many digits or a large exponent to within one ulp,
        // so its shortest printed form may not parse back to the same bits.
        let f32s = [
            ("clamp_norm_factor", self.clamp_norm_factor),
            ("v_lr", self.v_lr),
            ("v_weight_decay", self.v_weight_decay),
            ("kl_factor", self.kl_factor),
            ("neuron_threshold", self.neuron_threshold),
            ("early_stop_loss", self.early_stop_loss),
            ("alpha", self.alpha),
            ("upper_bound", self.upper_bound),
        ];
        let f64s = [
            ("mom2_update_weight", self.mom2_update_weight),
            ("nullspace_threshold", self.nullspace_threshold),
            ("L2", self.l2),
        ];
        let infinite_ok = |name: &str| matches!(name, "alpha" | "upper_bound");
        let bad_float = f32s
            .iter()
            .filter(|(n, x)| !(infinite_ok(n) && x.is_infinite()))
            .find(|(_, x)| !x.is_finite() || !json_exact(*x))
            .map(|&(n, x)| (n, x as f64))
            .or_else(|| {
                f64s.iter()
                    .find(|(_, x)| !x.is_finite() || !json_exact(*x))
                    .copied()
            });
        if let Some((name, x)) = bad_float {
            return bad(format!(
                "`{name}` is {x:e}, which JSON cannot carry exactly: write a finite number \
                 (within ±3.4e38 for an f32 field) with at most 15 significant digits"
            ));
        }
        if self.neuron_threshold.is_nan() || self.neuron_threshold <= 0.0 {
            return bad(format!(
                "`neuron_threshold` must be > 0, got {}",
                self.neuron_threshold
            ));
        }
        if self.max_iterations < 2 {
            return bad(
                "`max_iterations` must be at least 2 (one editing round and the exit check)".into(),
            );
        }
        if self.v_num_grad_steps == 0 || self.mom2_window == 0 {
            return bad("`v_num_grad_steps` and `mom2_window` must be positive".into());
        }
        if let Some(t) = &self.context_templates
            && (t.is_empty() || t.iter().flatten().any(|s| s.matches("{}").count() != 1))
        {
            return bad("every context template must contain exactly one `{}`".into());
        }
        Ok(())
    }

    /// Checks the layers against a model's depth, and the memory the edit statistics of the
    /// edited layers take against the memory budget ([`edit_memory_bytes`]).
    ///
    /// # Errors
    /// [`Error::Input`] for a layer the model does not have, [`Error::TooLarge`] when `P`, `C`
    /// and the solve's workspace would not fit.
    pub fn check_model(&self, config: &ModelConfig) -> Result<()> {
        self.check_layers(config)?;
        let d_ff = config.d_ff;
        crate::budget::check(edit_memory_bytes(self.layers.len(), d_ff), || {
            format!(
                "editing {} layers of a model with d_ff {d_ff} (the statistic C, d_ff² f32 per \
                 layer, and the f64 solve workspace)",
                self.layers.len()
            )
        })
    }
}

impl Hparams {
    /// Checks the layers against a model's depth.
    ///
    /// # Errors
    /// [`Error::Input`] for a layer the model does not have.
    pub fn check_layers(&self, config: &ModelConfig) -> Result<()> {
        let n_layers = config.n_layers;
        if self.z_layer() >= n_layers || self.v_loss_layer >= n_layers {
            return Err(Error::input(format!(
                "the hyperparameters edit layers {:?} (loss layer {}) but the model has {n_layers} layers",
                self.layers, self.v_loss_layer
            )));
        }
        Ok(())
    }

    /// What a batch checks once the statistics are held: the layers, and the memory of one
    /// layer's NSE solve ([`NSE_SOLVE_WORKSPACE`]) against the budget. (In the page the budget
    /// is the address space not yet grown, which already excludes `C`: [`Hparams::check_model`]
    /// would count it twice.)
    ///
    /// # Errors
    /// As [`Hparams::check_layers`]; [`Error::TooLarge`] when the solve would not fit.
    pub fn check_batch(&self, config: &ModelConfig) -> Result<()> {
        self.check_layers(config)?;
        let d_ff = config.d_ff;
        crate::budget::check(
            crate::budget::bytes_of(&[d_ff, d_ff], 8)
                .and_then(|b| b.checked_mul(NSE_SOLVE_WORKSPACE)),
            || format!("the f64 solve of a layer of d_ff {d_ff} (its system and factor)"),
        )
    }
}

/// Whether `x` parses back to the same bits from the JSON serde_json writes for it.
fn json_exact<T>(x: T) -> bool
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    serde_json::to_string(&x)
        .ok()
        .and_then(|text| serde_json::from_str::<T>(&text).ok())
        .is_some_and(|back| back == x)
}

/// Bytes an edit of `n_layers` layers of MLP width `d_ff` needs whatever the method: per layer,
/// for the whole session, `C_l` (`d_ff²` f32); plus the [`NSE_SOLVE_WORKSPACE`] f64 matrices of
/// one layer's solve over all `d_ff` neurons. `P_l` is its batches' keys until they hold a
/// quarter of `d_ff` rows, and its dense `d_ff²` f32 is checked when it is made
/// ([`super::past::PastKeys::add`]); AlphaEdit's projectors and larger solve are checked when
/// the method is built ([`alphaedit_memory_bytes`]). `None` when it overflows `u64`.
pub fn edit_memory_bytes(n_layers: usize, d_ff: usize) -> Option<u64> {
    let square = crate::budget::bytes_of(&[d_ff, d_ff], 1)?;
    let held = square
        .checked_mul(4)?
        .checked_mul(u64::try_from(n_layers).ok()?)?;
    held.checked_add(square.checked_mul(NSE_SOLVE_WORKSPACE * 8)?)
}

/// `|S|²` f64 matrices alive at once in the NSE / MEMIT-seq solve (`edit/solve.rs`): `G` and
/// its Cholesky factor, `|S| ≤ d_ff`.
pub const NSE_SOLVE_WORKSPACE: u64 = 2;

/// Bytes AlphaEdit adds: per layer its null-space projector (`d_ff²` f64), and the
/// [`SOLVE_WORKSPACE`] f64 `d_ff²` matrices of one layer's solve. `None` when it overflows.
pub fn alphaedit_memory_bytes(n_layers: usize, d_ff: usize) -> Option<u64> {
    let square = crate::budget::bytes_of(&[d_ff, d_ff], 8)?;
    let held = square.checked_mul(u64::try_from(n_layers).ok()?)?;
    held.checked_add(square.checked_mul(SOLVE_WORKSPACE)?)
}

/// `d_ff²` f64 matrices alive at once in the AlphaEdit solve (`edit/solve.rs`): the projector,
/// `P + K Kᵀ`, their product `A` and its LU factors, with a temporary beside them.
pub const SOLVE_WORKSPACE: u64 = 6;
