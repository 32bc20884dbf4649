//! Browser tests: the gpu backend on the browser's WebGPU against the cpu backend, op by op and
//! through a tiny random Llama; editing on WebGPU against the cpu backend, patches in wasm, and
//! the page's IndexedDB ledger store (`web/edit.rs`, `web/storage.rs`).
//!
//! Run with `cargo test --target wasm32-unknown-unknown --test web`: the runner
//! (`wasm-bindgen-test-runner`) and the Chromium flags (`ci/webdriver.json`, which turns on
//! `--enable-unsafe-webgpu`) come from `.cargo/config.toml`. Headless Chromium has no GPU
//! here, so WebGPU is its SwiftShader fallback adapter: correct but slow, hence tiny sizes.
//! (Native `tests/common` is not used: it reads files and blocks on the GPU with pollster.)
#![cfg(target_arch = "wasm32")]

use nse::backend::{Backend, QkvDecode, TensorInfo, Transpose};
use nse::cpu::{CpuBackend, CpuTensor};
use nse::gpu::kernels::fused::{QKV_BIAS_BINDINGS, QKV_BINDINGS};
use nse::gpu::{GpuBackend, GpuTensor};
use nse::model::gguf::GgmlType;
use nse::model::{
    Arch, ForwardSpec, HostTensor, LayerWeights, LogitRows, Model, ModelConfig, Packed, Weights,
};
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "web/edit.rs"]
mod edit;
#[path = "web/storage.rs"]
mod storage;
#[path = "common/stored.rs"]
mod stored;

/// SplitMix64: the same inputs on every machine and every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)` with 24 random bits.
    fn signed(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.signed()).collect()
    }
}

/// `|got − want| ≤ abs + rel·|want| + rel_of_max·max|want|`.
#[derive(Clone, Copy)]
struct Tol {
    abs: f32,
    rel: f32,
    rel_of_max: f32,
}

/// One f32 reduction (a dot product, a row's mean square) summed in another order than the
/// cpu backend's, which also accumulates some sums in f64: a few ulp per term.
const TOL_REDUCTION: Tol = Tol {
    abs: 1e-6,
    rel: 1e-4,
    rel_of_max: 1e-5,
};

/// Elementwise maths whose `exp`/`sqrt`/fused multiply-adds differ by a few ulp between the GPU
/// and the host.
const TOL_ELEMENTWISE: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
    rel_of_max: 0.0,
};

/// A whole (tiny) forward pass: the reduction-order differences above, compounded through two
/// blocks of RMSNorm, attention softmax and SwiGLU, and the LM head.
const TOL_FORWARD: Tol = Tol {
    abs: 1e-5,
    rel: 1e-4,
    rel_of_max: 1e-4,
};

/// Panics unless `got` is within `tol` of `want`, naming the worst index and both values there.
fn assert_close(got: &[f32], want: &[f32], tol: Tol, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max_want = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    let (mut max_abs, mut max_rel) = (0.0f32, 0.0f32);
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let bound = tol.abs + tol.rel * w.abs() + tol.rel_of_max * max_want;
        max_abs = max_abs.max(err);
        max_rel = max_rel.max(if w != 0.0 { err / w.abs() } else { err });
        let excess = if err.is_nan() {
            f32::INFINITY
        } else {
            err - bound
        };
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    console_log!("{what}: max abs {max_abs:.2e}, max rel {max_rel:.2e}");
    if let Some((i, _)) = worst {
        panic!(
            "{what}: index {i}: got {}, want {} (max abs error {max_abs:.3e}, max rel {max_rel:.3e}, \
             {} values)",
            got[i],
            want[i],
            got.len()
        );
    }
}

/// The default device: the hardware kernels (GEMV, split-K, split-KV attention) on every
/// adapter, so Chrome's WGSL compiler checks the kernels real GPUs get.
async fn gpu() -> GpuBackend {
    let g = GpuBackend::new().await.expect(
        "no WebGPU adapter: the browser needs --enable-unsafe-webgpu (see ci/webdriver.json)",
    );
    assert_eq!(g.kernel_set(), nse::gpu::KernelSet::Hardware);
    g
}

async fn read(g: &GpuBackend, t: &GpuTensor) -> Vec<f32> {
    g.read(t).await.expect("GPU readback")
}

