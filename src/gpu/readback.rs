//! Async readback: copy into a `MAP_READ` staging buffer, submit, `map_async`, and await a
//! oneshot fed by the map callback.
//!
//! Natively the device is polled to completion before awaiting, so the future is ready at once
//! (drive it with `pollster`). On the web `poll` is not called: the browser runs the callback
//! from its event loop, and the page never blocks.

use super::context::lock;
use super::{Count, GpuBackend, GpuTensor};

/// Readback staging buffers larger than this are freed after use instead of kept.
const MAX_KEPT_STAGING_BYTES: u64 = 64 << 20;
use crate::{Error, Result};

impl GpuBackend {
    /// The bytes of `t`'s elements, after all work recorded so far.
    ///
    /// # Errors
    /// [`Error::DeviceLost`], or [`Error::Gpu`] for a failed map or an earlier uncaptured wgpu
    /// error.
    pub(crate) async fn read_bytes(&self, t: &GpuTensor) -> Result<Vec<u8>> {
        let bytes = t.bytes();
        if bytes == 0 {
            self.check()?;
            return Ok(Vec::new());
        }
        self.count(Count::Readback(bytes));
        self.count(Count::Copy);
        // Staging buffers are kept by size for the next readback (not in the baseline design);
        // a read that fails or is dropped midway loses its buffer, which is then simply freed.
        let recycled = (!self.is_baseline())
            .then(|| lock(&self.ctx.staging).get_mut(&bytes).and_then(Vec::pop))
            .flatten();
        let staging = recycled.unwrap_or_else(|| {
            self.count(Count::Buffer);
            self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        self.encode(|encoder| encoder.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, bytes))?;
        self.flush();
        let slice = staging.slice(..);
        let (sender, receiver) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            // The receiver only goes away if the read future was dropped: nothing to report to.
            let _ = sender.send(result);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.lost_or(format!("waiting for the GPU: {e}")))?;
        let mapped = receiver
            .await
            .map_err(|_| self.lost_or("the readback was cancelled".into()))?;
        mapped.map_err(|e| self.lost_or(format!("mapping the readback buffer: {e}")))?;
        let data = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading the readback buffer: {e}")))?;
            view.to_vec()
        };
        staging.unmap();
        if !self.is_baseline() {
            let mut kept = lock(&self.ctx.staging);
            let free = kept.entry(bytes).or_default();
            // A few per size: readbacks are sequential, and sizes repeat.
            if free.len() < 4 && bytes <= MAX_KEPT_STAGING_BYTES {
                free.push(staging);
            }
        }
        self.check()?;
        Ok(data)
    }

    /// The error behind a failed wait or map: the device loss or uncaptured wgpu error that
    /// most likely caused it, else [`Error::Gpu`] with `msg`.
    fn lost_or(&self, msg: String) -> Error {
        self.check().err().unwrap_or(Error::Gpu(msg))
    }
}
