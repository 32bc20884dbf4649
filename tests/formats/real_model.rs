//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF): layout, config, dequantised values
//! checked against independent decodes, and truncated or corrupted copies.

use std::sync::OnceLock;

use half::f16;
use nse::model::gguf::{GgmlType, GgufFile};
use nse::model::load::load_gguf;
use nse::model::{Arch, LoadedModel};

use crate::common::{DEFAULT_MODEL_FILE, model_bytes};
use crate::{assert_mentions, format_msg};

/// The default model, loaded once for all tests of this binary.
pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        load_gguf(model_bytes(), DEFAULT_MODEL_FILE).expect("the default model loads")
    })
}

fn gguf() -> GgufFile<'static> {
    GgufFile::parse(model_bytes(), DEFAULT_MODEL_FILE).expect("the default model parses")
}

#[test]
fn default_model_config_matches_model_md() {
    let m = model();
    let c = &m.config;
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.n_layers, c.d_model, c.d_ff), (30, 576, 1536));
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!((c.vocab_size, c.max_ctx), (49152, 8192));
    assert_eq!(c.rope_theta, 100000.0);
    assert!((c.rms_eps - 1e-5).abs() < 1e-12, "rms_eps {}", c.rms_eps);
    assert!(c.tie_embeddings);
    assert_eq!((c.bos_id, c.eos_id, c.add_bos), (Some(1), Some(2), false));
    assert_eq!(c.n_params(), 134_515_008);

    assert!(m.weights.lm_head.is_none());
    assert_eq!(m.weights.layers.len(), 30);
    assert_eq!(m.weights.embed_tokens.shape, [49152, 576]);
    let l = &m.weights.layers[5];
    assert_eq!(l.q_proj.shape, [576, 576]);
    assert_eq!(l.k_proj.shape, [192, 576]);
    assert_eq!(l.down_proj.shape, [576, 1536]);
    assert_eq!(l.down_proj.name, "model.layers.5.mlp.down_proj.weight");
    assert_eq!(m.weights.norm.name, "model.norm.weight");
}

#[test]
fn default_model_source() {
    let s = &model().source;
    assert_eq!(s.format, "gguf");
    assert_eq!(
        s.sha256,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(s.bytes, 98_362_432);
    assert_eq!(s.tensor_count, 272);
    let types: Vec<(&str, usize)> = s
        .tensor_types
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(types, [("Q4_1", 210), ("F32", 61), ("Q8_0", 1)]);
}

/// Layout facts from an independent Python reader of the same file.
#[test]
fn gguf_layout_matches_an_independent_reader() {
    let g = gguf();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset(), 1_785_664);
    assert_eq!(g.metadata().len(), 33);
    let embd = g.tensor_info("token_embd.weight").unwrap();
    assert_eq!(
        (embd.ggml_type, embd.dims.as_slice(), embd.offset),
        (GgmlType::Q8_0, &[576u64, 49152][..], 0)
    );
    let down = g.tensor_info("blk.0.ffn_down.weight").unwrap();
    assert_eq!(
        (down.ggml_type, down.shape(), down.offset),
        (GgmlType::Q4_1, vec![576, 1536], 30_083_328)
    );
    assert_eq!(g.get_str("tokenizer.ggml.pre").unwrap(), Some("smollm"));
    assert_eq!(g.get_u64("llama.rope.dimension_count").unwrap(), Some(64));
    assert_eq!(
        g.get_str_array("tokenizer.ggml.merges")
            .unwrap()
            .unwrap()
            .len(),
        48_900
    );
    let types = g
        .get_i64_array("tokenizer.ggml.token_type")
        .unwrap()
        .unwrap();
    assert_eq!(types.iter().filter(|&&t| t == 3).count(), 17);
    assert!(types[..17].iter().all(|&t| t == 3) && types[17..].iter().all(|&t| t == 1));
}

fn close(got: impl AsRef<[f32]>, want: &[f64]) {
    let got = got.as_ref();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-6 * w.abs().max(1e-3),
            "index {i}: got {g}, want {w}"
        );
    }
}

fn row(t: &nse::model::HostTensor, r: usize) -> Vec<f32> {
    let cols = t.shape[1];
    t.f32()[r * cols..(r + 1) * cols].to_vec()
}

/// The raw bytes of `row` of a GGUF matrix, read straight from the file.
fn raw_row(name: &str, r: usize, block_bytes: usize) -> &'static [u8] {
    let g = gguf();
    let info = g.tensor_info(name).unwrap();
    let row_bytes = info.dims[0] as usize / 32 * block_bytes;
    let start = (g.data_offset() + info.offset) as usize + r * row_bytes;
    &model_bytes()[start..start + row_bytes]
}

