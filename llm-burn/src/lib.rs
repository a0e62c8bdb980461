//! llm-burn: Llama-family language models for this project, in four rooms.
//!
//! - [`model`]: the decoder ([`Decoder`], generic over burn's `Backend`; Llama and Qwen2 through
//!   one [`Architecture`] table), its [`ModelConfig`], the weight types ([`Dtype`]), the
//!   [`KvCache`] passed into [`Decoder::forward`] ([`KvCache::repeat`] shares a prefix across
//!   rows, [`KvCache::select_rows`] forks rows), head outputs (the input of `o_proj`) captured
//!   and steered per row ([`pas_core::Steerable`]), LoRA adapters, loading, and
//!   [`model::generate`]: seeded sampling and a [`Batcher`] that requests join and leave while
//!   it runs (continuous batching), each row with its own steering. Under autodiff on the
//!   CPU, quantized weights are frozen graph nodes ([`model::frozen`]): the engine's products
//!   forward, the transposed product through the same blocks backward, so LoRA trains over a
//!   GGUF file's blocks.
//! - [`formats`]: model files. The GGUF reader and writer, a GGUF file read as a model
//!   ([`formats::gguf_model`]: every dtype loads from it, the configuration from its
//!   metadata), the GGUF ↔ Hugging Face name table, the Hugging Face folder and its float32
//!   copy, safetensors files, requantizing a file, a model folder's identity.
//! - [`quant`]: quantized weights from the ground floor up: ggml's types, dequantization,
//!   quantization, the block matrix and integer products on a GGUF file's Q4_K/Q6_K/Q8_0
//!   blocks as llama.cpp computes them.
//! - [`host`]: CPU kernels on plain buffers (norms, RoPE, attention over a shared prefix, the
//!   gated activation) that the model runs on the CPU backend; other backends (CUDA,
//!   autodiff) run the same steps as tensor operations ([`Kernels`]).
//!
//! Beside them: [`PromptEncoder`] (`tokenizer.json` plus the model's chat template, rendered
//! as transformers renders it), and the test models ([`tiny`], [`random`]).
//!
//! The rooms depend downwards: `model` on `formats`, `quant` and `host`; `formats` on `quant`
//! (the types its tensors are stored in); `quant` and `host` on nothing here. One edge goes
//! up, on purpose: `formats` builds a [`ModelConfig`] (`model::config`), because a GGUF file's
//! metadata is a configuration and the loader needs it typed.
//!
//! On the CPU, give the program an allocator that keeps freed buffers for reuse (`xtask` uses
//! mimalloc): with glibc's, every forward pass pays page faults on fresh pages for its large
//! activations, about 20% of a 1,024-token prefill.
//!
//! # Example
//!
//! ```no_run
//! use llm_burn::{CpuBackend, ForwardOptions, Decoder, PromptEncoder};
//!
//! let dir = std::path::Path::new(".cache/models/SmolLM2-135M-Instruct");
//! let model = Decoder::<CpuBackend>::load(dir, &Default::default())?;
//! let prompts = PromptEncoder::from_dir(dir)?;
//! let ids = prompts.encode_chat("You are a helpful, honest and concise assistant.", "Hello!", "")?;
//! let mut cache = model.new_cache();
//! let out = model.forward(&[&ids], &mut cache, ForwardOptions::default())?;
//! println!("{:?}", out.logits.dims()); // [1, 49152]
//! # Ok::<(), llm_burn::Error>(())
//! ```

pub mod chat;
pub mod error;
pub mod formats;
pub mod host;
pub mod model;
pub mod quant;
pub mod random;
pub mod tiny;

pub use chat::{ChatTemplate, Message, PromptEncoder, TextStream};
pub use error::{Error, Result};
pub use model::cache::KvCache;
pub use model::config::{Architecture, ModelConfig};
pub use model::dtype::Dtype;
pub use model::generate::{Batcher, Emitted, Finish, Generation, Sampler, Sampling};
pub use model::lora::{Lora, LoraSpec, Target};
pub use model::{ForwardOptions, Kernels, Decoder, LoraPass, OProjBias, Output};

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
    let weights = ["model.safetensors", "model.safetensors.index.json", formats::GGUF_FILE].iter().any(|f| dir.join(f).is_file());
    dir.join("tokenizer.json").is_file() && weights
}

/// The CPU backend used by default (burn's `flex`).
pub type CpuBackend = burn_flex::Flex;

/// The CUDA backend (with the `cuda` feature).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
