//! The blob of a patch: little-endian arrays, each addressed by a [`Span`] of the manifest.
//!
//! Reading is two-pass so that a crafted manifest cannot make us allocate more than the file
//! holds: every span is checked (in bounds, no overflow on 32-bit targets, no two overlapping)
//! before any array is decoded, so the decoded arrays together are at most the blob's size.

use serde::{Deserialize, Serialize};

/// A slice of the blob: `len` elements starting at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Span {
    pub offset: u64,
    pub len: u64,
}

/// Appends arrays to the blob and returns where they went.
#[derive(Default)]
pub(super) struct Blob {
    pub bytes: Vec<u8>,
}

impl Blob {
    fn push(&mut self, len: usize, bytes: impl Iterator<Item = u8>) -> Span {
        let offset = self.bytes.len() as u64;
        self.bytes.extend(bytes);
        Span {
            offset,
            len: len as u64,
        }
    }
    pub fn f64s(&mut self, v: &[f64]) -> Span {
        self.push(v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }
    pub fn f32s(&mut self, v: &[f32]) -> Span {
        self.push(v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }
    pub fn u32s(&mut self, v: &[u32]) -> Span {
        self.push(v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }
}

/// Checks that `spans` (each with its element width in bytes) lie inside a blob of `blob_len`
/// bytes and do not overlap.
///
/// # Errors
/// The first problem found, in words.
pub(super) fn check_spans(spans: &[(Span, usize)], blob_len: usize) -> Result<(), String> {
    let mut ranges = Vec::with_capacity(spans.len());
    for &(s, width) in spans {
        let start = usize::try_from(s.offset).ok();
        let bytes = usize::try_from(s.len)
            .ok()
            .and_then(|n| n.checked_mul(width));
        let end = start.zip(bytes).and_then(|(a, b)| a.checked_add(b));
        match (start, end) {
            (Some(a), Some(e)) if e <= blob_len => ranges.push((a, e)),
            _ => {
                return Err(format!(
                    "an array ({} elements at byte {}) points past the end of the {blob_len}-byte data",
                    s.len, s.offset
                ));
            }
        }
    }
    ranges.sort_unstable();
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(format!(
            "two arrays overlap (bytes {}..{} and {}..{})",
            w[0].0, w[0].1, w[1].0, w[1].1
        ));
    }
    Ok(())
}

/// Reads arrays whose spans [`check_spans`] accepted.
pub(super) struct BlobReader<'a> {
    pub blob: &'a [u8],
}

impl BlobReader<'_> {
    fn bytes(&self, s: Span, width: usize) -> &[u8] {
        // Checked by `check_spans` before any read: a failure here is a bug in the decoder.
        let start = s.offset as usize;
        &self.blob[start..start + s.len as usize * width]
    }
    pub fn f64s(&self, s: Span) -> Vec<f64> {
        self.bytes(s, 8)
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }
    pub fn f32s(&self, s: Span) -> Vec<f32> {
        self.bytes(s, 4)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }
    pub fn u32s(&self, s: Span) -> Vec<u32> {
        self.bytes(s, 4)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: u64, len: u64) -> Span {
        Span { offset, len }
    }

    #[test]
    fn spans_in_bounds_and_disjoint_pass() {
        assert!(check_spans(&[(span(0, 2), 8), (span(16, 4), 4)], 32).is_ok());
        assert!(check_spans(&[], 0).is_ok());
    }

    #[test]
    fn overlapping_repeated_or_overflowing_spans_fail() {
        assert!(check_spans(&[(span(0, 2), 8), (span(8, 1), 4)], 32).is_err());
        assert!(check_spans(&[(span(0, 1), 4), (span(0, 1), 4)], 32).is_err());
        assert!(check_spans(&[(span(30, 1), 4)], 32).is_err());
        assert!(check_spans(&[(span(u64::MAX, 1), 4)], 32).is_err());
        assert!(check_spans(&[(span(0, u64::MAX / 2), 8)], 32).is_err());
    }
}
