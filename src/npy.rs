//! Minimal `.npy` (format 1.0) reading and writing of little-endian f32 matrices: the golden
//! covariance files, and the on-disk covariance cache.

use crate::{Error, Result};

/// Parses a `.npy` holding a C-order `<f4` array; returns `(shape, values)`.
///
/// The values take as much memory as the file's data bytes, which the shape must match
/// exactly, so the file's own length bounds every allocation.
pub fn read_f32(bytes: &[u8], path: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |msg: &str| Error::format(path, format!("not a float32 .npy file: {msg}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(&format!("unsupported version {v}"))),
    };
    let data_start = start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad("truncated header"))?;
    let header = &bytes[start..data_start];
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        return Err(bad(&format!("need C-order '<f4', header is {header:?}")));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape in header"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    // u64 and checked: a lying shape must neither wrap (wasm32's usize is 32 bits) nor pass.
    let want = crate::budget::bytes_of(&shape, 4);
    let data = &bytes[data_start..];
    if want != Some(data.len() as u64) {
        return Err(bad(&format!(
            "{} data bytes for shape {shape:?} (expected {})",
            data.len(),
            want.map_or_else(|| "more than 2^64".into(), |w| w.to_string())
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

/// Serialises a C-order `<f4` array.
pub fn write_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape_text}), }}");
    // Pad so that the data starts on a 64-byte boundary, header ending in '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = write_f32(&[2, 3], &[1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]);
        assert_eq!(bytes.len() % 64, 24); // header padded to 64 bytes, then 6 × 4 data bytes
        let (shape, v) = read_f32(&bytes, "x").unwrap();
        assert_eq!(shape, [2, 3]);
        assert_eq!(v, [1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]);
        assert!(read_f32(&bytes[..bytes.len() - 1], "x").is_err());
        assert!(read_f32(b"garbage!!!!!", "x").is_err());
    }
}
