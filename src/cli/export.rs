//! `nse export`: the (patched) model as Hugging Face files.

use std::path::PathBuf;

use clap::Args;

use super::common::{Loaded, ModelArgs, load};
use crate::model::export::{export_safetensors, hf_config_json};
use crate::{Error, Result, with_model};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Output directory: model.safetensors (F32), config.json, tokenizer.json.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let Loaded {
        model,
        tokenizer,
        source,
        ..
    } = load(&args.model)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let patch = args
        .model
        .patch
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let meta = [
        ("format", "pt"),
        ("base_model_sha256", source.sha256.as_str()),
        ("nse_patch", patch.as_str()),
    ];
    let (bytes, config) = with_model!(&model, m => (pollster::block_on(export_safetensors(m, &meta))?, hf_config_json(&m.config)?));
    let write = |name: &str, data: &[u8]| {
        let path = args.out.join(name);
        std::fs::write(&path, data).map_err(|e| Error::io(&path, e))
    };
    write("model.safetensors", &bytes)?;
    write("config.json", config.as_bytes())?;
    write("tokenizer.json", tokenizer.to_json()?.as_bytes())?;
    println!(
        "wrote {} (model.safetensors {} bytes, config.json, tokenizer.json)",
        args.out.display(),
        bytes.len()
    );
    Ok(())
}
