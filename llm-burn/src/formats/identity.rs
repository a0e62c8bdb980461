//! A model's identity for saved interventions: its folder name and a SHA-256 of its config
//! and every weights file, so that an intervention is refused by any other model, even one of
//! the same shape.

use std::io::Read;
use std::path::{Path, PathBuf};

use pas_core::ModelIdentity;
use sha2::{Digest, Sha256};

use crate::model::config::ModelConfig;
use crate::error::{Error, Result};
use crate::formats::gguf_model::{FLOAT_COPY, GgufModel};

/// The file (in the model's folder) that keeps the last hash with the sizes and times it was
/// computed for, so that a multi-gigabyte model is read once, not at every start.
const MEMO: &str = ".content-sha256";

/// The files the hash covers: `config.json` and the `*.safetensors` files, by name.
fn hashed_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    files.insert(0, dir.join("config.json"));
    Ok(files)
}

/// What the memo is valid for: each file's name, size and modification time.
fn stamp(files: &[PathBuf]) -> Result<String> {
    let mut s = String::new();
    for f in files {
        let m = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        s.push_str(&format!("{} {} {t}\n", f.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), m.len()));
    }
    Ok(s)
}

/// The folder's GGUF file when it has no safetensors weights: its float32 copy is then
/// hashed as if written ([`GgufModel::stream_float_copy`]), so the identity does not depend on
/// whether the copy exists.
fn gguf_only(dir: &Path, files: &[PathBuf]) -> Option<PathBuf> {
    let gguf = dir.join(crate::formats::GGUF_FILE);
    (files.len() == 1 && gguf.is_file()).then_some(gguf)
}

/// Hashes a file's name, length and bytes.
fn hash_file(h: &mut Sha256, name: &str, f: &Path) -> Result<()> {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    let mut file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
    h.update(file.metadata().map_err(|e| Error::io(f, e))?.len().to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(f, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// `sha256:<hex>` of the model's config and weights (each file's name, length and bytes, in
/// name order; a folder with only `model.gguf` is hashed as its float32 copy would be).
/// Remembered in the folder (when writable) for unchanged files.
pub fn content_hash(dir: &Path) -> Result<String> {
    let mut files = hashed_files(dir)?;
    let gguf = gguf_only(dir, &files);
    files.extend(gguf.clone());
    let stamp = stamp(&files)?;
    let memo = dir.join(MEMO);
    if let Ok(text) = std::fs::read_to_string(&memo)
        && let Some((hash, s)) = text.split_once('\n')
        && s == stamp
    {
        return Ok(hash.to_owned());
    }
    let mut h = Sha256::new();
    match gguf {
        None => {
            for f in &files {
                hash_file(&mut h, &f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), f)?;
            }
        }
        Some(gguf) => {
            hash_file(&mut h, "config.json", &files[0])?;
            let model = GgufModel::open(&gguf, Some(&files[0]))?;
            h.update((FLOAT_COPY.len() as u64).to_le_bytes());
            h.update(FLOAT_COPY.as_bytes());
            h.update(model.float_copy_len()?.to_le_bytes());
            model.stream_float_copy(&mut h)?;
        }
    }
    let hash = format!("sha256:{:x}", h.finalize());
    // A read-only model folder just means hashing again next time.
    let _ = std::fs::write(&memo, format!("{hash}\n{stamp}"));
    Ok(hash)
}

/// The size of the model's float32 weights: its safetensors files', or, for a folder with only
/// `model.gguf`, the float32 copy's that [`crate::formats::convert::gguf_to_hf`] would write.
pub fn float_weights_len(dir: &Path) -> Result<u64> {
    let files = hashed_files(dir)?;
    if let Some(gguf) = gguf_only(dir, &files) {
        return GgufModel::open(&gguf, Some(&dir.join("config.json")))?.float_copy_len();
    }
    files[1..].iter().map(|f| std::fs::metadata(f).map(|m| m.len()).map_err(|e| Error::io(f, e))).sum()
}

/// The identity saved with an intervention and checked when it is loaded: the folder's name,
/// [`content_hash`], and the head geometry.
pub fn identity(dir: &Path, config: &ModelConfig) -> Result<ModelIdentity> {
    let model_id = dir.canonicalize().unwrap_or_else(|_| dir.to_owned()).file_name().map_or("model".into(), |f| f.to_string_lossy().into_owned());
    Ok(ModelIdentity { model_id, config_hash: content_hash(dir)?, geometry: config.geometry() })
}
