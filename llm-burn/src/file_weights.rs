//! Loading a model with its weights as its GGUF file holds them (`--dtype file`): each linear
//! weight and the vocabulary table keep their blocks (Q4_K, Q6_K, Q8_0, ...), read tensor by
//! tensor so that the file is never held whole; norms and biases are float32.
//!
//! The configuration comes from the folder's `config.json` (the one the conversion wrote from
//! the same file); the weights from `model.gguf` in the folder. llama.cpp permutes the Q and
//! K rows of Llama-architecture files for its interleaved RoPE: whole rows of blocks are moved
//! back, so the blocks themselves are the file's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::LlamaConfig;
use crate::convert::{Permute, hf_name};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, TensorInfo, unpermute_rows};
use crate::linear::{Table, Weight};
use crate::lora::Target;
use crate::model::{BIASED, Kernels, Layer, Llama, NORMS, rope_inv_freq};
use crate::qmatrix::QMatrix;

/// The GGUF file `--dtype file` reads in a model folder.
pub const GGUF_FILE: &str = "model.gguf";

/// The GGUF's tensors by Hugging Face name, with the rows to un-permute.
struct Index {
    gguf: Gguf,
    by_name: BTreeMap<String, (TensorInfo, Permute)>,
}

impl Index {
    fn open(path: &Path) -> Result<Self> {
        let gguf = Gguf::open_header(path)?;
        let mut by_name = BTreeMap::new();
        for t in &gguf.tensors {
            let (name, permute) = hf_name(&t.name).ok_or_else(|| Error::Tensor { name: t.name.clone(), message: format!("in {}: no Hugging Face name for this GGUF tensor", path.display()) })?;
            by_name.insert(name, (t.clone(), permute));
        }
        Ok(Index { gguf, by_name })
    }

    /// The tensor `name` (Hugging Face), checked to be `shape`, as a block matrix
    /// `[shape[0], rest]` with Q/K rows put back in Hugging Face order.
    fn blocks(&self, name: &str, shape: &[usize], c: &LlamaConfig) -> Result<QMatrix> {
        let (t, permute) = self.by_name.get(name).ok_or_else(|| Error::Tensor { name: name.to_owned(), message: format!("missing from {}", self.gguf.path().display()) })?;
        if t.shape != shape {
            return Err(Error::Tensor { name: name.to_owned(), message: format!("{:?} in {}, the config says {shape:?}", t.shape, self.gguf.path().display()) });
        }
        let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
        let mut bytes = self.gguf.read_tensor(t)?;
        let heads = match permute {
            _ if !c.arch.gguf_permutes_qk() => None,
            Permute::None => None,
            Permute::Query => Some(c.heads),
            Permute::Key => Some(c.kv_heads),
        };
        if let Some(n) = heads {
            bytes = unpermute_rows(&bytes, n, rows, bytes.len() / rows);
        }
        QMatrix::from_blocks(t.kind, rows, cols, bytes).map_err(|message| Error::Tensor { name: name.to_owned(), message })
    }

    /// A float vector (a norm or a bias).
    fn vector(&self, name: &str, len: usize, c: &LlamaConfig) -> Result<Vec<f32>> {
        Ok(self.blocks(name, &[len], c)?.dequantize())
    }
}

/// Loads `dir` (`config.json` and `model.gguf`) keeping the file's blocks: what
/// [`Llama::load_as`] does for [`Dtype::File`].
pub(crate) fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Llama<B>> {
    let config = LlamaConfig::load(&dir.join("config.json"))?;
    let path = dir.join(GGUF_FILE);
    if !path.is_file() {
        return Err(Error::Input(format!(
            "--dtype file keeps the weights of the model's GGUF file, and {} has none (`cargo xtask fetch-model` links it there)",
            path.display()
        )));
    }
    let index = Index::open(&path)?;
    let c = &config;
    let h = c.hidden;
    let t1 = |v: Vec<f32>| {
        let n = v.len();
        Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
    };
    let embed = Table::Gguf(Arc::new(index.blocks("model.embed_tokens.weight", &[c.vocab, h], c)?));
    let lm_head = if c.tied { embed.clone() } else { Table::Gguf(Arc::new(index.blocks("lm_head.weight", &[c.vocab, h], c)?)) };
    let norm = t1(index.vector("model.norm.weight", h, c)?);
    let mut layers = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let [input_norm, post_norm] = NORMS.map(&p);
        let (input_norm, post_norm) = (t1(index.vector(&input_norm, h, c)?), t1(index.vector(&post_norm, h, c)?));
        let mut linear = Vec::with_capacity(Target::ALL.len());
        for t in Target::ALL {
            let (inp, out) = t.dims(c);
            linear.push(Weight::Gguf(Arc::new(index.blocks(&p(&format!("{}.weight", t.module())), &[out, inp], c)?)));
        }
        let mut bias = [None, None, None];
        if c.qkv_bias {
            for (slot, t) in bias.iter_mut().zip(BIASED) {
                *slot = Some(t1(index.vector(&p(&format!("{}.bias", t.module())), t.dims(c).1, c)?));
            }
        }
        let linear = linear.try_into().unwrap_or_else(|_| unreachable!("one weight per target"));
        layers.push(Layer { input_norm, post_norm, linear, bias });
    }
    let expected = 2 + usize::from(!c.tied) + c.layers * (NORMS.len() + Target::ALL.len() + if c.qkv_bias { BIASED.len() } else { 0 });
    if index.by_name.len() != expected {
        return Err(Error::Tensor { name: path.display().to_string(), message: format!("{} tensors, the config's model has {expected}", index.by_name.len()) });
    }
    let inv_freq = rope_inv_freq(c);
    Ok(Llama { config, embed, lm_head, norm, layers, inv_freq, device: device.clone(), kernels: Kernels::default_for::<B>(), dtype: Dtype::File })
}
