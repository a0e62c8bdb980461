//! Loading a model with its weights as its GGUF file holds them (`--dtype file`): each linear
//! weight and the vocabulary table keep their blocks (Q4_K, Q6_K, Q8_0, ...), read tensor by
//! tensor so that the file is never held whole; norms and biases are float32.
//!
//! The configuration and the weights both come from `model.gguf` in the folder
//! ([`GgufModel`]). llama.cpp permutes the Q and K rows of Llama-architecture files for its
//! interleaved RoPE: whole rows of blocks are moved back, so the blocks themselves are the
//! file's.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::gguf_model::GgufModel;
use crate::linear::{Table, Weight};
use crate::lora::Target;
use crate::model::{BIASED, Kernels, Layer, Llama, NORMS, rope_inv_freq};

/// The GGUF file `--dtype file` reads in a model folder.
pub const GGUF_FILE: &str = "model.gguf";

/// Loads `dir`'s `model.gguf` keeping the file's blocks: what [`Llama::load_as`] does for
/// [`Dtype::File`]. The configuration is the file's own ([`GgufModel::open`]).
pub(crate) fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Llama<B>> {
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
    Ok(Llama { config, embed, lm_head, norm, layers, inv_freq, device: device.clone(), kernels: Kernels::default_for::<B>(), dtype: Dtype::File })
}
