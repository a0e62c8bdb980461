//! Adapters saved and loaded as safetensors, in PEFT's layout and names
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` `[rank, in]`,
//! `…lora_B.weight` `[out, rank]`, F32), with the settings in the file's metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use llm_burn::ModelConfig;
use llm_burn::formats::weight_files::transpose;
use llm_burn::model::lora::{Adapter, Lora, Target};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Metadata keys this crate writes (besides the caller's own).
pub const RANK: &str = "lora_rank";
/// PEFT's `lora_alpha`.
pub const ALPHA: &str = "lora_alpha";
/// Comma-separated `target_modules`.
pub const TARGETS: &str = "target_modules";

/// Writes `lora` to `path` (atomically) with `metadata` added to the file's own.
pub fn save<B: Backend>(path: &Path, lora: &Lora<B>, metadata: &BTreeMap<String, String>) -> Result<()> {
    let bad = |message: String| Error::Adapter { path: path.to_owned(), message };
    let mut buffers = Vec::new();
    for (name, t) in lora.tensors() {
        let [rows, cols] = t.dims();
        let v = t.clone().into_data().to_vec::<f32>().map_err(|e| bad(format!("{name}: {e:?}")))?;
        // Stored [in, r] / [r, out] here; PEFT's layout is the transpose.
        let bytes: Vec<u8> = transpose(&v, rows, cols).into_iter().flat_map(f32::to_le_bytes).collect();
        buffers.push((name, vec![cols, rows], bytes));
    }
    let views = buffers
        .iter()
        .map(|(n, s, b)| safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert("format".into(), "pt".into());
    meta.insert(RANK.into(), lora.rank().to_string());
    meta.insert(ALPHA.into(), lora.alpha().to_string());
    meta.insert(TARGETS.into(), lora.targets().iter().map(|t| t.short_name()).collect::<Vec<_>>().join(","));
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_owned(), source: e })?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.to_owned(), source: e })
}

/// Reads adapters written by [`save`] (or by PEFT, F32) for a model of `config`; returns
/// them and the file's metadata. Every tensor is checked against the model's shapes.
pub fn load<B: Backend>(path: &Path, config: &ModelConfig, device: &B::Device) -> Result<(Lora<B>, BTreeMap<String, String>)> {
    let bad = |message: String| Error::Adapter { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.to_owned(), source: e })?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let field = |k: &str| meta.get(k).ok_or_else(|| bad(format!("metadata field `{k}` is missing")));
    let rank: usize = field(RANK)?.parse().map_err(|e| bad(format!("metadata field `{RANK}`: {e}")))?;
    let alpha: f64 = field(ALPHA)?.parse().map_err(|e| bad(format!("metadata field `{ALPHA}`: {e}")))?;
    let targets = field(TARGETS)?.split(',').map(Target::parse).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| bad(format!("metadata field `{TARGETS}`: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let expected = 2 * targets.len() * config.layers;
    if st.len() != expected {
        return Err(bad(format!("{} tensors, expected {expected} ({} layers × {} targets × A, B)", st.len(), config.layers, targets.len())));
    }
    let read = |name: &str, shape: [usize; 2]| -> Result<Tensor<B, 2>> {
        let view = st.tensor(name).map_err(|_| bad(format!("tensor {name} is missing")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name} is {:?}, expected F32", view.dtype())));
        }
        if view.shape() != shape {
            return Err(bad(format!("tensor {name} has shape {:?}, expected {shape:?}", view.shape())));
        }
        let v: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Tensor::from_data(TensorData::new(transpose(&v, shape[0], shape[1]), [shape[1], shape[0]]), device))
    };
    let mut layers = Vec::with_capacity(config.layers);
    for l in 0..config.layers {
        let mut m = BTreeMap::new();
        for &t in &targets {
            let (i, o) = t.dims(config);
            let a = read(&t.peft_name(l, "lora_A"), [rank, i])?;
            let b = read(&t.peft_name(l, "lora_B"), [o, rank])?;
            m.insert(t, Adapter { a, b });
        }
        layers.push(m);
    }
    let lora = Lora::from_parts(config, rank, alpha, layers).map_err(|e| bad(e.to_string()))?;
    Ok((lora, meta))
}
