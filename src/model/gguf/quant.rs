//! GGML tensor types: their names, block layouts, and dequantisation to f32.
//!
//! Block layouts follow ggml's `ggml-common.h`; every multi-byte field is little-endian.

use half::{bf16, f16};

/// A GGML tensor type id as stored in a GGUF tensor info (`enum ggml_type`).
///
/// Any `u32` can be held, so a file with a type this crate does not know still parses and
/// [`GgufFile::tensor_infos`](super::GgufFile::tensor_infos) can list it; only dequantising such a
/// tensor fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(pub u32);

/// The ids this crate names in code; [`GgmlType::name`] knows the rest.
impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const BF16: GgmlType = GgmlType(30);

    /// ggml's name for the type (`"Q4_1"`), or `None` for an id ggml never defined.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            6 => "Q5_0",
            7 => "Q5_1",
            8 => "Q8_0",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            12 => "Q4_K",
            13 => "Q5_K",
            14 => "Q6_K",
            15 => "Q8_K",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            30 => "BF16",
            34 => "TQ1_0",
            35 => "TQ2_0",
            39 => "MXFP4",
            _ => return None,
        })
    }

    /// `(weights per block, bytes per block)` for the types [`dequantize`] handles, else `None`.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4_K => (QK_K as u64, 144),
            GgmlType::Q5_K => (QK_K as u64, 176),
            GgmlType::Q6_K => (QK_K as u64, 210),
            _ => return None,
        })
    }

    /// Whether [`dequantize`] can decode this type.
    pub fn is_supported(self) -> bool {
        self.block_layout().is_some()
    }
}

impl std::fmt::Display for GgmlType {
    /// `Q4_K (12)` style: the name when known, always the id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "unknown type id {}", self.0),
        }
    }
}

/// Decodes `n` weights of type `ty` from `bytes`.
///
/// # Shapes
/// `bytes` holds exactly `n / block` blocks (the caller checked the length against the tensor
/// info); the result has `n` values in storage order.
///
/// # Panics
/// If `ty` is unsupported or `bytes` has the wrong length: the GGUF reader validates both before
/// calling, so either is a bug in the reader.
pub(crate) fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let (block, block_bytes) = ty
        .block_layout()
        .expect("dequantize called on an unsupported type");
    assert_eq!(
        bytes.len() as u64,
        n as u64 / block * block_bytes,
        "dequantize: byte length does not match {n} weights of {ty}"
    );
    if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
        let mut out = vec![0.0f32; n];
        dequantize_blocks_into(ty, bytes, &mut out);
        return out;
    }
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q4_0 => bytes.chunks_exact(18).for_each(|b| q4_0_block(b, &mut out)),
        GgmlType::Q4_1 => bytes.chunks_exact(20).for_each(|b| q4_1_block(b, &mut out)),
        GgmlType::Q5_0 => bytes
            .chunks_exact(22)
            .for_each(|b| q5_block(b, false, &mut out)),
        GgmlType::Q5_1 => bytes
            .chunks_exact(24)
            .for_each(|b| q5_block(b, true, &mut out)),
        GgmlType::Q8_0 => bytes.chunks_exact(34).for_each(|b| q8_0_block(b, &mut out)),
        GgmlType::Q4_K => bytes
            .chunks_exact(144)
            .for_each(|b| q45_k_block(b, false, &mut out)),
        GgmlType::Q5_K => bytes
            .chunks_exact(176)
            .for_each(|b| q45_k_block(b, true, &mut out)),
        GgmlType::Q6_K => bytes
            .chunks_exact(210)
            .for_each(|b| q6_k_block(b, &mut out)),
        _ => unreachable!("block_layout covers exactly the types matched here"),
    }
    out
}

/// The hot path of [`dequantize`] for the block types a compact weight is decoded from at every
/// matmul: fixed-size loops over each block that the compiler vectorises. Same expressions, so
/// the same values, as the per-block decoders below.
fn dequantize_blocks_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
            blocks_into(ty, bytes, out)
        }
        // SAFETY: the processor has AVX2, checked just above.
        unsafe { avx2(ty, bytes, out) };
        return;
    }
    blocks_into(ty, bytes, out)
}

/// [`dequantize_blocks_into`]'s loops, inlined into an AVX2 copy where the processor has it (the
/// same arithmetic, 8 lanes at a time, so the same values).
#[inline(always)]
fn blocks_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::Q4_0 => {
            for (b, o) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(b, 0);
                let qs: &[u8; 16] = b[2..18].try_into().expect("18-byte block");
                let (lo, hi) = o.split_at_mut(16);
                for j in 0..16 {
                    lo[j] = d * ((qs[j] & 15) as i32 - 8) as f32;
                    hi[j] = d * ((qs[j] >> 4) as i32 - 8) as f32;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (b, o) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs: &[u8; 16] = b[4..20].try_into().expect("20-byte block");
                let (lo, hi) = o.split_at_mut(16);
                for j in 0..16 {
                    lo[j] = d * (qs[j] & 15) as f32 + m;
                    hi[j] = d * (qs[j] >> 4) as f32 + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (b, o) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(b, 0);
                let qs: &[u8; 32] = b[2..34].try_into().expect("34-byte block");
                for j in 0..32 {
                    o[j] = d * (qs[j] as i8) as f32;
                }
            }
        }
        _ => unreachable!("only the types matched in dequantize"),
    }
}

