//! A GGUF file read as a model, the one source every dtype loads from when a folder has no
//! safetensors weights: its configuration from the metadata (what `config.json` says), its
//! tensors by Hugging Face name with the Q/K rows in Hugging Face order, as the file's blocks
//! (`--dtype file`) or dequantized to float32 (the float and re-quantized dtypes), and the
//! float32 safetensors copy streamed a tensor at a time: written for tools that need a
//! Hugging Face folder (PyTorch), or only measured and hashed, so that a model's identity is
//! the same whether the copy exists or not.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use crate::model::config::{ARCHITECTURES, Architecture, HfConfig, ModelConfig};
use crate::formats::names::{Permute, hf_name};
use crate::error::{Error, Result};
use crate::formats::gguf::{Gguf, TensorInfo, unpermute_rows};
use crate::quant::qmatrix::QMatrix;

/// The GGUF file a model folder holds, what every dtype loads from when the folder has no
/// safetensors weights.
pub const GGUF_FILE: &str = "model.gguf";

/// Values converted to bytes and written at a time by [`GgufModel::stream_float_copy`].
const WRITE_CHUNK: usize = 1 << 20;

/// The float32 copy's file name in a model folder.
pub const FLOAT_COPY: &str = "model.safetensors";

/// A GGUF file's header (the tensors stay on disk until asked for), its tensors by Hugging
/// Face name and the configuration they are read with.
pub struct GgufModel {
    gguf: Gguf,
    by_name: BTreeMap<String, (TensorInfo, Permute)>,
    config: ModelConfig,
}

impl GgufModel {
    /// Opens `path`. The configuration comes from the file's metadata; a file without its
    /// hyper-parameters (a bare tensor file, as some tests write) is read with
    /// `fallback_config` (a `config.json`), an error naming both when there is none.
    pub fn open(path: &Path, fallback_config: Option<&Path>) -> Result<Self> {
        let gguf = Gguf::open_header(path)?;
        let config = match hf_config(&gguf)? {
            Some(json) => {
                let hf: HfConfig = serde_json::from_value(json).map_err(|e| Error::Config { path: path.to_owned(), message: e.to_string() })?;
                ModelConfig::try_from(hf).map_err(|message| Error::Config { path: path.to_owned(), message })?
            }
            None => match fallback_config.filter(|p| p.is_file()) {
                Some(p) => ModelConfig::load(p)?,
                None => {
                    return Err(Error::Metadata { path: path.to_owned(), key: "general.architecture".into(), message: "the file holds no hyper-parameters and no config.json lies beside it".into() });
                }
            },
        };
        let mut by_name = BTreeMap::new();
        for t in &gguf.tensors {
            let (name, permute) = hf_name(&t.name).ok_or_else(|| Error::Tensor { name: t.name.clone(), message: format!("in {}: no Hugging Face name for this GGUF tensor", path.display()) })?;
            by_name.insert(name, (t.clone(), permute));
        }
        Ok(GgufModel { gguf, by_name, config })
    }

