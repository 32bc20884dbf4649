//! The worker's side of the library's [`Session`]: which backend, the device line, the hooks
//! that let the worker hear the page (a cancel) between the engine's steps, and the page's ways
//! out of a refused upload.

use std::cell::Cell;

use crate::gpu::GpuBackend;
use crate::model::{HostTensor, LoadedModel, Weights};
use crate::session::Hooks;
use crate::session::protocol::{AdapterFacts, Backend};
pub(crate) use crate::session::{Session, fmt_bytes};
use crate::web::js;
use crate::{Error, Result};

/// Context tokens a request leaves free in the page: room for what the page generates after the
/// prompt (the unedited model's answer, the comparison's continuations).
pub(crate) const FORM_CONTEXT_MARGIN: usize = 16;

thread_local! {
    /// Set by a stop or cancel button; the running job stops at its next step.
    static CANCEL: Cell<bool> = const { Cell::new(false) };
}

/// Asks the running job to stop at its next step.
pub(crate) fn request_cancel() {
    CANCEL.with(|c| c.set(true));
}

/// Clears a cancel request (at the start of every job).
pub(crate) fn clear_cancel() {
    CANCEL.with(|c| c.set(false));
}

/// The backend a session runs on.
pub(crate) fn backend_of(s: &Session) -> Backend {
    if s.engine.is_gpu() {
        Backend::Webgpu
    } else {
        Backend::Cpu
    }
}

/// The worker's hooks: a yield to the event loop between steps (so that a cancel message is
/// heard), which stops the job when a cancel was requested; `Date.now()` as the clock.
fn page_hooks() -> Hooks {
    Hooks {
        pause: Some(Box::new(|| {
            Box::pin(async {
                js::yield_now().await;
                if CANCEL.with(Cell::get) {
                    Err(Error::Cancelled("stopped by the user".into()))
                } else {
                    Ok(())
                }
            })
        })),
        clock: js::now_ms,
    }
}

/// Uploads a decoded model to the cpu backend (the weights move, nothing is copied).
pub(crate) fn on_cpu(loaded: LoadedModel) -> Result<Session> {
    let device = "CPU backend · single-threaded in the page's engine worker (faer GEMM)".into();
    let mut s = Session::on_cpu(loaded, device)?;
    s.hooks = page_hooks();
    Ok(s)
}

/// Uploads a decoded model to a WebGPU device (see [`Session::on_gpu`]).
///
/// # Errors
/// [`Error::BufferTooLarge`] for a tensor over the adapter's limits (with a hint for this page),
/// a lost device, or any other GPU failure.
pub(crate) async fn on_gpu(
    loaded: LoadedModel,
    gpu: GpuBackend,
    facts: &AdapterFacts,
) -> Result<Session> {
    let device = gpu_line(&gpu, facts);
    let mut s = Session::on_gpu(loaded, gpu, device)
        .await
        .map_err(page_hint)?;
    s.hooks = page_hooks();
    Ok(s)
}

/// Refuses a model with a tensor over `cap` bytes, as the GPU backend refuses one over the
/// adapter's binding limit, before anything is uploaded (the `?max_binding=N` test hook).
///
/// # Errors
/// [`Error::BufferTooLarge`] naming the first such tensor, with the page's way out.
pub(crate) fn check_binding_cap(weights: &Weights<HostTensor>, cap: u64) -> Result<()> {
    let all = weights.tensors();
    // What the gpu backend uploads: a matrix in its packed layout where it has one, else f32.
    let device_bytes = |t: &HostTensor| match &t.data {
        crate::model::host::HostData::Stored(s) => {
            crate::gpu::packed::device_bytes(s.ty, s.rows, s.cols)
        }
        crate::model::host::HostData::F32(v) => 4 * v.len() as u64,
    };
    match all.into_iter().find(|t| device_bytes(t) > cap) {
        Some(t) => Err(page_hint(Error::BufferTooLarge {
            name: t.name.clone(),
            bytes: device_bytes(t),
            limit: cap,
        })),
        None => Ok(()),
    }
}

/// "WebGPU on google swiftshader · maxStorageBufferBindingSize 1 GiB · maxBufferSize 1 GiB".
fn gpu_line(gpu: &GpuBackend, facts: &AdapterFacts) -> String {
    let limits = gpu.limits();
    let adapter = if facts == &AdapterFacts::default() {
        gpu.describe_adapter()
    } else {
        facts.label()
    };
    format!(
        "WebGPU on {adapter} · maxStorageBufferBindingSize {} · maxBufferSize {} · kernels: {}",
        fmt_bytes(limits.max_storage_buffer_binding_size),
        fmt_bytes(limits.max_buffer_size),
        gpu.kernel_summary()
    )
}

/// Library errors phrased for the command line get the page's way out added.
fn page_hint(e: Error) -> Error {
    match e {
        // The code stays `ModelTooLarge` for programs (the npm package).
        Error::BufferTooLarge { .. } => Error::refused(
            "ModelTooLarge",
            format!("{e}. In this page: choose “CPU” under Backend and load the model again."),
        ),
        e => e,
    }
}