/// Weights per K-quant super-block.
const QK_K: usize = 256;

pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `{f16 d, u8 qs[16]}`: `w[j] = d·(lo(qs[j]) − 8)`, `w[j+16] = d·(hi(qs[j]) − 8)`.
fn q4_0_block(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    out.extend(qs.iter().map(|&q| d * ((q & 15) as i32 - 8) as f32));
    out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
}

/// `{f16 d, f16 m, u8 qs[16]}`: `w[j] = d·lo(qs[j]) + m`, `w[j+16] = d·hi(qs[j]) + m`.
fn q4_1_block(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    out.extend(qs.iter().map(|&q| d * (q & 15) as f32 + m));
    out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
}

/// `{f16 d, i8 qs[32]}`: `w[j] = d·qs[j]`.
fn q8_0_block(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
}

/// Q5_0 `{f16 d, u32 qh, u8 qs[16]}` and Q5_1 `{f16 d, f16 m, u32 qh, u8 qs[16]}`: the fifth bit
/// of weight `j` is bit `j` of `qh`; `w = d·(q − 16)` (Q5_0) or `w = d·q + m` (Q5_1).
fn q5_block(b: &[u8], with_min: bool, out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let q = q5_codes(b, with_min);
    if with_min {
        let m = f16_at(b, 2);
        out.extend(q.iter().map(|&q| d * q as f32 + m));
    } else {
        out.extend(q.iter().map(|&q| d * (q as i32 - 16) as f32));
    }
}

/// The 32 five-bit codes `q` of a Q5_0 (`with_min` false) or Q5_1 block, in weight order.
pub(crate) fn q5_codes(b: &[u8], with_min: bool) -> [u8; 32] {
    let at = if with_min { 4 } else { 2 };
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let qs = &b[at + 4..at + 20];
    std::array::from_fn(|j| {
        let nibble = if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 };
        nibble | (((qh >> j) & 1) as u8) << 4
    })
}

/// The 6-bit scale and min of sub-block `j` (of 8) from the 12 packed bytes of Q4_K and Q5_K
/// (ggml's `get_scale_min_k4`).
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K `{f16 d, f16 dmin, u8 scales[12], u8 qs[128]}` and Q5_K (the same with `u8 qh[32]`
/// before `qs`): 8 sub-blocks of 32 weights, `w = (d·sc)·q − dmin·m`, `q` 4 bits (+ 1 from `qh`).
fn q45_k_block(b: &[u8], five: bool, out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let codes = q45_k_codes(b, five);
    for (sub, q) in codes.chunks_exact(32).enumerate() {
        let (sc, m) = scale_min_k4(sub, &b[4..16]);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        out.extend(q.iter().map(|&q| d1 * q as f32 - m1));
    }
}

/// The 256 codes `q` (4 or 5 bits) of a Q4_K or Q5_K block, in weight order.
pub(crate) fn q45_k_codes(b: &[u8], five: bool) -> [u8; QK_K] {
    let (qh, qs) = if five {
        (&b[16..48], &b[48..176])
    } else {
        (&[][..], &b[16..144])
    };
    std::array::from_fn(|i| {
        let (sub, l) = (i / 32, i % 32);
        // Sub-blocks pair up on 32 bytes of `qs`: low nibbles, then high nibbles.
        let byte = qs[32 * (sub / 2) + l];
        let mut q = if sub % 2 == 0 { byte & 15 } else { byte >> 4 };
        if five {
            q |= ((qh[l] >> sub) & 1) << 4;
        }
        q
    })
}

/// Q6_K `{u8 ql[128], u8 qh[64], i8 scales[16], f16 d}`: 16 groups of 16 weights,
/// `w = (d·sc)·(q − 32)` with `q` 4 bits from `ql` and 2 from `qh`.
fn q6_k_block(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 208);
    for (i, q) in q6_k_codes(b).into_iter().enumerate() {
        let sc = b[192 + i / 16] as i8;
        out.push(d * sc as f32 * q as f32);
    }
}

/// The 256 codes `q − 32` of a Q6_K block, in weight order.
pub(crate) fn q6_k_codes(b: &[u8]) -> [i8; QK_K] {
    let (ql, qh) = (&b[..128], &b[128..192]);
    std::array::from_fn(|i| {
        // Two halves of 128 weights; within a half, four runs of 32.
        let (half, k) = (i / 128, i % 128);
        let (run, l) = (k / 32, k % 32);
        let low = ql[64 * half + 32 * (run % 2) + l];
        let low = if run < 2 { low & 15 } else { low >> 4 };
        let high = (qh[32 * half + l] >> (2 * run)) & 3;
        ((low | (high << 4)) as i32 - 32) as i8
    })
}
