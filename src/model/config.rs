//! Architecture hyperparameters of a decoder-only causal LM (the Llama family or GPT-2), read
//! from GGUF metadata or from a Hugging Face `config.json`.

use serde::{Deserialize, Serialize};

/// Model family. The Llama family shares one block (RMSNorm, SwiGLU, rotate-half RoPE, grouped
/// KV heads; Llama 3's RoPE scaling is a [`RopeScaling`] of it). GPT-2 differs in four places:
/// LayerNorm with a bias, learned positions instead of RoPE, a GELU MLP without a gate, and a
/// bias on every projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// Llama 1–3, SmolLM, Mistral: no biases.
    Llama,
    /// Qwen2 / Qwen2.5: biases on the query, key and value projections.
    Qwen2,
    /// GPT-2 (the family the NSE paper edits, as GPT2-XL).
    Gpt2,
}

impl Arch {
    /// What `nse info` and errors call it.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gpt2 => "gpt2",
        }
    }

    /// Whether the query, key and value projections carry biases.
    pub fn qkv_bias(self) -> bool {
        matches!(self, Arch::Qwen2 | Arch::Gpt2)
    }

    /// GPT-2's block: LayerNorms with biases, learned positions (no RoPE), `gelu(up)` as the MLP
    /// key (no gate), and biases on the output and MLP projections too.
    pub fn is_gpt2(self) -> bool {
        self == Arch::Gpt2
    }
}

/// How the RoPE frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Llama 3.1+ (`rope_scaling.rope_type = "llama3"` in `config.json`): low frequencies
    /// divided by `factor`, high ones kept, the band between interpolated.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// One divisor per frequency (llama.cpp's `rope_freqs.weight`, what its converter writes for
    /// Llama 3 scaling): `inv_freq[c] / factors[c]`.
    Factors(Vec<f32>),
}

impl RopeScaling {
    /// The divisor of each of the `head_dim / 2` frequencies `inv_freq`, as transformers'
    /// `_compute_llama3_parameters` computes them.
    pub fn divisors(&self, inv_freq: &[f32]) -> Vec<f32> {
        match self {
            RopeScaling::Factors(f) => f.clone(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                inv_freq
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        // transformers' `~(wavelen < high) * ~(wavelen > low)`; the validated
                        // factors keep every operand finite, so this is the closed band.
                        let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                        let out = if medium {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        };
                        f / out
                    })
                    .collect()
            }
        }
    }
}

/// Everything the forward pass needs to know about the architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Residual width `d`.
    pub d_model: usize,
    /// MLP width `d_ff` (the "neurons" NSE selects among).
    pub d_ff: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Maximum context length in tokens (GPT-2: the rows of its position embedding).
    pub max_ctx: usize,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// RoPE frequency scaling (Llama 3), `None` for plain RoPE.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// The norms' epsilon (RMSNorm, or LayerNorm for GPT-2).
    pub rms_eps: f32,
    /// The LM head is the token embedding.
    pub tie_embeddings: bool,
    /// Beginning-of-sequence token, if the tokenizer has one.
    pub bos_id: Option<u32>,
    /// End-of-sequence token; generation stops there.
    pub eos_id: Option<u32>,
    /// Whether prompts get a BOS token prepended when encoded.
    pub add_bos: bool,
}

impl ModelConfig {
    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Parameter count (tied embeddings counted once).
    pub fn n_params(&self) -> usize {
        self.checked_n_params()
            .expect("a validated config's sizes do not overflow")
    }

    /// [`ModelConfig::n_params`] without overflow, `None` when any product overflows (a lying
    /// file), so that nothing downstream computes a size that wraps.
    fn checked_n_params(&self) -> Option<usize> {
        let d = self.d_model;
        let q = self.n_heads.checked_mul(self.head_dim)?;
        let kv = self.n_kv_heads.checked_mul(self.head_dim)?;
        let bias = if self.arch.qkv_bias() {
            kv.checked_mul(2)?.checked_add(q)?
        } else {
            0
        };
        let gpt2 = self.arch.is_gpt2();
        // GPT-2: no gate; LayerNorm biases (2d), the output and MLP projections' biases.
        let mlp_matrices = if gpt2 { 2 } else { 3 };
        let gpt2_bias = if gpt2 {
            d.checked_mul(4)?.checked_add(self.d_ff)?
        } else {
            0
        };
        let per_layer = [
            bias,
            gpt2_bias,
            d.checked_mul(2)?,
            d.checked_mul(q)?,
            d.checked_mul(kv)?.checked_mul(2)?,
            q.checked_mul(d)?,
            d.checked_mul(self.d_ff)?.checked_mul(mlp_matrices)?,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)?;
        let embed = self.vocab_size.checked_mul(d)?;
        let head = if self.tie_embeddings { 0 } else { embed };
        // GPT-2's learned positions and final LayerNorm bias.
        let positions = if gpt2 {
            self.max_ctx.checked_mul(d)?.checked_add(d)?
        } else {
            0
        };
        self.n_layers
            .checked_mul(per_layer)?
            .checked_add(embed)?
            .checked_add(d)?
            .checked_add(head)?
            .checked_add(positions)
    }

