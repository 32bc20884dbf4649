//! Getting model bytes into wasm memory: `fetch` with byte progress, files from the picker,
//! and what a picked set of files is (one GGUF, or a Hugging Face checkpoint).

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Cache, File, Headers, ReadableStream, ReadableStreamDefaultReader, RequestInit, Response,
    ResponseInit,
};

use crate::model::LoadedModel;
use crate::model::load::{load_gguf, load_safetensors};
use crate::web::js::js_error;
use crate::{Error, Result};

fn scope() -> web_sys::WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// `url` resolved against the page's address: the worker runs from a `blob:` URL, against which
/// a relative URL means nothing, so the page passes its base as `globalThis.NSE_BASE`.
pub(crate) fn absolute(url: &str) -> String {
    let base = Reflect::get(&js_sys::global(), &JsValue::from_str("NSE_BASE"))
        .ok()
        .and_then(|b| b.as_string());
    base.and_then(|b| web_sys::Url::new_with_base(url, &b).ok())
        .map_or_else(|| url.to_string(), |u| u.href())
}

/// Downloads `url` into memory, calling `on_progress(bytes_so_far, total)` after every chunk
/// (`total` from `Content-Length`, when the server sends it).
///
/// # Errors
/// A network failure, or an HTTP error status, with what to do about a missing default model.
pub(crate) async fn fetch_bytes(
    url: &str,
    mut on_progress: impl FnMut(u64, Option<u64>),
) -> Result<Vec<u8>> {
    let response = fetch_ok(url, "GET").await?;
    read_response(&response, url, &mut on_progress).await
}

/// `fetch(url, {method})`, failing on an HTTP error status.
async fn fetch_ok(url: &str, method: &str) -> Result<Response> {
    let init = RequestInit::new();
    init.set_method(method);
    let url = &absolute(url);
    let response = JsFuture::from(scope().fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| js_error(&format!("could not download {url}"), e))?;
    let response: Response = response
        .dyn_into()
        .map_err(|e| js_error("fetch did not return a Response", e))?;
    if !response.ok() {
        let status = response.status();
        let hint = if status == 404 && url.ends_with(".gguf") {
            " The page serves the default model from www/models/: run `bash scripts/setup.sh` \
             (it copies the GGUF there), rebuild with `trunk build --release`, or pick a model \
             file below."
        } else {
            ""
        };
        return Err(Error::input(format!(
            "could not download {url}: HTTP {status} {}.{hint}",
            response.status_text()
        )));
    }
    Ok(response)
}

/// Reads a response's body with progress.
async fn read_response(
    response: &Response,
    url: &str,
    on_progress: &mut impl FnMut(u64, Option<u64>),
) -> Result<Vec<u8>> {
    let total = header_u64(response, "content-length");
    let Some(body) = response.body() else {
        return Ok(Vec::new());
    };
    read_stream(&body, total, url, on_progress).await
}

fn header_u64(response: &Response, name: &str) -> Option<u64> {
    header(response, name).and_then(|s| s.parse::<u64>().ok())
}

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).ok().flatten()
}

/// The Cache API bucket holding downloaded models.
const MODEL_CACHE: &str = "nse-models-v1";

/// Downloads `url` like [`fetch_bytes`], but keeps the bytes in the browser's Cache API and
/// reads them from there on the next visit. Returns the bytes and whether they came from the
/// cache.
///
/// A cached copy is revalidated with a `HEAD` request: when the server answers with another
/// `Content-Length` or `Last-Modified`, the file changed and is downloaded again; when the
/// server cannot be reached, the cached copy is used. Where the Cache API is missing (an
/// insecure origin) or full, the download works as without it.
///
/// # Errors
/// As [`fetch_bytes`].
pub(crate) async fn fetch_cached(
    url: &str,
    mut on_progress: impl FnMut(u64, Option<u64>, bool),
) -> Result<(Vec<u8>, bool)> {
    let url = &absolute(url);
    let cache = open_cache().await;
    if let Some(cache) = &cache
        && let Some(cached) = cached_response(cache, url).await
    {
        let fresh = match fetch_ok(url, "HEAD").await {
            Ok(head) => ["content-length", "last-modified"]
                .iter()
                .all(|h| header(&head, h) == header(&cached, h)),
            Err(_) => true,
        };
        if fresh {
            let bytes = read_response(&cached, url, &mut |d, t| on_progress(d, t, true)).await?;
            return Ok((bytes, true));
        }
    }
    let response = fetch_ok(url, "GET").await?;
    let headers = response.headers();
    let bytes = read_response(&response, url, &mut |d, t| on_progress(d, t, false)).await?;
    if let Some(cache) = &cache
        && let Err(e) = put_cached(cache, url, &bytes, &headers).await
    {
        web_sys::console::warn_1(
            &format!("the model was not kept in the browser cache: {e}").into(),
        );
    }
    Ok((bytes, false))
}

