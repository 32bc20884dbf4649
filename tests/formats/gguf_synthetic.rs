//! GGUF files built in the test: a tiny Llama round trip, every block type we decode, and
//! malformed or unsupported files.

use half::{bf16, f16};
use nse::Error;
use nse::model::gguf::{GgmlType, GgufFile, MetaValue};
use nse::model::load::{load_gguf, unpermute_qk_rows};

use crate::gguf_writer::{GgufWriter, Rng, TINY, Val, llama_cpp_permute, tiny_llama_gguf};
use crate::{assert_mentions, format_msg, unsupported_msg};

#[test]
fn unpermute_restores_hf_row_order() {
    // One head of 6 rows, one column: GGUF stores HF rows pairwise interleaved, so reading the
    // GGUF rows [0, 1, 2, 3, 4, 5] back in HF order takes them as [0, 2, 4, 1, 3, 5].
    let mut w = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    unpermute_qk_rows(&mut w, 1, 1);
    assert_eq!(w, [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
    // Two heads of 4 rows, two columns (value = 10·row + column).
    let mut w: Vec<f32> = (0..8)
        .flat_map(|r| [10.0 * r as f32, 10.0 * r as f32 + 1.0])
        .collect();
    unpermute_qk_rows(&mut w, 2, 2);
    let rows: Vec<f32> = w.chunks(2).map(|c| c[0] / 10.0).collect();
    assert_eq!(rows, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    // It inverts llama.cpp's permutation for any head count and width.
    for (heads, hd, d_in) in [(9, 64, 3), (3, 8, 5), (1, 2, 1)] {
        let hf = Rng(7).vec(heads * hd * d_in);
        let mut w = llama_cpp_permute(&hf, heads, d_in);
        unpermute_qk_rows(&mut w, heads, d_in);
        assert_eq!(w, hf);
    }
}

#[test]
fn tiny_llama_gguf_loads_back_in_hf_layout() {
    let (w, expected) = tiny_llama_gguf(1);
    let m = load_gguf(&w.to_bytes(), "tiny.gguf").unwrap();
    let c = &m.config;
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.d_ff,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim
        ),
        (2, 8, 12, 2, 1, 4)
    );
    assert_eq!(
        (c.vocab_size, c.max_ctx, c.rope_theta, c.rms_eps),
        (7, 64, 500.0, 1e-6)
    );
    assert_eq!(
        (c.tie_embeddings, c.bos_id, c.eos_id, c.add_bos),
        (false, None, Some(0), false)
    );
    let mut seen = 0;
    let mut check = |t: &nse::model::HostTensor| {
        let (shape, data) = &expected[&t.name];
        assert_eq!((&t.shape, &*t.f32()), (shape, &data[..]), "{}", t.name);
        seen += 1;
    };
    check(&m.weights.embed_tokens);
    check(&m.weights.norm);
    check(m.weights.lm_head.as_ref().unwrap());
    for (l, layer) in m.weights.layers.iter().enumerate() {
        layer.named(l).into_iter().for_each(|(_, t)| check(t));
    }
    assert_eq!(seen, expected.len());
    assert_eq!(m.tokenizer.encode("ab a ab").unwrap(), [3, 5, 6]);
    assert_eq!(
        m.tokenizer.decode(&[0, 3, 6]).unwrap(),
        "<|endoftext|>ab ab"
    );
    assert_eq!(m.source.tensor_types, [("F32".to_string(), 21)]);
}

#[test]
fn embeddings_are_tied_when_output_weight_is_absent() {
    let (mut w, _) = tiny_llama_gguf(2);
    w.tensors.retain(|t| t.name != "output.weight");
    let m = load_gguf(&w.to_bytes(), "tied.gguf").unwrap();
    assert!(m.config.tie_embeddings && m.weights.lm_head.is_none());
}

#[test]
fn unknown_quant_types_are_unsupported_and_named() {
    let (mut w, _) = tiny_llama_gguf(3);
    let t = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.1.ffn_down.weight")
        .unwrap();
    t.ggml_type = 10;
    let bytes = w.to_bytes();
    // The file still parses and lists the tensor (for `nse info`); loading it fails.
    let g = GgufFile::parse(&bytes, "q2k.gguf").unwrap();
    assert_eq!(
        g.tensor_info("blk.1.ffn_down.weight").unwrap().ggml_type,
        GgmlType(10)
    );
    let msg = unsupported_msg(load_gguf(&bytes, "q2k.gguf"));
    assert_mentions(
        &msg,
        &["blk.1.ffn_down.weight", "Q2_K (10)", "F16", "Q8_0", "Q4_K"],
    );

    let (mut w, _) = tiny_llama_gguf(3);
    w.tensors[0].ggml_type = 99;
    let msg = unsupported_msg(load_gguf(&w.to_bytes(), "t99.gguf"));
    assert_mentions(&msg, &["token_embd.weight", "unknown type id 99"]);
}

fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

#[test]
fn every_supported_block_type_decodes() {
    let mut w = GgufWriter::new();
    // Q8_0: d = 0.5, q = j - 16.
    let mut q8 = f16_bytes(0.5).to_vec();
    q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
    // Q4_1: d = 0.25, m = -1, low nibble j, high nibble 15 - j.
    let mut q41 = [f16_bytes(0.25), f16_bytes(-1.0)].concat();
    q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    // Q4_0: d = 2, low nibble j, high nibble 15 - j, both offset by -8.
    let mut q40 = f16_bytes(2.0).to_vec();
    q40.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let halves: Vec<f32> = (0..4).map(|i| i as f32 * 0.5 - 0.75).collect();
    w.tensor("q8", &[32], 8, q8)
        .tensor("q41", &[32], 3, q41)
        .tensor("q40", &[32], 2, q40)
        .tensor(
            "f16",
            &[2, 2],
            1,
            halves.iter().flat_map(|&x| f16_bytes(x)).collect(),
        )
        .tensor(
            "bf16",
            &[4],
            30,
            halves
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        );
    let bytes = w.to_bytes();
    let g = GgufFile::parse(&bytes, "blocks.gguf").unwrap();
    let want_q8: Vec<f32> = (0..32).map(|j| 0.5 * (j as f32 - 16.0)).collect();
    assert_eq!(*g.tensor("q8").unwrap().f32(), want_q8);
    let want_q41: Vec<f32> = (0..16)
        .map(|j| 0.25 * j as f32 - 1.0)
        .chain((0..16).map(|j| 0.25 * (15 - j) as f32 - 1.0))
        .collect();
    assert_eq!(*g.tensor("q41").unwrap().f32(), want_q41);
    let want_q40: Vec<f32> = (0..16)
        .map(|j| 2.0 * (j as f32 - 8.0))
        .chain((0..16).map(|j| 2.0 * (7 - j) as f32))
        .collect();
    assert_eq!(*g.tensor("q40").unwrap().f32(), want_q40);
    let f = g.tensor("f16").unwrap();
    assert_eq!(
        (f.shape.as_slice(), &*f.f32()),
        (&[2usize, 2][..], halves.as_slice())
    );
    assert_eq!(*g.tensor("bf16").unwrap().f32(), halves);
    assert!(matches!(g.tensor("nope"), Err(Error::MissingTensor { name, .. }) if name == "nope"));
}

#[test]
fn metadata_value_types_alignment_and_version_2() {
    let mut w = GgufWriter::new();
    w.version = 2;
    w.alignment = 64;
    w.kv("general.alignment", Val::U32(64))
        .kv("a.int", Val::I32(-3))
        .kv("a.flag", Val::Bool(true))
        .kv("a.nested", Val::Nested(vec![vec![1, 2], vec![], vec![3]]))
        .kv("a.name", Val::Str("x".repeat(100)));
    w.f32_tensor("t", &[3], &[1.0, 2.0, 3.0]);
    let bytes = w.to_bytes();
    let g = GgufFile::parse(&bytes, "v2.gguf").unwrap();
    assert_eq!(
        (g.version(), g.alignment(), g.data_offset() % 64),
        (2, 64, 0)
    );
    assert_eq!(g.get("a.int"), Some(&MetaValue::I32(-3)));
    assert_eq!(g.get_bool("a.flag").unwrap(), Some(true));
    let nested = g.get("a.nested").unwrap().as_array().unwrap();
    assert_eq!(
        nested[0],
        MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)])
    );
    assert_eq!(
        g.get("a.nested").unwrap().to_string(),
        "[3 × array: [2 × u8: 1, 2], [0 × ?], [1 × u8: 3]]"
    );
    assert!(g.get("a.name").unwrap().to_string().ends_with("…"));
    assert_mentions(
        &format_msg(g.get_u64("a.int")),
        &["a.int", "i32 -3", "non-negative integer"],
    );
    assert_mentions(
        &format_msg(g.get_str("a.flag")),
        &["a.flag", "expected a string"],
    );
    assert_eq!(*g.tensor("t").unwrap().f32(), [1.0, 2.0, 3.0]);
}

