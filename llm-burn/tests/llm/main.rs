//! llm-burn integration tests: one binary.
#![allow(clippy::print_stderr)] // tests say on stderr when they skip for lack of the model

mod chat;
mod default_model;
mod gguf_format;
mod npy;
mod tiny_model;
