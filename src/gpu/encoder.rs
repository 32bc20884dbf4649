//! Encoder batching: ops record dispatches and copies into one pending command encoder,
//! submitted when a tensor is read or when [`MAX_PENDING_COMMANDS`] commands (or a full
//! uniform ring) are pending.
//!
//! Dispatches in a row share one compute pass; a copy or clear ends it. Each dispatch's uniform
//! block goes into a host-side staging area at its own offset of one device-wide uniform ring,
//! and the whole area is written to the ring with `queue.write_buffer` just before the submit.
//! That write is ordered after every earlier submit and before this one, so the ring is reused
//! by every encoder without any dispatch seeing another's uniforms. Bind groups bind the ring
//! with a dynamic offset, so one bind group serves every dispatch of the same pipeline on the
//! same buffers, and is cached: in steady-state decoding the pooled tensors come back in the
//! same order each token, and no bind group or buffer is created.
//!
//! `NSE_GPU_BASELINE=1` (natively) restores the first design, for before/after timings in one
//! run: a compute pass, a new uniform buffer and a new bind group per dispatch, a submit every
//! 64 commands, new buffers for uploads and readbacks, the tiled matmul at every row count
//! without split-K, and the attention kernels with one invocation per row.

use std::collections::HashMap;

use wgpu::util::DeviceExt;

use super::context::lock;
use super::{Count, GpuBackend};
use crate::{Error, Result};

/// Commands recorded before a submit is forced: enough for a decoded token of the default
/// model (454 dispatches and 62 copies before this design) in one submit.
pub(crate) const MAX_PENDING_COMMANDS: u32 = 2048;
/// The same for the baseline design.
const BASELINE_PENDING_COMMANDS: u32 = 64;
/// Bytes of the uniform ring (a submit is forced when the pending dispatches' blocks fill it).
const RING_BYTES: u64 = 1 << 20;
/// Cached bind groups beyond which the cache is emptied (each holds its buffers alive).
const MAX_CACHED_BIND_GROUPS: usize = 4096;

/// The encoder being recorded into.
#[derive(Default)]
pub(crate) struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    /// The compute pass open on `encoder`, if the last command was a dispatch.
    pass: Option<wgpu::ComputePass<'static>>,
    commands: u32,
    /// The uniform blocks of the pending dispatches, at their ring offsets.
    uniforms: Vec<u8>,
    /// The index of the last submission.
    last: Option<wgpu::SubmissionIndex>,
}

/// The uniform ring and the bind groups that bind it.
#[derive(Default)]
pub(crate) struct Binding {
    ring: Option<wgpu::Buffer>,
    groups: HashMap<BindKey, wgpu::BindGroup>,
}

/// A bind group: layout, uniform block size, and the storage buffers by binding.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    layout: wgpu::BindGroupLayout,
    uniform_bytes: u64,
    buffers: Vec<(u32, wgpu::Buffer)>,
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

/// `params` padded with zeros to whole 16-byte rows (the WGSL uniform struct alignment).
fn uniform_words(params: &[u32]) -> Vec<u32> {
    let mut words = params.to_vec();
    words.resize(params.len().div_ceil(4).max(1) * 4, 0);
    words
}

impl GpuBackend {
    /// Whether this device runs the baseline design (see the module docs).
    pub fn is_baseline(&self) -> bool {
        self.ctx.baseline
    }

    /// The kernels this device runs.
    pub fn kernel_set(&self) -> super::KernelSet {
        self.ctx.kernels
    }

    /// Whether this device runs the hardware kernels (see [`super::KernelSet`]).
    pub fn hardware_kernels(&self) -> bool {
        self.ctx.kernels == super::KernelSet::Hardware
    }

    /// Whether `x · Wᵀ` with at most 8 rows runs as a GEMV on this device.
    pub fn uses_gemv(&self) -> bool {
        self.hardware_kernels() && self.ctx.gemv
    }

    /// Whether attention over many query rows runs in tiles (`shaders/attention_tiled.wgsl`)
    /// on this device.
    pub fn uses_tiled_attention(&self) -> bool {
        self.hardware_kernels() && self.ctx.tiled_attention
    }

    /// Whether decoding's fused products (`shaders/gemv_fused.wgsl`) run on this device.
    pub fn uses_fused(&self) -> bool {
        self.uses_gemv() && self.ctx.fused
    }

