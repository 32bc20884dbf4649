//! Loading a model from the file system: a `.gguf` file, or a Hugging Face checkpoint
//! directory. Every file is read whole, so its length is checked against the memory budget
//! first, and a shard index may only name files beside it.

use std::path::{Component, Path, PathBuf};

use super::{LoadedModel, load_gguf, load_hf};
use crate::{Error, Result};

/// Loads a `.gguf` file, or a directory with `config.json`, `tokenizer.json` and the safetensors
/// shards (those named in `model.safetensors.index.json` when present, else every
/// `*.safetensors`).
///
/// Errors: [`Error::Io`] for a file that cannot be read, plus those of [`load_gguf`] and
/// [`super::load_safetensors`].
pub fn load_path(path: &Path) -> Result<LoadedModel> {
    // Each file is read whole, so its length is checked against the memory budget first.
    let fits = |p: &Path| -> Result<()> {
        let len = std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
        crate::budget::check(Some(len), || {
            format!("reading {}", crate::error::escape(&p.display().to_string()))
        })
    };
    let read = |p: &Path| {
        fits(p)?;
        std::fs::read(p).map_err(|e| Error::io(p, e))
    };
    let read_text = |p: &Path| {
        fits(p)?;
        std::fs::read_to_string(p).map_err(|e| Error::io(p, e))
    };
    if !path.is_dir() {
        let bytes = read(path)?;
        let mut model = load_gguf(&bytes, &path.display().to_string())?;
        model.source.name = file_name(path);
        return Ok(model);
    }
    let config_path = path.join("config.json");
    let tokenizer_path = path.join("tokenizer.json");
    let (config, tokenizer) = (read_text(&config_path)?, read_text(&tokenizer_path)?);
    let files = shard_files(path)?;
    let mut bytes = Vec::with_capacity(files.len());
    for f in &files {
        bytes.push(read(f)?);
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let shards: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(bytes.iter().map(Vec::as_slice))
        .collect();
    let (cp, tp) = (
        config_path.display().to_string(),
        tokenizer_path.display().to_string(),
    );
    let mut model = load_hf(&cp, &config, &tp, &tokenizer, &shards)?;
    model.source.name = file_name(path);
    Ok(model)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The shard files of a checkpoint directory, sorted.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index_path = dir.join("model.safetensors.index.json");
    let mut files: Vec<PathBuf> = if index_path.exists() {
        let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::format(
                index_path.display().to_string(),
                format!("not valid JSON: {e}"),
            )
        })?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::format(
                    index_path.display().to_string(),
                    "no `weight_map` object: the index is corrupt",
                )
            })?;
        let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|n| shard_in_dir(dir, n, &index_path))
            .collect::<Result<_>>()?
    } else {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let p = entry.map_err(|e| Error::io(dir, e))?.path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                files.push(p);
            }
        }
        files
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::format(
            dir.display().to_string(),
            "no *.safetensors file in this directory: pass a .gguf file or a Hugging Face model \
             directory (config.json, tokenizer.json, *.safetensors)",
        ));
    }
    Ok(files)
}

/// `dir/name` for a shard named in the index, refusing any name that is not a plain file name
/// (`..`, an absolute path, a subdirectory): a hostile index must not make us read files
/// outside the model directory.
fn shard_in_dir(dir: &Path, name: &str, index_path: &Path) -> Result<PathBuf> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(file)), None) if !name.contains(['/', '\\']) => Ok(dir.join(file)),
        _ => Err(Error::format(
            index_path.display().to_string(),
            format!(
                "the weight_map names the shard `{}`, which is not a file name inside the model \
                 directory; shards must sit beside the index (no `..`, no absolute or nested \
                 paths)",
                crate::error::escape(name)
            ),
        )),
    }
}
