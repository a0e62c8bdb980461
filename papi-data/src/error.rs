//! The crate's error type: every variant names where the problem is.

use std::path::PathBuf;

/// Everything that can go wrong while reading, validating or scoring PAPI data.
///
/// Each variant carries its context: the file, the row (for records, the `case` id), the
/// column or field, and what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A download failed or brought the wrong bytes.
    #[error("{url}: {message}")]
    Download {
        /// What was fetched.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A file holds no data rows.
    #[error("{path}: the file is empty (no data rows)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be parsed in its format at all (bad CSV, JSON, Parquet or XLS).
    #[error("{path}: not a valid {format} file: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The format it was read as (`CSV`, `JSON`, `Parquet`, `XLS`).
        format: &'static str,
        /// What the parser said.
        message: String,
    },
    /// A records JSON file is not an array of objects.
    #[error("{path}: expected a JSON array of subject objects, found {found}")]
    JsonShape {
        /// The file.
        path: PathBuf,
        /// What the top level (or first element) was.
        found: String,
    },
    /// The file extension does not name a supported format.
    #[error("{path}: unsupported file type (expected one of: {expected})")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The extensions that are supported here.
        expected: &'static str,
    },
    /// A required column is absent.
    #[error("{path}: missing column `{column}`")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
    },
    /// An item-key row is malformed.
    #[error("{path}: row {row}, column `{column}`: {message} (found {value:?})")]
    ItemKey {
        /// The file.
        path: PathBuf,
        /// 1-based data row (the header is row 0).
        row: usize,
        /// The column.
        column: &'static str,
        /// The offending cell.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The item key as a whole is inconsistent (duplicate or missing item numbers).
    #[error("{path}: {message}")]
    Inventory {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A cell of a subject record is invalid.
    #[error("{path}: row {row} (case {case}), column `{column}`: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based data row.
        row: usize,
        /// The subject's `case` id, or `?` when it could not be read.
        case: String,
        /// The column.
        column: String,
        /// What is wrong with the cell.
        message: String,
    },
    /// Two rows share a `case` id.
    #[error("{path}: duplicate case id {case} in rows {first_row} and {row}")]
    DuplicateCase {
        /// The file.
        path: PathBuf,
        /// The repeated id.
        case: i64,
        /// 1-based row of its first occurrence.
        first_row: usize,
        /// 1-based row of the repetition.
        row: usize,
    },
    /// A split file is malformed or names items the inventory does not have.
    #[error("{path}: {message}")]
    Split {
        /// The file (or `<custom>` for splits built in code).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A PAPI folder does not hold what is needed (no records file, or several).
    #[error("{path}: {message}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An argument given in code is invalid (zero folds, more folds than items, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, format: &'static str, message: impl ToString) -> Self {
        Error::Malformed { path: path.into(), format, message: message.to_string() }
    }
}
