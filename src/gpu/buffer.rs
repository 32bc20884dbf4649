//! The tensor type and the buffer pool that recycles dropped tensors' buffers.
//!
//! Every buffer is padded to a whole number of `vec4`s (16 bytes, and at least one) so that
//! kernels may bind any tensor as `array<vec4<f32>>` and bindings are never empty. The padding
//! holds garbage; kernels never let it reach a real element.
//!
//! Reuse is safe because recycled buffers are only ever written by commands recorded after
//! the ones that used them before (wgpu orders dispatches and copies within and across
//! submissions). The one thing that could break this is `queue.write_buffer`, which runs before
//! the commands not yet submitted: an upload therefore writes a recycled buffer only when no
//! command is pending (every earlier use is submitted, and the write is queued after it), and
//! creates a new buffer otherwise. Decoding's per-token uploads (ids, positions, ranges) come
//! right after the previous token's readback, so they recycle.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::context::{Shared, lock};
use super::packed::{Packed, PackedFormat};
use super::{Count, GpuBackend};
use crate::backend::{DType, TensorInfo};
use crate::{Error, Result};

/// Usage of every tensor buffer: bound as storage, copied from (readback, `copy`) and to.
const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Free buffers beyond this many bytes are released instead of kept for reuse.
const MAX_POOLED_BYTES: u64 = 1 << 30;

/// Bytes of the buffer behind a tensor of `len` 32-bit elements.
pub(crate) fn padded_bytes(len: usize) -> u64 {
    ((len as u64 * 4).div_ceil(16) * 16).max(16)
}

/// Free buffers by byte size.
///
/// A take returns the free buffer of that size that orders first (wgpu's buffer order), not the
/// last one freed: the buffers a sequence of ops gets then depend only on which buffers are
/// free, not on the order they were freed in. Each decoded token starts with the same free set,
/// so it gets the same buffers as the token before, and finds its bind groups cached.
#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    by_size: HashMap<u64, BTreeSet<wgpu::Buffer>>,
    /// Bytes of the free buffers.
    bytes: u64,
    /// Bytes of every tensor buffer in existence: held by tensors or free in the pool.
    allocated: u64,
    /// The most `allocated` has been.
    peak: u64,
    /// Buffers released since the last [`Pool::take_released`], whose cached bind groups
    /// must go so that the memory is freed.
    released: Vec<wgpu::Buffer>,
}

impl Pool {
    /// A free buffer of exactly `bytes`, if one is pooled.
    fn take(&self, bytes: u64) -> Option<wgpu::Buffer> {
        let mut s = lock(&self.free);
        let buf = s.by_size.get_mut(&bytes)?.pop_first()?;
        s.bytes -= bytes;
        Some(buf)
    }

    /// Keeps `buf` for reuse, or releases it when the pool is full.
    fn give(&self, buf: wgpu::Buffer) {
        let mut s = lock(&self.free);
        let size = buf.size();
        if s.bytes + size <= MAX_POOLED_BYTES {
            s.bytes += size;
            s.by_size.entry(size).or_default().insert(buf);
        } else {
            s.allocated -= size;
            s.released.push(buf);
        }
    }

    /// The buffers released since the last call.
    pub(crate) fn take_released(&self) -> Vec<wgpu::Buffer> {
        std::mem::take(&mut lock(&self.free).released)
    }

    /// Counts a newly created tensor buffer of `bytes`.
    fn created(&self, bytes: u64) {
        let mut s = lock(&self.free);
        s.allocated += bytes;
        s.peak = s.peak.max(s.allocated);
    }

    /// Number of pooled (free) buffers.
    fn len(&self) -> usize {
        lock(&self.free).by_size.values().map(BTreeSet::len).sum()
    }
}

/// A row-major tensor in a GPU buffer: dense 32-bit elements, or a weight kept compact
/// ([`Packing`]). Dropping it returns the buffer to the pool.
pub struct GpuTensor {
    shape: Vec<usize>,
    dtype: DType,
    buffer: Option<wgpu::Buffer>,
    pool: Shared<Pool>,
    packing: Option<Packing>,
}

