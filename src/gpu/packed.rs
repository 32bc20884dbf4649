//! Weights kept compact on the device: the layouts the kernels decode (`shaders/weights.wgsl`),
//! and their packing from a checkpoint's storage type on the host.
//!
//! A ggml block type is not read as it is: its blocks are 18, 20, 22, 34, 144, 176 or 210 bytes,
//! most of them not word-aligned, with codes split across bit planes. Each is repacked once, at
//! upload, into one of two group layouts that a kernel decodes with a word load and a few shifts:
//! per group of [`Packed::group`] consecutive values of a row a pair of f32 `(scale, offset)`, and
//! per value an 8-bit signed or a 4-bit unsigned code; the value is `scale · code + offset`.
//!
//! Every value is the one the cpu's dequantiser gives (`crate::model::gguf::quant`), because the
//! repacking only moves exact numbers: the scales are products of an f16 and a small integer
//! (exact in f32), and where the offset is not zero the product `scale · code` is exact too (at
//! most 22 significant bits), so the one rounding of `scale · code + offset`, fused or not, is the
//! dequantiser's own. Q4_0's `d·(q − 8)` becomes `d·q + (−8d)`, whose exact sum is representable.
//! [`Packed::unpack`] is that arithmetic on the host, and the tests hold it to the dequantiser.
//!
//! F16 and BF16 keep their 2-byte values, two to a word.

use crate::model::gguf::GgmlType;
use crate::model::gguf::quant::{f16_at, q5_codes, q6_k_codes, q45_k_codes, scale_min_k4};
use crate::model::host::Stored;

/// A layout the kernels decode (`$W_FMT` in `shaders/weights.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PackedFormat {
    /// Two f16 per word, the first in the low half.
    F16 = 1,
    /// Two bf16 per word, the first in the low half.
    Bf16 = 2,
    /// Groups: `(scale, offset)` f32 pairs, then four signed 8-bit codes per word.
    Int8 = 3,
    /// Groups: `(scale, offset)` f32 pairs, then eight unsigned 4-bit codes per word.
    Int4 = 4,
}

impl PackedFormat {
    /// How `nse bench forward` and `nse info` name the layout.
    pub fn name(self) -> &'static str {
        match self {
            PackedFormat::F16 => "F16",
            PackedFormat::Bf16 => "BF16",
            PackedFormat::Int8 => "8-bit groups",
            PackedFormat::Int4 => "4-bit groups",
        }
    }
}

/// A row-major matrix in a [`PackedFormat`].
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    pub format: PackedFormat,
    /// Values per `(scale, offset)` group of the integer formats (32, or 16 for Q6_K); a
    /// multiple of 8, and groups never cross a row.
    pub group: u32,
    /// For the integer formats, `2 · len / group` words of `(scale, offset)` bits, then the
    /// codes; for F16/BF16, `len / 2` words.
    pub words: Vec<u32>,
}

/// The layout and group size a matrix of storage type `ty` gets on the device, `None` where it
/// is widened to f32.
pub fn layout_of(ty: GgmlType) -> Option<(PackedFormat, u32)> {
    use PackedFormat::{Bf16, F16, Int4, Int8};
    Some(match ty {
        GgmlType::F16 => (F16, 1),
        GgmlType::BF16 => (Bf16, 1),
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => (Int4, 32),
        GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => (Int8, 32),
        GgmlType::Q6_K => (Int8, 16),
        _ => return None,
    })
}

/// Bytes a `(rows, cols)` matrix of storage type `ty` takes on the gpu backend: its packed
/// layout's where it has one (and its rows are a whole number of 8 values), else f32's.
pub fn device_bytes(ty: GgmlType, rows: usize, cols: usize) -> u64 {
    let len = rows as u64 * cols as u64;
    match layout_of(ty) {
        Some((format, group)) if cols.is_multiple_of(8) => match format {
            PackedFormat::F16 | PackedFormat::Bf16 => 2 * len,
            PackedFormat::Int8 => len + 8 * len / u64::from(group),
            PackedFormat::Int4 => len / 2 + 8 * len / u64::from(group),
        },
        _ => 4 * len,
    }
}

/// Groups of codes being written.
struct Groups {
    format: PackedFormat,
    group: u32,
    pairs: Vec<u32>,
    codes: Vec<u32>,
    /// Codes written so far.
    n: usize,
}

impl Groups {
    fn new(format: PackedFormat, group: u32, len: usize) -> Self {
        let per_word = if format == PackedFormat::Int8 { 4 } else { 8 };
        Groups {
            format,
            group,
            pairs: Vec::with_capacity(2 * len / group as usize),
            codes: vec![0; len.div_ceil(per_word)],
            n: 0,
        }
    }