    /// The configuration the tensors are read with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The file's header: metadata and tensor table.
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.gguf.path()
    }

    /// The tensors' Hugging Face names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The header entry of `name`, checked to have `shape`.
    fn entry(&self, name: &str, shape: &[usize]) -> Result<&(TensorInfo, Permute)> {
        let e = self.by_name.get(name).ok_or_else(|| Error::Tensor { name: name.to_owned(), message: format!("missing from {}", self.path().display()) })?;
        if e.0.shape != shape {
            return Err(Error::Tensor { name: name.to_owned(), message: format!("{:?} in {}, the config says {shape:?}", e.0.shape, self.path().display()) });
        }
        Ok(e)
    }

    /// The head count whose rows llama.cpp permuted in this tensor, if any.
    fn permuted_heads(&self, permute: Permute) -> Option<usize> {
        permute.heads(self.config.arch, self.config.heads, self.config.kv_heads)
    }

    /// The tensor `name`, checked to be `shape`, as a block matrix `[shape[0], rest]` with
    /// Q/K rows put back in Hugging Face order (whole rows of blocks move; the blocks are the
    /// file's).
    pub fn blocks(&self, name: &str, shape: &[usize]) -> Result<QMatrix> {
        let (t, permute) = self.entry(name, shape)?;
        let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
        let mut bytes = self.gguf.read_tensor(t)?;
        if let Some(n) = self.permuted_heads(*permute) {
            bytes = unpermute_rows(&bytes, n, rows, bytes.len() / rows);
        }
        QMatrix::from_blocks(t.kind, rows, cols, bytes).map_err(|message| Error::Tensor { name: name.to_owned(), message })
    }

    /// The tensor `name`, checked to be `shape`, dequantized to float32 in Hugging Face's
    /// row order: the values of the float32 copy.
    pub fn read_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (t, permute) = self.entry(name, shape)?;
        let values = self.gguf.dequantize(t)?;
        let rows = shape[0];
        Ok(match self.permuted_heads(*permute) {
            Some(n) if rows % n == 0 => unpermute_rows(&values, n, rows, values.len() / rows),
            Some(n) => return Err(Error::Tensor { name: name.to_owned(), message: format!("{rows} rows do not split into {n} heads") }),
            None => values,
        })
    }

    /// The float32 copy's first bytes (the header's length and the header, exactly as the
    /// safetensors crate writes them) and its tensors in file order.
    fn float_copy_header(&self) -> Result<(Vec<u8>, Vec<(String, Vec<usize>)>)> {
        let views: Vec<(String, Shape)> = self.by_name.iter().map(|(n, (t, _))| (n.clone(), Shape(t.shape.clone()))).collect();
        let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        let bad = |message: String| Error::Safetensors { path: self.path().with_file_name(FLOAT_COPY), message };
        // Views that report their length but hold no bytes serialize to the header alone.
        let prefix = safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))?;
        let header: BTreeMap<String, Json> = serde_json::from_slice(&prefix[8..]).map_err(|e| bad(e.to_string()))?;
        let mut order: Vec<(usize, String, Vec<usize>)> = Vec::new();
        for (name, v) in header.into_iter().filter(|(n, _)| n != "__metadata__") {
            let start = v["data_offsets"][0].as_u64().ok_or_else(|| bad(format!("{name}: no data_offsets")))? as usize;
            order.push((start, name.clone(), self.by_name[&name].0.shape.clone()));
        }
        order.sort();
        Ok((prefix, order.into_iter().map(|(_, n, s)| (n, s)).collect()))
    }

    /// The float32 copy's size in bytes, without making it.
    pub fn float_copy_len(&self) -> Result<u64> {
        let (prefix, tensors) = self.float_copy_header()?;
        Ok(prefix.len() as u64 + tensors.iter().map(|(_, s)| 4 * s.iter().product::<usize>() as u64).sum::<u64>())
    }

    /// Writes the float32 copy's bytes into `sink`, one tensor in memory at a time; returns
    /// the bytes written.
    pub fn stream_float_copy(&self, sink: &mut dyn Write) -> Result<u64> {
        let (prefix, tensors) = self.float_copy_header()?;
        let io = |e: std::io::Error| Error::io(self.path().with_file_name(FLOAT_COPY), e);
        sink.write_all(&prefix).map_err(io)?;
        let mut written = prefix.len() as u64;
        let mut bytes = Vec::with_capacity(4 * WRITE_CHUNK);
        for (name, shape) in tensors {
            // A piece of the tensor at a time as bytes: the largest (a 1.5B model's vocabulary
            // table, 0.9 GB in float32) is not held twice.
            for piece in self.read_f32(&name, &shape)?.chunks(WRITE_CHUNK) {
                bytes.clear();
                bytes.extend(piece.iter().flat_map(|v| v.to_le_bytes()));
                sink.write_all(&bytes).map_err(io)?;
                written += bytes.len() as u64;
            }
        }
        Ok(written)
    }

    /// Writes the float32 copy as `dir/model.safetensors` (through a partial file, so an
    /// interrupted write leaves none); returns its path.
    pub fn write_float_copy(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(FLOAT_COPY);
        let partial = dir.join(format!("{FLOAT_COPY}.partial"));
        let file = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        self.stream_float_copy(&mut w)?;
        w.flush().map_err(|e| Error::io(&partial, e))?;
        drop(w);
        std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }
}