/// The layout of a weight kept compact on the device (see [`super::packed`]): only the kernels
/// that decode it take such a tensor; the backend gives every other op a dense copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packing {
    pub format: PackedFormat,
    /// Values per `(scale, offset)` group (1, 16 or 32; a byte keeps [`GpuTensor`] small).
    pub group: u8,
}

impl Packing {
    /// The pipeline constants `(fmt, group)` of `shaders/include/weights.wgsl` for this layout
    /// (`None`: dense f32).
    pub(crate) fn constants(
        packing: Option<Packing>,
        names: (&'static str, &'static str),
    ) -> [(&'static str, f64); 2] {
        let (fmt, group) = packing.map_or((0, 32), |p| (p.format as u8, p.group));
        [(names.0, f64::from(fmt)), (names.1, f64::from(group))]
    }
}

impl GpuTensor {
    /// The buffer (padded to whole `vec4`s; see the module docs).
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("a live tensor owns its buffer")
    }

    /// Bytes of the elements themselves, without padding (dense tensors only: a packed one is
    /// decoded before it is read or copied in part).
    pub(crate) fn bytes(&self) -> u64 {
        assert!(self.packing.is_none(), "bytes() of a packed tensor");
        self.len() as u64 * 4
    }

    /// Bytes of the buffer behind the tensor (padded to whole vec4s).
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer().size()
    }

    /// The compact layout of a weight, `None` for a dense tensor.
    pub fn packing(&self) -> Option<Packing> {
        self.packing
    }

    /// Last dimension (the row width); panics on a 0-d tensor.
    pub(crate) fn width(&self) -> usize {
        *self
            .shape
            .last()
            .expect("tensor has at least one dimension")
    }

    /// Panics unless the tensor holds `dtype` (a caller bug).
    pub(crate) fn expect_dtype(&self, dtype: DType, what: &str) {
        assert_eq!(
            self.dtype, dtype,
            "{what}: expected a {dtype:?} tensor of shape {:?}",
            self.shape
        );
    }
}

impl TensorInfo for GpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor({:?}, {:?})", self.dtype, self.shape)
    }
}

impl Drop for GpuTensor {
    fn drop(&mut self) {
        if let Some(buf) = self.buffer.take() {
            self.pool.give(buf);
        }
    }
}

impl GpuBackend {
    /// Checks that a `name`d tensor of `shape` fits one binding; returns its element count.
    ///
    /// # Errors
    /// [`Error::BufferTooLarge`] naming the tensor.
    pub(crate) fn check_size(&self, name: &str, shape: &[usize]) -> Result<usize> {
        let limit = self.max_tensor_bytes();
        let len = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = len
            .and_then(|n| n.checked_mul(4))
            .map_or(u64::MAX, |b| b as u64);
        match len {
            Some(len) if bytes <= limit => Ok(len),
            _ => Err(Error::BufferTooLarge {
                name: name.to_string(),
                bytes,
                limit,
            }),
        }
    }