#[test]
fn q8_0_embedding_row_decodes_by_hand() {
    // Q8_0: {f16 d, i8 qs[32]}, w = d * q.
    let raw = raw_row("token_embd.weight", 504, 34);
    let by_hand: Vec<f32> = raw
        .chunks(34)
        .flat_map(|b| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            b[2..].iter().map(move |&q| d * q as i8 as f32)
        })
        .collect();
    let loaded = row(&model().weights.embed_tokens, 504);
    assert_eq!(loaded, by_hand.as_slice());
    // From the independent Python decode.
    close(
        &loaded,
        &[
            0.1096038818359375,
            0.017436981201171875,
            -0.09465789794921875,
            0.08220291137695312,
        ],
    );
    let sum: f64 = loaded.iter().map(|&v| v as f64).sum();
    assert!((sum - -3.5683345794677734).abs() < 1e-4, "row sum {sum}");
    close(
        row(&model().weights.embed_tokens, 49151),
        &[0.011505126953125, 0.0057525634765625, 0.0977935791015625],
    );
}

#[test]
fn q4_1_down_proj_rows_decode_by_hand() {
    // Q4_1: {f16 d, f16 m, u8 qs[16]}, w[j] = d*(qs[j] & 15) + m, w[j+16] = d*(qs[j] >> 4) + m.
    let raw = raw_row("blk.0.ffn_down.weight", 3, 20);
    let mut by_hand = Vec::new();
    for b in raw.chunks(20) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        by_hand.extend(b[4..].iter().map(|&q| d * (q & 15) as f32 + m));
        by_hand.extend(b[4..].iter().map(|&q| d * (q >> 4) as f32 + m));
    }
    let loaded = row(&model().weights.layers[0].down_proj, 3);
    assert_eq!(loaded, by_hand.as_slice());
    close(
        loaded,
        &[
            -0.2158203125,
            -0.0494384765625,
            -0.2158203125,
            -0.2158203125,
        ],
    );
    let last = row(&model().weights.layers[29].down_proj, 575);
    close(
        &last,
        &[
            -0.22918701171875,
            -0.03912353515625,
            -0.276702880859375,
            0.2459716796875,
        ],
    );
    let sum: f64 = last.iter().map(|&v| v as f64).sum();
    assert!((sum - -5.229949951171875).abs() < 1e-4, "row sum {sum}");
    close(
        &model().weights.norm.f32()[..4],
        &[1.7578125, 1.8203125, 1.78125, 1.6015625],
    );
}

/// HF row `h·hd + s·hd/2 + i` of Q/K is GGUF row `h·hd + 2i + s`.
#[test]
fn q_and_k_rows_are_unpermuted_to_hf_order() {
    let g = gguf();
    let layer = &model().weights.layers[7];
    let q_gguf = g.tensor("blk.7.attn_q.weight").unwrap();
    let k_gguf = g.tensor("blk.7.attn_k.weight").unwrap();
    let (hd, half) = (64, 32);
    for h in 0..9 {
        for s in 0..2 {
            for i in [0, 1, 17, 31] {
                assert_eq!(
                    row(&layer.q_proj, h * hd + s * half + i),
                    row(&q_gguf, h * hd + 2 * i + s),
                    "q head {h}"
                );
            }
        }
    }
    for h in 0..3 {
        for i in 0..half {
            assert_eq!(
                row(&layer.k_proj, h * hd + half + i),
                row(&k_gguf, h * hd + 2 * i + 1),
                "k head {h}"
            );
        }
    }
    // Values from the independent Python decode of GGUF rows 2, 1 (Q) and 33 (K).
    close(
        row(&layer.q_proj, 1),
        &[
            -0.20379638671875,
            0.043548583984375,
            0.38983154296875,
            -0.055389404296875,
        ],
    );
    close(
        row(&layer.q_proj, 32),
        &[
            -0.0379638671875,
            0.19580078125,
            0.102294921875,
            0.102294921875,
        ],
    );
    close(
        row(&layer.k_proj, 48),
        &[
            -0.065093994140625,
            -0.181243896484375,
            0.167205810546875,
            -0.00701904296875,
        ],
    );
    // V is not permuted.
    assert_eq!(
        layer.v_proj.f32(),
        g.tensor("blk.7.attn_v.weight").unwrap().f32()
    );
}

#[test]
fn truncated_copies_of_the_model_are_format_errors() {
    let bytes = model_bytes();
    let len = bytes.len();
    // In the magic, the counts, a metadata key, the vocabulary, the tensor infos, the padding
    // before the data, and the data.
    for cut in [
        0,
        3,
        10,
        30,
        60,
        5_000,
        1_000_000,
        1_785_000,
        1_785_664,
        50_000_000,
        len - 1,
    ] {
        let msg = format_msg(load_gguf(&bytes[..cut], "cut.gguf"));
        assert_mentions(&msg, &["truncated"]);
        if cut >= 1_785_664 {
            assert_mentions(
                &msg,
                &["data ends at byte", &format!("the file has {cut} bytes")],
            );
        }
    }
}

