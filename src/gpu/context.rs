//! Device creation: instance, adapter, device with the adapter's own limits, and the health
//! flags that the device-lost callback and the uncaptured-error handler set.

use std::sync::{Arc, Mutex};

use super::buffer::Pool;
use super::encoder::{Binding, Pending};
use super::registry::Pipelines;
use crate::{Error, Result};

/// The gpu backend: a wgpu device running the WGSL kernels of `shaders/`.
///
/// Cheap to clone (a shared handle). Ops record compute passes into one pending command
/// encoder, which is submitted when a tensor is read or after a bounded number of dispatches.
/// Natively the handle is `Send + Sync`; on wasm wgpu's types are not, and nothing here asks
/// them to be.
#[derive(Clone)]
pub struct GpuBackend {
    pub(crate) ctx: Shared<Context>,
}

/// Shared ownership of the device's state: `Arc` natively, where wgpu's types are
/// `Send + Sync` and so is the backend; `Rc` on wasm, where they are neither.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Shared<T> = Arc<T>;
/// Shared ownership of the device's state: `Arc` natively, where wgpu's types are
/// `Send + Sync` and so is the backend; `Rc` on wasm, where they are neither.
#[cfg(target_arch = "wasm32")]
pub(crate) type Shared<T> = std::rc::Rc<T>;

/// Everything one device owns.
pub(crate) struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) health: Arc<Health>,
    pub(crate) pool: Shared<Pool>,
    pub(crate) pending: Mutex<Pending>,
    pub(crate) binding: Mutex<Binding>,
    /// Readback staging buffers kept for reuse, by size.
    pub(crate) staging: Mutex<std::collections::HashMap<u64, Vec<wgpu::Buffer>>>,
    pub(crate) pipelines: Mutex<Pipelines>,
    pub(crate) counters: super::counters::Counters,
    /// The first design's dispatch path, for before/after timings (`NSE_GPU_BASELINE=1`).
    pub(crate) baseline: bool,
    /// Which kernels the launchers pick (see [`KernelSet`]).
    pub(crate) kernels: KernelSet,
    /// Whether `x · Wᵀ` with few rows runs as a GEMV among the hardware kernels (off with
    /// `NSE_GPU_GEMV=0`, to time it apart).
    pub(crate) gemv: bool,
    /// Whether decoding's fused products run as one kernel each with few rows (off with
    /// `NSE_GPU_FUSED=0`, to time them apart).
    pub(crate) fused: bool,
    /// Whether attention over many query rows runs in tiles (`attention_tiled.wgsl`) among the
    /// hardware kernels (off with `NSE_GPU_TILED_ATTENTION=0`, to time it apart).
    pub(crate) tiled_attention: bool,
    /// Whether the GEMVs reduce with `subgroupAdd` (their `+subgroups` variants): on when the
    /// adapter has subgroups and the device check passed ([`GpuBackend::set_subgroups`]); off
    /// with `NSE_GPU_SUBGROUPS=0`.
    pub(crate) subgroups: std::sync::atomic::AtomicBool,
    /// Whether the device was created with the subgroup feature.
    pub(crate) has_subgroups: bool,
    /// Whether kernels read F16 weights as `f16` (their `+f16` variants): on when the adapter
    /// has shader-f16 and the device check passed ([`GpuBackend::set_f16`]); off with
    /// `NSE_GPU_F16=0`.
    pub(crate) f16: std::sync::atomic::AtomicBool,
    /// Whether the device was created with shader-f16.
    pub(crate) has_f16: bool,
}