/// The same random data on both backends.
fn both(g: &GpuBackend, rng: &mut Rng, shape: &[usize]) -> (GpuTensor, CpuTensor) {
    let data = rng.vec(shape.iter().product());
    (
        g.upload("test input", &data, shape).unwrap(),
        CpuBackend.upload("test input", &data, shape).unwrap(),
    )
}

#[wasm_bindgen_test]
async fn webgpu_adapter_is_found() {
    let g = gpu().await;
    let info = g.adapter_info();
    console_log!("adapter: {} ({:?})", g.describe_adapter(), info.backend);
    console_log!("kernels: {}", g.kernel_summary());
    assert_eq!(info.backend, wgpu::Backend::BrowserWebGpu);
    // wgpu 30's browser backend does not map WebGPU's `subgroups` feature, so the page runs the
    // portable reductions even where Chrome has subgroups (this one does: see
    // `subgroup_variants_compile_and_reduce_right_in_chrome`). If a later wgpu maps it, the
    // device's startup check must pass and the variants come into use.
    assert_eq!(
        g.uses_subgroups(),
        g.subgroup_sizes().is_some(),
        "{:?}",
        g.subgroup_sizes()
    );
    // wgpu maps shader-f16 in the browser: where Chrome's adapter has it, F16 weights are read
    // as f16 unless the device's startup check (every f16 decoded both ways) failed.
    assert_eq!(g.uses_f16(), g.has_f16(), "shader-f16 present but not used");
}

#[wasm_bindgen_test]
async fn matmul_matches_the_cpu_backend() {
    let g = gpu().await;
    let mut rng = Rng(1);
    // K = 37 is not a multiple of 4 (the general kernel); 64×48×40 takes the vec4 kernel;
    // 3×48×40 `nt` the GEMV, 2×2048×8 split-K.
    for (m, k, n) in [
        (64, 37, 40),
        (64, 48, 40),
        (1, 37, 3),
        (3, 48, 40),
        (2, 2048, 8),
    ] {
        for t in [Transpose::NN, Transpose::NT, Transpose::TN] {
            let sa = if t.a { [k, m] } else { [m, k] };
            let sb = if t.b { [n, k] } else { [k, n] };
            let (a, ac) = both(&g, &mut rng, &sa);
            let (b, bc) = both(&g, &mut rng, &sb);
            let got = g.matmul(&a, &b, t).unwrap();
            let want = CpuBackend.matmul(&ac, &bc, t).unwrap();
            assert_eq!(got.shape(), want.shape());
            let what = format!("matmul {m}x{k}x{n} {t:?}");
            assert_close(&read(&g, &got).await, want.f32(), TOL_REDUCTION, &what);
        }
    }
}