    /// A group: its scale and offset and its `group` codes (signed for Int8, `0..16` for Int4).
    fn push(&mut self, scale: f32, offset: f32, codes: impl IntoIterator<Item = i32>) {
        self.pairs.extend([scale.to_bits(), offset.to_bits()]);
        for q in codes {
            let (word, shift) = match self.format {
                PackedFormat::Int8 => (self.n / 4, 8 * (self.n % 4)),
                _ => (self.n / 8, 4 * (self.n % 8)),
            };
            let mask = if self.format == PackedFormat::Int8 {
                0xff
            } else {
                0xf
            };
            self.codes[word] |= ((q as u32) & mask) << shift;
            self.n += 1;
        }
    }

    fn finish(mut self) -> Packed {
        debug_assert_eq!(self.pairs.len() * self.group as usize / 2, self.n);
        self.pairs.append(&mut self.codes);
        Packed {
            format: self.format,
            group: self.group,
            words: self.pairs,
        }
    }
}

impl Packed {
    /// The packing of `s`, or `None` where its type has no packed layout (the caller then
    /// widens it to f32) or its rows are not a whole number of vec4s.
    pub fn from_stored(s: &Stored) -> Option<Packed> {
        if !s.cols.is_multiple_of(8) {
            return None;
        }
        let len = s.rows * s.cols;
        let (format, group) = layout_of(s.ty)?;
        if matches!(format, PackedFormat::F16 | PackedFormat::Bf16) {
            let words = s
                .bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            return Some(Packed {
                format,
                group,
                words,
            });
        }
        let (_, block_bytes) = s.ty.block_layout()?;
        let blocks = s.bytes.chunks_exact(block_bytes as usize);
        let mut g = Groups::new(format, group, len);
        match s.ty {
            GgmlType::Q4_0 => {
                for b in blocks {
                    let d = f16_at(b, 0);
                    g.push(d, -8.0 * d, nibbles(&b[2..18]));
                }
            }
            GgmlType::Q4_1 => {
                for b in blocks {
                    g.push(f16_at(b, 0), f16_at(b, 2), nibbles(&b[4..20]));
                }
            }
            GgmlType::Q8_0 => {
                for b in blocks {
                    g.push(
                        f16_at(b, 0),
                        0.0,
                        b[2..34].iter().map(|&q| i32::from(q as i8)),
                    );
                }
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let with_min = s.ty == GgmlType::Q5_1;
                for b in blocks {
                    let codes = q5_codes(b, with_min);
                    if with_min {
                        g.push(f16_at(b, 0), f16_at(b, 2), codes.map(i32::from));
                    } else {
                        g.push(f16_at(b, 0), 0.0, codes.map(|q| i32::from(q) - 16));
                    }
                }
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let five = s.ty == GgmlType::Q5_K;
                for b in blocks {
                    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                    let codes = q45_k_codes(b, five);
                    for (sub, q) in codes.chunks_exact(32).enumerate() {
                        let (sc, m) = scale_min_k4(sub, &b[4..16]);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        g.push(d1, -m1, q.iter().map(|&q| i32::from(q)));
                    }
                }
            }
            GgmlType::Q6_K => {
                for b in blocks {
                    let d = f16_at(b, 208);
                    let codes = q6_k_codes(b);
                    for (j, q) in codes.chunks_exact(16).enumerate() {
                        let sc = b[192 + j] as i8;
                        g.push(d * sc as f32, 0.0, q.iter().map(|&q| i32::from(q)));
                    }
                }
            }
            _ => unreachable!("layout_of({}) has no packing", s.ty),
        }
        Some(g.finish())
    }

    /// Bytes the packed values take.
    pub fn byte_len(&self) -> usize {
        4 * self.words.len()
    }

    /// The `len` values as the kernels compute them (`shaders/weights.wgsl`), on the host.
    pub fn unpack(&self, len: usize) -> Vec<f32> {
        let w = &self.words;
        let half = |i: usize| (w[i / 2] >> (16 * (i % 2))) & 0xffff;
        match self.format {
            PackedFormat::F16 => (0..len)
                .map(|i| half::f16::from_bits(half(i) as u16).to_f32())
                .collect(),
            PackedFormat::Bf16 => (0..len).map(|i| f32::from_bits(half(i) << 16)).collect(),
            PackedFormat::Int8 | PackedFormat::Int4 => {
                let group = self.group as usize;
                let codes = &w[2 * len / group..];
                (0..len)
                    .map(|i| {
                        let (scale, offset) = (
                            f32::from_bits(w[2 * (i / group)]),
                            f32::from_bits(w[2 * (i / group) + 1]),
                        );
                        let q = if self.format == PackedFormat::Int8 {
                            (codes[i / 4] >> (8 * (i % 4))) as u8 as i8 as f32
                        } else {
                            ((codes[i / 8] >> (4 * (i % 8))) & 0xf) as f32
                        };
                        scale * q + offset
                    })
                    .collect()
            }
        }
    }
}

