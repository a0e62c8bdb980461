//! llm-burn: Llama-family language models for this project.
//!
//! Today it holds the conversion of the embedded default model (SmolLM2-135M-Instruct, a
//! GGUF file) into a Hugging Face folder: a GGUF reader with dequantisation ([`gguf`]) and
//! the converter ([`convert`]), which undoes llama.cpp's Q/K row permutation and rebuilds
//! the byte-level BPE tokenizer. The transformer on burn 0.21 (loading, KV cache, head
//! capture and steering) is still to come: see the llm-burn issue.
//!
//! # Example
//!
//! ```no_run
//! let out = llm_burn::convert::gguf_to_hf(
//!     std::path::Path::new("SmolLM2-135M-Instruct.Q4_1.gguf"),
//!     std::path::Path::new(".cache/models/SmolLM2-135M-Instruct"),
//! )?;
//! println!("{} tensors, {} parameters", out.tensors, out.parameters);
//! # Ok::<(), llm_burn::Error>(())
//! ```

pub mod chat;
pub mod config;
pub mod convert;
pub mod error;
pub mod gguf;
pub mod model;
mod steerable;
pub mod weights;

pub use chat::{ChatTemplate, Message, PromptEncoder};
pub use config::LlamaConfig;
pub use error::{Error, Result};
pub use model::{ForwardOptions, KvCache, Llama, OProjBias, Output};

/// The CPU backend used by default (burn's `flex`).
pub type CpuBackend = burn_flex::Flex;
