//! Packed batches: several token sequences laid end to end, with no padding.
//!
//! Row `r` of every activation matrix is one token of one sequence. Each row knows its position
//! inside its sequence (for RoPE) and the range of rows it may attend to (its own sequence, up to
//! itself). This replaces the reference's right padding and attention masks (spec hazard H3):
//! positions start at 0 for every sequence, and no pad token ever reaches the model.

/// A packed batch of sequences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// All tokens, sequence after sequence. `(N)`.
    pub ids: Vec<u32>,
    /// Position of each row inside its sequence. `(N)`.
    pub positions: Vec<u32>,
    /// Per row, the half-open range of rows it attends to: `[seq_start, row + 1)`. `(N, 2)`.
    pub ranges: Vec<u32>,
    /// Row offset of each sequence, plus the total row count at the end. `(S + 1)`.
    pub offsets: Vec<usize>,
}

impl Packed {
    /// Packs `seqs`. Panics on an empty sequence (callers validate user input first).
    pub fn new<S: AsRef<[u32]>>(seqs: &[S]) -> Self {
        let mut p = Packed {
            ids: vec![],
            positions: vec![],
            ranges: vec![],
            offsets: vec![0],
        };
        for s in seqs {
            let s = s.as_ref();
            assert!(!s.is_empty(), "Packed::new: empty sequence");
            let start = p.ids.len() as u32;
            for (pos, &id) in s.iter().enumerate() {
                p.ids.push(id);
                p.positions.push(pos as u32);
                p.ranges.extend([start, start + pos as u32 + 1]);
            }
            p.offsets.push(p.ids.len());
        }
        p
    }

    /// Number of rows (tokens in all sequences).
    pub fn n_rows(&self) -> usize {
        self.ids.len()
    }

    /// Number of sequences.
    pub fn n_seqs(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Length of sequence `s`.
    pub fn len_of(&self, s: usize) -> usize {
        self.offsets[s + 1] - self.offsets[s]
    }

    /// Row of token `pos` of sequence `s`.
    pub fn row(&self, s: usize, pos: usize) -> usize {
        assert!(pos < self.len_of(s), "sequence {s} has no position {pos}");
        self.offsets[s] + pos
    }

    /// Row of the last token of sequence `s`.
    pub fn last_row(&self, s: usize) -> usize {
        self.offsets[s + 1] - 1
    }

    /// The longest sequence.
    pub fn max_len(&self) -> usize {
        (0..self.n_seqs())
            .map(|s| self.len_of(s))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_two_sequences() {
        let p = Packed::new(&[vec![5, 6, 7], vec![9]]);
        assert_eq!(p.ids, [5, 6, 7, 9]);
        assert_eq!(p.positions, [0, 1, 2, 0]);
        assert_eq!(p.ranges, [0, 1, 0, 2, 0, 3, 3, 4]);
        assert_eq!(p.offsets, [0, 3, 4]);
        assert_eq!((p.row(1, 0), p.last_row(0), p.max_len()), (3, 2, 3));
    }
}
