//! The load job: read the bytes (the default model through the Cache API, or the picked files)
//! → decode → upload to the chosen backend, then restore the ledger saved for this model in
//! IndexedDB and put its last request into the page's form.

use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::JsCast;
use web_sys::File;

use super::loader::{self, Picked};
use super::session::{self, Session, fmt_bytes};
use super::{Ui, Worker, storage};
use crate::edit::MethodKind;
use crate::edit::patch::Patch;
use crate::gpu::GpuBackend;
use crate::model::LoadedModel;
use crate::session::EntryMeta;
use crate::session::protocol::{Backend, Event, Failure, Outcome, Reply, Source, WebGpuSupport};
use crate::web::js::{self, now_ms};
use crate::{Error, Result};

/// Shares of the progress bar: reading the bytes, then decoding, then uploading.
const READ_SHARE: f64 = 0.75;
const DECODE_DONE: f64 = 0.85;

/// Loads a model and makes it the session.
///
/// The previous model stays loaded until the new one has decoded, so a bad file leaves the
/// engine as it was; after that the old model is released first (two models rarely fit a GPU).
pub(crate) async fn load(
    w: &Rc<Worker>,
    ui: &Ui,
    source: Source,
    backend: Backend,
    max_binding: Option<u64>,
    attach: Array,
) -> Outcome {
    let t0 = now_ms();
    match load_session(w, ui, source, backend, max_binding, attach).await {
        Ok(mut s) => {
            let secs = (now_ms() - t0) / 1000.0;
            ui.progress(Some(1.0), &format!("Loaded in {secs:.1} s."));
            // The ledger saved for this model (if any) is replayed before the model is handed
            // over.
            let method = restore(w, ui, &mut s).await;
            ui.snapshot(w, Some(&s));
            fill_last_edit(ui, &s, method);
            *w.session.borrow_mut() = Some(s);
            Ok(Reply::Loaded { secs })
        }
        Err(e) => {
            ui.snapshot(w, w.session.borrow().as_ref());
            Err(Failure::from(e))
        }
    }
}

/// Bytes read to size up a picked GGUF: its metadata (a 150,000-token vocabulary with its
/// merges is about 8 MB) and tensor infos.
const HEADER_BYTES: u64 = 32 << 20;

async fn load_session(
    w: &Worker,
    ui: &Ui,
    source: Source,
    backend: Backend,
    max_binding: Option<u64>,
    attach: Array,
) -> Result<Session> {
    let loading = |what: &str| ui.status("loading", backend.id(), &[what]);
    w.from_cache.set(false);
    let loaded = match source {
        Source::Url { url } => {
            loading(&format!("Loading {url}…"));
            let (bytes, cached) = loader::fetch_cached(&url, |done, total, cached| {
                let what = if cached {
                    "Reading the default model from cache"
                } else {
                    "Downloading the default model"
                };
                show_read(ui, what, done, total)
            })
            .await?;
            w.from_cache.set(cached);
            let name = url.rsplit('/').next().unwrap_or(&url).to_string();
            decode(ui, || crate::model::load::load_gguf(&bytes, &name)).await?
        }
        Source::Files { .. } => {
            let files: Vec<File> = attach
                .iter()
                .filter_map(|f| f.dyn_into::<File>().ok())
                .collect();
            let picked = Picked::classify(files)?;
            // A model is sized up from its headers first (a GGUF's; a checkpoint's config.json
            // and each shard's header): one too large for this tab is refused, with the
            // estimate, before the rest of its files is read.
            let estimate = match &picked {
                Picked::Gguf(file) => {
                    loading(&format!("Reading the header of {}…", file.name()));
                    let prefix = loader::read_prefix(file, HEADER_BYTES).await?;
                    crate::model::load::inspect_gguf(&prefix, file.size() as u64, &file.name())?
                }
                Picked::HuggingFace { config, shards, .. } => {
                    loading(&format!("Reading the headers of {}…", picked.name()));
                    let config_json = loader::read_file(config, |_, _| {}).await?;
                    let config_json = std::str::from_utf8(&config_json).map_err(|e| {
                        crate::Error::format("config.json", format!("not UTF-8 text: {e}"))
                    })?;
                    let mut prefixes = Vec::with_capacity(shards.len());
                    for shard in shards {
                        prefixes.push(loader::read_prefix(shard, HEADER_BYTES).await?);
                    }
                    let names: Vec<String> = shards.iter().map(File::name).collect();
                    let heads: Vec<(&str, &[u8], u64)> = names
                        .iter()
                        .zip(&prefixes)
                        .zip(shards)
                        .map(|((n, p), f)| (n.as_str(), p.as_slice(), f.size() as u64))
                        .collect();
                    crate::model::load::inspect_safetensors(config_json, &heads)?
                }
            };
            loading(&format!("Loading {}: {}…", picked.name(), estimate.line()));
            let total: u64 = picked.files().iter().map(|f| f.size() as u64).sum();
            let mut bytes = Vec::new();
            let mut before = 0;
            for file in picked.files() {
                let what = format!("Reading {}", file.name());
                let data = loader::read_file(file, |done, _| {
                    show_read(ui, &what, before + done, Some(total))
                })
                .await?;
                before += data.len() as u64;
                bytes.push(data);
            }
            decode(ui, || loader::decode_picked(&picked, &bytes)).await?
        }
    };
    if let (Backend::Webgpu, Some(cap)) = (backend, max_binding) {
        session::check_binding_cap(&loaded.weights, cap)?;
    }
    if let Some(old) = w.session.borrow_mut().take() {
        old.release();
    }
    loading(&format!("Loading {}…", loaded.source.name));
    let weights_bytes = 4 * loaded.config.n_params() as u64;
    match backend {
        Backend::Cpu => session::on_cpu(loaded),
        Backend::Webgpu => {
            ui.progress(Some(DECODE_DONE), "Opening the WebGPU device…");
            let gpu = GpuBackend::new().await?;
            ui.progress(
                Some(DECODE_DONE + 0.05),
                &format!(
                    "Uploading {} of weights to the GPU…",
                    fmt_bytes(weights_bytes)
                ),
            );
            js::yield_now().await;
            let facts = match &*w.webgpu.borrow() {
                WebGpuSupport::Adapter { facts } => facts.clone(),
                _ => Default::default(),
            };
            let mut s = session::on_gpu(loaded, gpu, &facts).await?;
            if let Some(cap) = max_binding {
                s.device
                    .push_str(&format!(" · page limit {} (?max_binding)", fmt_bytes(cap)));
            }
            Ok(s)
        }
    }
}

