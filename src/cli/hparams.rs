//! `nse hparams`: the hyperparameters nse edits a model with (the shipped file, or the
//! defaults derived from its depth and width), as a file to read, adapt and pass back with
//! `--hparams`.

use std::path::PathBuf;

use clap::Args;

use super::common::ModelArgs;
use crate::edit::Hparams;
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct HparamsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Write the file here instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: HparamsArgs) -> Result<()> {
    let host = args.model.load_host()?;
    let (hp, shipped) = Hparams::for_model_or_derived(&host.config, &host.source.name);
    hp.check_model(&host.config)?;
    let text = serde_json::to_string_pretty(&hp).expect("hyperparameters serialise") + "\n";
    let origin = if shipped {
        "the shipped file"
    } else {
        "derived from the model's depth and width (hparams/README.md); the context templates \
         are sampled from the model at the first edit"
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| Error::io(path, e))?;
            eprintln!("wrote {} ({origin})", path.display());
        }
        None => {
            eprintln!("hyperparameters for {:?}: {origin}", host.source.name);
            print!("{text}");
        }
    }
    Ok(())
}
