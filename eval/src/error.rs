//! The evaluation's error type.

use std::path::PathBuf;

/// Everything that can go wrong in an evaluation run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or validating PAPI data.
    #[error(transparent)]
    Data(#[from] papi_data::Error),
    /// Fitting or applying an intervention.
    #[error(transparent)]
    Pas(#[from] pas_core::Error),
    /// Loading or running the model, or encoding a prompt.
    #[error(transparent)]
    Model(#[from] llm_burn::Error),
    /// Training the DPO baseline.
    #[error(transparent)]
    Dpo(#[from] dpo_baseline::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file has the wrong content.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (naming the record and field).
        message: String,
    },
    /// An invalid setting.
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File { path: path.into(), message: message.into() }
    }
}

/// The evaluation's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