/// After a restore, the form and the comparison's probes show the ledger's last request, so that
/// the comparison that follows is about the user's own edit, not the page's example.
fn fill_last_edit(ui: &Ui, s: &Session, method: Option<MethodKind>) {
    let Some(r) = s.ledger().last().and_then(|e| e.requests.last()) else {
        return;
    };
    let probes = s
        .setup()
        .ok()
        .and_then(|setup| setup.meta.get(s.n_entries() - 1))
        .and_then(|m| m.probes.last().cloned())
        .unwrap_or_default();
    ui.send(Event::FillForm {
        request: r.clone(),
        probes,
        method,
    });
}

/// The byte-progress part of the bar.
fn show_read(ui: &Ui, what: &str, done: u64, total: Option<u64>) {
    let (fraction, label) = match total {
        Some(t) if t > 0 => (
            Some(READ_SHARE * done as f64 / t as f64),
            format!("{what}: {} of {}", fmt_bytes(done), fmt_bytes(t)),
        ),
        _ => (None, format!("{what}: {}", fmt_bytes(done))),
    };
    if total == Some(done) {
        ui.progress(fraction, &label);
    } else {
        ui.progress_thinned(fraction, &label);
    }
}

/// Runs the (synchronous, seconds-long) decode; the worker is busy meanwhile, the page is not.
async fn decode(ui: &Ui, f: impl FnOnce() -> Result<LoadedModel>) -> Result<LoadedModel> {
    ui.progress(
        Some(READ_SHARE),
        "Decoding the weights and the tokenizer (a few seconds)…",
    );
    let loaded = f()?;
    ui.progress(Some(DECODE_DONE), "Decoded.");
    js::yield_now().await;
    Ok(loaded)
}

/// Restores the ledger saved for this model (after a load), before the model is handed over;
/// returns the method that was selected when it was saved.
async fn restore(w: &Worker, ui: &Ui, s: &mut Session) -> Option<MethodKind> {
    let (Some(db), Ok(_)) = (w.db(), &s.editing) else {
        if w.db().is_none() {
            ui.saved("Edits cannot be saved in this browser: it offers no IndexedDB.");
        }
        return None;
    };
    let record = match storage::load_ledger(&db, &s.source.sha256).await {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => {
            ui.warn(&e.to_string());
            return None;
        }
    };
    let restored = async {
        let patch = Patch::from_bytes(&record.patch, "the ledger saved in this browser")?;
        let meta: Vec<EntryMeta> = serde_json::from_str(&record.meta).unwrap_or_default();
        s.replace_ledger(&patch, meta).await?;
        Ok::<_, Error>(patch.entries.len())
    }
    .await;
    match restored {
        Ok(n) => {
            ui.saved(&format!(
                "Restored {n} edit{} saved in this browser.",
                if n == 1 { "" } else { "s" }
            ));
            MethodKind::parse(&record.method).ok()
        }
        Err(e) => {
            ui.warn(&format!(
                "The ledger saved in this browser could not be restored ({e}); it stays saved, untouched"
            ));
            None
        }
    }
}
