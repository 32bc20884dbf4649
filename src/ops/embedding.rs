//! Embedding gather: `out[i] = table[ids[i]]`.

/// CPU reference.
///
/// # Shapes
/// `table (V, D)`, `ids (N)` → `out (N, D)`.
pub fn embedding_forward(table: &[f32], d: usize, ids: &[u32]) -> Vec<f32> {
    let vocab = table.len() / d;
    let mut out = vec![0.0; ids.len() * d];
    for (row, &id) in out.chunks_mut(d).zip(ids) {
        let id = id as usize;
        assert!(
            id < vocab,
            "token id {id} out of range for a vocabulary of {vocab}"
        );
        row.copy_from_slice(&table[id * d..(id + 1) * d]);
    }
    out
}