    /// The dispatch design and the kernels in one phrase, for `nse info` and the benchmarks.
    pub fn path_description(&self) -> String {
        let design = if self.ctx.baseline {
            "baseline design (a pass, uniform buffer and bind group per dispatch)"
        } else {
            "shared passes, uniform ring, cached bind groups"
        };
        format!("{design}; {}", self.kernel_summary())
    }

    /// The kernels in a few words, for the page's status line.
    pub fn kernel_summary(&self) -> String {
        let qkv = self.ctx.limits.max_storage_buffers_per_shader_stage
            >= crate::gpu::kernels::fused::QKV_BINDINGS;
        let reductions = match (self.uses_subgroups(), self.subgroup_sizes()) {
            (true, Some((lo, hi))) if lo == hi => format!("subgroup reductions (size {lo})"),
            (true, Some((lo, hi))) => format!("subgroup reductions (sizes {lo}–{hi})"),
            _ => "no subgroups".to_string(),
        };
        let f16 = match (self.uses_f16(), self.has_f16()) {
            (true, _) => "F16 weights read as f16",
            (false, true) => "F16 decoded by hand: shader-f16 failed its check",
            (false, false) => "F16 decoded by hand",
        };
        let attention = if self.uses_tiled_attention() {
            "split-KV and tiled attention"
        } else {
            "split-KV attention"
        };
        match (self.ctx.kernels, self.uses_gemv(), self.uses_fused(), qkv) {
            (super::KernelSet::Hardware, true, true, true) => format!(
                "portable WGSL (fused decoding GEMVs, split-K, {attention}; {reductions}; {f16})"
            ),
            (super::KernelSet::Hardware, true, true, false) => format!(
                "portable WGSL (fused decoding GEMVs but q, k, v apart: too few storage \
                 bindings; split-K, {attention}; {reductions}; {f16})"
            ),
            (super::KernelSet::Hardware, true, false, _) => {
                format!("portable WGSL (GEMV, split-K, {attention}; {reductions}; {f16})")
            }
            (super::KernelSet::Hardware, false, _, _) => {
                format!(
                    "portable WGSL without the GEMV (tiled matmul, split-K, {attention}; {f16})"
                )
            }
            (super::KernelSet::Software, ..) => format!(
                "the first portable WGSL (tiled matmul, an invocation per row in attention; {f16})"
            ),
        }
    }

    /// Records `f` into the pending encoder (creating it if needed, ending an open compute
    /// pass) and submits when the batch is full.
    ///
    /// # Errors
    /// [`Error::DeviceLost`], or an earlier uncaptured wgpu error.
    pub(crate) fn encode(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) -> Result<()> {
        self.check()?;
        let mut pending = lock(&self.ctx.pending);
        pending.pass = None;
        f(self.encoder(&mut pending));
        self.recorded(&mut pending);
        Ok(())
    }

