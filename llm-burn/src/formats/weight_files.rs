//! Reading Hugging Face safetensors files one tensor at a time (peak memory near the
//! model's own size), with every tensor's name and shape checked against one table.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::config::ModelConfig;
use crate::error::{Error, Result};
use crate::formats::gguf_model::{FLOAT_COPY, GgufModel};

#[derive(Debug, Clone, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// The tensors of one or several safetensors files (a `model.safetensors.index.json`
/// shards them), read on demand.
#[derive(Debug)]
pub struct WeightFiles {
    /// Tensor name → (file, entry, start of the data section).
    entries: BTreeMap<String, (PathBuf, Entry, u64)>,
}

impl WeightFiles {
    /// Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Safetensors { path: index.clone(), message: e.to_string() })?;
            let map = v["weight_map"].as_object().ok_or_else(|| Error::Safetensors { path: index.clone(), message: "no weight_map".into() })?;
            let mut f: Vec<PathBuf> = map.values().filter_map(|x| x.as_str()).map(|x| dir.join(x)).collect();
            f.sort();
            f.dedup();
            f
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut entries = BTreeMap::new();
        for path in files {
            let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let mut len = [0u8; 8];
            file.read_exact(&mut len).map_err(|e| Error::io(&path, e))?;
            let n = u64::from_le_bytes(len);
            if n > 100_000_000 {
                return Err(Error::Safetensors { path, message: format!("header of {n} bytes") });
            }
            let mut header = vec![0u8; n as usize];
            file.read_exact(&mut header).map_err(|e| Error::io(&path, e))?;
            let map: BTreeMap<String, serde_json::Value> =
                serde_json::from_slice(&header).map_err(|e| Error::Safetensors { path: path.clone(), message: e.to_string() })?;
            for (name, v) in map {
                if name == "__metadata__" {
                    continue;
                }
                let entry: Entry = serde_json::from_value(v).map_err(|e| Error::Safetensors { path: path.clone(), message: format!("{name}: {e}") })?;
                entries.insert(name, (path.clone(), entry, 8 + n));
            }
        }
        Ok(WeightFiles { entries })
    }

    /// Names of all tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Reads one tensor as `f32` (from F32, F16 or BF16), checking its shape.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (path, e, base) = self.entries.get(name).ok_or_else(|| Error::Tensor { name: name.into(), message: format!("missing (expected shape {shape:?})") })?;
        if e.shape != shape {
            return Err(Error::Tensor { name: name.into(), message: format!("shape {:?} in the file, expected {shape:?}", e.shape) });
        }
        let (start, end) = e.data_offsets;
        let width = match e.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => return Err(Error::Tensor { name: name.into(), message: format!("dtype {other} is not supported (F32, F16, BF16)") }),
        };
        let n: usize = shape.iter().product();
        if end < start || end - start != n * width {
            return Err(Error::Tensor { name: name.into(), message: format!("holds {} bytes for {n} {} values", end.saturating_sub(start), e.dtype) });
        }
        let mut file = File::open(path).map_err(|err| Error::io(path, err))?;
        file.seek(SeekFrom::Start(base + start as u64)).map_err(|err| Error::io(path, err))?;
        let mut bytes = vec![0u8; end - start];
        file.read_exact(&mut bytes).map_err(|err| Error::io(path, err))?;
        Ok(match width {
            4 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            _ if e.dtype == "F16" => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            _ => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        })
    }
}

/// Where a float load reads its values: the folder's safetensors files, or its GGUF file
/// dequantized when it has none.
pub(crate) enum FloatSource {
    /// `model.safetensors` (or its shards).
    Files(WeightFiles),
    /// `model.gguf`.
    Gguf(Box<GgufModel>),
}

impl FloatSource {
    /// The folder's weights and the configuration to read them with (`config.json` beside
    /// safetensors files; the GGUF file's own metadata otherwise).
    pub(crate) fn open(dir: &Path) -> Result<(Self, ModelConfig)> {
        let has_files = dir.join(FLOAT_COPY).is_file() || dir.join("model.safetensors.index.json").is_file();
        let gguf = dir.join(crate::formats::GGUF_FILE);
        if !has_files && gguf.is_file() {
            let model = GgufModel::open(&gguf, Some(&dir.join("config.json")))?;
            let config = model.config().clone();
            return Ok((FloatSource::Gguf(Box::new(model)), config));
        }
        let config = ModelConfig::load(&dir.join("config.json"))?;
        if !has_files {
            return Err(Error::Input(format!("{} holds no weights: neither model.safetensors nor model.gguf (`cargo xtask fetch-model` brings the pinned models)", dir.display())));
        }
        Ok((FloatSource::Files(WeightFiles::open(dir)?), config))
    }

    /// Reads one tensor as `f32`, checking its shape.
    pub(crate) fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self {
            FloatSource::Files(f) => f.read(name, shape),
            FloatSource::Gguf(g) => g.read_f32(name, shape),
        }
    }

    /// Names of all tensors.
    pub(crate) fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            FloatSource::Files(f) => Box::new(f.names()),
            FloatSource::Gguf(g) => Box::new(g.names()),
        }
    }
}

/// Transposes a row-major `[rows, cols]` matrix into row-major `[cols, rows]` (Hugging Face
/// stores linear weights `[out, in]`; this crate keeps them `[in, out]`).
pub fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}
