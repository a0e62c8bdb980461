//! The files a run reads and writes: atomic writes, JSON, and `samples.jsonl.gz`. The lowest
//! floor of the crate's file handling (it depends on nothing of the run), so that the run, the
//! merge and re-deciding all read and write the same way.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::method::Method;
use crate::results::{Sample, SubjectResult};

/// The samples file of a run: one JSON line per subject × method × item, gzip-compressed so
/// that a published run's samples stay small enough to commit (`zcat` reads it).
pub const SAMPLES: &str = "samples.jsonl.gz";

/// The samples file of runs made before it was compressed (still read).
pub const SAMPLES_PLAIN: &str = "samples.jsonl";

/// Writes a file atomically (a temporary file renamed into place).
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, content).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a JSON file, naming the file, line and column of a parse error.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("line {}, column {}: {e}", e.line(), e.column())))
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::file(path, e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// Writes `samples.jsonl.gz` into `out`: one line per subject × method × item. The gzip
/// header carries no time stamp, so the same samples give the same bytes.
pub fn write_samples(out: &Path, keying: papi_data::Keying, per_method: &[(Method, Vec<SubjectResult>)]) -> Result<()> {
    let path = out.join(SAMPLES);
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    for (m, results) in per_method {
        for r in results {
            for item in &r.items {
                let line = Sample { subject: r.case, method: *m, keying, item: item.clone() };
                serde_json::to_writer(&mut gz, &line).map_err(|e| Error::file(&path, e.to_string()))?;
                gz.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    let bytes = gz.finish().map_err(|e| Error::io(&path, e))?;
    write_atomic(&path, &bytes)?;
    // A plain file left by an older version would now be stale.
    let old = out.join(SAMPLES_PLAIN);
    if old.exists() {
        std::fs::remove_file(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Reads a run's samples (`samples.jsonl.gz`, or an older run's `samples.jsonl`), naming the
/// file and line of a bad one.
pub fn read_samples(out: &Path) -> Result<Vec<Sample>> {
    let gz = out.join(SAMPLES);
    let (path, text) = if gz.exists() {
        let file = std::fs::File::open(&gz).map_err(|e| Error::io(&gz, e))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file).read_to_string(&mut text).map_err(|e| Error::io(&gz, e))?;
        (gz, text)
    } else {
        let plain = out.join(SAMPLES_PLAIN);
        let text = std::fs::read_to_string(&plain).map_err(|e| Error::io(&gz, e))?;
        (plain, text)
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| serde_json::from_str(line).map_err(|e| Error::file(&path, format!("line {}: {e}", i + 1))))
        .collect()
}

/// A path as a published run may record it: relative to the current folder when it lies below
/// it, else the file's name alone (never a machine's absolute path).
pub fn portable(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let absolute = if path.is_absolute() { path.to_path_buf() } else { cwd.as_ref().map_or(path.to_path_buf(), |c| c.join(path)) };
    match cwd.as_ref().and_then(|c| absolute.strip_prefix(c).ok()) {
        Some(rel) => rel.display().to_string(),
        None => path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_paths_hold_no_machine_prefix() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(portable(&cwd.join("data/papi/x.json")), "data/papi/x.json");
        assert_eq!(portable(Path::new("data/x.json")), "data/x.json");
        assert_eq!(portable(Path::new("/elsewhere/papi/papi-dev-200.json")), "papi-dev-200.json");
    }
}