#[test]
fn malformed_headers_are_format_errors() {
    let tiny = tiny_llama_gguf(4).0.to_bytes();
    assert_mentions(
        &format_msg(GgufFile::parse(b"", "e.gguf")),
        &["magic", "truncated"],
    );
    assert_mentions(
        &format_msg(GgufFile::parse(b"GGML\x03\0\0\0", "m.gguf")),
        &["not a GGUF file"],
    );
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_mentions(
        &format_msg(GgufFile::parse(&garbage, "g.gguf")),
        &["not a GGUF file"],
    );
    let mut unknown_version = tiny.clone();
    unknown_version[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert_mentions(
        &format_msg(GgufFile::parse(&unknown_version, "v.gguf")),
        &["version 7"],
    );
    let mut v1 = tiny.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_mentions(
        &unsupported_msg(GgufFile::parse(&v1, "v1.gguf")),
        &["version 1"],
    );
    let mut big_endian = tiny.clone();
    big_endian[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_mentions(
        &unsupported_msg(GgufFile::parse(&big_endian, "be.gguf")),
        &["big-endian"],
    );
    // Garbage after a valid magic: random counts and lengths.
    let mut after_magic = b"GGUF\x03\0\0\0".to_vec();
    after_magic.extend(&garbage);
    format_msg(GgufFile::parse(&after_magic, "ga.gguf"));
}

#[test]
fn inconsistent_files_are_format_errors() {
    let mut w = GgufWriter::new();
    w.kv("general.alignment", Val::U32(48));
    assert_mentions(
        &format_msg(GgufFile::parse(&w.to_bytes(), "a.gguf")),
        &["alignment is 48"],
    );

    let mut w = GgufWriter::new();
    w.kv("k", Val::U32(1)).kv("k", Val::U32(2));
    assert_mentions(
        &format_msg(GgufFile::parse(&w.to_bytes(), "d.gguf")),
        &["`k` appears twice"],
    );

    let mut w = GgufWriter::new();
    w.f32_tensor("t", &[2], &[1.0, 2.0])
        .f32_tensor("t", &[2], &[1.0, 2.0]);
    assert_mentions(
        &format_msg(GgufFile::parse(&w.to_bytes(), "t.gguf")),
        &["tensor `t` appears twice"],
    );

    let mut w = GgufWriter::new();
    w.tensor("q", &[48], 3, vec![0; 40]);
    assert_mentions(
        &format_msg(GgufFile::parse(&w.to_bytes(), "b.gguf")),
        &["`q`", "block size 32"],
    );

    let mut w = GgufWriter::new();
    w.tensor("x", &[2, 2, 2, 2, 2], 0, vec![0; 128]);
    assert_mentions(
        &format_msg(GgufFile::parse(&w.to_bytes(), "5d.gguf")),
        &["`x`", "5 dimensions"],
    );

    let mut w = GgufWriter::new();
    w.tensor("x", &[u64::MAX / 2, 4], 0, vec![]);
    assert_mentions(
        &format_msg(GgufFile::parse(&w.to_bytes(), "o.gguf")),
        &["`x`", "overflows"],
    );

    let mut bytes = GgufWriter::new().kv("x", Val::U32(1)).to_bytes();
    let ty_at = 24 + 8 + 1;
    bytes[ty_at..ty_at + 4].copy_from_slice(&13u32.to_le_bytes());
    assert_mentions(
        &format_msg(GgufFile::parse(&bytes, "ty.gguf")),
        &["`x`", "unknown value type 13"],
    );

    // Arrays nested past any sane depth.
    let mut deep = b"GGUF\x03\0\0\0".to_vec();
    deep.extend(0u64.to_le_bytes());
    deep.extend(1u64.to_le_bytes());
    deep.extend(1u64.to_le_bytes());
    deep.push(b'k');
    deep.extend(9u32.to_le_bytes());
    for _ in 0..10_000 {
        deep.extend(9u32.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    assert_mentions(
        &format_msg(GgufFile::parse(&deep, "deep.gguf")),
        &["nests arrays deeper"],
    );
}

#[test]
fn model_level_errors_name_the_tensor_or_key() {
    let (mut w, _) = tiny_llama_gguf(5);
    w.tensors.retain(|t| t.name != "blk.1.attn_v.weight");
    match load_gguf(&w.to_bytes(), "m.gguf") {
        Err(Error::MissingTensor { name, .. }) => assert_eq!(name, "blk.1.attn_v.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }

    let (mut w, _) = tiny_llama_gguf(5);
    let t = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.ffn_down.weight")
        .unwrap();
    t.dims.reverse();
    match load_gguf(&w.to_bytes(), "s.gguf") {
        Err(Error::TensorShape {
            name, got, want, ..
        }) => {
            assert_eq!(name, "model.layers.0.mlp.down_proj.weight");
            assert_eq!(
                (got, want),
                (vec![TINY.d_ff, TINY.d], vec![TINY.d, TINY.d_ff])
            );
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }

    let (mut w, _) = tiny_llama_gguf(5);
    w.kv.retain(|(k, _)| k != "llama.block_count");
    assert_mentions(
        &format_msg(load_gguf(&w.to_bytes(), "k.gguf")),
        &["llama.block_count", "missing"],
    );

    // An architecture nse does not run is named, with the ones it does.
    let (mut w, _) = tiny_llama_gguf(5);
    w.kv[0].1 = Val::Str("falcon".into());
    assert_mentions(
        &unsupported_msg(load_gguf(&w.to_bytes(), "a.gguf")),
        &["`falcon`", "`llama`", "`qwen2`", "`gpt2`"],
    );
    // A file that says qwen2 is read with qwen2's keys.
    let (mut w, _) = tiny_llama_gguf(5);
    w.kv[0].1 = Val::Str("qwen2".into());
    assert_mentions(
        &format_msg(load_gguf(&w.to_bytes(), "a.gguf")),
        &["qwen2.embedding_length", "missing"],
    );
    // A RoPE scaling type other than Llama 3's factors is named, with what is supported.
    let (mut w, _) = tiny_llama_gguf(5);
    w.kv.push(("llama.rope.scaling.type".into(), Val::Str("yarn".into())));
    assert_mentions(
        &unsupported_msg(load_gguf(&w.to_bytes(), "r.gguf")),
        &["RoPE scaling `yarn`", "rope_freqs.weight"],
    );

    let (mut w, _) = tiny_llama_gguf(5);
    w.kv.iter_mut()
        .find(|(k, _)| k == "tokenizer.ggml.model")
        .unwrap()
        .1 = Val::Str("llama".into());
    assert_mentions(
        &unsupported_msg(load_gguf(&w.to_bytes(), "t.gguf")),
        &["tokenizer model `llama`"],
    );

    let (mut w, _) = tiny_llama_gguf(5);
    w.kv.iter_mut()
        .find(|(k, _)| k == "tokenizer.ggml.pre")
        .unwrap()
        .1 = Val::Str("deepseek-llm".into());
    assert_mentions(
        &unsupported_msg(load_gguf(&w.to_bytes(), "p.gguf")),
        &["pre-tokenizer `deepseek-llm`", "`llama-bpe`", "`qwen2`"],
    );

    let (mut w, _) = tiny_llama_gguf(5);
    w.kv.push(("llama.attention.head_count_kv".into(), Val::U32(3)));
    w.kv.retain(|(k, v)| k != "llama.attention.head_count_kv" || matches!(v, Val::U32(3)));
    assert_mentions(
        &format_msg(load_gguf(&w.to_bytes(), "h.gguf")),
        &["not a multiple of 3"],
    );
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn load_path_reads_a_gguf_file() {
    let dir = std::env::temp_dir().join(format!("nse-formats-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf(6).0.to_bytes()).unwrap();
    let m = nse::model::load::load_path(&path).unwrap();
    assert_eq!(
        (m.source.name.as_str(), m.source.format.as_str()),
        ("tiny.gguf", "gguf")
    );
    assert!(matches!(
        nse::model::load::load_path(&dir.join("absent.gguf")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every prefix of a small valid file, and the file with any one byte set to 0x00 or 0xFF,
/// loads or errors: never a panic, never an allocation the file does not justify.
#[test]
fn every_cut_and_every_corrupted_byte_errors_without_panicking() {
    let bytes = tiny_llama_gguf(7).0.to_bytes();
    for cut in 0..bytes.len() {
        assert!(
            load_gguf(&bytes[..cut], "cut.gguf").is_err(),
            "cut at {cut} loaded"
        );
    }
    let mut copy = bytes.clone();
    for i in 0..bytes.len() {
        for v in [0x00, 0xFF] {
            copy[i] = v;
            let _ = load_gguf(&copy, "corrupt.gguf");
        }
        copy[i] = bytes[i];
    }
}