/// Decoding's fused GEMVs (`gemv_fused.wgsl`, every entry point) against the cpu backend's
/// unfused compositions, so that Chrome's WGSL compiler checks them too.
#[wasm_bindgen_test]
async fn fused_decoding_kernels_match_the_cpu_backend() {
    let g = gpu().await;
    let mut rng = Rng(3);
    let (m, d, f, hd) = (2, 32, 40, 8);
    let (nq, nkv, cap) = (4 * hd, 2 * hd, 6);
    let (h, hc) = both(&g, &mut rng, &[m, d]);
    let (norm, normc) = both(&g, &mut rng, &[d]);
    let (w, wc) = both(&g, &mut rng, &[f, d]);
    let (w2, w2c) = both(&g, &mut rng, &[f, d]);
    let (r, rc) = both(&g, &mut rng, &[m, f]);
    let (x, xc) = both(&g, &mut rng, &[m, f]);
    let (wo, woc) = both(&g, &mut rng, &[f, f]);
    let got = g.norm_matmul_nt(&h, &norm, 1e-5, &w).unwrap();
    let want = CpuBackend.norm_matmul_nt(&hc, &normc, 1e-5, &wc).unwrap();
    assert_close(
        &read(&g, &got).await,
        want.f32(),
        TOL_REDUCTION,
        "norm_matmul_nt",
    );
    let got = g.matmul_nt_residual(&x, &wo, &r).unwrap();
    let want = CpuBackend.matmul_nt_residual(&xc, &woc, &rc).unwrap();
    assert_close(
        &read(&g, &got).await,
        want.f32(),
        TOL_REDUCTION,
        "matmul_nt_residual",
    );
    let got = g.norm_gate_up(&h, &norm, 1e-5, &w, &w2).unwrap();
    let want = CpuBackend
        .norm_gate_up(&hc, &normc, 1e-5, &wc, &w2c)
        .unwrap();
    assert_close(
        &read(&g, &got).await,
        want.f32(),
        TOL_REDUCTION,
        "norm_gate_up",
    );
    let table = nse::ops::rope::rope_table(10000.0, hd, cap, None);
    let tg = g.upload("rope", &table, &[cap, hd]).unwrap();
    let tc = CpuBackend.upload("rope", &table, &[cap, hd]).unwrap();
    let pos0 = 3;
    let ids = [pos0 as u32, pos0 as u32 + 1];
    let pg = g.upload_u32("positions", &ids, &[m]).unwrap();
    let pc = CpuBackend.upload_u32("positions", &ids, &[m]).unwrap();
    let (wq, wqc) = both(&g, &mut rng, &[nq, d]);
    let (wk, wkc) = both(&g, &mut rng, &[nkv, d]);
    let (wv, wvc) = both(&g, &mut rng, &[nkv, d]);
    let (bq, bqc) = both(&g, &mut rng, &[nq]);
    let (bk, bkc) = both(&g, &mut rng, &[nkv]);
    let (bv, bvc) = both(&g, &mut rng, &[nkv]);
    for bias in [false, true] {
        let (mut kg, mut kc) = both(&g, &mut rng, &[cap, nkv]);
        let (mut vg, mut vc) = both(&g, &mut rng, &[cap, nkv]);
        let pgpu = QkvDecode {
            norm: &norm,
            eps: 1e-5,
            proj: [&wq, &wk, &wv],
            bias: bias.then_some([&bq, &bk, &bv]),
            positions: &pg,
            table: &tg,
            head_dim: hd,
            pos0,
        };
        let pcpu = QkvDecode {
            norm: &normc,
            eps: 1e-5,
            proj: [&wqc, &wkc, &wvc],
            bias: bias.then_some([&bqc, &bkc, &bvc]),
            positions: &pc,
            table: &tc,
            head_dim: hd,
            pos0,
        };
        let got = g.decode_qkv(&h, &pgpu, &mut kg, &mut vg).unwrap();
        let want = CpuBackend.decode_qkv(&hc, &pcpu, &mut kc, &mut vc).unwrap();
        let what = format!("decode_qkv (bias {bias})");
        assert_close(
            &read(&g, &got).await,
            want.f32(),
            TOL_REDUCTION,
            &format!("{what}: q"),
        );
        assert_close(
            &read(&g, &kg).await,
            kc.f32(),
            TOL_REDUCTION,
            &format!("{what}: k"),
        );
        assert_close(
            &read(&g, &vg).await,
            vc.f32(),
            TOL_REDUCTION,
            &format!("{what}: v"),
        );
    }
}

