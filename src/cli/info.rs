//! `nse info`: architecture, tensors, and the GPU adapter with its limits.

use clap::Args;

use super::common::ModelArgs;
use crate::Result;
use crate::gpu::GpuBackend;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let host = args.model.load_host()?;
    let c = &host.config;
    let s = &host.source;
    println!("model        {} ({}, {} bytes)", s.name, s.format, s.bytes);
    println!("sha256       {}", s.sha256);
    println!(
        "architecture {}: {} layers, d_model {}, d_ff {}, {} query / {} kv heads of {}",
        c.arch.name(),
        c.n_layers,
        c.d_model,
        c.d_ff,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim
    );
    let (positions, norm) = if c.arch.is_gpt2() {
        ("learned positions".to_string(), "LayerNorm")
    } else {
        (format!("rope theta {}", c.rope_theta), "RMSNorm")
    };
    println!(
        "             vocab {}, context {}, {positions}, {norm} eps {:e}, tied embeddings {}",
        c.vocab_size, c.max_ctx, c.rms_eps, c.tie_embeddings
    );
    println!(
        "             bos {:?}, eos {:?}, add bos {}",
        c.bos_id, c.eos_id, c.add_bos
    );
    match &c.rope_scaling {
        Some(crate::model::RopeScaling::Llama3 {
            factor,
            original_max_position_embeddings,
            ..
        }) => println!(
            "             rope scaling llama3: factor {factor}, original context \
             {original_max_position_embeddings}"
        ),
        Some(crate::model::RopeScaling::Factors(f)) => {
            println!("             rope scaling: per-frequency factors {f:?} (rope_freqs.weight)")
        }
        None => {}
    }
    println!("parameters   {}", c.n_params());
    let types: Vec<String> = s
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{n} × {t}"))
        .collect();
    println!("tensors      {} ({})", s.tensor_count, types.join(", "));
    match pollster::block_on(GpuBackend::new()) {
        Ok(gpu) => {
            println!("adapter      {}", gpu.describe_adapter());
            println!("gpu path     {}", gpu.path_description());
            for (name, value) in gpu.limit_table() {
                println!("  {name:<36} {value}");
            }
        }
        Err(e) => println!("adapter      none: {e}"),
    }
    Ok(())
}