    /// The pending encoder, created if needed.
    fn encoder<'p>(&self, pending: &'p mut Pending) -> &'p mut wgpu::CommandEncoder {
        pending.encoder.get_or_insert_with(|| {
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("nse ops"),
                })
        })
    }

    /// Counts one recorded command and submits when the batch is full.
    fn recorded(&self, pending: &mut Pending) {
        pending.commands += 1;
        let max = if self.ctx.baseline {
            BASELINE_PENDING_COMMANDS
        } else {
            MAX_PENDING_COMMANDS
        };
        if pending.commands >= max {
            self.submit(pending);
        }
    }

    /// Runs `f` with the pending encoder locked, if no command is recorded and unsubmitted.
    pub(crate) fn with_nothing_pending<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let pending = lock(&self.ctx.pending);
        pending.encoder.is_none().then(f)
    }

    /// Submits everything recorded so far.
    pub(crate) fn flush(&self) {
        self.submit(&mut lock(&self.ctx.pending));
    }

    /// Submits everything recorded so far and returns the index of the submission that holds
    /// it (the last one, if nothing was pending).
    pub(crate) fn flush_index(&self) -> Option<wgpu::SubmissionIndex> {
        let mut pending = lock(&self.ctx.pending);
        self.submit(&mut pending);
        pending.last.clone()
    }

    fn submit(&self, pending: &mut Pending) {
        pending.pass = None;
        if let Some(encoder) = pending.encoder.take() {
            if !pending.uniforms.is_empty() {
                let binding = lock(&self.ctx.binding);
                let ring = binding
                    .ring
                    .as_ref()
                    .expect("uniforms were staged for the ring");
                self.ctx.queue.write_buffer(ring, 0, &pending.uniforms);
            }
            self.count(Count::Submit);
            pending.last = Some(self.ctx.queue.submit([encoder.finish()]));
        }
        let released = self.ctx.pool.take_released();
        if !released.is_empty() {
            lock(&self.ctx.binding)
                .groups
                .retain(|k, _| !k.buffers.iter().any(|(_, b)| released.contains(b)));
        }
        pending.uniforms.clear();
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
        let needed = super::workgroup_bytes(d.shader);
        let allowed = self.ctx.limits.max_compute_workgroup_storage_size;
        if needed > allowed {
            return Err(Error::Gpu(format!(
                "the `{}` kernel needs {needed} bytes of workgroup memory and this adapter allows \
                 {allowed}; use the cpu backend (--backend cpu)",
                d.shader
            )));
        }
        if self.ctx.baseline {
            return self.dispatch_baseline(d, [x, y, z]);
        }
        let binding_numbers: Vec<u32> = d.bindings.iter().map(|&(b, _)| b).collect();
        let (pipeline, layout) =
            self.pipeline(d.shader, d.entry, d.overrides, Some(&binding_numbers));
        let words = uniform_words(d.params);
        let block: &[u8] = bytemuck::cast_slice(&words);
        let align = u64::from(self.ctx.limits.min_uniform_buffer_offset_alignment.max(16));
        self.check()?;
        let mut pending = lock(&self.ctx.pending);
        let mut offset = (pending.uniforms.len() as u64).div_ceil(align) * align;
        if offset + block.len() as u64 > RING_BYTES {
            self.submit(&mut pending);
            offset = 0;
        }
        pending.uniforms.resize(offset as usize, 0);
        pending.uniforms.extend_from_slice(block);
        let group = self.bind_group(&layout, block.len() as u64, d.bindings);
        self.count(Count::Dispatch);
        if pending.pass.is_none() {
            self.count(Count::Pass);
            let pass = self
                .encoder(&mut pending)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("nse dispatches"),
                    timestamp_writes: None,
                })
                .forget_lifetime();
            pending.pass = Some(pass);
        }
        let pass = pending.pass.as_mut().expect("a pass was just opened");
        pass.set_pipeline(&pipeline);
        // The offset is below RING_BYTES (1 MiB).
        pass.set_bind_group(0, &group, &[offset as u32]);
        pass.dispatch_workgroups(x, y, z);
        self.recorded(&mut pending);
        Ok(())
    }

    /// The cached bind group of `layout` binding the ring (a block of `uniform_bytes`) and
    /// `bindings`, created on first use.
    fn bind_group(
        &self,
        layout: &wgpu::BindGroupLayout,
        uniform_bytes: u64,
        bindings: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let key = BindKey {
            layout: layout.clone(),
            uniform_bytes,
            buffers: bindings.iter().map(|&(b, buf)| (b, buf.clone())).collect(),
        };
        let mut cache = lock(&self.ctx.binding);
        if let Some(group) = cache.groups.get(&key) {
            return group.clone();
        }
        if cache.groups.len() >= MAX_CACHED_BIND_GROUPS {
            cache.groups.clear();
        }
        let device = &self.ctx.device;
        let ring = cache
            .ring
            .get_or_insert_with(|| {
                self.count(Count::Buffer);
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("uniform ring"),
                    size: RING_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .clone();
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &ring,
                offset: 0,
                size: wgpu::BufferSize::new(uniform_bytes),
            }),
        }];
        entries.extend(bindings.iter().map(|&(binding, buf)| wgpu::BindGroupEntry {
            binding,
            resource: buf.as_entire_binding(),
        }));
        self.count(Count::BindGroup);
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("nse dispatch"),
            layout,
            entries: &entries,
        });
        cache.groups.insert(key, group.clone());
        group
    }

    /// [`GpuBackend::dispatch`] in the baseline design: its own pass, uniform buffer and bind
    /// group.
    fn dispatch_baseline(&self, d: &Dispatch<'_>, [x, y, z]: [u32; 3]) -> Result<()> {
        let (pipeline, layout) = self.pipeline(d.shader, d.entry, d.overrides, None);
        let device = &self.ctx.device;
        self.count(Count::Buffer);
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(d.shader),
            contents: bytemuck::cast_slice(&uniform_words(d.params)),
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
