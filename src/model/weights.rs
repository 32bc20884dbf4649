//! The weights of a Llama-family or GPT-2 model, typed and named after the Llama checkpoint.
//!
//! Generic over the tensor type: [`HostTensor`](super::HostTensor) after loading, a backend tensor
//! after upload. Linear weights are `[out][in]` (Hugging Face `nn.Linear` layout) and Q/K rows are
//! in Hugging Face order (rotate-half RoPE); the GGUF loader un-permutes llama.cpp's layout once.
//!
//! GPT-2 is held in the same fields, by role: `ln_1` is `input_layernorm`, `attn.c_attn` is split
//! into `q_proj`, `k_proj`, `v_proj` (and [`QkvBias`]), `attn.c_proj` is `o_proj`, `ln_2` is
//! `post_attention_layernorm`, `mlp.c_fc` is `up_proj` and `mlp.c_proj`, the matrix NSE edits, is
//! `down_proj`. Its `Conv1D` weights are stored `[in][out]`; the loaders transpose them once, and
//! each keeps its checkpoint name ([`HostTensor::name`](super::HostTensor)) for errors. Its
//! biases are [`Gpt2Bias`].

/// One transformer block.
#[derive(Debug)]
pub struct LayerWeights<T> {
    /// `model.layers.{l}.input_layernorm.weight` `(d)`.
    pub input_layernorm: T,
    /// `model.layers.{l}.self_attn.q_proj.weight` `(Hq·hd, d)`.
    pub q_proj: T,
    /// `model.layers.{l}.self_attn.k_proj.weight` `(Hkv·hd, d)`.
    pub k_proj: T,
    /// `model.layers.{l}.self_attn.v_proj.weight` `(Hkv·hd, d)`.
    pub v_proj: T,
    /// `model.layers.{l}.self_attn.o_proj.weight` `(d, Hq·hd)`.
    pub o_proj: T,
    /// `model.layers.{l}.post_attention_layernorm.weight` `(d)`.
    pub post_attention_layernorm: T,
    /// `model.layers.{l}.mlp.gate_proj.weight` `(d_ff, d)`; GPT-2's MLP has no gate.
    pub gate_proj: Option<T>,
    /// `model.layers.{l}.mlp.up_proj.weight` `(d_ff, d)`.
    pub up_proj: T,
    /// `model.layers.{l}.mlp.down_proj.weight` `(d, d_ff)`: the matrix NSE edits.
    pub down_proj: T,
    /// `model.layers.{l}.self_attn.{q,k,v}_proj.bias` `(Hq·hd)`, `(Hkv·hd)`, `(Hkv·hd)`, for
    /// architectures with them (Qwen2, GPT-2).
    pub qkv_bias: Option<QkvBias<T>>,
    /// GPT-2's other biases.
    pub gpt2_bias: Option<Gpt2Bias<T>>,
}

/// GPT-2's biases besides the query, key and value projections', named after its checkpoint
/// (`transformer.h.{l}.…`).
#[derive(Debug)]
pub struct Gpt2Bias<T> {
    /// `ln_1.bias` `(d)`.
    pub ln_1: T,
    /// `attn.c_proj.bias` `(d)`.
    pub attn_c_proj: T,
    /// `ln_2.bias` `(d)`.
    pub ln_2: T,
    /// `mlp.c_fc.bias` `(d_ff)`.
    pub c_fc: T,
    /// `mlp.c_proj.bias` `(d)`.
    pub mlp_c_proj: T,
}

impl<T> Gpt2Bias<T> {
    /// Applies `f` to every bias.
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<Gpt2Bias<U>, E> {
        Ok(Gpt2Bias {
            ln_1: f(self.ln_1)?,
            attn_c_proj: f(self.attn_c_proj)?,
            ln_2: f(self.ln_2)?,
            c_fc: f(self.c_fc)?,
            mlp_c_proj: f(self.mlp_c_proj)?,
        })
    }

    /// The biases with their suffixes after `transformer.h.{l}.`.
    pub fn named(&self) -> [(&'static str, &T); 5] {
        [
            ("ln_1.bias", &self.ln_1),
            ("attn.c_proj.bias", &self.attn_c_proj),
            ("ln_2.bias", &self.ln_2),
            ("mlp.c_fc.bias", &self.c_fc),
            ("mlp.c_proj.bias", &self.mlp_c_proj),
        ]
    }
}

/// The biases of the query, key and value projections.
#[derive(Debug)]
pub struct QkvBias<T> {
    pub q: T,
    pub k: T,
    pub v: T,
}

/// Hugging Face name of a per-layer bias, e.g. `bias_name(3, "self_attn.q_proj")`.
pub fn bias_name(layer: usize, suffix: &str) -> String {
    format!("model.layers.{layer}.{suffix}.bias")
}

/// The projections that carry biases in [`QkvBias`] order.
pub const BIAS_SUFFIXES: [&str; 3] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];

