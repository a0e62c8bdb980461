//! Loading a model folder, one tensor at a time, every tensor checked against the name table
//! and the configuration. Float and re-quantized dtypes read float values (from safetensors
//! files, or the GGUF file dequantized: [`FloatSource`]); `--dtype file` keeps the GGUF file's
//! blocks as they are (Q4_K, Q6_K, Q8_0, ...), its configuration from the file's metadata
//! ([`GgufModel`]). llama.cpp permutes the Q and K rows of Llama-architecture files for its
//! interleaved RoPE: whole rows of blocks are moved back, so the blocks themselves are the
//! file's.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::model::dtype::Dtype;
use crate::error::{Error, Result};
use crate::formats::gguf_model::{GGUF_FILE, GgufModel};
use crate::model::linear::{Table, Weight};
use crate::model::lora::Target;
use crate::model::{BIASED, Kernels, Layer, Decoder, NORMS, rope_inv_freq};
use crate::formats::weight_files::{FloatSource, transpose};
use crate::quant::qmatrix::QMatrix;
use crate::quant::types::TensorType;

impl<B: Backend> Decoder<B> {
    /// Loads a Hugging Face folder (`config.json` and safetensors weights). Every tensor of
    /// the table must be present with its shape, and every tensor in the files must be used
    /// (except `lm_head.weight` of a tied model and rotary caches).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        Self::load_as(dir, device, Dtype::F32)
    }

    /// [`Decoder::load`] with the linear, embedding and output weights stored (and multiplied)
    /// in `dtype`; norms stay float32. The float values come from the folder's safetensors
    /// files or, where it has none, from its `model.gguf` dequantized (the same values as the
    /// float32 copy [`crate::formats::convert::gguf_to_hf`] writes).
    /// [`Dtype::File`] reads `model.gguf` and keeps its blocks ([`load_file`]).
    pub fn load_as(dir: &Path, device: &B::Device, dtype: Dtype) -> Result<Self> {
        if dtype == Dtype::File {
            return load_file(dir, device);
        }
        let (files, config) = FloatSource::open(dir)?;
        let c = &config;
        let h = c.hidden;
        let mut used = std::collections::BTreeSet::new();
        let mut read = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
            let v = files.read(&name, shape)?;
            used.insert(name);
            Ok(v)
        };
        let t1 = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
        };
        let quantize = |name: &str, v: &[f32], rows: usize, cols: usize| {
            QMatrix::quantize_q8_0(v, rows, cols).map(Arc::new).map_err(|message| Error::Tensor { name: name.to_owned(), message })
        };
        // Q4_K keeps the file layout ([out, in], blocks along `in`); Q8_0 where a row is not
        // whole super-blocks.
        let q4_k = |name: &str, v: &[f32], rows: usize, cols: usize| {
            QMatrix::quantize(crate::quant::quantize::row_type(cols, TensorType::Q4_K), v, rows, cols).map(Arc::new).map_err(|message| Error::Tensor { name: name.to_owned(), message })
        };
        // Float linear weights are [out, in] in the file; stored [in, out] for `x.matmul(w)`.
        let typed = |t: Tensor<B, 2>| if dtype == Dtype::F32 { t } else { t.cast(dtype.burn()) };
        // Quantized ones too, in blocks along `out`.
        let lin = |name: &str, v: Vec<f32>, out: usize, inp: usize| -> Result<Weight<B>> {
            if dtype == Dtype::Q4K {
                return Ok(Weight::Gguf(q4_k(name, &v, out, inp)?));
            }
            let t = transpose(&v, out, inp);
            Ok(match dtype.is_quantized() {
                true => Weight::Quant(quantize(name, &t, inp, out)?),
                false => Weight::Dense(typed(Tensor::<B, 2>::from_data(TensorData::new(t, [inp, out]), device))),
            })
        };
        let table = |name: &str, v: Vec<f32>| -> Result<Table<B>> {
            if dtype == Dtype::Q4K {
                return Ok(Table::Gguf(q4_k(name, &v, c.vocab, h)?));
            }
            Ok(match dtype.is_quantized() {
                true => Table::Quant(quantize(name, &transpose(&v, c.vocab, h), h, c.vocab)?),
                false => Table::Dense(typed(Tensor::<B, 2>::from_data(TensorData::new(v, [c.vocab, h]), device))),
            })
        };
        let embed = table("model.embed_tokens.weight", read("model.embed_tokens.weight".into(), &[c.vocab, h])?)?;
        let lm_head = if c.tied { embed.clone() } else { table("lm_head.weight", read("lm_head.weight".into(), &[c.vocab, h])?)? };
        let norm = t1(read("model.norm.weight".into(), &[h])?);
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let [input_norm, post_norm] = NORMS.map(&p);
            let (input_norm, post_norm) = (t1(read(input_norm, &[h])?), t1(read(post_norm, &[h])?));
            let mut linear = Vec::with_capacity(Target::ALL.len());
            for t in Target::ALL {
                let (inp, out) = t.dims(c);
                let name = p(&format!("{}.weight", t.module()));
                linear.push(lin(&name, read(name.clone(), &[out, inp])?, out, inp)?);
            }
            let mut bias = [None, None, None];
            if c.qkv_bias {
                for (slot, t) in bias.iter_mut().zip(BIASED) {
                    *slot = Some(t1(read(p(&format!("{}.bias", t.module())), &[t.dims(c).1])?));
                }
            }
            let linear = linear.try_into().unwrap_or_else(|_| unreachable!("one weight per target"));
            layers.push(Layer { input_norm, post_norm, linear, bias });
        }
        let unused: Vec<&str> = files
            .names()
            .filter(|n| {
                let allowed = (c.tied && *n == "lm_head.weight") || n.contains("rotary_emb.inv_freq");
                !used.contains(*n) && !allowed
            })
            .collect();
        if let Some(name) = unused.first() {
            return Err(Error::Tensor { name: (*name).to_owned(), message: format!("unused by the model ({} unused tensors)", unused.len()) });
        }
        let inv_freq = rope_inv_freq(c);
        Ok(Decoder { config, embed, lm_head, norm, layers, inv_freq, device: device.clone(), kernels: Kernels::default_for::<B>(), dtype, attached: None })
    }
}

