//! Small tables of strings (the item key) read from CSV or Excel, and a panic guard for
//! third-party parsers.

use std::path::Path;

use calamine::{Data, Reader};
use polars::prelude::*;

use crate::error::{Error, Result};

/// A header and rows of cells, all as text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cells {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Runs a third-party parser and turns a panic into [`Error::Malformed`]: input data must
/// never crash the program, whatever a dependency does with it.
pub(crate) fn guard<T>(path: &Path, format: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the parser failed".to_owned());
            Err(Error::malformed(path, format, msg))
        }
    }
}

/// Fails with [`Error::Empty`] when the file has no bytes (or only whitespace).
pub(crate) fn check_not_empty(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() == 0 {
        return Err(Error::Empty { path: path.to_owned() });
    }
    if meta.len() < 64 {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::Empty { path: path.to_owned() });
        }
    }
    Ok(())
}

/// Reads a small CSV file with a header row, every cell as a string.
pub(crate) fn read_string_table(path: &Path) -> Result<Cells> {
    check_not_empty(path)?;
    let df = guard(path, "CSV", || {
        CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .try_into_reader_with_file_path(Some(path.to_owned()))
            .and_then(|r| r.finish())
            .map_err(|e| Error::malformed(path, "CSV", e))
    })?;
    let header: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let mut rows = vec![Vec::with_capacity(header.len()); df.height()];
    for col in df.columns() {
        let s = col.as_materialized_series();
        let ca = s.str().map_err(|e| Error::malformed(path, "CSV", e))?;
        for (row, v) in rows.iter_mut().zip(ca.iter()) {
            row.push(v.unwrap_or("").to_owned());
        }
    }
    Ok(Cells { header, rows })
}

/// Reads the first worksheet of an Excel file (`.xls` or `.xlsx`): the first row is the header.
pub(crate) fn read_excel_table(path: &Path) -> Result<Cells> {
    check_not_empty(path)?;
    guard(path, "XLS", || {
        let mut book = calamine::open_workbook_auto(path).map_err(|e| Error::malformed(path, "XLS", e))?;
        let range = book
            .worksheet_range_at(0)
            .ok_or_else(|| Error::Empty { path: path.to_owned() })?
            .map_err(|e| Error::malformed(path, "XLS", e))?;
        let mut rows = range.rows().map(|r| r.iter().map(cell_text).collect::<Vec<_>>());
        let header = rows.next().ok_or_else(|| Error::Empty { path: path.to_owned() })?;
        // Trailing blank rows are formatting, not data.
        let mut rows: Vec<Vec<String>> = rows.collect();
        while rows.last().is_some_and(|r| r.iter().all(String::is_empty)) {
            rows.pop();
        }
        Ok(Cells { header, rows })
    })
}

/// A cell as the text a CSV export would hold (integral floats without a fraction).
fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_string(),
    }
}
