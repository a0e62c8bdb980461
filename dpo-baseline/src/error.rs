//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while building preferences, training or storing adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range.
    #[error("DPO setting `{field}`: {message}")]
    Config {
        /// The setting's name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The training data cannot be used.
    #[error("preference data: {0}")]
    Data(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] llm_burn::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An adapter file is malformed or does not fit the model.
    #[error("{path}: {message}")]
    Adapter {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the tensor or metadata field).
        message: String,
    },
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