/// Attention forward and backward (a workgroup per row) against the cpu backend: packed causal
/// sequences, one longer than a 64-key chunk and one longer than a 128-key pass, grouped heads
/// (273 query rows: the tiled kernel, in three passes); and two query rows over the keys
/// (the split-KV kernel, in several chunks).
#[wasm_bindgen_test]
async fn attention_matches_the_cpu_backend() {
    let g = gpu().await;
    let mut rng = Rng(3);
    let s = nse::backend::AttnShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
    };
    let lens = [3usize, 70, 200];
    let n: usize = lens.iter().sum();
    let mut ranges = vec![];
    let mut start = 0u32;
    for &len in &lens {
        for i in 0..len as u32 {
            ranges.extend([start, start + i + 1]);
        }
        start += len as u32;
    }
    let (q, qc) = both(&g, &mut rng, &[n, 32]);
    let (k, kc) = both(&g, &mut rng, &[n, 16]);
    let (v, vc) = both(&g, &mut rng, &[n, 16]);
    let (dout, doutc) = both(&g, &mut rng, &[n, 32]);
    let r = g.upload_u32("ranges", &ranges, &[n, 2]).unwrap();
    let rc = CpuBackend.upload_u32("ranges", &ranges, &[n, 2]).unwrap();
    let got = g.attention(&q, &k, &v, &r, s).unwrap();
    let want = CpuBackend.attention(&qc, &kc, &vc, &rc, s).unwrap();
    assert_close(
        &read(&g, &got).await,
        want.f32(),
        TOL_REDUCTION,
        "attention (tiled)",
    );
    let split_ranges = [0, n as u32, 3, 73];
    let (q2, q2c) = both(&g, &mut rng, &[2, 32]);
    let r2 = g.upload_u32("ranges", &split_ranges, &[2, 2]).unwrap();
    let r2c = CpuBackend
        .upload_u32("ranges", &split_ranges, &[2, 2])
        .unwrap();
    let got = g.attention(&q2, &k, &v, &r2, s).unwrap();
    let want = CpuBackend.attention(&q2c, &kc, &vc, &r2c, s).unwrap();
    assert_close(
        &read(&g, &got).await,
        want.f32(),
        TOL_REDUCTION,
        "attention (split)",
    );
    let (dq, dk, dv) = g.attention_backward(&q, &k, &v, &r, &dout, s).unwrap();
    let (wq, wk, wv) = CpuBackend
        .attention_backward(&qc, &kc, &vc, &rc, &doutc, s)
        .unwrap();
    assert_close(
        &read(&g, &dq).await,
        wq.f32(),
        TOL_REDUCTION,
        "attention dq",
    );
    assert_close(
        &read(&g, &dk).await,
        wk.f32(),
        TOL_REDUCTION,
        "attention dk",
    );
    assert_close(
        &read(&g, &dv).await,
        wv.f32(),
        TOL_REDUCTION,
        "attention dv",
    );
}

/// Both norms (RMSNorm; LayerNorm forward and backward) and GELU forward and backward.
#[wasm_bindgen_test]
async fn norms_and_gelu_match_the_cpu_backend() {
    let g = gpu().await;
    let mut rng = Rng(2);
    for (rows, d) in [(1, 1), (7, 37), (5, 576)] {
        let (x, xc) = both(&g, &mut rng, &[rows, d]);
        let (w, wc) = both(&g, &mut rng, &[d]);
        let (b, bc) = both(&g, &mut rng, &[d]);
        let (dy, dyc) = both(&g, &mut rng, &[rows, d]);
        let got = g.rms_norm(&x, &w, 1e-5).unwrap();
        let want = CpuBackend.rms_norm(&xc, &wc, 1e-5).unwrap();
        let what = format!("rms_norm {rows}x{d}");
        assert_close(&read(&g, &got).await, want.f32(), TOL_REDUCTION, &what);
        let got = g.layer_norm(&x, &w, &b, 1e-5).unwrap();
        let want = CpuBackend.layer_norm(&xc, &wc, &bc, 1e-5).unwrap();
        let what = format!("layer_norm {rows}x{d}");
        assert_close(&read(&g, &got).await, want.f32(), TOL_REDUCTION, &what);
        let got = g.layer_norm_backward(&x, &w, &dy, 1e-5).unwrap();
        let want = CpuBackend
            .layer_norm_backward(&xc, &wc, &dyc, 1e-5)
            .unwrap();
        let what = format!("layer_norm_backward {rows}x{d}");
        assert_close(&read(&g, &got).await, want.f32(), TOL_REDUCTION, &what);
        // GELU on inputs in ±50: its tails too, where a tanh built on exp(2u) overflows.
        let data: Vec<f32> = rng.vec(rows * d).iter().map(|v| 50.0 * v).collect();
        let xg = g.upload("gelu input", &data, &[rows, d]).unwrap();
        let xc = CpuBackend.upload("gelu input", &data, &[rows, d]).unwrap();
        let got = g.gelu(&xg).unwrap();
        let want = CpuBackend.gelu(&xc).unwrap();
        let what = format!("gelu {rows}x{d}");
        assert_close(&read(&g, &got).await, want.f32(), TOL_ELEMENTWISE, &what);
        let got = g.gelu_backward(&xg, &dy).unwrap();
        let want = CpuBackend.gelu_backward(&xc, &dyc).unwrap();
        let what = format!("gelu_backward {rows}x{d}");
        assert_close(&read(&g, &got).await, want.f32(), TOL_ELEMENTWISE, &what);
    }
}