/// All weights of the model.
#[derive(Debug)]
pub struct Weights<T> {
    /// `model.embed_tokens.weight` `(V, d)`.
    pub embed_tokens: T,
    /// The blocks, in order.
    pub layers: Vec<LayerWeights<T>>,
    /// `model.norm.weight` `(d)`.
    pub norm: T,
    /// `lm_head.weight` `(V, d)`, absent when tied to `embed_tokens`.
    pub lm_head: Option<T>,
    /// GPT-2's learned positions, `transformer.wpe.weight` `(P, d)`.
    pub position_embd: Option<T>,
    /// GPT-2's final LayerNorm bias, `transformer.ln_f.bias` `(d)`.
    pub norm_bias: Option<T>,
}

/// Hugging Face name of a per-layer tensor, e.g. `layer_name(3, "mlp.down_proj")`.
pub fn layer_name(layer: usize, suffix: &str) -> String {
    format!("model.layers.{layer}.{suffix}.weight")
}

/// The per-layer tensor suffixes, in [`LayerWeights`] field order.
pub const LAYER_SUFFIXES: [&str; 9] = [
    "input_layernorm",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "post_attention_layernorm",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl<T> LayerWeights<T> {
    /// Builds a layer without biases from tensors in [`LAYER_SUFFIXES`] order.
    pub fn from_array([a, b, c, d, e, f, g, h, i]: [T; 9]) -> Self {
        LayerWeights {
            input_layernorm: a,
            q_proj: b,
            k_proj: c,
            v_proj: d,
            o_proj: e,
            post_attention_layernorm: f,
            gate_proj: Some(g),
            up_proj: h,
            down_proj: i,
            qkv_bias: None,
            gpt2_bias: None,
        }
    }

    /// Applies `f` to every tensor (e.g. an upload), keeping names and order.
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<LayerWeights<U>, E> {
        Ok(LayerWeights {
            input_layernorm: f(self.input_layernorm)?,
            q_proj: f(self.q_proj)?,
            k_proj: f(self.k_proj)?,
            v_proj: f(self.v_proj)?,
            o_proj: f(self.o_proj)?,
            post_attention_layernorm: f(self.post_attention_layernorm)?,
            gate_proj: self.gate_proj.map(&mut f).transpose()?,
            up_proj: f(self.up_proj)?,
            down_proj: f(self.down_proj)?,
            qkv_bias: match self.qkv_bias {
                Some(QkvBias { q, k, v }) => Some(QkvBias {
                    q: f(q)?,
                    k: f(k)?,
                    v: f(v)?,
                }),
                None => None,
            },
            gpt2_bias: self.gpt2_bias.map(|b| b.try_map(&mut f)).transpose()?,
        })
    }

    /// Every tensor of layer `l` with its Hugging Face Llama name: [`LAYER_SUFFIXES`] order
    /// (without an absent gate), then the biases; GPT-2's own biases as
    /// `transformer.h.{l}.{suffix}`.
    pub fn named(&self, l: usize) -> Vec<(String, &T)> {
        let ts = [
            Some(&self.input_layernorm),
            Some(&self.q_proj),
            Some(&self.k_proj),
            Some(&self.v_proj),
            Some(&self.o_proj),
            Some(&self.post_attention_layernorm),
            self.gate_proj.as_ref(),
            Some(&self.up_proj),
            Some(&self.down_proj),
        ];
        let mut out: Vec<(String, &T)> = LAYER_SUFFIXES
            .iter()
            .zip(ts)
            .filter_map(|(suffix, t)| Some((layer_name(l, suffix), t?)))
            .collect();
        if let Some(b) = &self.qkv_bias {
            out.extend(
                BIAS_SUFFIXES
                    .iter()
                    .zip([&b.q, &b.k, &b.v])
                    .map(|(suffix, t)| (bias_name(l, suffix), t)),
            );
        }
        if let Some(b) = &self.gpt2_bias {
            out.extend(
                b.named()
                    .into_iter()
                    .map(|(suffix, t)| (format!("transformer.h.{l}.{suffix}"), t)),
            );
        }
        out
    }
}

impl<T> Weights<T> {
    /// Applies `f` to every tensor.
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<Weights<U>, E> {
        Ok(Weights {
            embed_tokens: f(self.embed_tokens)?,
            layers: self
                .layers
                .into_iter()
                .map(|l| l.try_map(&mut f))
                .collect::<Result<_, E>>()?,
            norm: f(self.norm)?,
            lm_head: self.lm_head.map(&mut f).transpose()?,
            position_embd: self.position_embd.map(&mut f).transpose()?,
            norm_bias: self.norm_bias.map(&mut f).transpose()?,
        })
    }

    /// Every tensor, each once (a tied head is the embedding).
    pub fn tensors(&self) -> Vec<&T> {
        let mut all = vec![&self.embed_tokens, &self.norm];
        all.extend(self.position_embd.as_ref());
        all.extend(self.norm_bias.as_ref());
        all.extend(self.lm_head.as_ref());
        for (l, layer) in self.layers.iter().enumerate() {
            all.extend(layer.named(l).into_iter().map(|(_, t)| t));
        }
        all
    }

    /// The LM head: `lm_head` when untied, else the embedding.
    pub fn head(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }
}