    /// A new tensor whose contents are undefined until a kernel or copy writes all of it.
    ///
    /// # Errors
    /// [`Error::BufferTooLarge`] naming the tensor; [`Error::DeviceLost`].
    pub(crate) fn empty(&self, name: &str, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let len = self.check_size(name, shape)?;
        self.check()?;
        let bytes = padded_bytes(len);
        let pool = &self.ctx.pool;
        let buffer = pool.take(bytes).unwrap_or_else(|| {
            pool.created(bytes);
            self.count(Count::Buffer);
            self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size: bytes,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            })
        });
        Ok(GpuTensor {
            shape: shape.to_vec(),
            dtype,
            buffer: Some(buffer),
            pool: Shared::clone(pool),
            packing: None,
        })
    }

    /// A new tensor holding `data` (32-bit elements as bytes), in a new buffer filled at
    /// creation, never with `queue.write_buffer` (see the module docs).
    ///
    /// The size is checked before `data` is looked at.
    pub(crate) fn upload_bytes(
        &self,
        name: &str,
        data: &[u8],
        shape: &[usize],
        dtype: DType,
    ) -> Result<GpuTensor> {
        let len = self.check_size(name, shape)?;
        assert_eq!(
            data.len(),
            len * 4,
            "upload `{name}`: shape {shape:?} vs {} values",
            data.len() / 4
        );
        self.check()?;
        self.count(Count::Upload(data.len() as u64));
        if let Some(buffer) = self.upload_recycled(padded_bytes(len), data) {
            return Ok(GpuTensor {
                shape: shape.to_vec(),
                dtype,
                buffer: Some(buffer),
                pool: Shared::clone(&self.ctx.pool),
                packing: None,
            });
        }
        self.ctx.pool.created(padded_bytes(len));
        self.count(Count::Buffer);
        let buffer = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: padded_bytes(len),
            usage: TENSOR_USAGE,
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| Error::Gpu(format!("mapping the new buffer `{name}`: {e}")))?;
            view.slice(..data.len()).copy_from_slice(data);
        }
        buffer.unmap();
        let pool = Shared::clone(&self.ctx.pool);
        Ok(GpuTensor {
            shape: shape.to_vec(),
            dtype,
            buffer: Some(buffer),
            pool,
            packing: None,
        })
    }

    /// A weight of `shape` kept compact: `packed`'s words in a new buffer.
    ///
    /// # Errors
    /// [`Error::BufferTooLarge`] naming the tensor (its packed size against the binding limit).
    pub(crate) fn upload_packed(
        &self,
        name: &str,
        packed: &Packed,
        shape: &[usize],
    ) -> Result<GpuTensor> {
        let words = &packed.words;
        let mut t = self.upload_bytes(
            name,
            bytemuck::cast_slice(words),
            &[words.len()],
            DType::F32,
        )?;
        t.shape = shape.to_vec();
        t.packing = Some(Packing {
            format: packed.format,
            group: u8::try_from(packed.group).expect("groups of at most 32 values"),
        });
        Ok(t)
    }

    /// A new tensor of `t`'s shape, type and layout, with a buffer of the same size (contents
    /// undefined).
    pub(crate) fn empty_like(&self, name: &str, t: &GpuTensor) -> Result<GpuTensor> {
        let words = (t.buffer().size() / 4) as usize;
        let mut out = self.empty(name, &[words], t.dtype)?;
        out.shape = t.shape.clone();
        out.packing = t.packing;
        Ok(out)
    }

    /// A pooled buffer of `bytes` filled with `data` by `queue.write_buffer`, when no command
    /// is pending (see the module docs; the pending encoder stays locked meanwhile), and not in
    /// the baseline design.
    fn upload_recycled(&self, bytes: u64, data: &[u8]) -> Option<wgpu::Buffer> {
        if self.is_baseline() {
            return None;
        }
        self.with_nothing_pending(|| {
            let buffer = self.ctx.pool.take(bytes)?;
            self.ctx.queue.write_buffer(&buffer, 0, data);
            Some(buffer)
        })
        .flatten()
    }

    /// Number of free buffers waiting in the pool (for tests of recycling).
    pub fn pooled_buffers(&self) -> usize {
        self.ctx.pool.len()
    }

    /// Bytes of all tensor buffers now: those held by tensors and the free ones in the pool
    /// (uniform blocks and readback staging, small and short-lived, are not counted).
    pub fn buffer_bytes(&self) -> u64 {
        lock(&self.ctx.pool.free).allocated
    }

    /// The most [`GpuBackend::buffer_bytes`] has been since the device was created.
    pub fn peak_buffer_bytes(&self) -> u64 {
        lock(&self.ctx.pool.free).peak
    }
}

/// A size or index as the u32 the kernels use; sizes are bounded by
/// [`GpuBackend::max_tensor_bytes`], so this only panics on a bug.
pub(crate) fn u32_of(x: usize) -> u32 {
    u32::try_from(x).unwrap_or_else(|_| panic!("{x} does not fit the kernels' u32 indices"))
}
