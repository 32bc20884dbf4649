//! A minimal GGUF v3 writer for building test files, written from the GGUF v3 format
//! description (not from the reader), plus a tiny random Llama in GGUF form.

use std::collections::HashMap;

/// A metadata value to write.
pub enum Val {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArr(Vec<String>),
    I32Arr(Vec<i32>),
    /// Written as an array of arrays of u8.
    Nested(Vec<Vec<u8>>),
}

pub struct Tensor {
    pub name: String,
    /// GGUF order: fastest dimension first.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

pub struct GgufWriter {
    pub version: u32,
    pub alignment: u64,
    pub kv: Vec<(String, Val)>,
    pub tensors: Vec<Tensor>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_val(out: &mut Vec<u8>, v: &Val) {
    match v {
        Val::U32(x) => out.extend(x.to_le_bytes()),
        Val::I32(x) => out.extend(x.to_le_bytes()),
        Val::F32(x) => out.extend(x.to_le_bytes()),
        Val::Bool(x) => out.push(*x as u8),
        Val::Str(s) => put_str(out, s),
        Val::StrArr(a) => {
            out.extend(8u32.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|s| put_str(out, s));
        }
        Val::I32Arr(a) => {
            out.extend(5u32.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|x| out.extend(x.to_le_bytes()));
        }
        Val::Nested(a) => {
            out.extend(9u32.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            for inner in a {
                out.extend(0u32.to_le_bytes());
                out.extend((inner.len() as u64).to_le_bytes());
                out.extend(inner);
            }
        }
    }
}

fn type_id(v: &Val) -> u32 {
    match v {
        Val::U32(_) => 4,
        Val::I32(_) => 5,
        Val::F32(_) => 6,
        Val::Bool(_) => 7,
        Val::Str(_) => 8,
        Val::StrArr(_) | Val::I32Arr(_) | Val::Nested(_) => 9,
    }
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty v3 file with the default alignment of 32.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn kv(&mut self, key: &str, v: Val) -> &mut Self {
        self.kv.push((key.to_string(), v));
        self
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// An F32 tensor with row-major `shape` (slowest first), as GGUF stores it.
    pub fn f32_tensor(&mut self, name: &str, shape: &[usize], values: &[f32]) -> &mut Self {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensor(
            name,
            &dims,
            0,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            put_val(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.ggml_type.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        let data_start = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(data_start as usize, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend(&t.data);
        }
        out
    }
}

/// A deterministic xorshift generator for test weights.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Hyperparameters of the tiny test Llama.
pub const TINY: TinyDims = TinyDims {
    layers: 2,
    d: 8,
    d_ff: 12,
    heads: 2,
    kv_heads: 1,
    hd: 4,
};

pub struct TinyDims {
    pub layers: usize,
    pub d: usize,
    pub d_ff: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
}

/// The tiny vocabulary: byte-level BPE with two merges, one control token.
pub fn tiny_vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let tokens = ["<|endoftext|>", "a", "b", "ab", "Ġ", "Ġa", "Ġab"]
        .map(String::from)
        .to_vec();
    let merges = ["Ġ a", "a b", "Ġa b"].map(String::from).to_vec();
    let types = vec![3, 1, 1, 1, 1, 1, 1];
    (tokens, merges, types)
}

/// HF-layout random weights of the tiny Llama (untied), by HF name, with row-major shapes.
pub fn tiny_hf_weights(seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let t = TINY;
    let vocab = tiny_vocab().0.len();
    let mut rng = Rng(seed);
    let (q, kv) = (t.heads * t.hd, t.kv_heads * t.hd);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab, t.d])];
    for l in 0..t.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        out.push((p("input_layernorm"), vec![t.d]));
        out.push((p("self_attn.q_proj"), vec![q, t.d]));
        out.push((p("self_attn.k_proj"), vec![kv, t.d]));
        out.push((p("self_attn.v_proj"), vec![kv, t.d]));
        out.push((p("self_attn.o_proj"), vec![t.d, q]));
        out.push((p("post_attention_layernorm"), vec![t.d]));
        out.push((p("mlp.gate_proj"), vec![t.d_ff, t.d]));
        out.push((p("mlp.up_proj"), vec![t.d_ff, t.d]));
        out.push((p("mlp.down_proj"), vec![t.d, t.d_ff]));
    }
    out.push(("model.norm.weight".into(), vec![t.d]));
    out.push(("lm_head.weight".into(), vec![vocab, t.d]));
    out.into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, shape, rng.vec(n))
        })
        .collect()
}