/// 2 blocks, d 32, 4 query / 2 kv heads of 8, d_ff 48, vocabulary 64, untied LM head.
fn tiny_config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_layers: 2,
        d_model: 32,
        d_ff: 48,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        vocab_size: 64,
        max_ctx: 32,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_eps: 1e-5,
        tie_embeddings: false,
        bos_id: None,
        eos_id: None,
        add_bos: false,
    }
}

/// Random weights scaled by `1/sqrt(fan_in)`, norms around 1.
fn tiny_weights(c: &ModelConfig, seed: u64) -> Weights<HostTensor> {
    let mut rng = Rng(seed);
    let mut t = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| offset + scale * rng.signed()).collect();
        HostTensor::new(name, shape, data)
    };
    let (d, f, q, kv) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
    let s = |fan_in: usize| 1.7 / (fan_in as f32).sqrt();
    let layers = (0..c.n_layers)
        .map(|l| {
            let n = |suffix: &str| nse::model::weights::layer_name(l, suffix);
            LayerWeights {
                input_layernorm: t(n("input_layernorm"), vec![d], 0.2, 1.0),
                q_proj: t(n("self_attn.q_proj"), vec![q, d], s(d), 0.0),
                k_proj: t(n("self_attn.k_proj"), vec![kv, d], s(d), 0.0),
                v_proj: t(n("self_attn.v_proj"), vec![kv, d], s(d), 0.0),
                o_proj: t(n("self_attn.o_proj"), vec![d, q], s(q), 0.0),
                post_attention_layernorm: t(n("post_attention_layernorm"), vec![d], 0.2, 1.0),
                gate_proj: Some(t(n("mlp.gate_proj"), vec![f, d], s(d), 0.0)),
                up_proj: t(n("mlp.up_proj"), vec![f, d], s(d), 0.0),
                down_proj: t(n("mlp.down_proj"), vec![d, f], s(f), 0.0),
                qkv_bias: None,
                gpt2_bias: None,
            }
        })
        .collect();
    Weights {
        embed_tokens: t(
            "model.embed_tokens.weight".into(),
            vec![c.vocab_size, d],
            1.0,
            0.0,
        ),
        layers,
        norm: t("model.norm.weight".into(), vec![d], 0.2, 1.0),
        lm_head: Some(t("lm_head.weight".into(), vec![c.vocab_size, d], s(d), 0.0)),
        position_embd: None,
        norm_bias: None,
    }
}

/// Block outputs of both layers, the last layer's MLP key, and logits for every row.
fn taps<T>() -> ForwardSpec<'static, T> {
    ForwardSpec {
        block_out: &[0, 1],
        mlp_key: &[1],
        logits: LogitRows::All,
        ..Default::default()
    }
}

#[wasm_bindgen_test]
async fn tiny_llama_forward_matches_the_cpu_backend() {
    let g = gpu().await;
    let config = tiny_config();
    let gm = Model::upload(g.clone(), config.clone(), tiny_weights(&config, 7)).unwrap();
    let cm = Model::upload(CpuBackend, config.clone(), tiny_weights(&config, 7)).unwrap();
    // Two packed sequences: attention must keep them apart and restart positions at 0.
    let batch = Packed::new(&[vec![3u32, 17, 42, 5, 63, 0, 9], vec![11, 2, 60]]);
    let got = gm.forward(&batch, &taps()).unwrap();
    let want = cm.forward(&batch, &taps()).unwrap();

    let logits = got.logits.as_ref().expect("logits were requested");
    let want_logits = want.logits.as_ref().expect("logits were requested");
    assert_eq!(logits.shape(), [batch.n_rows(), config.vocab_size]);
    assert_close(
        &read(&g, logits).await,
        want_logits.f32(),
        TOL_FORWARD,
        "logits",
    );
    for l in [0, 1] {
        assert_close(
            &read(&g, &got.block_out[&l]).await,
            want.block_out[&l].f32(),
            TOL_FORWARD,
            &format!("block {l} output"),
        );
    }
    assert_close(
        &read(&g, &got.mlp_key[&1]).await,
        want.mlp_key[&1].f32(),
        TOL_FORWARD,
        "block 1 MLP key (down_proj input)",
    );

    // Incremental decoding through the KV cache agrees too (the path the page generates with).
    let (mut gc, mut cc) = (gm.new_cache(8).unwrap(), cm.new_cache(8).unwrap());
    for ids in [&[3u32, 17, 42][..], &[5], &[63]] {
        let got = gm.forward_cached(&mut gc, ids).unwrap();
        let want = cm.forward_cached(&mut cc, ids).unwrap();
        let what = format!("cached decode logits after {} tokens", gc.len());
        assert_close(&read(&g, &got).await, want.f32(), TOL_FORWARD, &what);
    }
}

