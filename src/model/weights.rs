//! The weights of a Llama-family model, typed and named after the checkpoint.
//!
//! Generic over the tensor type: [`HostTensor`](super::HostTensor) after loading, a backend tensor
//! after upload. Linear weights are `[out][in]` (Hugging Face `nn.Linear` layout) and Q/K rows are
//! in Hugging Face order (rotate-half RoPE); the GGUF loader un-permutes llama.cpp's layout once.

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
    /// `model.layers.{l}.mlp.gate_proj.weight` `(d_ff, d)`.
    pub gate_proj: T,
    /// `model.layers.{l}.mlp.up_proj.weight` `(d_ff, d)`.
    pub up_proj: T,
    /// `model.layers.{l}.mlp.down_proj.weight` `(d, d_ff)`: the matrix NSE edits.
    pub down_proj: T,
    /// `model.layers.{l}.self_attn.{q,k,v}_proj.bias` `(Hq·hd)`, `(Hkv·hd)`, `(Hkv·hd)`, for
    /// architectures with them (Qwen2).
    pub qkv_bias: Option<QkvBias<T>>,
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
            gate_proj: g,
            up_proj: h,
            down_proj: i,
            qkv_bias: None,
        }
    }

    /// The weight matrices and norms in [`LAYER_SUFFIXES`] order (the biases aside).
    pub fn into_array(self) -> [T; 9] {
        [
            self.input_layernorm,
            self.q_proj,
            self.k_proj,
            self.v_proj,
            self.o_proj,
            self.post_attention_layernorm,
            self.gate_proj,
            self.up_proj,
            self.down_proj,
        ]
    }

    /// Applies `f` to every tensor (e.g. an upload), keeping names and order.
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<LayerWeights<U>, E> {
        let qkv_bias = match self.qkv_bias {
            Some(QkvBias { q, k, v }) => Some(QkvBias {
                q: f(q)?,
                k: f(k)?,
                v: f(v)?,
            }),
            None => None,
        };
        let LayerWeights {
            input_layernorm: a,
            q_proj: b,
            k_proj: c,
            v_proj: d,
            o_proj: e,
            post_attention_layernorm: g,
            gate_proj: h,
            up_proj: i,
            down_proj: j,
            ..
        } = self;
        let mut layer = LayerWeights::from_array([
            f(a)?,
            f(b)?,
            f(c)?,
            f(d)?,
            f(e)?,
            f(g)?,
            f(h)?,
            f(i)?,
            f(j)?,
        ]);
        layer.qkv_bias = qkv_bias;
        Ok(layer)
    }

    /// Every tensor of layer `l` with its Hugging Face name: [`LAYER_SUFFIXES`] order, then the
    /// biases.
    pub fn named(&self, l: usize) -> Vec<(String, &T)> {
        let ts = [
            &self.input_layernorm,
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.post_attention_layernorm,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ];
        let mut out: Vec<(String, &T)> = LAYER_SUFFIXES
            .iter()
            .zip(ts)
            .map(|(suffix, t)| (layer_name(l, suffix), t))
            .collect();
        if let Some(b) = &self.qkv_bias {
            out.extend(
                BIAS_SUFFIXES
                    .iter()
                    .zip([&b.q, &b.k, &b.v])
                    .map(|(suffix, t)| (bias_name(l, suffix), t)),
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
        })
    }

    /// The LM head: `lm_head` when untied, else the embedding.
    pub fn head(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }
}