/// Loads `dir`'s `model.gguf` keeping the file's blocks: what [`Decoder::load_as`] does for
/// [`Dtype::File`]. The configuration is the file's own ([`GgufModel::open`]).
fn load_file<B: Backend>(dir: &Path, device: &B::Device) -> Result<Decoder<B>> {
    let path = dir.join(GGUF_FILE);
    if !path.is_file() {
        return Err(Error::Input(format!(
            "--dtype file keeps the weights of the model's GGUF file, and {} has none (`cargo xtask fetch-model` links it there)",
            path.display()
        )));
    }
    let index = GgufModel::open(&path, Some(&dir.join("config.json")))?;
    let config = index.config().clone();
    let c = &config;
    let h = c.hidden;
    let t1 = |v: Vec<f32>| {
        let n = v.len();
        Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
    };
    let embed = Table::Gguf(Arc::new(index.blocks("model.embed_tokens.weight", &[c.vocab, h])?));
    let lm_head = if c.tied { embed.clone() } else { Table::Gguf(Arc::new(index.blocks("lm_head.weight", &[c.vocab, h])?)) };
    let norm = t1(index.read_f32("model.norm.weight", &[h])?);
    let mut layers = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let [input_norm, post_norm] = NORMS.map(&p);
        let (input_norm, post_norm) = (t1(index.read_f32(&input_norm, &[h])?), t1(index.read_f32(&post_norm, &[h])?));
        let mut linear = Vec::with_capacity(Target::ALL.len());
        for t in Target::ALL {
            let (inp, out) = t.dims(c);
            linear.push(Weight::Gguf(Arc::new(index.blocks(&p(&format!("{}.weight", t.module())), &[out, inp])?)));
        }
        let mut bias = [None, None, None];
        if c.qkv_bias {
            for (slot, t) in bias.iter_mut().zip(BIASED) {
                *slot = Some(t1(index.read_f32(&p(&format!("{}.bias", t.module())), &[t.dims(c).1])?));
            }
        }
        let linear = linear.try_into().unwrap_or_else(|_| unreachable!("one weight per target"));
        layers.push(Layer { input_norm, post_norm, linear, bias });
    }
    let expected = 2 + usize::from(!c.tied) + c.layers * (NORMS.len() + Target::ALL.len() + if c.qkv_bias { BIASED.len() } else { 0 });
    if index.names().count() != expected {
        return Err(Error::Tensor { name: path.display().to_string(), message: format!("{} tensors, the config's model has {expected}", index.names().count()) });
    }
    let inv_freq = rope_inv_freq(c);
    Ok(Decoder { config, embed, lm_head, norm, layers, inv_freq, device: device.clone(), kernels: Kernels::default_for::<B>(), dtype: Dtype::File, attached: None })
}
