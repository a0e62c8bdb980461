//! `random-model`: a seeded random model with a real model's shapes, tokenizer and chat
//! template (no weights to download), for shape tests and GPU measurements.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use llm_burn::quant::TensorType;
use llm_burn::random::{RandomWeights, Shape, write_model_as};

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
    /// How the weights are written: `bf16` (safetensors shards, a Hugging Face folder) or
    /// `q4_k` / `q8_0` (one GGUF file, `model.gguf`, for `--dtype file`: about 4.6 GB for
    /// Llama-3-8B as Q4_K against 16 GB of bf16).
    #[arg(long, default_value = "bf16", value_parser = ["bf16", "q4_k", "q8_0"])]
    weights: String,
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
    let weights = match args.weights.as_str() {
        "q4_k" => RandomWeights::Gguf(TensorType::Q4_K),
        "q8_0" => RandomWeights::Gguf(TensorType::Q8_0),
        _ => RandomWeights::Bf16,
    };
    eprintln!("writing {} ({} layers, {:.2} B parameters, {}) to {}", args.like, shape.layers, shape.parameters() as f64 / 1e9, args.weights, args.out.display());
    let t = Instant::now();
    write_model_as(&args.out, &shape, args.seed, weights).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("done in {:.1} s", t.elapsed().as_secs_f64());
    println!("{}", args.out.display());
    Ok(())
}
