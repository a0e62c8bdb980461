//! `quantize`: a model folder with its GGUF file requantized to `q4_k` or `q8_0`
//! ([`llm_burn::formats::requantize`]), beside the original's config, tokenizer and float weights
//! (hard links): for `--dtype file` here and for llama.cpp on the same blocks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use llm_burn::formats::GGUF_FILE;
use llm_burn::quant::TensorType;

/// Arguments of `quantize`.
#[derive(Args)]
pub struct QuantizeArgs {
    /// A pinned model by name (fetched if missing) or a model folder with a `model.gguf`
    /// (default: smollm2-135m-instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The weight type of the matrices: `q4_k` (Q8_0 where rows are not whole 256-blocks) or `q8_0`.
    #[arg(long = "type", value_parser = ["q4_k", "q8_0"])]
    kind: String,
    /// Output folder (default: the model's folder name with `-q4_k` or `-q8_0`, beside it).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `quantize`; prints the new folder.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let src = crate::model::resolve(&args.model)?;
    let gguf = src.join(GGUF_FILE);
    if !gguf.is_file() {
        bail!("{} has no {GGUF_FILE} to requantize", src.display());
    }
    let kind = if args.kind == "q4_k" { TensorType::Q4_K } else { TensorType::Q8_0 };
    let out = args.out.clone().unwrap_or_else(|| {
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        src.with_file_name(format!("{name}-{}", args.kind))
    });
    if out.canonicalize().ok() == src.canonicalize().ok() {
        bail!("--out is the model's own folder: {}", out.display());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    link_others(&src, &out)?;
    eprintln!("requantizing {} to {} ...", gguf.display(), args.kind);
    let t = Instant::now();
    let plan = llm_burn::formats::requantize::requantize(&gguf, &out.join(GGUF_FILE), kind, &mut |done, total| {
        if done % 32 == 0 || done == total {
            eprintln!("  {done}/{total} tensors");
        }
    })?;
    let bytes: usize = plan.iter().map(|p| p.bytes()).sum();
    let types = llm_burn::formats::gguf::type_counts(plan.iter().filter(|p| p.shape.len() == 2).map(|p| p.kind));
    eprintln!("done in {:.1} s: {:.1} MB of tensors; matrices {types}", t.elapsed().as_secs_f64(), bytes as f64 / 1e6);
    println!("{}", out.display());
    Ok(())
}

/// Every file of `src` but its GGUF file, hard-linked into `out` (copied where links fail).
fn link_others(src: &Path, out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else { continue };
        if !path.is_file() || name == GGUF_FILE || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let to = out.join(name);
        std::fs::remove_file(&to).ok();
        if std::fs::hard_link(&path, &to).is_err() {
            std::fs::copy(&path, &to).with_context(|| format!("copying {} to {}", path.display(), to.display()))?;
        }
    }
    Ok(())
}