/// The kernels a device runs. Both are portable WGSL (at most 10 KiB of workgroup memory); the
/// hardware set's GEMVs use subgroup reductions where the device has subgroups
/// ([`GpuBackend::uses_subgroups`]), and on a device with shader-f16 either set reads F16 weights
/// as `f16` ([`GpuBackend::uses_f16`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSet {
    /// For hardware GPUs: the GEMV for `x · Wᵀ` with at most 8 rows, split-K, split-KV
    /// attention and a workgroup per row in its backward; they spread work over many
    /// invocations that meet at workgroup barriers.
    Hardware,
    /// The first kernels, kept for the baseline design's timings: the tiled matmul at every
    /// size and one invocation per (row, head) in attention. Software adapters (lavapipe,
    /// SwiftShader), which emulate invocations and barriers on the CPU, run them faster, but
    /// they are not the default there: on lavapipe their attention goes wrong over long
    /// ranges (1,000 keys; a 150-token sequence in the backward), which the hardware kernels
    /// pass. The likely cause is llvmpipe's loop limit: it ends a loop after 65,535 iterations,
    /// counting those of the loops inside it, without an error, and these kernels walk every
    /// key of a row in one loop with a loop over the head inside. `attention_tiled.wgsl` hit
    /// the same wall at ~480 keys of width 64 (rows past it left unwritten, whatever the
    /// thread count) and passes since its walk is cut into passes of 128 keys.
    Software,
}

/// What the device callbacks report, read before every op and after every readback.
#[derive(Default)]
pub(crate) struct Health {
    /// Set once by the device-lost callback; sticky.
    lost: Mutex<Option<String>>,
    /// The first uncaptured wgpu error since the last check (validation, out of memory).
    error: Mutex<Option<String>>,
}

impl Health {
    /// `Err` when the device is lost (for ever after) or an error was raised since the last call.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(msg) = lock(&self.lost).clone() {
            return Err(Error::DeviceLost(msg));
        }
        match lock(&self.error).take() {
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }

    fn set_lost(&self, msg: String) {
        lock(&self.lost).get_or_insert(msg);
    }

    fn set_error(&self, msg: String) {
        lock(&self.error).get_or_insert(msg);
    }
}

