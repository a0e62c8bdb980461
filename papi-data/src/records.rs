//! Subject records in the PAPI/Johnson layout (`case`, demographics, `i1`..`iN`), read from
//! and written to JSON arrays, CSV and Parquet with polars.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::table::{check_not_empty, guard};

/// The largest valid stored answer (answers are 1..=5, 0 = missing).
pub const MAX_ANSWER: u8 = 5;

/// Demographic fields of a record. They are carried along, not validated: a missing column
/// or an unreadable cell gives `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Demographics {
    /// Sex code (1 = male, 2 = female in the Johnson archive).
    pub sex: Option<i64>,
    /// Age in years.
    pub age: Option<i64>,
    /// Second of the submission time.
    pub sec: Option<i64>,
    /// Minute of the submission time.
    pub min: Option<i64>,
    /// Hour of the submission time.
    pub hour: Option<i64>,
    /// Day of month of the submission.
    pub date: Option<i64>,
    /// Month of the submission.
    pub month: Option<i64>,
    /// Year of the submission (years since 1900 in the archive).
    pub year: Option<i64>,
    /// Country name.
    pub country: Option<String>,
}

/// The integer demographic columns, in record order.
const INT_FIELDS: [&str; 8] = ["sex", "age", "sec", "min", "hour", "date", "month", "year"];

impl Demographics {
    fn int_field_mut(&mut self, name: &str) -> Option<&mut Option<i64>> {
        Some(match name {
            "sex" => &mut self.sex,
            "age" => &mut self.age,
            "sec" => &mut self.sec,
            "min" => &mut self.min,
            "hour" => &mut self.hour,
            "date" => &mut self.date,
            "month" => &mut self.month,
            "year" => &mut self.year,
            _ => return None,
        })
    }

    fn int_field(&self, name: &str) -> Option<i64> {
        match name {
            "sex" => self.sex,
            "age" => self.age,
            "sec" => self.sec,
            "min" => self.min,
            "hour" => self.hour,
            "date" => self.date,
            "month" => self.month,
            "year" => self.year,
            _ => None,
        }
    }
}

/// One person's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// The subject id (`case`).
    pub case: i64,
    /// Demographics, as released.
    pub demographics: Demographics,
    /// Stored answers: `answers[n - 1]` is the value of column `in`, 0..=5 (0 = missing).
    /// Reverse-keyed items are stored reflected (see [`crate::keying`]).
    pub answers: Vec<u8>,
}

impl Subject {
    /// The stored value of item `number` (1-based); 0 (missing) for an unknown item.
    pub fn stored(&self, number: u16) -> u8 {
        usize::from(number)
            .checked_sub(1)
            .and_then(|i| self.answers.get(i))
            .copied()
            .unwrap_or(crate::keying::MISSING)
    }
}

/// A record file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// A JSON array of objects (`.json`).
    Json,
    /// Comma-separated values with a header (`.csv`).
    Csv,
    /// Apache Parquet (`.parquet`).
    Parquet,
}

impl RecordFormat {
    /// The format named by a path's extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "json" => Ok(RecordFormat::Json),
            "csv" => Ok(RecordFormat::Csv),
            "parquet" | "pq" => Ok(RecordFormat::Parquet),
            _ => Err(Error::UnsupportedFormat { path: path.to_owned(), expected: ".json, .csv, .parquet" }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            RecordFormat::Json => "JSON",
            RecordFormat::Csv => "CSV",
            RecordFormat::Parquet => "Parquet",
        }
    }
}

/// Reads and validates subject records (format chosen by extension).
///
/// Every item of `inventory` must have its `iN` column; every answer must be an integer in
/// 0..=5; `case` ids must be integers and unique. Errors name the file, the row (1-based,
/// with its `case` id) and the column.
pub fn read_records(path: impl AsRef<Path>, inventory: &Inventory) -> Result<Vec<Subject>> {
    let path = path.as_ref();
    let format = RecordFormat::from_path(path)?;
    check_not_empty(path)?;
    let df = match format {
        RecordFormat::Json => read_json(path)?,
        RecordFormat::Csv => read_csv(path, inventory)?,
        RecordFormat::Parquet => guard(path, "Parquet", || {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            ParquetReader::new(file).finish().map_err(|e| Error::malformed(path, "Parquet", e))
        })?,
    };
    let subjects = guard(path, format.name(), || subjects_from_frame(path, &df, inventory));
    match (format, subjects) {
        (RecordFormat::Csv, Err(e)) => Err(with_csv_text(path, e)),
        (_, r) => r,
    }
}

/// A CSV cell that failed to parse reads as empty (polars nulls it); names the text the file
/// really holds there, as in "3.5 is not an integer answer 0..5".
fn with_csv_text(path: &Path, e: Error) -> Error {
    let Error::Record { path: p, row, case, column, message } = e else { return e };
    let message = match csv_cell_text(path, row, &column) {
        Some(text) if message.starts_with("empty cell") && !text.trim().is_empty() => {
            let what = if column == "case" { "a case id" } else { "an integer answer 0..5" };
            format!("{} is not {what}", text.trim())
        }
        _ => message,
    };
    Error::Record { path: p, row, case, column, message }
}

