//! llm-burn integration tests: one binary.
#![allow(clippy::print_stderr)] // tests say on stderr when they skip for lack of the model

/// The backend the tests run on: CUDA with `--features cuda` (parity on the GPU), else the CPU.
#[cfg(feature = "cuda")]
pub type TestBackend = llm_burn::CudaBackend;
/// The backend the tests run on: CUDA with `--features cuda` (parity on the GPU), else the CPU.
#[cfg(not(feature = "cuda"))]
pub type TestBackend = llm_burn::CpuBackend;

mod chat;
mod default_model;
mod file_dtype;
mod generation;
mod gguf_format;
mod gguf_only;
mod kernels;
mod loading;
mod npy;
mod quant;
mod quantized;
mod pinned_models;
mod q4_k;
mod random_model;
mod requantize;
mod tiny_model;
