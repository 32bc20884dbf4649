//! Async readback: copy into a `MAP_READ` staging buffer, submit, `map_async` (started at once,
//! when the read is asked for), then await a oneshot fed by the map callback.
//!
//! Natively the device is polled to completion before awaiting, so the future is ready at once
//! (drive it with `pollster`). On the web `poll` is not called: the browser runs the callback
//! from its event loop, and the page never blocks.

use super::context::lock;
use super::{Count, GpuBackend, GpuTensor};

/// Readback staging buffers larger than this are freed after use instead of kept.
const MAX_KEPT_STAGING_BYTES: u64 = 64 << 20;
use crate::{Error, Result};

/// A readback under way: its copy is submitted and its buffer's mapping requested.
pub(crate) struct Started {
    staging: wgpu::Buffer,
    bytes: u64,
    submission: Option<wgpu::SubmissionIndex>,
    receiver: futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

impl GpuBackend {
    /// Starts reading `t` after all work recorded so far: records the copy into a staging
    /// buffer, submits, and asks for the mapping, without waiting (`None` for an empty tensor).
    /// Work recorded after this call runs on the device while [`Self::finish_read`] waits.
    ///
    /// # Errors
    /// [`Error::DeviceLost`], or an earlier uncaptured wgpu error.
    pub(crate) fn start_read(&self, t: &GpuTensor) -> Result<Option<Started>> {
        self.start_read_many(&[t])
    }

    /// [`Self::start_read`] for several tensors, copied one after the other into one staging
    /// buffer (their sizes are whole 4-byte words, as copies need).
    pub(crate) fn start_read_many(&self, ts: &[&GpuTensor]) -> Result<Option<Started>> {
        let bytes: u64 = ts.iter().map(|t| t.bytes()).sum();
        if bytes == 0 {
            self.check()?;
            return Ok(None);
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
        self.encode(|encoder| {
            let mut at = 0;
            for t in ts {
                if t.bytes() > 0 {
                    encoder.copy_buffer_to_buffer(t.buffer(), 0, &staging, at, t.bytes());
                }
                at += t.bytes();
            }
        })?;
        let submission = self.flush_index();
        let (sender, receiver) = futures_channel::oneshot::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |result| {
                // The receiver only goes away if the read future was dropped: nothing to report
                // to.
                let _ = sender.send(result);
            });
        Ok(Some(Started {
            staging,
            bytes,
            submission,
            receiver,
        }))
    }

    /// Waits for a readback started by [`Self::start_read`] and returns its bytes.
    ///
    /// # Errors
    /// [`Error::DeviceLost`], or [`Error::Gpu`] for a failed map or an earlier uncaptured wgpu
    /// error.
    pub(crate) async fn finish_read(&self, started: Result<Option<Started>>) -> Result<Vec<u8>> {
        let Some(Started {
            staging,
            bytes,
            submission,
            receiver,
        }) = started?
        else {
            return Ok(Vec::new());
        };
        // Natively, wait for the copy's own submission only: later ones keep running.
        #[cfg(not(target_arch = "wasm32"))]
        if let Err(e) = self.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: submission,
            timeout: None,
        }) {
            // Let a pending device-lost callback run, so that the error names the loss.
            let _ = self.ctx.device.poll(wgpu::PollType::wait_indefinitely());
            return Err(self.lost_or(format!("waiting for the GPU: {e}")));
        }
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        let mapped = receiver
            .await
            .map_err(|_| self.lost_or("the readback was cancelled".into()))?;
        mapped.map_err(|e| self.lost_or(format!("mapping the readback buffer: {e}")))?;
        let slice = staging.slice(..);
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
