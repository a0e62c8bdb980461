//! A PAPI folder: item key, split and records, found and loaded together.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::records::{Subject, read_records};
use crate::split::{SPLIT_FILE, Split};

/// The environment variable naming the default PAPI folder.
pub const PAPI_DIR_ENV: &str = "PAPI_DIR";

/// A loaded PAPI folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The item inventory.
    pub inventory: Inventory,
    /// The evaluation split.
    pub split: Split,
    /// The subjects, in file order.
    pub subjects: Vec<Subject>,
    /// The records file they came from.
    pub records_path: PathBuf,
}

impl Dataset {
    /// Loads the item key, the split (`mpi_300_split.json`, or the short form if the folder
    /// has none) and the records file: `records` if given, else the one records file in the
    /// folder (an error lists the candidates when there are several).
    pub fn load(dir: impl AsRef<Path>, records: Option<&Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder")));
        }
        let inventory = Inventory::load_dir(dir)?;
        let split = if dir.join(SPLIT_FILE).exists() {
            Split::load_dir(dir, &inventory)?
        } else {
            Split::short_form(&inventory)?
        };
        let records_path = match records {
            Some(p) => p.to_owned(),
            None => find_records(dir)?,
        };
        let subjects = read_records(&records_path, &inventory)?;
        Ok(Dataset { inventory, split, subjects, records_path })
    }
}

/// Whether a file looks like a records file: a JSON array whose first object has `case`, a
/// CSV whose header has `case`, or any Parquet file.
fn looks_like_records(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let head = || -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match ext.as_str() {
        "parquet" | "pq" => true,
        "json" => head().is_some_and(|h| h.trim_start().starts_with('[') && h.contains("\"case\"")),
        "csv" => head().is_some_and(|h| h.lines().next().is_some_and(|l| l.split(',').any(|c| c.trim().trim_matches('"') == "case"))),
        _ => false,
    }
}

/// The one records file in `dir`.
pub fn find_records(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| looks_like_records(p)).collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Folder {
            path: dir.to_owned(),
            message: "no records file (a JSON array, CSV or Parquet file with `case` and `i1`..) in this folder".into(),
        }),
        _ => Err(Error::Folder {
            path: dir.to_owned(),
            message: format!(
                "several records files; pick one with --records: {}",
                found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}
