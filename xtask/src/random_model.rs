//! `random-model`: a seeded random model with a real model's shapes, tokenizer and chat
//! template (no weights to download), for shape tests and GPU measurements.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use llm_burn::random::{Shape, write_model};

/// Arguments of `random-model`.
#[derive(Args)]
pub struct RandomModelArgs {
    /// The model whose shapes to copy (`llama-3-8b`), or `tiny` (the tests' tiny random model:
    /// 2 layers of width 16, a byte-level tokenizer, ChatML).
    #[arg(long, default_value = "llama-3-8b")]
    like: String,
    /// Layers (default: the model's own, 32 for Llama-3-8B: about 16 GB of bf16 weights).
    #[arg(long)]
    layers: Option<usize>,
    /// Llama-3.1's RoPE scaling (factor 8, original context 8,192).
    #[arg(long)]
    rope_scaling: bool,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `random-model`.
pub fn run(args: &RandomModelArgs) -> Result<()> {
    if args.like == "tiny" {
        std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        llm_burn::tiny::write_model(&args.out, args.seed)?;
        println!("{}", args.out.display());
        return Ok(());
    }
    let mut shape = Shape::like(&args.like)?;
    if let Some(l) = args.layers {
        anyhow::ensure!(l >= 1, "--layers must be at least 1");
        shape = shape.with_layers(l);
    }
    shape.rope_scaling = args.rope_scaling;
    eprintln!("writing {} ({} layers, {:.2} B parameters, bf16) to {}", args.like, shape.layers, shape.parameters() as f64 / 1e9, args.out.display());
    let t = Instant::now();
    write_model(&args.out, &shape, args.seed).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("done in {:.1} s", t.elapsed().as_secs_f64());
    println!("{}", args.out.display());
    Ok(())
}
