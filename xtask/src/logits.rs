//! `logits`: the next-token logits of a chat prompt (DESIGN contract).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use llm_burn::{ForwardOptions, Llama, PromptEncoder};

/// The backend, picked here by cargo feature: CUDA with `--features cuda`, else the CPU.
#[cfg(feature = "cuda")]
pub type Backend = llm_burn::CudaBackend;
/// The backend, picked here by cargo feature: CUDA with `--features cuda`, else the CPU.
#[cfg(not(feature = "cuda"))]
pub type Backend = llm_burn::CpuBackend;

/// Arguments of `logits`.
#[derive(Args)]
pub struct LogitsArgs {
    /// A pinned model by name (`fetch-model --model`; fetched if missing) or a model folder (default: smollm2-135m-instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// System prompt.
    #[arg(long, default_value = "You are a helpful, honest and concise assistant.")]
    system: String,
    /// User message.
    #[arg(long)]
    user: String,
    /// Text appended after the assistant's generation prompt (e.g. "Option").
    #[arg(long, default_value = "")]
    prefill: String,
    /// How many of the largest logits to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Weight type: `f32`, `f16`, `bf16`, `q8_0` or `q4_k` (kept quantized in memory; CPU) or `file` (the GGUF file's own blocks: Q4_K, Q6_K, ...; CPU) (default:
    /// f32 on the CPU, bf16 on CUDA).
    #[arg(long)]
    dtype: Option<llm_burn::Dtype>,
}

/// The weight type asked for, else the device's default (bf16 on CUDA, f32 on the CPU).
pub fn dtype_or_default(dtype: Option<llm_burn::Dtype>) -> llm_burn::Dtype {
    dtype.unwrap_or(llm_burn::Dtype::default_for(cfg!(feature = "cuda")))
}

/// Runs `logits`.
pub fn run(args: &LogitsArgs) -> Result<()> {
    let dir = crate::model::resolve(&args.model)?;
    let encoder = PromptEncoder::from_dir(&dir).with_context(|| format!("reading the tokenizer and chat template of {}", dir.display()))?;
    let ids = encoder.encode_chat(&args.system, &args.user, &args.prefill)?;
    let device = Default::default();
    let model = Llama::<Backend>::load_as(&dir, &device, dtype_or_default(args.dtype)).with_context(|| format!("loading {}", dir.display()))?;
    let mut cache = model.new_cache();
    let out = model.forward(&[&ids], &mut cache, ForwardOptions::default())?;
    let logits = out.logits.into_data().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let top: Vec<serde_json::Value> = order.iter().take(args.top).map(|&i| serde_json::json!({"id": i, "logit": logits[i]})).collect();
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &serde_json::json!({"input_ids": ids, "top": top}))?;
    writeln!(stdout)?;
    Ok(())
}
