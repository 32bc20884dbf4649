//! Where attention finds its keys and values: the KV cache of incremental decoding, the fixed
//! keys and values of a partially recomputed batch, and the per-call context a packed block
//! reads.

/// Per-layer key/value cache for incremental decoding.
pub struct KvCache<T> {
    pub(super) k: Vec<T>,
    pub(super) v: Vec<T>,
    pub(super) len: usize,
    pub(super) capacity: usize,
}

impl<T> KvCache<T> {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been decoded yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of tokens.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// How attention finds its keys and values inside one block.
pub(super) enum Kv<'c, T> {
    /// Packed self-attention over the batch's own rows.
    Packed,
    /// Only some rows of a packed batch run (see [`PartialKv`]).
    Partial(&'c PartialKv<T>),
}

/// Fixed keys and values of a packed batch in which only some rows are recomputed: the rows
/// that do not depend on what changes keep their keys and values from an earlier pass, the
/// recomputed rows (`rows`) are scattered in (their entries in `k`/`v` must be zero), and the
/// recomputed queries attend over the whole layout with their original ranges.
///
/// # Shapes
/// `k[l], v[l] (N, Hkv·hd)` per block `l` (empty for blocks that never run partially);
/// `rows (R)` u32, the recomputed rows' indices in the packed layout.
pub struct PartialKv<T> {
    pub k: Vec<Option<T>>,
    pub v: Vec<Option<T>>,
    pub rows: T,
}

impl<T> PartialKv<T> {
    /// Block `l`'s keys and values for every row: the fixed ones with the rows that ran, `k`
    /// and `v`, added in.
    ///
    /// # Shapes
    /// `k, v (R, Hkv·hd)` for the `R` rows → `(N, Hkv·hd)` each.
    ///
    /// # Panics
    /// If block `l` has no fixed keys and values (it is not above the z layer).
    pub fn full<B: crate::backend::Backend<Tensor = T>>(
        &self,
        l: usize,
        k: &T,
        v: &T,
        be: &B,
    ) -> crate::Result<(T, T)> {
        let (Some(k0), Some(v0)) = (self.k[l].as_ref(), self.v[l].as_ref()) else {
            panic!("no fixed keys/values for block {l}")
        };
        let mut kf = be.copy(k0)?;
        be.add_rows(&mut kf, &self.rows, k)?;
        let mut vf = be.copy(v0)?;
        be.add_rows(&mut vf, &self.rows, v)?;
        Ok((kf, vf))
    }
}

/// Per-call tensors shared by all blocks.
pub(super) struct Ctx<'c, T> {
    pub(super) positions: &'c T,
    pub(super) ranges: &'c T,
    pub(super) kv: Kv<'c, T>,
}