/// Locks a mutex, recovering from poisoning: every guarded value stays consistent between
/// statements, so a panic elsewhere leaves nothing half-written.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GpuBackend {
    /// What this device has been asked to do so far (see [`super::GpuCounters`]).
    pub fn counters(&self) -> super::GpuCounters {
        self.ctx.counters.snapshot()
    }

    pub(crate) fn count(&self, what: super::Count) {
        self.ctx.counters.add(what);
    }

    /// Opens the default adapter and creates a device with the adapter's own limits.
    ///
    /// Natively every wgpu backend is tried (honouring `WGPU_BACKEND=vulkan|gl|…`); on wasm,
    /// browser WebGPU only. Works on both targets; natively drive it with `pollster::block_on`.
    ///
    /// # Errors
    /// [`Error::Gpu`] when no adapter exists or the device cannot be created.
    pub async fn new() -> Result<Self> {
        Self::with_options(|_| {}, None).await
    }

    /// [`GpuBackend::new`] with the kernels of `kernels` whatever the adapter (tests use it to
    /// run both sets on any adapter).
    ///
    /// # Errors
    /// As [`GpuBackend::new`].
    pub async fn with_kernels(kernels: KernelSet) -> Result<Self> {
        Self::with_options(|_| {}, Some(kernels)).await
    }

    /// [`GpuBackend::new`] with the device's limits lowered by `lower` from the adapter's own
    /// (for tests of what a small adapter gets; raising a limit fails the device request).
    ///
    /// # Errors
    /// As [`GpuBackend::new`].
    pub async fn with_limits(lower: impl FnOnce(&mut wgpu::Limits)) -> Result<Self> {
        Self::with_options(lower, Some(KernelSet::Hardware)).await
    }

    /// The device with limits lowered by `lower`, and `kernels` (`None`: the hardware kernels,
    /// unless the baseline design or `NSE_GPU_KERNELS=software` asks for the first ones).
    async fn with_options(
        lower: impl FnOnce(&mut wgpu::Limits),
        kernels: Option<KernelSet>,
    ) -> Result<Self> {
        #[cfg(not(target_arch = "wasm32"))]
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        #[cfg(target_arch = "wasm32")]
        let desc = wgpu::InstanceDescriptor {
            backends: wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        };
        let instance = wgpu::Instance::new(desc);
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        let adapter = instance
            .request_adapter(&options)
            .await
            .map_err(|e| Error::Gpu(no_adapter_message(&e)))?;
        let mut limits = adapter.limits();
        lower(&mut limits);
        let has_subgroups = adapter.features().contains(wgpu::Features::SUBGROUP)
            && !env_is("NSE_GPU_SUBGROUPS", "0");
        // The baseline design (first timings) decodes F16 by hand, as it did.
        let baseline = env_is("NSE_GPU_BASELINE", "1");
        let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16)
            && !env_is("NSE_GPU_F16", "0")
            && !baseline;
        let mut required_features = wgpu::Features::empty();
        required_features.set(wgpu::Features::SUBGROUP, has_subgroups);
        required_features.set(wgpu::Features::SHADER_F16, has_f16);
        let device_desc = wgpu::DeviceDescriptor {
            label: Some("nse"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = adapter.request_device(&device_desc).await.map_err(|e| {
            Error::Gpu(format!(
                "could not create a device on `{}`: {e}",
                adapter.get_info().name
            ))
        })?;
        let health = Arc::new(Health::default());
        let on_lost = Arc::clone(&health);
        device.set_device_lost_callback(move |reason, msg| {
            on_lost.set_lost(format!("{reason:?}: {msg}"))
        });
        let on_error = Arc::clone(&health);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            on_error.set_error(e.to_string())
        }));
        let ctx = Context {
            device,
            queue,
            info: adapter.get_info(),
            limits,
            health,
            pool: Shared::new(Pool::default()),
            pending: Mutex::new(Pending::default()),
            binding: Mutex::new(Binding::default()),
            staging: Mutex::default(),
            pipelines: Mutex::new(Pipelines::default()),
            counters: Default::default(),
            baseline,
            kernels: KernelSet::Hardware,
            gemv: !env_is("NSE_GPU_GEMV", "0"),
            fused: !env_is("NSE_GPU_FUSED", "0"),
            tiled_attention: !env_is("NSE_GPU_TILED_ATTENTION", "0"),
            subgroups: std::sync::atomic::AtomicBool::new(false),
            has_subgroups,
            f16: std::sync::atomic::AtomicBool::new(false),
            has_f16,
        };
        let mut gpu = GpuBackend {
            ctx: Shared::new(ctx),
        };
        let kernels = kernels.unwrap_or(
            if env_is("NSE_GPU_KERNELS", "software") || gpu.ctx.baseline {
                KernelSet::Software
            } else {
                KernelSet::Hardware
            },
        );
        Shared::get_mut(&mut gpu.ctx)
            .expect("the only handle")
            .kernels = kernels;
        if has_subgroups && kernels == KernelSet::Hardware && !gpu.ctx.baseline {
            // A check that cannot run (a GEMV over the adapter's workgroup memory) keeps the
            // portable reductions; a lost device shows at the next op.
            let agrees = gpu.checked(gpu.subgroups_agree()).await;
            gpu.set_subgroups(agrees);
        }
        if has_f16 {
            let agrees = gpu.checked(gpu.f16_agrees()).await;
            gpu.set_f16(agrees);
        }
        Ok(gpu)
    }

    /// The outcome of a device check of a kernel variant (`true`: use it), run inside an error
    /// scope: a variant the driver's compiler rejects (a validation error, which would otherwise
    /// reach the uncaptured-error handler and fail every later op) or a check that fails counts
    /// as `false`, and the portable kernels stay.
    async fn checked(&self, check: impl std::future::Future<Output = Result<bool>>) -> bool {
        let scope = self
            .ctx
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let agrees = check.await.unwrap_or(false);
        let error = scope.pop().await;
        agrees && error.is_none()
    }

    /// Decodes every f16 that is not a NaN (zeros, subnormals, normals, infinities) with and
    /// without shader-f16: `true` when both give the same bits, which the by-hand decoding gives
    /// exactly. A device that flushes f16 subnormals to zero fails here and keeps decoding by
    /// hand, so F16 weights keep their values.
    ///
    /// # Errors
    /// As any op: over a limit, [`Error::DeviceLost`].
    async fn f16_agrees(&self) -> Result<bool> {
        use crate::backend::Backend;
        use crate::model::gguf::GgmlType;
        use crate::model::host::Stored;
        let mut halves: Vec<u16> = (0..=u16::MAX)
            .filter(|h| h & 0x7c00 != 0x7c00 || h & 0x3ff == 0)
            .collect();
        halves.resize(halves.len().next_multiple_of(8), 0);
        let len = halves.len();
        let bytes = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        // Packed as an F16 weight is at upload: rows of 8 values.
        let stored = Stored::new(GgmlType::F16, bytes, len / 8, 8).expect("whole rows of F16");
        let packed = super::packed::Packed::from_stored(&stored).expect("F16 rows of 8 pack");
        let t = self.upload_packed("f16 check", &packed, &[len])?;
        let mut out = vec![];
        for on in [true, false] {
            self.ctx.f16.store(on, std::sync::atomic::Ordering::Relaxed);
            let dense = self.dense(&t)?;
            out.push(self.read(&dense).await?);
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        Ok(bits(&out[0]) == bits(&out[1]))
    }

    /// Turns the `f16` reading of F16 weights on or off (on only where the device has
    /// shader-f16); for tests that run both on one device.
    pub fn set_f16(&self, on: bool) {
        self.ctx
            .f16
            .store(on && self.ctx.has_f16, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the device was created with shader-f16 (the adapter has it, `NSE_GPU_F16` is not
    /// `0` and the baseline design was not asked for).
    pub fn has_f16(&self) -> bool {
        self.ctx.has_f16
    }

    /// Whether kernels read F16 weights as `f16` on this device.
    pub fn uses_f16(&self) -> bool {
        self.ctx.f16.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs the GEMV (one row and three) with and without subgroups on integer-valued inputs,
    /// whose sums are exact in any order: `true` when both agree. The subgroup variants take
    /// subgroups to be runs of consecutive invocations; an implementation that forms them
    /// otherwise fails here and keeps the portable reductions.
    ///
    /// # Errors
    /// As any op: over a limit, [`Error::DeviceLost`].
    async fn subgroups_agree(&self) -> Result<bool> {
        use crate::backend::{Backend, Transpose};
        let (k, n) = (1024, 12);
        let ints = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7 + seed * 13) % 9) as f32 - 4.0)
                .collect()
        };
        let b = self.upload("subgroup check weights", &ints(n * k, 1), &[n, k])?;
        for m in [1, 3] {
            let a = self.upload("subgroup check input", &ints(m * k, m), &[m, k])?;
            let mut out = vec![];
            for on in [true, false] {
                self.ctx
                    .subgroups
                    .store(on, std::sync::atomic::Ordering::Relaxed);
                out.push(self.read(&self.matmul(&a, &b, Transpose::NT)?).await?);
            }
            if out[0] != out[1] {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Turns the GEMVs' subgroup reductions on or off (on only where the device has
    /// subgroups); for tests that run both on one device.
    pub fn set_subgroups(&self, on: bool) {
        self.ctx.subgroups.store(
            on && self.ctx.has_subgroups,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether the GEMVs reduce with subgroup operations on this device.
    pub fn uses_subgroups(&self) -> bool {
        self.ctx
            .subgroups
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The adapter's subgroup sizes `(min, max)`, when the device has subgroups.
    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        self.ctx.has_subgroups.then_some((
            self.ctx.info.subgroup_min_size,
            self.ctx.info.subgroup_max_size,
        ))
    }

    /// The adapter's name, vendor, backend and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.ctx.info
    }

    /// The device's limits (the adapter's own, all requested).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.ctx.limits
    }

    /// One line about the adapter: name, backend, device type, driver.
    pub fn describe_adapter(&self) -> String {
        let i = &self.ctx.info;
        let name = if i.name.is_empty() {
            "(unnamed adapter)"
        } else {
            &i.name
        };
        let driver = format!("{} {}", i.driver, i.driver_info);
        let driver = driver.trim();
        let driver = if driver.is_empty() { "unknown" } else { driver };
        format!(
            "{name} ({:?}, {:?}, driver {driver})",
            i.backend, i.device_type
        )
    }

    /// The limits that bound what this engine can run, by name, for `nse info`.
    pub fn limit_table(&self) -> Vec<(&'static str, u64)> {
        let l = &self.ctx.limits;
        vec![
            ("max_buffer_size", l.max_buffer_size),
            (
                "max_storage_buffer_binding_size",
                l.max_storage_buffer_binding_size,
            ),
            (
                "max_storage_buffers_per_shader_stage",
                l.max_storage_buffers_per_shader_stage.into(),
            ),
            (
                "max_compute_workgroups_per_dimension",
                l.max_compute_workgroups_per_dimension.into(),
            ),
            (
                "max_compute_invocations_per_workgroup",
                l.max_compute_invocations_per_workgroup.into(),
            ),
            (
                "max_compute_workgroup_storage_size",
                l.max_compute_workgroup_storage_size.into(),
            ),
        ]
    }

    /// True for CPU-emulated adapters (lavapipe, llvmpipe, SwiftShader): correct but slower
    /// than the cpu backend, so `--backend auto` skips them.
    pub fn is_software(&self) -> bool {
        let i = &self.ctx.info;
        let name = i.name.to_lowercase();
        i.device_type == wgpu::DeviceType::Cpu
            || ["llvmpipe", "lavapipe", "swiftshader"]
                .iter()
                .any(|s| name.contains(s))
    }

    /// The largest tensor, in bytes, that one buffer binding can hold on this device (a
    /// multiple of 16, since buffers are padded to whole `vec4`s, and at most 2³² elements).
    pub fn max_tensor_bytes(&self) -> u64 {
        let l = &self.ctx.limits;
        // Kernels index elements with u32.
        let index_limit = u64::from(u32::MAX) * 4;
        l.max_storage_buffer_binding_size
            .min(l.max_buffer_size)
            .min(index_limit)
            / 16
            * 16
    }

    /// Destroys the device now, releasing its memory without waiting for every tensor and
    /// clone of this handle to drop. Every later op and read returns [`Error::DeviceLost`].
    pub fn destroy(&self) {
        self.ctx.device.destroy();
    }

    /// `Err` when the device is lost or an uncaptured wgpu error was raised since the last check.
    pub(crate) fn check(&self) -> Result<()> {
        self.ctx.health.check()
    }
}

/// Whether environment variable `name` is `value` (natively; never on the web). The variables
/// pick the gpu paths that `scripts/gpu-bench.sh` times against each other.
fn env_is(name: &str, value: &str) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    return std::env::var(name).is_ok_and(|v| v == value);
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (name, value);
        false
    }
}

/// The error text for "no adapter", with what to do about it on this target.
fn no_adapter_message(e: &wgpu::RequestAdapterError) -> String {
    #[cfg(not(target_arch = "wasm32"))]
    let hint = "install a GPU driver with Vulkan support (on Debian/Ubuntu without a GPU: \
                `apt-get install mesa-vulkan-drivers` for the lavapipe software adapter), \
                or use the cpu backend (--backend cpu)";
    #[cfg(target_arch = "wasm32")]
    let hint = "use a browser with WebGPU enabled (Chrome/Edge 113+, or Chromium with \
                --enable-unsafe-webgpu), or switch to the cpu backend";
    format!("no GPU adapter was found ({e}); {hint}")
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::backend::Backend;

    /// A variant the driver's compiler rejects fails its check, and the error stays in the check:
    /// the device keeps working (without the scope it would fail every later op).
    #[test]
    fn a_rejected_variant_fails_its_check_and_leaves_the_device_usable() {
        let gpu = match pollster::block_on(GpuBackend::new()) {
            Ok(gpu) => gpu,
            Err(e) if env_is("NSE_GPU_OPTIONAL", "1") => {
                eprintln!("SKIPPED (no GPU adapter, NSE_GPU_OPTIONAL=1): {e}");
                return;
            }
            Err(e) => panic!("no GPU adapter ({e}); NSE_GPU_OPTIONAL=1 skips on a machine without"),
        };
        let rejected = async {
            let _module = gpu
                .ctx
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("a variant the compiler rejects"),
                    source: wgpu::ShaderSource::Wgsl("fn f() { let x: u32 = 1.5; }".into()),
                });
            Ok(true)
        };
        assert!(!pollster::block_on(gpu.checked(rejected)));
        assert!(pollster::block_on(gpu.checked(async { Ok(true) })));
        assert!(!pollster::block_on(gpu.checked(async { Ok(false) })));
        let t = gpu
            .upload("after the check", &[1.0, 2.0, 3.0, 4.0], &[4])
            .unwrap();
        assert_eq!(
            pollster::block_on(gpu.read(&t)).unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
    }
}
