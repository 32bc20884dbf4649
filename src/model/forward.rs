//! The forward pass on any [`Backend`], with the taps and the injection editing needs.
//!
//! A Llama block is `h ← h + o_proj(attn(rope(q), rope(k), v))` on `input_layernorm(h)`, then
//! `h ← h + down_proj(silu(gate(x)) · up(x))` on `x = post_attention_layernorm(h)`. GPT-2's has
//! LayerNorms, no RoPE (learned positions join the embeddings), biases on every projection and
//! `down_proj(gelu(up(x)))`. The input of `down_proj` is the NSE *key* of the layer; the block
//! output `h` is the residual stream.

use std::collections::BTreeMap;

use super::batch::Packed;
use super::config::ModelConfig;
use super::host::HostTensor;
pub use super::kv::KvCache;
use super::kv::{Ctx, Kv};
use super::weights::Weights;
use crate::backend::{AttnShape, Backend, TensorInfo};
use crate::ops::rope::rope_table;
use crate::{Error, Result};

/// A model whose weights live on a backend. Weights are kept apart from run state (the KV cache,
/// activations), which the caller owns.
pub struct Model<B: Backend> {
    /// Architecture.
    pub config: ModelConfig,
    /// Weights on the backend, named after the checkpoint.
    pub weights: Weights<B::Tensor>,
    /// RoPE cos/sin table `(P, hd)`, see [`rope_table`].
    rope: B::Tensor,
    /// Number of positions the RoPE table covers.
    rope_positions: usize,
    backend: B,
}

/// Where `δ` goes: `h^{layer}[rows[r]] += delta[r]` right after block `layer`.
pub struct Injection<'a, T> {
    pub layer: usize,
    /// Row indices into the packed batch, u32 `(R)`.
    pub rows: &'a T,
    /// Vectors to add, `(R, d)`.
    pub delta: &'a T,
}

/// Which rows get logits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LogitRows {
    /// No logits (a prefix pass for keys or hidden states).
    #[default]
    None,
    /// Every row.
    All,
    /// The last row of every sequence.
    Last,
    /// These rows, in this order.
    Rows(Vec<u32>),
}

/// What a forward pass should compute besides the residual stream.
pub struct ForwardSpec<'a, T> {
    /// Layers whose block output (residual after the block) is returned, all rows `(N, d)`.
    pub block_out: &'a [usize],
    /// Layers whose `down_proj` input (the NSE key) is returned, all rows `(N, d_ff)`.
    pub mlp_key: &'a [usize],
    /// An optional shift of one block's output (NSE's `δ`).
    pub inject: Option<Injection<'a, T>>,
    /// `down_proj` matrices to use instead of the model's (NSE's weights rewinding).
    pub down_proj_override: &'a [(usize, &'a T)],
    /// Rows to compute logits for.
    pub logits: LogitRows,
    /// Run blocks `0..=last_layer` only (no logits then).
    pub last_layer: Option<usize>,
    /// Start at block `k` with this residual stream `(N, d)` (block `k`'s input, e.g. a
    /// `block_out` of layer `k − 1` from an earlier pass over the same batch) instead of at the
    /// embeddings: the blocks before `k` are not run.
    pub start: Option<(usize, &'a T)>,
}

impl<T> Default for ForwardSpec<'_, T> {
    fn default() -> Self {
        ForwardSpec {
            block_out: &[],
            mlp_key: &[],
            inject: None,
            down_proj_override: &[],
            logits: LogitRows::None,
            last_layer: None,
            start: None,
        }
    }
}

/// The outputs of [`Model::forward`].
pub struct ForwardOutput<T> {
    /// `(R, V)` for the requested rows, if any.
    pub logits: Option<T>,
    /// Block outputs by layer, `(N, d)`.
    pub block_out: BTreeMap<usize, T>,
    /// `down_proj` inputs by layer, `(N, d_ff)`.
    pub mlp_key: BTreeMap<usize, T>,
    /// The residual stream after the last block that ran, `(N, d)`.
    pub hidden: T,
}