async fn open_cache() -> Option<Cache> {
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(MODEL_CACHE))
        .await
        .ok()?
        .dyn_into::<Cache>()
        .ok()
}

async fn cached_response(cache: &Cache, url: &str) -> Option<Response> {
    JsFuture::from(cache.match_with_str(url))
        .await
        .ok()?
        .dyn_into::<Response>()
        .ok()
}

async fn put_cached(cache: &Cache, url: &str, bytes: &[u8], from: &Headers) -> Result<()> {
    let headers = Headers::new().map_err(|e| js_error("cannot make headers", e))?;
    for h in ["content-length", "last-modified", "content-type"] {
        if let Ok(Some(v)) = from.get(h) {
            let _ = headers.set(h, &v);
        }
    }
    let init = ResponseInit::new();
    init.set_headers(&headers);
    let body = Uint8Array::from(bytes);
    let response = Response::new_with_opt_buffer_source_and_init(Some(&body), &init)
        .map_err(|e| js_error("cannot make a response to cache", e))?;
    JsFuture::from(cache.put_with_str(url, &response))
        .await
        .map(|_| ())
        .map_err(|e| js_error("Cache.put failed", e))
}

/// Reads a picked file into memory with progress (through `Blob.stream()`).
pub(crate) async fn read_file(
    file: &File,
    mut on_progress: impl FnMut(u64, Option<u64>),
) -> Result<Vec<u8>> {
    let total = file.size() as u64;
    read_stream(&file.stream(), Some(total), &file.name(), &mut on_progress).await
}

/// The first `n` bytes of a picked file (all of it when shorter), without reading the rest.
pub(crate) async fn read_prefix(file: &File, n: u64) -> Result<Vec<u8>> {
    let end = n.min(file.size() as u64);
    let blob = file
        .slice_with_f64_and_f64(0.0, end as f64)
        .map_err(|e| js_error(&format!("cannot read {}", file.name()), e))?;
    read_stream(&blob.stream(), Some(end), &file.name(), &mut |_, _| {}).await
}

/// Drains a byte stream chunk by chunk; every chunk is a turn of the event loop, so the page
/// repaints the progress bar as the bytes arrive.
async fn read_stream(
    stream: &ReadableStream,
    total: Option<u64>,
    what: &str,
    on_progress: &mut impl FnMut(u64, Option<u64>),
) -> Result<Vec<u8>> {
    let reader: ReadableStreamDefaultReader = stream
        .get_reader()
        .dyn_into()
        .map_err(|e| js_error(&format!("cannot read {what}"), e.into()))?;
    // Checked before reserving: a file over the budget (over 2 GiB, say, where wasm32's
    // `Vec::with_capacity` would panic) is refused with a message, not a dead tab.
    let too_big = |n: Option<u64>| {
        crate::budget::check(n, || format!("reading {}", crate::error::escape(what)))
    };
    too_big(total)?;
    // Reserve once: a 100 MB model grown by doubling would briefly need twice its size.
    let capacity = total.and_then(|t| usize::try_from(t).ok()).unwrap_or(0);
    let mut bytes: Vec<u8> = Vec::with_capacity(capacity);
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| js_error(&format!("reading {what} failed"), e))?;
        let done = Reflect::get(&chunk, &JsValue::from_str("done"))
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &JsValue::from_str("value"))
            .and_then(|v| v.dyn_into())
            .map_err(|e| js_error(&format!("reading {what}: a chunk is not bytes"), e))?;
        let start = bytes.len();
        // A stream may be longer than announced, or announce nothing.
        let end = (start as u64).checked_add(value.length().into());
        too_big(end)?;
        bytes.resize(end.expect("checked") as usize, 0);
        value.copy_to(&mut bytes[start..]);
        on_progress(bytes.len() as u64, total);
    }
    Ok(bytes)
}