/// Patches the u64 at `at` in a copy of the header (the tensor data is not needed to fail).
fn patched_header(at: usize, value: u64) -> Vec<u8> {
    let mut b = model_bytes()[..1_785_664].to_vec();
    b[at..at + 8].copy_from_slice(&value.to_le_bytes());
    b
}

fn find(needle: &[u8]) -> usize {
    model_bytes()
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[test]
fn lying_counts_in_the_model_are_format_errors_without_huge_allocations() {
    // The vocabulary array: key, u32 type 9, u32 element type 8, u64 count.
    let count_at = find(b"tokenizer.ggml.tokens") + "tokenizer.ggml.tokens".len() + 8;
    let msg = format_msg(GgufFile::parse(
        &patched_header(count_at, 1 << 60),
        "x.gguf",
    ));
    assert_mentions(&msg, &["tokenizer.ggml.tokens", "truncated or corrupt"]);
    // The first token's string length.
    let msg = format_msg(GgufFile::parse(
        &patched_header(count_at + 8, u64::MAX),
        "x.gguf",
    ));
    assert_mentions(&msg, &["tokenizer.ggml.tokens"]);
    // The tensor count and the metadata count in the header.
    assert_mentions(
        &format_msg(GgufFile::parse(&patched_header(8, u64::MAX), "x.gguf")),
        &["tensor count"],
    );
    assert_mentions(
        &format_msg(GgufFile::parse(&patched_header(16, 1 << 40), "x.gguf")),
        &["metadata entry count"],
    );
    // A tensor dimension so large that its data would end far past the file.
    let dims_at = find(b"blk.0.ffn_down.weight") + "blk.0.ffn_down.weight".len() + 4;
    let mut b = model_bytes().to_vec();
    b[dims_at..dims_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let msg = format_msg(GgufFile::parse(&b, "x.gguf"));
    assert_mentions(&msg, &["blk.0.ffn_down.weight", "truncated"]);
}

/// Compact weights: the default model's matrices stay Q4_1 (and the embedding Q8_0) as loaded,
/// taking about the file's size instead of 538 MB of f32, and the cpu backend computes with them
/// the logits of f32 weights bit for bit, over a prompt and for one token (the slices it
/// decodes never split a sum).
#[test]
fn compact_weights_give_the_logits_of_f32_weights() {
    use nse::backend::Backend;
    use nse::cpu::CpuBackend;
    use nse::model::{ForwardSpec, LogitRows, Model, Packed};

    let load = || load_gguf(model_bytes(), DEFAULT_MODEL_FILE).unwrap();
    let compact = load();
    let w = &compact.weights;
    assert_eq!(w.layers[3].down_proj.storage(), GgmlType::Q4_1);
    assert_eq!(w.embed_tokens.storage(), GgmlType::Q8_0);
    assert_eq!(w.norm.storage(), GgmlType::F32);
    let mut kept = w.embed_tokens.byte_len() + w.norm.byte_len();
    for (i, l) in w.layers.iter().enumerate() {
        kept += l.named(i).iter().map(|(_, t)| t.byte_len()).sum::<usize>();
    }
    // 30 layers of Q4_1 (20 bytes per 32 weights: q and o 576², k and v 192 × 576, three MLP
    // matrices 576 × 1536) with two f32 norms, the Q8_0 embedding (34 per 32), the f32 norm.
    let per_layer = (2 * 576 * 576 + 2 * 192 * 576 + 3 * 576 * 1536) / 32 * 20 + 2 * 576 * 4;
    assert_eq!(kept, 30 * per_layer + 49152 * 576 / 32 * 34 + 576 * 4);

    let dense = load();
    let dense_weights = dense.weights.try_map(|t| Ok::<_, ()>(t.widened())).unwrap();
    let a = Model::upload(CpuBackend, compact.config.clone(), compact.weights).unwrap();
    let b = Model::upload(CpuBackend, dense.config, dense_weights).unwrap();
    let ids: Vec<u32> = compact
        .tokenizer
        .encode("The Eiffel Tower is located in the city of")
        .unwrap();
    let logits = |m: &Model<CpuBackend>, ids: &[u32]| {
        let out = m
            .forward(
                &Packed::new(&[ids.to_vec()]),
                &ForwardSpec {
                    logits: LogitRows::All,
                    ..Default::default()
                },
            )
            .unwrap();
        pollster::block_on(m.backend().read(out.logits.as_ref().unwrap())).unwrap()
    };
    assert!(ids.len() > 8, "more rows than the few-rows product takes");
    assert_eq!(logits(&a, &ids), logits(&b, &ids));
    // One token, as in decoding.
    assert_eq!(logits(&a, &ids[..1]), logits(&b, &ids[..1]));
}
