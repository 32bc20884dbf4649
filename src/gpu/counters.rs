//! What the gpu backend asked of the device: dispatches, compute passes, copies, submits, readbacks and
//! uploads (with their bytes), bind groups and buffers created. `nse bench forward|edit
//! --backend gpu` reports them per decode token, prefill and Adam step, and
//! `tests/gpu_counters.rs` bounds them, so that a change that adds launches or round trips
//! fails on any adapter, lavapipe included, without timing anything.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The running totals of one device.
#[derive(Default)]
pub(crate) struct Counters {
    dispatches: AtomicU64,
    passes: AtomicU64,
    copies: AtomicU64,
    submits: AtomicU64,
    readbacks: AtomicU64,
    readback_bytes: AtomicU64,
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    bind_groups: AtomicU64,
    buffers_created: AtomicU64,
}

/// What the counters are bumped for.
#[derive(Clone, Copy)]
pub(crate) enum Count {
    Dispatch,
    Pass,
    /// A buffer copy or clear recorded in the encoder (readbacks' copies included).
    Copy,
    Submit,
    /// A readback of this many bytes.
    Readback(u64),
    /// An upload of this many bytes (a buffer filled at creation).
    Upload(u64),
    BindGroup,
    /// A buffer created on the device (tensor, uniform block or readback staging).
    Buffer,
}

impl Counters {
    pub(crate) fn add(&self, what: Count) {
        let bump = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        match what {
            Count::Dispatch => bump(&self.dispatches, 1),
            Count::Pass => bump(&self.passes, 1),
            Count::Copy => bump(&self.copies, 1),
            Count::Submit => bump(&self.submits, 1),
            Count::Readback(bytes) => {
                bump(&self.readbacks, 1);
                bump(&self.readback_bytes, bytes);
            }
            Count::Upload(bytes) => {
                bump(&self.uploads, 1);
                bump(&self.upload_bytes, bytes);
            }
            Count::BindGroup => bump(&self.bind_groups, 1),
            Count::Buffer => bump(&self.buffers_created, 1),
        }
    }

    pub(crate) fn snapshot(&self) -> GpuCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GpuCounters {
            dispatches: get(&self.dispatches),
            passes: get(&self.passes),
            copies: get(&self.copies),
            submits: get(&self.submits),
            readbacks: get(&self.readbacks),
            readback_bytes: get(&self.readback_bytes),
            uploads: get(&self.uploads),
            upload_bytes: get(&self.upload_bytes),
            bind_groups: get(&self.bind_groups),
            buffers_created: get(&self.buffers_created),
        }
    }
}

/// A snapshot of a device's counters ([`crate::gpu::GpuBackend::counters`]); the difference
/// of two snapshots is the work between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GpuCounters {
    /// Compute dispatches.
    pub dispatches: u64,
    /// Compute passes begun.
    pub passes: u64,
    /// Buffer copies and clears recorded.
    pub copies: u64,
    /// `queue.submit` calls.
    pub submits: u64,
    /// Buffers read back to the host, and their bytes.
    pub readbacks: u64,
    pub readback_bytes: u64,
    /// Buffers uploaded from the host (filled at creation), and their bytes; uniform blocks
    /// are not uploads but count as buffers created.
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Bind groups created.
    pub bind_groups: u64,
    /// Buffers created on the device (a tensor buffer taken from the pool is not created).
    pub buffers_created: u64,
}

impl std::ops::Sub for GpuCounters {
    type Output = GpuCounters;
    fn sub(self, o: GpuCounters) -> GpuCounters {
        GpuCounters {
            dispatches: self.dispatches - o.dispatches,
            passes: self.passes - o.passes,
            copies: self.copies - o.copies,
            submits: self.submits - o.submits,
            readbacks: self.readbacks - o.readbacks,
            readback_bytes: self.readback_bytes - o.readback_bytes,
            uploads: self.uploads - o.uploads,
            upload_bytes: self.upload_bytes - o.upload_bytes,
            bind_groups: self.bind_groups - o.bind_groups,
            buffers_created: self.buffers_created - o.buffers_created,
        }
    }
}

impl std::ops::Add for GpuCounters {
    type Output = GpuCounters;
    fn add(self, o: GpuCounters) -> GpuCounters {
        GpuCounters {
            dispatches: self.dispatches + o.dispatches,
            passes: self.passes + o.passes,
            copies: self.copies + o.copies,
            submits: self.submits + o.submits,
            readbacks: self.readbacks + o.readbacks,
            readback_bytes: self.readback_bytes + o.readback_bytes,
            uploads: self.uploads + o.uploads,
            upload_bytes: self.upload_bytes + o.upload_bytes,
            bind_groups: self.bind_groups + o.bind_groups,
            buffers_created: self.buffers_created + o.buffers_created,
        }
    }
}

impl GpuCounters {
    /// Each count divided by `n` (per token, per step), rounded up to a tenth.
    pub fn per(&self, n: u64) -> [(&'static str, f64); 10] {
        let d = |x: u64| (x as f64 / n.max(1) as f64 * 10.0).ceil() / 10.0;
        [
            ("dispatches", d(self.dispatches)),
            ("passes", d(self.passes)),
            ("copies", d(self.copies)),
            ("submits", d(self.submits)),
            ("readbacks", d(self.readbacks)),
            ("readback_bytes", d(self.readback_bytes)),
            ("uploads", d(self.uploads)),
            ("upload_bytes", d(self.upload_bytes)),
            ("bind_groups", d(self.bind_groups)),
            ("buffers_created", d(self.buffers_created)),
        ]
    }
}