impl<B: Backend> Model<B> {
    /// Uploads host weights to `backend`, one tensor at a time so that host memory is released as
    /// the upload proceeds.
    ///
    /// # Errors
    /// An inconsistent config ([`ModelConfig::validate`]), a RoPE table over the memory budget
    /// ([`Error::TooLarge`]), a tensor over the adapter's limits ([`Error::BufferTooLarge`]).
    pub fn upload(backend: B, config: ModelConfig, host: Weights<HostTensor>) -> Result<Self> {
        config.validate("model config")?;
        config.check_rope_table()?;
        let weights = host.try_map(|t| backend.upload_host(t))?;
        let rope_positions = config.max_ctx;
        let table = rope_table(
            config.rope_theta,
            config.head_dim,
            rope_positions,
            config.rope_scaling.as_ref(),
        );
        let rope = backend.upload_owned("rope table", table, &[rope_positions, config.head_dim])?;
        Ok(Model {
            config,
            weights,
            rope,
            rope_positions,
            backend,
        })
    }

    /// The backend the weights live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend and the weights, the latter mutably (for in-place weight updates).
    pub fn parts_mut(&mut self) -> (&B, &mut Weights<B::Tensor>) {
        (&self.backend, &mut self.weights)
    }

    /// Attention geometry.
    pub fn attn_shape(&self) -> AttnShape {
        AttnShape {
            n_heads: self.config.n_heads,
            n_kv_heads: self.config.n_kv_heads,
            head_dim: self.config.head_dim,
        }
    }

    /// The RoPE table `(P, hd)`.
    pub fn rope_table(&self) -> &B::Tensor {
        &self.rope
    }

