//! `nse generate`: a continuation and the top-5 next-token probabilities.

use std::io::Write;

use clap::Args;

use super::common::{ModelArgs, load};
use crate::model::{Sampling, generate};
use crate::{Result, with_model};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The prompt (no BOS is added for models whose tokenizer does not add one).
    #[arg(long)]
    prompt: String,
    /// Maximum number of new tokens (generation also stops at end-of-sequence).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Sample among the k most likely tokens instead of greedy decoding.
    #[arg(long)]
    top_k: Option<usize>,
    /// Seed for top-k sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let tok = &loaded.tokenizer;
    let ids = tok.encode(&args.prompt)?;
    let sampling = match args.top_k {
        Some(k) => Sampling::TopK { k, seed: args.seed },
        None => Sampling::Greedy,
    };
    eprintln!(
        "{} on {} ({} prompt tokens)",
        loaded.source.name,
        describe(&loaded),
        ids.len()
    );
    let mut shown = 0usize;
    let mut text_ids: Vec<u32> = vec![];
    let out = with_model!(&loaded.model, m => pollster::block_on(generate(m, &ids, args.max_tokens, sampling, |id| {
        // Stream text as it arrives, decoding the whole continuation so multi-byte characters
        // split across tokens print correctly.
        text_ids.push(id);
        if let Ok(text) = tok.decode(&text_ids)
            && text.len() > shown
            && text.is_char_boundary(shown)
        {
            print!("{}", &text[shown..]);
            shown = text.len();
            let _ = std::io::stdout().flush();
        }
    })))?;
    println!();
    if out.stopped_at_eos {
        eprintln!("(stopped at end-of-sequence)");
    }
    println!("\ntop-5 next-token probabilities after the prompt:");
    for (rank, (id, p)) in out.top5_first.iter().enumerate() {
        println!(
            "  {}. {:<16} p = {:.4}  (id {id})",
            rank + 1,
            format!("{:?}", tok.decode(&[*id])?),
            p
        );
    }
    Ok(())
}

/// "cpu (2 threads)" or the adapter.
pub fn describe(loaded: &super::common::Loaded) -> String {
    with_model!(&loaded.model, m => crate::Backend::describe(m.backend()))
}
