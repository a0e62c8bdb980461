//! llm-burn: Llama-family language models for this project.
//!
//! - [`Llama`]: the decoder, generic over burn's `Backend`, loaded from a Hugging Face
//!   folder; immutable, with the KV cache and the steering passed into
//!   [`Llama::forward`]; head outputs (the input of `o_proj`) captured and steered per row.
//!   It implements [`pas_core::Steerable`]; its capture runs prefixes shared by prompts once.
//! - [`host`]: CPU kernels on plain buffers (norms, RoPE, attention over a shared prefix, the
//!   gated activation) that the model runs on the CPU backend; other backends (CUDA,
//!   autodiff) run the same steps as tensor operations ([`Kernels`]).
//! - [`KvCache`]: the cache passed into `forward`; [`KvCache::repeat`] shares a prefix across
//!   rows without copying it, [`KvCache::select_rows`] forks rows.
//! - [`generate`]: seeded sampling and a [`Batcher`] that requests join and leave while it
//!   runs (continuous batching), each row with its own steering.
//! - [`PromptEncoder`]: `tokenizer.json` plus the model's chat template, rendered as
//!   transformers renders it.
//! - [`qmatrix`] and [`intdot`]: weights kept quantized in memory, multiplied by dequantized
//!   panels or, for a GGUF file's Q4_K/Q6_K/Q8_0 blocks, in integers as llama.cpp does.
//! - [`gguf`] and [`convert`]: the embedded default model (SmolLM2-135M-Instruct, a GGUF
//!   file) converted into a Hugging Face folder (dequantised, Q/K rows un-permuted,
//!   tokenizer rebuilt).
//!
//! On the CPU, give the program an allocator that keeps freed buffers for reuse (`xtask` uses
//! mimalloc): with glibc's, every forward pass pays page faults on fresh pages for its large
//! activations, about 20% of a 1,024-token prefill.
//!
//! # Example
//!
//! ```no_run
//! use llm_burn::{CpuBackend, ForwardOptions, Llama, PromptEncoder};
//!
//! let dir = std::path::Path::new(".cache/models/SmolLM2-135M-Instruct");
//! let model = Llama::<CpuBackend>::load(dir, &Default::default())?;
//! let prompts = PromptEncoder::from_dir(dir)?;
//! let ids = prompts.encode_chat("You are a helpful, honest and concise assistant.", "Hello!", "")?;
//! let mut cache = model.new_cache();
//! let out = model.forward(&[&ids], &mut cache, ForwardOptions::default())?;
//! println!("{:?}", out.logits.dims()); // [1, 49152]
//! # Ok::<(), llm_burn::Error>(())
//! ```

pub mod cache;
pub mod chat;
pub mod config;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod file_weights;
mod forward;
pub mod generate;
pub mod gguf;
pub mod gguf_model;
pub mod gguf_write;
pub mod host;
pub mod identity;
pub mod intdot;
mod linear;
pub mod lora;
pub mod model;
pub mod qmatrix;
pub mod quant;
pub mod quantize;
mod steerable;
pub mod random;
pub mod requantize;
pub mod tiny;
pub mod weights;

pub use chat::{ChatTemplate, Message, PromptEncoder, TextStream};
pub use generate::{Batcher, Emitted, Finish, Generation, Sampler, Sampling};
pub use config::{Architecture, LlamaConfig};
pub use dtype::Dtype;
pub use error::{Error, Result};
pub use lora::{Lora, LoraSpec, Target};
pub use cache::KvCache;
pub use model::{ForwardOptions, Kernels, Llama, LoraPass, OProjBias, Output};

/// The embedded default model's folder when it has been fetched: `LLM_MODEL_DIR` if set, else
/// the workspace cache `.cache/models/SmolLM2-135M-Instruct` that `cargo xtask fetch-model`
/// fills. `None` when the folder holds no `tokenizer.json` or no weights (`model.safetensors` or
/// `model.gguf`; tests and benches skip then).
pub fn default_model_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("LLM_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/SmolLM2-135M-Instruct"));
    is_model_dir(&dir).then_some(dir)
}

/// Whether `dir` holds a model this crate loads: `tokenizer.json` and weights
/// (`model.safetensors` or its shards, or `model.gguf`).
pub fn is_model_dir(dir: &std::path::Path) -> bool {
    let weights = ["model.safetensors", "model.safetensors.index.json", file_weights::GGUF_FILE].iter().any(|f| dir.join(f).is_file());
    dir.join("tokenizer.json").is_file() && weights
}

/// The CPU backend used by default (burn's `flex`).
pub type CpuBackend = burn_flex::Flex;

/// The CUDA backend (with the `cuda` feature).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