/// The text of one cell of a CSV file (1-based data row, column by header name), reading
/// only as far as that row; `None` if the file cannot be read there.
fn csv_cell_text(path: &Path, row: usize, column: &str) -> Option<String> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(File::open(path).ok()?).lines();
    let header = lines.next()?.ok()?;
    let col = split_csv_line(header.trim_start_matches('\u{feff}')).iter().position(|h| h == column)?;
    let line = lines.nth(row - 1)?.ok()?;
    split_csv_line(&line).into_iter().nth(col)
}

/// Splits one CSV line on commas, honouring double-quoted fields ("" inside is a quote).
fn split_csv_line(line: &str) -> Vec<String> {
    let (mut cells, mut cell, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

fn read_json(path: &Path) -> Result<DataFrame> {
    // Check the top-level shape first so that a wrong shape gets a clear message.
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut it = bytes.iter().copied().skip_while(|b| b.is_ascii_whitespace() || *b == 0xEF || *b == 0xBB || *b == 0xBF);
    let describe = |b: Option<u8>| match b {
        Some(b'{') => "an object".to_owned(),
        Some(b'[') => "an array".to_owned(),
        Some(b'"') => "a string".to_owned(),
        Some(b'0'..=b'9' | b'-') => "a number".to_owned(),
        Some(b't' | b'f') => "a boolean".to_owned(),
        Some(b'n') => "null".to_owned(),
        Some(_) => "text that is not JSON".to_owned(),
        None => "nothing".to_owned(),
    };
    let first = it.next();
    if first != Some(b'[') {
        return Err(Error::JsonShape { path: path.to_owned(), found: describe(first) });
    }
    match it.find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b']') => return Err(Error::Empty { path: path.to_owned() }),
        other => {
            return Err(Error::JsonShape { path: path.to_owned(), found: format!("an array of {}", describe(other)) });
        }
    }
    guard(path, "JSON", || {
        JsonReader::new(std::io::Cursor::new(bytes))
            .infer_schema_len(None)
            .finish()
            .map_err(|e| Error::malformed(path, "JSON", e))
    })
}

fn read_csv(path: &Path, inventory: &Inventory) -> Result<DataFrame> {
    // Fix the types of the columns we validate, so that a bad cell anywhere in a large file
    // becomes a null we can report by row and column, rather than a failed type inference.
    let mut overwrite = Schema::default();
    overwrite.with_column("case".into(), DataType::Int64);
    overwrite.with_column("country".into(), DataType::String);
    for name in INT_FIELDS {
        overwrite.with_column(name.into(), DataType::Int64);
    }
    for item in inventory.items() {
        overwrite.with_column(item.column().into(), DataType::Int16);
    }
    guard(path, "CSV", || {
        CsvReadOptions::default()
            .with_has_header(true)
            .with_schema_overwrite(Some(Arc::new(overwrite)))
            .with_ignore_errors(true)
            .try_into_reader_with_file_path(Some(path.to_owned()))
            .and_then(|r| r.finish())
            .map_err(|e| Error::malformed(path, "CSV", e))
    })
}

/// A column's cells as integers, or a description of why a cell is not one.
fn integer_cells(series: &Series) -> std::result::Result<Vec<std::result::Result<i64, String>>, String> {
    let not_int = |v: String| Err(format!("not an integer (found {v})"));
    let empty = || Err("empty cell".to_owned());
    Ok(match series.dtype() {
        dt if dt.is_integer() => {
            let ca = series.cast(&DataType::Int64).map_err(|e| e.to_string())?;
            ca.i64().map_err(|e| e.to_string())?.iter().map(|v| v.map_or_else(empty, Ok)).collect()
        }
        dt if dt.is_float() => {
            let ca = series.cast(&DataType::Float64).map_err(|e| e.to_string())?;
            ca.f64()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|v| match v {
                    None => empty(),
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(f as i64),
                    Some(f) => not_int(f.to_string()),
                })
                .collect()
        }
        DataType::String => series
            .str()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| match v {
                None => empty(),
                Some(s) => s.trim().parse::<i64>().or_else(|_| not_int(format!("{s:?}"))),
            })
            .collect(),
        DataType::Null => (0..series.len()).map(|_| empty()).collect(),
        other => return Err(format!("expected integers, found a column of type {other}")),
    })
}