/// The 32 four-bit codes of a ggml 32-block's 16 bytes, in weight order: the low nibbles, then
/// the high ones.
fn nibbles(qs: &[u8]) -> impl Iterator<Item = i32> + '_ {
    let lo = qs.iter().map(|&q| i32::from(q & 15));
    lo.chain(qs.iter().map(|&q| i32::from(q >> 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random blocks of `ty` with finite f16 fields at `f16_at`.
    fn random_blocks(ty: GgmlType, f16_fields: &[usize], blocks: usize, seed: u64) -> Vec<u8> {
        let (_, bb) = ty.block_layout().unwrap();
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut bytes: Vec<u8> = (0..blocks * bb as usize).map(|_| next() as u8).collect();
        for b in 0..blocks {
            for &at in f16_fields {
                // Scales in ±[2⁻¹⁰, 2): finite, and varied in sign and size.
                let v = (next() % 2000) as f32 / 1000.0 * if next() % 2 == 0 { 1.0 } else { -1.0 };
                let h = half::f16::from_f32(v + 0.001).to_le_bytes();
                let at = b * bb as usize + at;
                bytes[at..at + 2].copy_from_slice(&h);
            }
        }
        bytes
    }

    #[test]
    fn every_packed_type_unpacks_to_the_dequantisers_values() {
        let cases: &[(GgmlType, &[usize], PackedFormat, u32)] = &[
            (GgmlType::F16, &[], PackedFormat::F16, 1),
            (GgmlType::BF16, &[], PackedFormat::Bf16, 1),
            (GgmlType::Q4_0, &[0], PackedFormat::Int4, 32),
            (GgmlType::Q4_1, &[0, 2], PackedFormat::Int4, 32),
            (GgmlType::Q8_0, &[0], PackedFormat::Int8, 32),
            (GgmlType::Q5_0, &[0], PackedFormat::Int8, 32),
            (GgmlType::Q5_1, &[0, 2], PackedFormat::Int8, 32),
            (GgmlType::Q4_K, &[0, 2], PackedFormat::Int4, 32),
            (GgmlType::Q5_K, &[0, 2], PackedFormat::Int8, 32),
            (GgmlType::Q6_K, &[208], PackedFormat::Int8, 16),
        ];
        for &(ty, fields, format, group) in cases {
            let (block, _) = ty.block_layout().unwrap();
            let (rows, cols) = (3, 512);
            let blocks = rows * cols / block as usize;
            let mut bytes = random_blocks(ty, fields, blocks, 7 + ty.0 as u64);
            if ty == GgmlType::F16 || ty == GgmlType::BF16 {
                // Random halves include NaNs; keep the values finite.
                for h in bytes.chunks_exact_mut(2) {
                    h[1] &= 0x3f;
                }
            }
            let stored = Stored::new(ty, bytes, rows, cols).unwrap();
            let packed = Packed::from_stored(&stored).expect("packable");
            assert_eq!((packed.format, packed.group), (format, group), "{ty}");
            assert_eq!(layout_of(ty), Some((format, group)), "{ty}");
            assert_eq!(
                packed.byte_len() as u64,
                device_bytes(ty, rows, cols),
                "{ty}"
            );
            let want = stored.to_f32();
            let got = packed.unpack(rows * cols);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Equal as numbers (a zero's sign may differ: `d·0 + 0`).
                assert!(g == w, "{ty} value {i}: packed {g} vs dequantised {w}");
            }
            assert!(
                want.iter().any(|&v| v != 0.0),
                "{ty}: the blocks are not all zero"
            );
        }
    }

    #[test]
    fn compact_layouts_take_what_the_design_says() {
        let stored = Stored::new(GgmlType::Q4_1, vec![0; 20 * 4], 2, 64).unwrap();
        let p = Packed::from_stored(&stored).unwrap();
        // 4 groups: 8 words of (scale, offset), then 128 codes at 8 per word.
        assert_eq!(p.words.len(), 8 + 16);
        let narrow = Stored::new(GgmlType::F16, vec![0; 2 * 12], 2, 6).unwrap();
        assert_eq!(
            Packed::from_stored(&narrow),
            None,
            "rows of 6 values stay f32"
        );
    }
}
