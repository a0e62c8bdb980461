//! Model files: the GGUF reader and writer, a GGUF file read as a model ([`gguf_model`]), the
//! GGUF ↔ Hugging Face name table, conversion into a Hugging Face folder, safetensors files,
//! re-encoding a GGUF file, and a model folder's identity.

pub mod convert;
pub mod gguf;
pub mod gguf_model;
pub mod gguf_write;
pub mod identity;
pub(crate) mod names;
pub mod requantize;
pub mod weight_files;

pub use gguf_model::GGUF_FILE;
