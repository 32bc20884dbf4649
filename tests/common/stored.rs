//! Random matrices in a ggml storage type, for the tests of weights kept compact
//! (`tests/gpu_packed.rs` natively, `tests/web.rs` in the browser, each with its own generator).

use nse::model::gguf::GgmlType;
use nse::model::host::Stored;

/// A random `(rows, cols)` matrix of `ty` whose every value is finite, from the random bits of
/// `next` (each test crate's own generator): random block bytes, every f16 field of a block (at
/// the byte offsets `f16_fields`) set to a tenth of a value in `[-1, 1)`, and F16/BF16 values in
/// `[-1, 1)`.
pub fn random_stored(
    ty: GgmlType,
    f16_fields: &[usize],
    (rows, cols): (usize, usize),
    mut next: impl FnMut() -> u64,
) -> Stored {
    let next = std::cell::RefCell::new(&mut next);
    let byte = || next.borrow_mut()() as u8;
    // 24 random bits, exact in f32.
    let unit = || (next.borrow_mut()() >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
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