#[wasm_bindgen_test]
async fn tiny_gpt2_forward_and_decode_match_the_cpu_backend() {
    // GPT-2's block under Chrome's WGSL compiler: LayerNorm, GELU, learned positions, biases on
    // every projection, and its op-by-op decode (tests/data/archs/gpt2.gguf, made by
    // transformers; tests/formats/archs.rs checks the cpu backend against its logits).
    let bytes = include_bytes!("data/archs/gpt2.gguf");
    let load = || nse::model::load::load_gguf(bytes, "gpt2.gguf").unwrap();
    let g = gpu().await;
    let host = load();
    let config = host.config.clone();
    let gm = Model::upload(g.clone(), config.clone(), host.weights).unwrap();
    let cm = Model::upload(CpuBackend, config.clone(), load().weights).unwrap();
    let batch = Packed::new(&[vec![3u32, 17, 42, 5, 63, 0, 9], vec![11, 2, 60]]);
    let got = gm.forward(&batch, &taps()).unwrap();
    let want = cm.forward(&batch, &taps()).unwrap();
    assert_close(
        &read(&g, got.logits.as_ref().unwrap()).await,
        want.logits.as_ref().unwrap().f32(),
        TOL_FORWARD,
        "GPT-2 logits",
    );
    assert_close(
        &read(&g, &got.mlp_key[&1]).await,
        want.mlp_key[&1].f32(),
        TOL_FORWARD,
        "GPT-2 block 1 MLP key (gelu(c_fc))",
    );
    let (mut gc, mut cc) = (gm.new_cache(8).unwrap(), cm.new_cache(8).unwrap());
    for ids in [&[3u32, 17, 42][..], &[5], &[63]] {
        let got = gm.forward_cached(&mut gc, ids).unwrap();
        let want = cm.forward_cached(&mut cc, ids).unwrap();
        let what = format!("GPT-2 cached decode logits after {} tokens", gc.len());
        assert_close(&read(&g, &got).await, want.f32(), TOL_FORWARD, &what);
    }
}

/// Weights kept compact on WebGPU (`shaders/include/weights.wgsl` through Chrome's compiler):
/// the GEMV, the vec4 products, the embedding gather, a fused decoding kernel and readback give
/// exactly what they give on the same values in f32.
#[wasm_bindgen_test]
async fn packed_weights_match_their_f32_values() {
    let g = gpu().await;
    let mut rng = Rng(9);
    let (rows, cols) = (24, 256);
    for (ty, fields) in [
        (GgmlType::F16, &[][..]),
        (GgmlType::Q4_1, &[0, 2][..]),
        (GgmlType::Q8_0, &[0][..]),
        (GgmlType::Q4_K, &[0, 2][..]),
        (GgmlType::Q6_K, &[208][..]),
    ] {
        let s = stored::random_stored(ty, fields, (rows, cols), || rng.next_u64());
        let packed = g.upload_host(HostTensor::stored("w", s.clone())).unwrap();
        assert!(packed.packing().is_some(), "{ty} is kept packed");
        let dense = g.upload("w", &s.to_f32(), &[rows, cols]).unwrap();
        let same = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            assert_eq!(a.len(), b.len(), "{ty} {what}: length");
            if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
                panic!("{ty} {what}: index {i}: packed {} vs f32 {}", a[i], b[i]);
            }
        };
        same(read(&g, &packed).await, s.to_f32(), "read");
        for (m, t) in [(3, Transpose::NT), (20, Transpose::NT), (2, Transpose::NN)] {
            let (x, _) = both(&g, &mut rng, &[m, if t.b { cols } else { rows }]);
            let a = read(&g, &g.matmul(&x, &packed, t).unwrap()).await;
            let b = read(&g, &g.matmul(&x, &dense, t).unwrap()).await;
            same(a, b, &format!("matmul m={m} {t:?}"));
        }
        let ids = g.upload_u32("ids", &[3, 0, 23], &[3]).unwrap();
        let a = read(&g, &g.embedding(&packed, &ids).unwrap()).await;
        let b = read(&g, &g.embedding(&dense, &ids).unwrap()).await;
        same(a, b, "embedding");
        let (h, _) = both(&g, &mut rng, &[2, cols]);
        let (norm, _) = both(&g, &mut rng, &[cols]);
        let a = read(&g, &g.norm_matmul_nt(&h, &norm, 1e-5, &packed).unwrap()).await;
        let b = read(&g, &g.norm_matmul_nt(&h, &norm, 1e-5, &dense).unwrap()).await;
        same(a, b, "norm_matmul_nt");
        console_log!("{ty}: packed weights match their f32 values");
    }
}

