//! Random matrices in a ggml storage type, for the tests of weights kept compact
//! (`tests/gpu_packed.rs` natively, `tests/web.rs` in the browser, each with its own generator).

use nse::model::gguf::GgmlType;
use nse::model::host::Stored;

/// A random `(rows, cols)` matrix of `ty` whose every value is finite: block bytes from `byte`,
/// every f16 field of a block (at the byte offsets `f16_fields`) set to a tenth of a value
/// from `unit` (in `[-1, 1)`), and F16/BF16 values from `unit`.
pub fn random_stored(
    ty: GgmlType,
    f16_fields: &[usize],
    (rows, cols): (usize, usize),
    mut byte: impl FnMut() -> u8,
    mut unit: impl FnMut() -> f32,
) -> Stored {
    let (block, block_bytes) = ty.block_layout().unwrap();
    let (block, block_bytes) = (block as usize, block_bytes as usize);
    let mut bytes: Vec<u8> = (0..rows * cols / block * block_bytes)
        .map(|_| byte())
        .collect();
    match ty {
        GgmlType::F16 | GgmlType::BF16 => {
            for h in bytes.chunks_exact_mut(2) {
                let v = unit();
                let bits = if ty == GgmlType::F16 {
                    half::f16::from_f32(v).to_bits()
                } else {
                    half::bf16::from_f32(v).to_bits()
                };
                h.copy_from_slice(&bits.to_le_bytes());
            }
        }
        _ => {
            for b in bytes.chunks_exact_mut(block_bytes) {
                for &at in f16_fields {
                    let v = half::f16::from_f32(0.1 * unit());
                    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    Stored::new(ty, bytes, rows, cols).expect("a whole number of blocks per row")
}