fn subjects_from_frame(path: &Path, df: &DataFrame, inventory: &Inventory) -> Result<Vec<Subject>> {
    let n = df.height();
    if n == 0 {
        return Err(Error::Empty { path: path.to_owned() });
    }
    let column = |name: &str| df.column(name).ok().map(|c| c.as_materialized_series().clone());
    let missing = |name: &str| Error::MissingColumn { path: path.to_owned(), column: name.to_owned() };
    let record_err = |row: usize, case: String, column: &str, message: String| Error::Record {
        path: path.to_owned(),
        row: row + 1,
        case,
        column: column.to_owned(),
        message,
    };

    // Case ids: integers, unique.
    let case_series = column("case").ok_or_else(|| missing("case"))?;
    let case_cells = integer_cells(&case_series).map_err(|m| record_err(0, "?".into(), "case", m))?;
    let mut cases = Vec::with_capacity(n);
    let mut seen: HashMap<i64, usize> = HashMap::with_capacity(n);
    for (row, cell) in case_cells.into_iter().enumerate() {
        let case = cell.map_err(|m| record_err(row, "?".into(), "case", m))?;
        if let Some(&first) = seen.get(&case) {
            return Err(Error::DuplicateCase { path: path.to_owned(), case, first_row: first + 1, row: row + 1 });
        }
        seen.insert(case, row);
        cases.push(case);
    }
    drop(seen);

    // Every item column present before any cell is checked, so the error names the column.
    let mut item_series = Vec::with_capacity(inventory.len());
    for item in inventory.items() {
        let name = item.column();
        item_series.push(column(&name).ok_or_else(|| missing(&name))?);
    }
    let width = inventory.len();
    let mut answers = vec![vec![0u8; width]; n];
    for (j, (item, series)) in inventory.items().iter().zip(&item_series).enumerate() {
        let name = item.column();
        let cells = integer_cells(series).map_err(|m| record_err(0, cases[0].to_string(), &name, m))?;
        for (row, cell) in cells.into_iter().enumerate() {
            let v = cell.map_err(|m| record_err(row, cases[row].to_string(), &name, format!("{m}; answers must be integers 0..=5")))?;
            if !(0..=i64::from(MAX_ANSWER)).contains(&v) {
                return Err(record_err(row, cases[row].to_string(), &name, format!("answer {v} is out of range 0..=5")));
            }
            answers[row][j] = v as u8;
        }
    }
    drop(item_series);

    // Demographics: carried along; unreadable cells become None.
    let mut demographics = vec![Demographics::default(); n];
    for name in INT_FIELDS {
        if let Some(s) = column(name)
            && let Ok(cells) = integer_cells(&s)
        {
            for (d, cell) in demographics.iter_mut().zip(cells) {
                if let Some(slot) = d.int_field_mut(name) {
                    *slot = cell.ok();
                }
            }
        }
    }
    if let Some(s) = column("country") {
        let s = s.cast(&DataType::String).unwrap_or(s);
        if let Ok(ca) = s.str() {
            for (d, v) in demographics.iter_mut().zip(ca.iter()) {
                d.country = v.map(str::to_owned);
            }
        }
    }

    Ok(cases
        .into_iter()
        .zip(demographics)
        .zip(answers)
        .map(|((case, demographics), answers)| Subject { case, demographics, answers })
        .collect())
}

/// Builds the record table (`case`, demographics, `i1`..`iN`) for `subjects`.
fn frame(subjects: &[Subject]) -> PolarsResult<DataFrame> {
    let width = subjects.first().map_or(0, |s| s.answers.len());
    let mut columns: Vec<Column> = Vec::with_capacity(10 + width);
    columns.push(Column::new("case".into(), subjects.iter().map(|s| s.case).collect::<Vec<i64>>()));
    for name in INT_FIELDS {
        let v: Vec<Option<i64>> = subjects.iter().map(|s| s.demographics.int_field(name)).collect();
        columns.push(Column::new(name.into(), v));
    }
    let country: Vec<Option<&str>> = subjects.iter().map(|s| s.demographics.country.as_deref()).collect();
    columns.push(Column::new("country".into(), country));
    for j in 0..width {
        let v: Vec<i8> = subjects.iter().map(|s| s.answers.get(j).copied().unwrap_or(0) as i8).collect();
        columns.push(Column::new(format!("i{}", j + 1).into(), v));
    }
    DataFrame::new(subjects.len(), columns)
}

/// Writes records in the PAPI layout (format chosen by extension), atomically: the file
/// appears complete or not at all.
pub fn write_records(path: impl AsRef<Path>, subjects: &[Subject]) -> Result<()> {
    let path = path.as_ref();
    let format = RecordFormat::from_path(path)?;
    if let Some(s) = subjects.iter().find(|s| s.answers.len() != subjects[0].answers.len()) {
        return Err(Error::InvalidArgument(format!(
            "subject {} has {} answers, the first subject has {}",
            s.case,
            s.answers.len(),
            subjects[0].answers.len()
        )));
    }
    let mut df = frame(subjects).map_err(|e| Error::malformed(path, format.name(), e))?;
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = std::io::BufWriter::new(file);
    let written = match format {
        RecordFormat::Csv => CsvWriter::new(&mut w).include_header(true).finish(&mut df),
        RecordFormat::Json => JsonWriter::new(&mut w).with_json_format(JsonFormat::Json).finish(&mut df),
        RecordFormat::Parquet => ParquetWriter::new(&mut w).finish(&mut df).map(|_| ()),
    };
    written.map_err(|e| Error::malformed(&tmp, format.name(), e))?;
    let file = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}