/// A tensor's shape as a safetensors view with no bytes: enough for the header.
struct Shape(Vec<usize>);

impl safetensors::View for Shape {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&[])
    }
    fn data_len(&self) -> usize {
        4 * self.0.iter().product::<usize>()
    }
}

/// What `config.json` says of a GGUF file's model, from its metadata (`general.architecture`
/// and that architecture's hyper-parameter keys); `None` for a file without them. The tied
/// embedding and the q/k/v biases are read from the tensor table.
pub(crate) fn hf_config(g: &Gguf) -> Result<Option<Json>> {
    let Some(arch) = g.metadata.get("general.architecture").and_then(|v| v.as_str()).map(str::to_owned) else { return Ok(None) };
    let key = |k: &str| format!("{arch}.{k}");
    if !g.metadata.contains_key(&key("block_count")) {
        return Ok(None);
    }
    let path = g.path().to_owned();
    let architecture = Architecture::from_gguf(&arch).ok_or_else(|| Error::Metadata { path: path.clone(), key: "general.architecture".into(), message: format!("`{arch}` is not supported ({})", ARCHITECTURES.iter().map(|f| f.gguf).collect::<Vec<_>>().join(", ")) })?;
    if let Some(kind) = g.metadata.get(&key("rope.scaling.type")).and_then(|v| v.as_str())
        && kind != "none"
    {
        return Err(Error::Metadata { path, key: key("rope.scaling.type"), message: format!("rope scaling `{kind}` is not supported yet") });
    }
    let opt_u64 = |k: &str| g.metadata.get(k).and_then(|v| v.as_u64());
    let heads = g.get_u64(&key("attention.head_count"))? as usize;
    let hidden = g.get_u64(&key("embedding_length"))? as usize;
    let vocab = match opt_u64(&key("vocab_size")) {
        Some(v) => v as usize,
        None => g.get_strings("tokenizer.ggml.tokens")?.len(),
    };
    let has = |gguf_name: &str| g.tensors.iter().any(|t| t.name == gguf_name || t.name.ends_with(&format!(".{gguf_name}")));
    Ok(Some(json!({
        "architectures": [architecture.hf_class()],
        "model_type": architecture.model_type(),
        "hidden_size": hidden,
        "intermediate_size": g.get_u64(&key("feed_forward_length"))?,
        "num_hidden_layers": g.get_u64(&key("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": opt_u64(&key("attention.head_count_kv")).map_or(heads, |v| v as usize),
        "head_dim": opt_u64(&key("attention.key_length")).map_or(hidden / heads.max(1), |v| v as usize),
        "max_position_embeddings": opt_u64(&key("context_length")).unwrap_or(2048),
        "rms_norm_eps": g.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
        "rope_theta": g.metadata.get(&key("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10000.0),
        "vocab_size": vocab,
        "tie_word_embeddings": !has("output.weight"),
        "bos_token_id": opt_u64("tokenizer.ggml.bos_token_id"),
        "eos_token_id": opt_u64("tokenizer.ggml.eos_token_id"),
        "pad_token_id": opt_u64("tokenizer.ggml.padding_token_id"),
        "hidden_act": "silu",
        "attention_bias": has("attn_q.bias"),
        "mlp_bias": false,
        "use_sliding_window": false,
        "torch_dtype": "float32",
    })))
}
