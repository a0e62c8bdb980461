//! The crate's error type.

use std::path::PathBuf;

use crate::geometry::{Geometry, HeadId};

/// Everything that can go wrong in pas-core. Each variant carries its context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two things that must share a model geometry do not.
    #[error("geometry mismatch in {what}: expected {expected}, found {found}")]
    GeometryMismatch {
        /// What was being combined or loaded.
        what: String,
        /// The geometry required.
        expected: Geometry,
        /// The geometry found.
        found: Geometry,
    },
    /// A saved intervention belongs to another model.
    #[error("{path}: intervention was fitted on model {found_model:?} (config {found_hash}), not {expected_model:?} (config {expected_hash})")]
    ModelMismatch {
        /// The file.
        path: PathBuf,
        /// The model id required.
        expected_model: String,
        /// Its config hash.
        expected_hash: String,
        /// The model id in the file.
        found_model: String,
        /// The config hash in the file.
        found_hash: String,
    },
    /// A buffer or vector has the wrong length.
    #[error("{what}: expected length {expected}, found {found}")]
    Shape {
        /// Which buffer.
        what: String,
        /// Required length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// A head outside the geometry.
    #[error("head {head} is outside the geometry {geometry}")]
    HeadOutOfRange {
        /// The head.
        head: HeadId,
        /// The geometry.
        geometry: Geometry,
    },
    /// An intervention value is invalid (non-unit direction, negative sigma, repeated head).
    #[error("invalid intervention: {0}")]
    Intervention(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A saved intervention file is malformed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
