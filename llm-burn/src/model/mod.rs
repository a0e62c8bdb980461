//! The decoder, one for every architecture of [`config::Architecture`]: its configuration,
//! the weight types ([`dtype`]), the KV cache, the forward pass over shared prefixes with
//! steering and LoRA, loading (safetensors files, or the GGUF file for every dtype) and
//! generation.

pub mod cache;
pub mod config;
mod decoder;
pub mod dtype;
mod forward;
pub mod frozen;
pub mod generate;
mod linear;
mod load;
pub mod lora;
mod steerable;

pub use decoder::*;
#[cfg(test)]
mod testbed;
