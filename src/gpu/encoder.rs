//! Encoder batching: ops record compute passes and copies into one pending command encoder,
//! submitted when a tensor is read or after [`MAX_PENDING_DISPATCHES`] commands.
//!
//! Each dispatch gets its own small uniform block created with its contents
//! (`create_buffer_init`), never written later, so no `queue.write_buffer` can overtake
//! recorded-but-unsubmitted work.

use wgpu::util::DeviceExt;

use super::context::lock;
use super::{Count, GpuBackend};
use crate::{Error, Result};

/// Commands recorded before a submit is forced, to bound the memory held by a pending encoder
/// and keep the GPU busy while the host records more.
pub(crate) const MAX_PENDING_DISPATCHES: u32 = 64;

/// The encoder being recorded into.
#[derive(Default)]
pub(crate) struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    commands: u32,
}

/// One kernel launch.
pub(crate) struct Dispatch<'a> {
    /// Shader name in the registry (= the file name without `.wgsl`).
    pub shader: &'static str,
    /// Entry point in that shader.
    pub entry: &'static str,
    /// Pipeline-overridable constants (`override` declarations), by name.
    pub overrides: &'a [(&'static str, f64)],
    /// The uniform block at `@binding(0)`, as 32-bit words (f32 fields as `to_bits`).
    pub params: &'a [u32],
    /// Storage buffers by binding number (1, 2, …), exactly those the entry point uses.
    pub bindings: &'a [(u32, &'a wgpu::Buffer)],
    /// Workgroups to launch, as one linear count; folded into up to three dimensions, and the
    /// kernels rebuild the linear index from `workgroup_id` and `num_workgroups`.
    pub workgroups: u64,
}

/// Splits `count` workgroups into `[x, y, z]` with each at most `max` and `x·y·z ≥ count`.
///
/// # Errors
/// [`Error::Gpu`] when even `max³` workgroups are too few.
pub(crate) fn fold_workgroups(count: u64, max: u32) -> Result<[u32; 3]> {
    let max = u64::from(max.max(1));
    let x = count.clamp(1, max);
    let rest = count.div_ceil(x);
    let y = rest.clamp(1, max);
    let z = rest.div_ceil(y);
    if z > max {
        return Err(Error::Gpu(format!(
            "{count} workgroups exceed this adapter's dispatch limit ({max} per dimension); \
             use the cpu backend (--backend cpu)"
        )));
    }
    // Each factor is at most `max`, which came from a u32.
    Ok([x as u32, y as u32, z as u32])
}

impl GpuBackend {
    /// Records `f` into the pending encoder (creating it if needed) and submits when the
    /// batch is full.
    ///
    /// # Errors
    /// [`Error::DeviceLost`], or an earlier uncaptured wgpu error.
    pub(crate) fn encode(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) -> Result<()> {
        self.check()?;
        let mut pending = lock(&self.ctx.pending);
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("nse ops"),
                })
        });
        f(encoder);
        pending.commands += 1;
        if pending.commands >= MAX_PENDING_DISPATCHES {
            self.submit(&mut pending);
        }
        Ok(())
    }

    /// Submits everything recorded so far.
    pub(crate) fn flush(&self) {
        self.submit(&mut lock(&self.ctx.pending));
    }

    fn submit(&self, pending: &mut Pending) {
        if let Some(encoder) = pending.encoder.take() {
            self.count(Count::Submit);
            self.ctx.queue.submit([encoder.finish()]);
        }
        pending.commands = 0;
    }

    /// Records one kernel launch. A launch of zero workgroups records nothing.
    ///
    /// # Errors
    /// [`Error::Gpu`] for a dispatch over the adapter's limits; [`Error::DeviceLost`].
    pub(crate) fn dispatch(&self, d: &Dispatch<'_>) -> Result<()> {
        if d.workgroups == 0 {
            return Ok(());
        }
        let [x, y, z] = fold_workgroups(
            d.workgroups,
            self.ctx.limits.max_compute_workgroups_per_dimension,
        )?;
        let (pipeline, layout) = self.pipeline(d.shader, d.entry, d.overrides);
        let device = &self.ctx.device;
        // Uniform blocks are padded to 16 bytes, the WGSL uniform struct alignment.
        let mut words = d.params.to_vec();
        words.resize(d.params.len().div_ceil(4).max(1) * 4, 0);
        self.count(Count::Buffer);
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(d.shader),
            contents: bytemuck::cast_slice(&words),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        entries.extend(
            d.bindings
                .iter()
                .map(|&(binding, buf)| wgpu::BindGroupEntry {
                    binding,
                    resource: buf.as_entire_binding(),
                }),
        );
        self.count(Count::BindGroup);
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(d.shader),
            layout: &layout,
            entries: &entries,
        });
        self.count(Count::Dispatch);
        self.count(Count::Pass);
        self.encode(|encoder| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(d.entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, y, z);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fold_workgroups;

    #[test]
    fn folds_cover_the_count_within_the_limit() {
        for (count, max) in [
            (1, 65535),
            (65535, 65535),
            (65536, 65535),
            (70_000, 65535),
            (5_000_000_000, 65535),
            (10, 3),
            (27, 3),
        ] {
            let [x, y, z] = fold_workgroups(count, max).unwrap();
            let covered = u64::from(x) * u64::from(y) * u64::from(z);
            assert!(covered >= count, "{count} in {x}×{y}×{z}");
            assert!(
                x <= max && y <= max && z <= max,
                "{count}: {x}×{y}×{z} over {max}"
            );
            // No whole spare row or layer of workgroups.
            assert!(
                covered - count < u64::from(x) * u64::from(y),
                "{count}: {x}×{y}×{z} wastes a layer"
            );
        }
        assert_eq!(fold_workgroups(65535, 65535).unwrap(), [65535, 1, 1]);
        assert!(fold_workgroups(28, 3).is_err(), "28 > 3³");
    }
}
