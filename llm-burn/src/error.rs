//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in llm-burn. Each variant carries its context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A GGUF file is malformed or uses something this reader does not support.
    #[error("{path}: GGUF: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A required metadata key is missing or has the wrong type.
    #[error("{path}: metadata `{key}`: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor is missing, unused or of the wrong shape.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong (with both shapes where relevant).
        message: String,
    },
    /// `config.json` is malformed or describes an unsupported model.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An argument is invalid (empty prompt, token id out of range, mismatched batch).
    #[error("invalid input: {0}")]
    Input(String),
    /// The chat template is missing, malformed or failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// The tokenizer could not be built, loaded or run.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Writing a safetensors file failed.
    #[error("{path}: safetensors: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
