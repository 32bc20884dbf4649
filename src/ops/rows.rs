//! Row and column bookkeeping: gather rows, add vectors to rows (the NSE `δ` injection), write
//! rows (the KV cache), add to columns (the column-sparse weight update).

/// CPU reference: `out[r] = x[rows[r]]`.
///
/// # Shapes
/// `x (N, D)`, `rows (R)` → `(R, D)`.
pub fn gather_rows(x: &[f32], d: usize, rows: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        let r = r as usize;
        out.extend_from_slice(&x[r * d..(r + 1) * d]);
    }
    out
}

/// CPU reference, in place: `x[rows[r]] += v[r]`.
///
/// # Shapes
/// `x (N, D)`, `rows (R)`, `v (R, D)`.
pub fn add_rows(x: &mut [f32], d: usize, rows: &[u32], v: &[f32]) {
    for (&r, vr) in rows.iter().zip(v.chunks(d)) {
        let r = r as usize;
        for (a, b) in x[r * d..(r + 1) * d].iter_mut().zip(vr) {
            *a += b;
        }
    }
}

/// CPU reference, in place: `x[rows[r], :] = 0`.
///
/// # Shapes
/// `x (N, D)`, `rows (R)`.
pub fn zero_rows(x: &mut [f32], d: usize, rows: &[u32]) {
    for &r in rows {
        let r = r as usize;
        x[r * d..(r + 1) * d].fill(0.0);
    }
}

/// CPU reference, in place: `w[:, cols[c]] += delta[:, c]`.
///
/// # Shapes
/// `w (N, K)`, `cols (C)`, `delta (N, C)`.
pub fn add_columns(w: &mut [f32], k: usize, cols: &[u32], delta: &[f32]) {
    let c = cols.len();
    for (wr, dr) in w.chunks_mut(k).zip(delta.chunks(c)) {
        for (&col, &d) in cols.iter().zip(dr) {
            wr[col as usize] += d;
        }
    }
}