/// What the user picked.
pub(crate) enum Picked {
    /// One `.gguf` file.
    Gguf(File),
    /// A Hugging Face checkpoint: `config.json`, `tokenizer.json`, and the shards sorted by name.
    HuggingFace {
        config: File,
        tokenizer: File,
        shards: Vec<File>,
    },
}

impl Picked {
    /// Sorts a picked set of files into one of the supported shapes.
    ///
    /// Other JSON files of a checkpoint directory (`tokenizer_config.json`,
    /// `generation_config.json`, the shard index) are ignored, so selecting the whole folder
    /// works.
    ///
    /// # Errors
    /// An empty selection, several GGUF files, a GGUF mixed with other files, or a checkpoint
    /// missing one of its three parts; each message says what to pick instead.
    pub(crate) fn classify(files: Vec<File>) -> Result<Picked> {
        const WHAT: &str = "pick one .gguf file, or config.json + tokenizer.json + the \
                            *.safetensors files of a Hugging Face model (all at once)";
        if files.is_empty() {
            return Err(Error::input(format!("no file was picked: {WHAT}")));
        }
        let name = |f: &File| f.name().to_lowercase();
        let (gguf, rest): (Vec<File>, Vec<File>) =
            files.into_iter().partition(|f| name(f).ends_with(".gguf"));
        match gguf.len() {
            0 => {}
            1 if rest.is_empty() => return Ok(Picked::Gguf(gguf.into_iter().next().expect("one"))),
            _ => {
                return Err(Error::input(format!(
                    "{} .gguf files and {} other files were picked: {WHAT}",
                    gguf.len(),
                    rest.len()
                )));
            }
        }
        let find = |wanted: &str| rest.iter().find(|f| name(f) == wanted).cloned();
        let mut shards: Vec<File> = rest
            .iter()
            .filter(|f| name(f).ends_with(".safetensors"))
            .cloned()
            .collect();
        shards.sort_by_key(|f| f.name());
        let missing: Vec<&str> = [
            ("config.json", find("config.json").is_none()),
            ("tokenizer.json", find("tokenizer.json").is_none()),
            ("a *.safetensors file", shards.is_empty()),
        ]
        .into_iter()
        .filter_map(|(what, gone)| gone.then_some(what))
        .collect();
        if !missing.is_empty() {
            return Err(Error::input(format!(
                "the picked files lack {}: {WHAT}",
                missing.join(" and ")
            )));
        }
        Ok(Picked::HuggingFace {
            config: find("config.json").expect("checked above"),
            tokenizer: find("tokenizer.json").expect("checked above"),
            shards,
        })
    }

    /// The files, in the order they are read.
    pub(crate) fn files(&self) -> Vec<&File> {
        match self {
            Picked::Gguf(f) => vec![f],
            Picked::HuggingFace {
                config,
                tokenizer,
                shards,
            } => [config, tokenizer].into_iter().chain(shards).collect(),
        }
    }

    /// A short name for messages: the GGUF's file name, or the first shard's.
    pub(crate) fn name(&self) -> String {
        match self {
            Picked::Gguf(f) => f.name(),
            Picked::HuggingFace { shards, .. } => shards[0].name(),
        }
    }
}

/// Bytes read from a [`Picked`] set, in [`Picked::files`] order.
pub(crate) fn decode_picked(picked: &Picked, bytes: &[Vec<u8>]) -> Result<LoadedModel> {
    match picked {
        Picked::Gguf(f) => load_gguf(&bytes[0], &f.name()),
        Picked::HuggingFace { shards, .. } => {
            let text = |i: usize, what: &str| {
                std::str::from_utf8(&bytes[i])
                    .map_err(|e| Error::format(what, format!("not UTF-8 text: {e}")))
            };
            let names: Vec<String> = shards.iter().map(File::name).collect();
            let shards: Vec<(&str, &[u8])> = names
                .iter()
                .map(String::as_str)
                .zip(bytes[2..].iter().map(Vec::as_slice))
                .collect();
            load_safetensors(text(0, "config.json")?, text(1, "tokenizer.json")?, &shards)
        }
    }
}