// Chrome's own WebGPU, driven from JavaScript: wgpu 30's browser backend does not map the
// `subgroups` feature (it is native-only in wgpu, gfx-rs/wgpu#5555), so the page never gets the
// subgroup variants, but Chrome's adapter has subgroups. This checks that Chrome's WGSL compiler
// (Tint) takes every subgroup variant as `gpu::shader_source` writes it for the browser, and that
// the GEMV's subgroup reduction gives the portable reduction's sums there.
#[wasm_bindgen(inline_js = r#"
export async function subgroup_kernels(spec, a, b, m, k, n) {
  const { compile, storage_buffers, gemv_subgroups, gemv_portable } = JSON.parse(spec);
  // Copies: the arguments are views of the module's memory.
  a = new Float32Array(a);
  b = new Float32Array(b);
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("no WebGPU adapter");
  const info = adapter.info || {};
  if (!adapter.features.has("subgroups")) return JSON.stringify({ subgroups: null });
  // As the backend does: the adapter's storage-buffer limit (the fused qkv binds 9).
  const device = await adapter.requestDevice({
    requiredFeatures: ["subgroups"],
    requiredLimits: { maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage },
  });
  const limit = device.limits.maxStorageBuffersPerShaderStage;
  let pipelines = 0;
  const skipped = [];
  for (const [name, code, entries, weights] of compile) {
    const module = device.createShaderModule({ code, label: name });
    const errors = (await module.getCompilationInfo()).messages.filter((x) => x.type === "error");
    if (errors.length) {
      throw new Error(name + ": " + errors.map((x) => `${x.lineNum}:${x.linePos} ${x.message}`).join("; "));
    }
    for (const entryPoint of entries) {
      // The backend leaves an entry that binds more storage buffers than the device allows
      // unused (the unfused kernels run instead); so does this check.
      if ((storage_buffers[entryPoint] || 0) > limit) {
        skipped.push(`${name} ${entryPoint}`);
        continue;
      }
      for (const M of [1, 8]) {
        for (const fmt of [0, 1, 3, 4]) {
          const constants = { M };
          for (const w of weights) constants[w + "_FMT"] = fmt;
          try {
            await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint, constants } });
          } catch (e) {
            throw new Error(`${name} ${entryPoint} M=${M} format ${fmt}: ${e.message}`);
          }
          pipelines += 1;
        }
      }
    }
  }
  const upload = (data, usage) => {
    const buf = device.createBuffer({ size: data.byteLength, usage, mappedAtCreation: true });
    new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buf.unmap();
    return buf;
  };
  const run = async (code) => {
    const module = device.createShaderModule({ code });
    const pipeline = await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "nt", constants: { M: m } } });
    const groups = Math.ceil(n / 4);
    const bufs = [
      upload(new Uint32Array([n, k, groups, 0]), GPUBufferUsage.UNIFORM),
      upload(a, GPUBufferUsage.STORAGE),
      upload(b, GPUBufferUsage.STORAGE),
      device.createBuffer({ size: m * n * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }),
    ];
    const back = device.createBuffer({ size: m * n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const bind = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(groups);
    pass.end();
    enc.copyBufferToBuffer(bufs[3], 0, back, 0, m * n * 4);
    device.queue.submit([enc.finish()]);
    await back.mapAsync(GPUMapMode.READ);
    const out = Array.from(new Float32Array(back.getMappedRange()));
    back.unmap();
    return out;
  };
  const result = {
    subgroups: [info.subgroupMinSize, info.subgroupMaxSize],
    shader_f16: adapter.features.has("shader-f16"),
    limit,
    pipelines,
    skipped,
    with_subgroups: await run(gemv_subgroups),
    portable: await run(gemv_portable),
  };
  device.destroy();
  return JSON.stringify(result);
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn subgroup_kernels(
        spec: &str,
        a: &[f32],
        b: &[f32],
        m: u32,
        k: u32,
        n: u32,
    ) -> Result<JsValue, JsValue>;
}