    /// Checks that a token sequence can be run: non-empty, within the context, ids in range.
    pub fn check_tokens(&self, ids: &[u32], context: &str) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::input(format!(
                "{context}: empty input; type a prompt of at least one token"
            )));
        }
        let ctx = self.config.max_ctx.min(self.rope_positions);
        if ids.len() > ctx {
            return Err(Error::input(format!(
                "{context}: {} tokens is longer than the model's context of {ctx} tokens; shorten it",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::input(format!(
                "{context}: token id {bad} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Runs the model over a packed batch.
    pub fn forward(
        &self,
        batch: &Packed,
        spec: &ForwardSpec<B::Tensor>,
    ) -> Result<ForwardOutput<B::Tensor>> {
        for s in 0..batch.n_seqs() {
            self.check_tokens(
                &batch.ids[batch.offsets[s]..batch.offsets[s + 1]],
                "forward",
            )?;
        }
        let be = &self.backend;
        let n = batch.n_rows();
        let bt = self.upload_batch(batch)?;
        let mut ctx = Ctx {
            positions: &bt.positions,
            ranges: &bt.ranges,
            kv: Kv::Packed,
        };
        let last = spec.last_layer.unwrap_or(self.config.n_layers - 1);
        assert!(
            last < self.config.n_layers,
            "last_layer {last} out of range"
        );
        let (first, hidden) = match spec.start {
            Some((k, h)) => {
                assert!(k <= last, "start block {k} after the last block {last}");
                assert_eq!(
                    h.shape(),
                    [n, self.config.d_model],
                    "start hidden state shape"
                );
                (k, be.copy(h)?)
            }
            None => (0, self.embed(&bt.ids, &bt.positions)?),
        };
        let mut out = ForwardOutput {
            logits: None,
            block_out: BTreeMap::new(),
            mlp_key: BTreeMap::new(),
            hidden,
        };
        for l in first..=last {
            let down = spec
                .down_proj_override
                .iter()
                .find(|(ol, _)| *ol == l)
                .map(|(_, t)| *t);
            let (mut h, _, key) = self.block(l, &out.hidden, &mut ctx, down)?;
            if let Some(inj) = spec.inject.as_ref().filter(|inj| inj.layer == l) {
                be.add_rows(&mut h, inj.rows, inj.delta)?;
            }
            if spec.mlp_key.contains(&l) {
                out.mlp_key.insert(l, key);
            }
            if spec.block_out.contains(&l) {
                out.block_out.insert(l, be.copy(&h)?);
            }
            out.hidden = h;
        }
        let rows: Option<Vec<u32>> = match &spec.logits {
            LogitRows::None => None,
            LogitRows::All => Some((0..n as u32).collect()),
            LogitRows::Last => Some(
                (0..batch.n_seqs())
                    .map(|s| batch.last_row(s) as u32)
                    .collect(),
            ),
            LogitRows::Rows(r) => Some(r.clone()),
        };
        if let Some(rows) = rows {
            assert!(spec.last_layer.is_none(), "logits need the full model");
            out.logits = Some(self.logits_at(&out.hidden, &rows)?);
        }
        Ok(out)
    }

    /// Final norm and LM head at `rows` of the last residual stream: `(R, V)`.
    pub fn logits_at(&self, hidden: &B::Tensor, rows: &[u32]) -> Result<B::Tensor> {
        let be = &self.backend;
        let n = hidden.shape()[0];
        let h = if rows.len() == n && rows.iter().enumerate().all(|(i, &r)| r as usize == i) {
            be.copy(hidden)?
        } else {
            let idx = be.upload_u32("logit rows", rows, &[rows.len()])?;
            be.gather_rows(hidden, &idx)?
        };
        self.head(&h)
    }

    /// Final norm and LM head on a residual stream: `(R, d)` → `(R, V)`.
    pub fn head(&self, h: &B::Tensor) -> Result<B::Tensor> {
        let be = &self.backend;
        match &self.weights.norm_bias {
            Some(b) => {
                let x = be.layer_norm(h, &self.weights.norm, b, self.config.rms_eps)?;
                be.matmul(&x, self.weights.head(), crate::backend::Transpose::NT)
            }
            None => be.norm_matmul_nt(
                h,
                &self.weights.norm,
                self.config.rms_eps,
                self.weights.head(),
            ),
        }
    }

    /// The residual stream's start: the token embeddings, plus GPT-2's learned positions.
    ///
    /// # Shapes
    /// `ids, positions (N)` u32 → `(N, d)`.
    fn embed(&self, ids: &B::Tensor, positions: &B::Tensor) -> Result<B::Tensor> {
        let be = &self.backend;
        let e = be.embedding(&self.weights.embed_tokens, ids)?;
        match &self.weights.position_embd {
            Some(wpe) => be.add(&e, &be.embedding(wpe, positions)?),
            None => Ok(e),
        }
    }

    /// An empty KV cache for up to `capacity` tokens (at most the context length).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the cache would not fit in the memory budget.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache<B::Tensor>> {
        let capacity = capacity.clamp(1, self.config.max_ctx.max(1));
        let kv = self.config.kv_dim();
        let n_layers = self.config.n_layers;
        crate::budget::check(
            crate::budget::bytes_of(&[n_layers, 2, capacity, kv], 4),
            || {
                format!(
                    "a KV cache of {capacity} tokens ({n_layers} layers × keys and values × {kv})"
                )
            },
        )?;
        let mut k = Vec::with_capacity(self.config.n_layers);
        let mut v = Vec::with_capacity(self.config.n_layers);
        for _ in 0..self.config.n_layers {
            k.push(self.backend.zeros(&[capacity, kv])?);
            v.push(self.backend.zeros(&[capacity, kv])?);
        }
        Ok(KvCache {
            k,
            v,
            len: 0,
            capacity,
        })
    }

    /// Appends `ids` to the cache and returns the logits of the last new token, `(1, V)`.
    pub fn forward_cached(&self, cache: &mut KvCache<B::Tensor>, ids: &[u32]) -> Result<B::Tensor> {
        self.check_tokens(ids, "decode")?;
        let ids_t = self.backend.upload_u32("token ids", ids, &[ids.len()])?;
        self.forward_cached_ids(cache, &ids_t)
    }

    /// [`Self::forward_cached`] for token ids already on the backend, `(N)` u32 below the
    /// vocabulary size, such as the last step's [`Backend::argmax`]: the embedding reads them
    /// on the device, so a decoding loop can queue a token's pass before it reads the token.
    pub fn forward_cached_ids(
        &self,
        cache: &mut KvCache<B::Tensor>,
        ids_t: &B::Tensor,
    ) -> Result<B::Tensor> {
        let n = ids_t.len();
        if n == 0 {
            return Err(Error::input(
                "decode: empty input; type a prompt of at least one token",
            ));
        }
        if cache.len + n > cache.capacity {
            return Err(Error::input(format!(
                "{} cached + {n} new tokens exceed the cache of {} tokens (the model's context is {})",
                cache.len, cache.capacity, self.config.max_ctx
            )));
        }
        let be = &self.backend;
        let pos0 = cache.len;
        let positions: Vec<u32> = (pos0..pos0 + n).map(|p| p as u32).collect();
        let ranges: Vec<u32> = (0..n).flat_map(|i| [0, (pos0 + i + 1) as u32]).collect();
        let positions = be.upload_u32("positions", &positions, &[n])?;
        let ranges = be.upload_u32("attention ranges", &ranges, &[n, 2])?;
        let mut h = self.embed(ids_t, &positions)?;
        for l in 0..self.config.n_layers {
            h = self.block_cached(l, &h, cache, pos0, &positions, &ranges)?;
        }
        cache.len += n;
        if n == 1 {
            return self.head(&h);
        }
        self.logits_at(&h, &[(n - 1) as u32])
    }
}
