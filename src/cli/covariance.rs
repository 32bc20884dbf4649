//! `nse covariance`: compute (or load from the cache) the statistics `C_l` of the edited layers
//! and write them as `layer{l}.npy`, the layout the page and `--cov-dir` read.

use std::path::PathBuf;

use clap::Args;

use super::common::{Loaded, ModelArgs, load};
use super::editor::EditorArgs;
use crate::{Error, Result, with_model};

#[derive(Args, Debug)]
pub struct CovarianceArgs {
    /// Output directory for layer{l}.npy (f32, d_ff × d_ff).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    editor: EditorArgs,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: CovarianceArgs) -> Result<()> {
    let Loaded {
        model,
        tokenizer,
        source,
        ..
    } = load(&args.model)?;
    let editor =
        with_model!(&model, m => pollster::block_on(args.editor.prepare(m, &tokenizer, &source)))?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    for (l, c) in editor.cov()?.matrices() {
        let f = (c.len() as f64).sqrt() as usize;
        let path = args.out.join(format!("layer{l}.npy"));
        std::fs::write(&path, crate::npy::write_f32(&[f, f], c))
            .map_err(|e| Error::io(&path, e))?;
    }
    let manifest = serde_json::json!({
        "model_sha256": source.sha256, "layers": editor.hp.layers, "tokens": editor.cov()?.tokens,
        "corpus": editor.hp.mom2_dataset, "window": editor.hp.mom2_window,
    });
    super::common::write_json(&args.out.join("covariance.json"), &manifest)?;
    println!(
        "wrote {} layers to {} ({} tokens)",
        editor.hp.layers.len(),
        args.out.display(),
        editor.cov()?.tokens
    );
    Ok(())
}