    /// Bytes of all the weights as f32 (what the loaders build), `None` when it overflows.
    pub fn weight_bytes(&self) -> Option<u64> {
        u64::try_from(self.checked_n_params()?).ok()?.checked_mul(4)
    }

    /// Bytes of the RoPE cos/sin table, `(max_ctx, head_dim)` f32, `None` when it overflows.
    pub fn rope_table_bytes(&self) -> Option<u64> {
        crate::budget::bytes_of(&[self.max_ctx.max(1), self.head_dim], 4)
    }

    /// Checks what loading this model allocates from its dimensions against the memory budget
    /// (the f32 weights and the RoPE table). Loaders call it before decoding any tensor.
    ///
    /// `file_weights` is the number of weights the file's tensors store. The weights are only
    /// budgeted as a whole when the file holds them all: when it holds fewer, loading stops at
    /// the first missing or misshapen tensor (a named error), and what is decoded before that is
    /// justified by the file and checked tensor by tensor.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] naming the weights or the table.
    pub fn check_memory(&self, file_weights: u64) -> crate::Result<()> {
        self.check_memory_as(file_weights, self.weight_bytes(), "as f32")
    }

    /// [`ModelConfig::check_memory`] for weights that take `resident` bytes once loaded
    /// (matrices kept in their file's storage type, see [`crate::model::host::Stored`]),
    /// `how` saying so in the error.
    ///
    /// # Errors
    /// As [`ModelConfig::check_memory`].
    pub fn check_memory_as(
        &self,
        file_weights: u64,
        resident: Option<u64>,
        how: &str,
    ) -> crate::Result<()> {
        let n_params = self.checked_n_params().and_then(|n| u64::try_from(n).ok());
        if n_params.is_some_and(|n| n <= file_weights) {
            crate::budget::check(resident, || {
                format!(
                    "the model's weights {how} ({} layers, d_model {}, d_ff {}, vocabulary {})",
                    self.n_layers, self.d_model, self.d_ff, self.vocab_size
                )
            })?;
        }
        self.check_rope_table()
    }

    /// Checks the RoPE table against the memory budget.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] naming the table.
    pub fn check_rope_table(&self) -> crate::Result<()> {
        crate::budget::check(self.rope_table_bytes(), || {
            format!(
                "the RoPE table for a context of {} positions (context_length / \
                 max_position_embeddings) × head_dim {}",
                self.max_ctx, self.head_dim
            )
        })
    }

    /// Checks internal consistency; loaders call this so that a lying file errors out early.
    pub fn validate(&self, path: &str) -> crate::Result<()> {
        let bad = |msg: String| Err(crate::Error::format(path, msg));
        if self.n_layers == 0 || self.d_model == 0 || self.d_ff == 0 || self.vocab_size == 0 {
            return bad(format!("config has a zero dimension: {self:?}"));
        }
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return bad(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim == 0 || (!self.arch.is_gpt2() && !self.head_dim.is_multiple_of(2)) {
            return bad(format!(
                "head_dim {} must be even and non-zero (RoPE pairs)",
                self.head_dim
            ));
        }
        if self.checked_n_params().is_none() {
            return bad(format!(
                "config sizes are too large to address (their products overflow): {self:?}"
            ));
        }
        // Written so that NaN fails too.
        let positive = |x: f32| x.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater);
        if !positive(self.rope_theta) || !positive(self.rms_eps) {
            return bad(format!(
                "rope_theta {} and rms_norm_eps {} must be positive",
                self.rope_theta, self.rms_eps
            ));
        }
        if self.max_ctx == 0 {
            return bad("the context length is 0".into());
        }
        match &self.rope_scaling {
            Some(RopeScaling::Factors(f))
                if f.len() != self.head_dim / 2
                    || !f.iter().all(|&x| positive(x) && x.is_finite()) =>
            {
                return bad(format!(
                    "the RoPE frequency factors (rope_freqs.weight) must be {} positive finite \
                     numbers, one per frequency of head_dim {}",
                    self.head_dim / 2,
                    self.head_dim
                ));
            }
            Some(RopeScaling::Factors(_)) | None => {}
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let ok = [*factor, *low_freq_factor, *high_freq_factor]
                    .iter()
                    .all(|&x| positive(x) && x.is_finite())
                    && high_freq_factor > low_freq_factor
                    && *original_max_position_embeddings > 0;
                if !ok {
                    return bad(format!(
                        "rope_scaling llama3 needs positive factor, low_freq_factor < \
                         high_freq_factor and original_max_position_embeddings: {:?}",
                        self.rope_scaling
                    ));
                }
            }
        }
        Ok(())
    }
}
