//! The 5-bit and K-quant GGML types (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), as the GGUF files people
//! download mix them (`Q4_K_M`, `Q5_K_M`): one small file holding a tensor of each beside an
//! F32 one, made by gguf-py's writer, and dequantised bit for bit as gguf-py's NumPy
//! dequantisers do (`tests/data/kquants/make.py` wrote both).

use nse::model::gguf::{GgmlType, GgufFile};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/kquants/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `expected.bin`: per tensor, its name and gguf-py's values.
fn expected() -> Vec<(String, Vec<f32>)> {
    let bytes = fixture("expected.bin");
    let mut at = 0;
    let u32_at = |at: &mut usize| {
        let v = u32::from_le_bytes(bytes[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v as usize
    };
    let mut out = vec![];
    while at < bytes.len() {
        let n = u32_at(&mut at);
        let name = String::from_utf8(bytes[at..at + n].to_vec()).unwrap();
        at += n;
        let count = u32_at(&mut at);
        let values = bytes[at..at + 4 * count]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        at += 4 * count;
        out.push((name, values));
    }
    out
}

#[test]
fn k_quants_dequantise_bit_for_bit_as_gguf_py() {
    let bytes = fixture("mixture.gguf");
    let g = GgufFile::parse(&bytes, "mixture.gguf").expect("gguf-py's file parses");
    let want = expected();
    assert_eq!(want.len(), 6, "the fixture lists six tensors");
    let types: Vec<GgmlType> = want
        .iter()
        .map(|(name, _)| g.tensor_info(name).expect("listed").ggml_type)
        .collect();
    assert_eq!(
        types,
        [
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K
        ]
    );
    for (name, values) in &want {
        let t = g.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let data = t.f32();
        assert_eq!(data.len(), values.len(), "{name}");
        for (i, (got, want)) in data.iter().zip(values).enumerate() {
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{name}[{i}]: {got} against gguf-py's {want}"
            );
        }
        // Random bytes with valid scales: the values are spread, not all zero.
        assert!(values.iter().any(|&v| v != 0.0), "{name}");
    }
}

#[test]
fn a_truncated_k_quant_tensor_is_refused() {
    let mut bytes = fixture("mixture.gguf");
    // Cut into the last tensor (Q6_K, 3 blocks of 210 bytes, padded to 32-byte alignment).
    bytes.truncate(bytes.len() - 64);
    match GgufFile::parse(&bytes, "cut.gguf").and_then(|g| g.tensor("q6_k.weight")) {
        Err(e) => assert!(
            e.to_string().contains("q6_k.weight"),
            "the error does not name the tensor: {e}"
        ),
        Ok(_) => panic!("a truncated Q6_K tensor was read"),
    }
}