/// The entry points of a WGSL source and the weight bindings it includes.
fn entries_and_weights(src: &str) -> (Vec<String>, Vec<String>) {
    let lines: Vec<&str> = src.lines().map(str::trim).collect();
    let entries = lines
        .windows(2)
        .filter(|w| w[0].starts_with("@compute"))
        .filter_map(|w| w[1].strip_prefix("fn ")?.split('(').next())
        .map(str::to_string)
        .collect();
    let weights = lines
        .iter()
        .filter_map(|l| l.strip_prefix("// #include weights(")?.strip_suffix(')'))
        .map(str::to_string)
        .collect();
    (entries, weights)
}

#[wasm_bindgen_test]
async fn subgroup_variants_compile_and_reduce_right_in_chrome() {
    let mut compile = vec![];
    for (name, src) in nse::gpu::SHADERS {
        if !src.contains("// #if subgroups") {
            continue;
        }
        let variant = format!("{name}{}", nse::gpu::SUBGROUPS);
        let code = nse::gpu::shader_source(&variant);
        assert!(code.starts_with("enable subgroups;"), "{variant}");
        let (entries, weights) = entries_and_weights(src);
        assert!(!entries.is_empty() && !weights.is_empty(), "{name}");
        compile.push(serde_json::json!([variant, code, entries, weights]));
    }
    let names: Vec<&str> = compile.iter().filter_map(|c| c[0].as_str()).collect();
    assert_eq!(names, ["gemv+subgroups", "gemv_fused+subgroups"]);
    let spec = serde_json::json!({
        "compile": compile,
        "storage_buffers": {"qkv": QKV_BINDINGS, "qkv_bias": QKV_BIAS_BINDINGS},
        "gemv_subgroups": nse::gpu::shader_source("gemv+subgroups"),
        "gemv_portable": nse::gpu::shader_source("gemv"),
    });
    // Integer values: every order of summation gives the same exact sums.
    let (m, k, n) = (3usize, 1024usize, 13usize);
    let ints = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 9) as f32 - 4.0)
            .collect()
    };
    let (a, b) = (ints(m * k, 3), ints(n * k, 1));
    let mut want = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
        }
    }
    let got = subgroup_kernels(&spec.to_string(), &a, &b, m as u32, k as u32, n as u32)
        .await
        .unwrap_or_else(|e| panic!("Chrome refused a subgroup variant: {e:?}"));
    let got: serde_json::Value =
        serde_json::from_str(&got.as_string().expect("a JSON string")).expect("the check's JSON");
    console_log!(
        "subgroup check: sizes {}, {} pipelines, storage-buffer limit {}, skipped {}; \
         the adapter has shader-f16: {}",
        got["subgroups"],
        got["pipelines"],
        got["limit"],
        got["skipped"],
        got["shader_f16"]
    );
    // This project's Chromium (SwiftShader) has subgroups of 4; without them nothing is checked.
    assert!(
        got["subgroups"].is_array(),
        "Chrome's adapter has no subgroups: the subgroup variants were not checked"
    );
    let limit = got["limit"].as_u64().expect("the limit") as u32;
    assert!(limit >= QKV_BINDINGS, "the fused qkv is checked");
    let skipped = usize::from(limit < QKV_BIAS_BINDINGS);
    assert_eq!(got["skipped"].as_array().map(Vec::len), Some(skipped));
    assert_eq!(got["pipelines"], (6 - skipped) * 2 * 4, "pipelines built");
    for key in ["with_subgroups", "portable"] {
        let out: Vec<f32> = serde_json::from_value(got[key].clone()).expect("floats");
        assert_eq!(out, want, "{key}");
    }
}