/// llama.cpp's converter permutation (HF → GGUF) of Q/K rows, as in `convert_hf_to_gguf.py`:
/// `w.reshape(n_head, 2, rows / n_head / 2, d_in).swapaxes(1, 2).reshape(rows, d_in)`.
pub fn llama_cpp_permute(w: &[f32], n_head: usize, d_in: usize) -> Vec<f32> {
    let rows = w.len() / d_in;
    let half = rows / n_head / 2;
    let mut out = vec![0.0; w.len()];
    // out[h][i][s] = w[h][s][i] (indices of the reshaped 4-D arrays, each followed by d_in).
    for h in 0..n_head {
        for i in 0..half {
            for s in 0..2 {
                let dst = (h * half + i) * 2 + s;
                let src = (h * 2 + s) * half + i;
                out[dst * d_in..(dst + 1) * d_in].copy_from_slice(&w[src * d_in..(src + 1) * d_in]);
            }
        }
    }
    out
}

/// HF name → (row-major shape, values).
pub type ExpectedWeights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The tiny Llama as a GGUF file (F32 tensors, Q/K permuted as llama.cpp does), with the HF
/// weights it should load back to.
pub fn tiny_llama_gguf(seed: u64) -> (GgufWriter, ExpectedWeights) {
    let t = TINY;
    let (tokens, merges, types) = tiny_vocab();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Val::Str("llama".into()))
        .kv("general.name", Val::Str("tiny".into()))
        .kv("llama.block_count", Val::U32(t.layers as u32))
        .kv("llama.context_length", Val::U32(64))
        .kv("llama.embedding_length", Val::U32(t.d as u32))
        .kv("llama.feed_forward_length", Val::U32(t.d_ff as u32))
        .kv("llama.attention.head_count", Val::U32(t.heads as u32))
        .kv("llama.attention.head_count_kv", Val::U32(t.kv_heads as u32))
        .kv("llama.rope.freq_base", Val::F32(500.0))
        .kv("llama.attention.layer_norm_rms_epsilon", Val::F32(1e-6))
        .kv("tokenizer.ggml.model", Val::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", Val::Str("smollm".into()))
        .kv("tokenizer.ggml.tokens", Val::StrArr(tokens))
        .kv("tokenizer.ggml.token_type", Val::I32Arr(types))
        .kv("tokenizer.ggml.merges", Val::StrArr(merges))
        .kv("tokenizer.ggml.eos_token_id", Val::U32(0));
    let hf = tiny_hf_weights(seed);
    for (name, shape, values) in &hf {
        let gguf = llama_cpp_name(name);
        let stored = if name.ends_with("q_proj.weight") {
            llama_cpp_permute(values, t.heads, t.d)
        } else if name.ends_with("k_proj.weight") {
            llama_cpp_permute(values, t.kv_heads, t.d)
        } else {
            values.clone()
        };
        w.f32_tensor(&gguf, shape, &stored);
    }
    let expected = hf.into_iter().map(|(n, s, v)| (n, (s, v))).collect();
    (w, expected)
}

/// llama.cpp's tensor name for an HF Llama name (`convert_hf_to_gguf.py`'s tensor map).
pub fn llama_cpp_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let per_layer = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    let rest = hf
        .strip_prefix("model.layers.")
        .unwrap()
        .strip_suffix(".weight")
        .unwrap();
    let (layer, suffix) = rest.split_once('.').unwrap();
    let (_, g) = per_layer.iter().find(|(h, _)| *h == suffix).unwrap();
    format!("blk.{layer}.{g}.weight")
}
