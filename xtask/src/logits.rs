//! `logits`: the next-token logits of a chat prompt (DESIGN contract).

use std::io::Write;

use anyhow::Result;
use clap::Args;
use llm_burn::ForwardOptions;


/// Arguments of `logits`.
#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: crate::model::ModelArgs,
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
}

/// Runs `logits`.
pub fn run(args: &LogitsArgs) -> Result<()> {
    let (_, encoder, model) = args.model.load()?;
    let ids = encoder.encode_chat(&args.system, &args.user, &args.prefill)?;
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
