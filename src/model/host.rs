//! Host-side tensors as loaded from a checkpoint, before they go to a backend.
//!
//! A weight matrix may stay in its checkpoint's storage type ([`Stored`]: f16, bf16 or ggml
//! quantised blocks) instead of being widened to f32, so that a model takes in memory about what
//! its file takes. Widening gives exactly the values the f32 path would have loaded: both go
//! through the same dequantiser.

use std::borrow::Cow;

use super::gguf::GgmlType;
use super::gguf::quant;

/// Values of a [`HostTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// Dense f32, `shape.iter().product()` values.
    F32(Vec<f32>),
    /// Rows kept in a storage type (see [`Stored`]).
    Stored(Stored),
}

/// A row-major matrix kept in a ggml storage type (F16, BF16, Q8_0, Q4_0, Q4_1, …): each row is a
/// whole number of the type's blocks, so rows and block-aligned column ranges can be decoded on
/// their own.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// The storage type (never F32: dense f32 is [`HostData::F32`]).
    pub ty: GgmlType,
    /// `rows × row_bytes` bytes, rows in order.
    pub bytes: Vec<u8>,
    /// Rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
}

impl Stored {
    /// Wraps `bytes` holding a `(rows, cols)` matrix of type `ty`; `None` when `ty` cannot be
    /// decoded, is F32, or its blocks do not tile a row, or the length is wrong (the caller then
    /// keeps the tensor as f32).
    pub fn new(ty: GgmlType, bytes: Vec<u8>, rows: usize, cols: usize) -> Option<Self> {
        let (block, block_bytes) = ty.block_layout()?;
        let block = block as usize;
        if ty == GgmlType::F32 || cols == 0 || !cols.is_multiple_of(block) {
            return None;
        }
        let row_bytes = cols / block * block_bytes as usize;
        (bytes.len() == rows.checked_mul(row_bytes)?).then_some(Stored {
            ty,
            bytes,
            rows,
            cols,
        })
    }

    /// Values per block of the storage type (1 for f16 and bf16, 32 or 256 for ggml blocks).
    pub fn block(&self) -> usize {
        self.layout().0
    }

    fn layout(&self) -> (usize, usize) {
        let (b, bb) = self
            .ty
            .block_layout()
            .expect("Stored::new admits decodable types only");
        (b as usize, bb as usize)
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        let (b, bb) = self.layout();
        self.cols / b * bb
    }

    /// Rows `r0..r1` as f32, row-major `(r1 − r0, cols)`.
    pub fn rows_f32(&self, r0: usize, r1: usize) -> Vec<f32> {
        let rb = self.row_bytes();
        quant::dequantize(
            self.ty,
            &self.bytes[r0 * rb..r1 * rb],
            (r1 - r0) * self.cols,
        )
    }

    /// Columns `c0..c1` of every row as f32, row-major `(rows, c1 − c0)`; both ends are
    /// multiples of [`Stored::block`] (or `c1 == cols`).
    pub fn cols_f32(&self, c0: usize, c1: usize) -> Vec<f32> {
        let (b, bb) = self.layout();
        assert!(
            c0.is_multiple_of(b) && c1.is_multiple_of(b) && c0 <= c1 && c1 <= self.cols,
            "cols_f32: {c0}..{c1} is not a block-aligned range of {} columns",
            self.cols
        );
        let (b0, b1) = (c0 / b * bb, c1 / b * bb);
        let rb = self.row_bytes();
        let mut bytes = Vec::with_capacity(self.rows * (b1 - b0));
        for r in 0..self.rows {
            bytes.extend_from_slice(&self.bytes[r * rb + b0..r * rb + b1]);
        }
        quant::dequantize(self.ty, &bytes, self.rows * (c1 - c0))
    }

    /// The whole matrix as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        quant::dequantize(self.ty, &self.bytes, self.rows * self.cols)
    }
}

/// A tensor in host memory with its checkpoint name.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Checkpoint name (Hugging Face naming, e.g. `model.layers.3.mlp.down_proj.weight`).
    pub name: String,
    /// Row-major shape, `[out][in]` for linear weights.
    pub shape: Vec<usize>,
    /// The values.
    pub data: HostData,
}

impl HostTensor {
    /// An f32 tensor; panics if `data` does not match `shape` (a loader bug).
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        let name = name.into();
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor {name}: shape/data mismatch"
        );
        HostTensor {
            name,
            shape,
            data: HostData::F32(data),
        }
    }

    /// A matrix kept in its storage type; panics if `stored` is not `shape` (a loader bug).
    pub fn stored(name: impl Into<String>, stored: Stored) -> Self {
        HostTensor {
            name: name.into(),
            shape: vec![stored.rows, stored.cols],
            data: HostData::Stored(stored),
        }
    }

    /// The values as f32 (decoded when stored).
    pub fn f32(&self) -> Cow<'_, [f32]> {
        match &self.data {
            HostData::F32(v) => Cow::Borrowed(v),
            HostData::Stored(s) => Cow::Owned(s.to_f32()),
        }
    }

    /// The values as f32, consuming the tensor.
    pub fn into_f32(self) -> Vec<f32> {
        match self.data {
            HostData::F32(v) => v,
            HostData::Stored(s) => s.to_f32(),
        }
    }

    /// The tensor widened to f32 (a no-op for an f32 tensor).
    pub fn widened(self) -> HostTensor {
        match self.data {
            HostData::F32(_) => self,
            HostData::Stored(s) => HostTensor {
                name: self.name,
                shape: self.shape,
                data: HostData::F32(s.to_f32()),
            },
        }
    }

    /// The storage type (F32 for dense f32).
    pub fn storage(&self) -> GgmlType {
        match &self.data {
            HostData::F32(_) => GgmlType::F32,
            HostData::Stored(s) => s.ty,
        }
    }

    /// Bytes the values take.
    pub fn byte_len(&self) -> usize {
        match &self.data {
            HostData::F32(v) => 4 * v.len(),
            HostData::Stored(s) => s.bytes.len(),
        }
    }
}

/// A row-major `(rows, cols)` matrix transposed to `(cols, rows)`.
///
/// # Panics
/// If `x` does not hold `rows × cols` values (a caller bug).
pub(crate) fn transpose<T: Copy + Default>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(
        x.len(),
        rows * cols,
        "transpose: {} values for {rows}×{cols}",
        x.len()
    );
    let mut out = vec![T::default(); x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}
