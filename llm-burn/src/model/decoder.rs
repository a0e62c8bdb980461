//! A Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM2, TinyLlama) on burn, generic
//! over the backend. The model is immutable: the KV cache and the steering are values passed
//! into [`Decoder::forward`].

use std::sync::Arc;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, activation};
use pas_core::{Positions, Steering};

use crate::model::cache::KvCache;
use crate::model::config::ModelConfig;
use crate::model::dtype::Dtype;
use crate::error::{Error, Result};
use crate::model::linear::{Table, Weight};
use crate::model::lora::{Lora, Target};
use crate::quant::qmatrix::QMatrix;

/// The name table of a layer, relative to `model.layers.{i}.`: the two norms (`[hidden]`);
/// every projection of [`Target::ALL`] as `{target.module()}.weight` (`[out, in]` in the file,
/// [`Target::dims`]); and, when the config has q/k/v biases, `{module}.bias` (`[out]`) of these.
pub(crate) const NORMS: [&str; 2] = ["input_layernorm.weight", "post_attention_layernorm.weight"];
/// The projections that carry a bias when the config says so (Qwen2).
pub(crate) const BIASED: [Target; 3] = [Target::Q, Target::K, Target::V];

/// One decoder layer's weights; linear weights are stored `[in, out]`.
#[derive(Debug, Clone)]
pub(crate) struct Layer<B: Backend> {
    pub(crate) input_norm: Tensor<B, 1>,
    pub(crate) post_norm: Tensor<B, 1>,
    /// The projections in [`Target::ALL`] order.
    pub(crate) linear: [Weight<B>; 7],
    /// Biases of [`BIASED`], in that order.
    pub(crate) bias: [Option<Tensor<B, 1>>; 3],
}

impl<B: Backend> Layer<B> {
    pub(crate) fn w(&self, t: Target) -> &Weight<B> {
        &self.linear[t as usize]
    }

    pub(crate) fn b(&self, t: Target) -> Option<&Tensor<B, 1>> {
        BIASED.iter().position(|&x| x == t).and_then(|k| self.bias[k].as_ref())
    }
}

/// Which kernels run the steps of a layer other than its large matrix products (norms,
/// RoPE, attention, the gated activation); both give the same results to float rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Plain-buffer CPU kernels ([`crate::host`]): the default on the CPU backend.
    Host,
    /// burn tensor operations: any backend (CUDA, autodiff); the default elsewhere.
    Tensor,
}

impl Kernels {
    /// The default for backend `B`: the host kernels on the CPU backend (`flex`), the
    /// tensor operations on any other (CUDA, and autodiff, which must see every operation).
    pub fn default_for<B: Backend>() -> Self {
        if std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn_flex::Flex>() { Kernels::Host } else { Kernels::Tensor }
    }
}

/// A loaded model.
#[derive(Debug, Clone)]
pub struct Decoder<B: Backend> {
    pub(crate) config: ModelConfig,
    /// `[vocab, hidden]`.
    pub(crate) embed: Table<B>,
    /// `[vocab, hidden]` (the embedding when tied).
    pub(crate) lm_head: Table<B>,
    pub(crate) norm: Tensor<B, 1>,
    pub(crate) layers: Vec<Layer<B>>,
    pub(crate) inv_freq: Vec<f32>,
    pub(crate) device: B::Device,
    pub(crate) kernels: Kernels,
    /// The type of the linear, embedding and output weights.
    pub(crate) dtype: Dtype,
    /// Adapters applied unmerged in every pass that brings none of its own
    /// ([`Decoder::with_adapters`]).
    pub(crate) attached: Option<Arc<Lora<B>>>,
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct Output<B: Backend> {
    /// Logits at the last position of each row, `[batch, vocab]`.
    pub logits: Tensor<B, 2>,
    /// If asked for: per layer, the head outputs (input of `o_proj`, before steering) at the
    /// last position, `[batch, heads * head_dim]`.
    pub heads: Option<Vec<Tensor<B, 2>>>,
}

/// A steering folded through `o_proj`: per layer, `W_o · d` added to the residual stream
/// after the attention output, at every position of every row (the official PAS bias).
#[derive(Debug, Clone)]
pub struct OProjBias<B: Backend> {
    /// Per layer: `[hidden]` or nothing.
    pub(crate) layers: Vec<Option<Tensor<B, 1>>>,
}

/// Options of a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions<'a, B: Backend> {
    /// No steering (empty), one for every row, or one per row (in head space).
    pub steering: &'a [&'a Steering],
    /// A steering already folded through `o_proj` (see [`Decoder::o_proj_bias`]).
    pub o_proj_bias: Option<&'a OProjBias<B>>,
    /// Capture the head outputs at the last position.
    pub capture: bool,
    /// LoRA adapters added to their projections (none: the base model).
    pub lora: Option<LoraPass<'a, B>>,
}

impl<B: Backend> Default for ForwardOptions<'_, B> {
    fn default() -> Self {
        ForwardOptions { steering: &[], o_proj_bias: None, capture: false, lora: None }
    }
}

/// Adapters for one forward pass, with LoRA dropout on their input when training.
#[derive(Debug)]
pub struct LoraPass<'a, B: Backend> {
    /// The adapters.
    pub lora: &'a Lora<B>,
    /// Probability of zeroing an input of an adapter (PEFT's `lora_dropout`); 0 at inference.
    pub dropout: f64,
    /// Seed of this pass's dropout masks (the same seed gives the same masks).
    pub seed: u64,
}

impl<B: Backend> Clone for LoraPass<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for LoraPass<'_, B> {}

impl<'a, B: Backend> LoraPass<'a, B> {
    /// The adapters without dropout.
    pub fn new(lora: &'a Lora<B>) -> Self {
        LoraPass { lora, dropout: 0.0, seed: 0 }
    }
}

impl<B: Backend> Decoder<B> {
    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The type its weights are stored and multiplied in.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// `x · w` (float32 in and out) with `w` in the model's weight type.
    pub(crate) fn mm(&self, x: Tensor<B, 2>, w: &Weight<B>) -> Tensor<B, 2> {
        w.apply(x, self.dtype.burn())
    }

    /// The kernels this model runs.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The same model running `kernels` (e.g. the tensor operations on the CPU, to compare).
    /// The host kernels read tensors back to the CPU: use them on the CPU backend only, and
    /// never on an autodiff backend (gradients do not flow through them).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// A fresh cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.config.layers)
    }

    /// The model with `lora` applied unmerged in every forward pass that brings no adapters
    /// of its own: the adapters stay float beside weights whose blocks cannot take them
    /// without loss (a merged quantized weight is re-quantized).
    pub fn with_adapters(&self, lora: &Lora<B>) -> Result<Self> {
        if lora.num_layers() != self.config.layers {
            return Err(Error::Input(format!("adapters for {} layers on a model of {}", lora.num_layers(), self.config.layers)));
        }
        Ok(Decoder { attached: Some(Arc::new(lora.clone())), ..self.clone() })
    }

    /// The model with its adapters merged ([`Decoder::merged`]) where its weights are float,
    /// attached unmerged ([`Decoder::with_adapters`]) where they are quantized; and whether
    /// they were merged.
    pub fn tuned(&self, lora: &Lora<B>) -> Result<(Self, bool)> {
        if self.dtype.is_quantized() { Ok((self.with_adapters(lora)?, false)) } else { Ok((self.merged(lora)?, true)) }
    }

    /// A copy of the model with `lora` merged into its weights (`W + scale · A·B`), which
    /// runs at the base model's speed and gives the same logits as passing the adapters to
    /// [`Decoder::forward`] (to rounding). The base weights are shared, not copied, where no
    /// adapter sits.
    pub fn merged(&self, lora: &Lora<B>) -> Result<Self> {
        if lora.num_layers() != self.config.layers {
            return Err(Error::Input(format!("adapters for {} layers on a model of {}", lora.num_layers(), self.config.layers)));
        }
        let mut out = self.clone();
        let scale = lora.scale();
        for (l, layer) in out.layers.iter_mut().enumerate() {
            for t in Target::ALL {
                let Some(ad) = lora.get(l, t) else { continue };
                let w = &mut layer.linear[t as usize];
                let delta = ad.a.clone().matmul(ad.b.clone()) * scale;
                let dense = w.dense_f32(&self.device);
                if delta.dims() != dense.dims() {
                    return Err(Error::Tensor { name: t.peft_name(l, "lora_A·lora_B"), message: format!("{:?}, the weight is {:?}", delta.dims(), dense.dims()) });
                }
                let sum = dense + delta; // [in, out]
                *w = match self.dtype {
                    Dtype::F32 => Weight::Dense(sum),
                    // Blocks are not rebuilt in their own type: a merged weight is requantized to Q8_0.
                    Dtype::Q8_0 | Dtype::Q4K | Dtype::File => {
                        let [inp, out] = sum.dims();
                        let v = sum.into_data().into_vec::<f32>().map_err(|e| Error::Input(format!("{e:?}")))?;
                        Weight::Quant(Arc::new(QMatrix::quantize_q8_0(&v, inp, out).map_err(|message| Error::Tensor { name: t.peft_name(l, "merged"), message })?))
                    }
                    dt => Weight::Dense(sum.cast(dt.burn())),
                };
            }
        }
        Ok(out)
    }

    /// The model with every tensor passed through `f`, possibly onto another backend.
    fn map_tensors<C: Backend>(&self, device: &C::Device, f1: impl Fn(Tensor<B, 1>) -> Tensor<C, 1>, f2: impl Fn(Tensor<B, 2>) -> Tensor<C, 2>) -> Decoder<C> {
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                input_norm: f1(l.input_norm.clone()),
                post_norm: f1(l.post_norm.clone()),
                linear: l.linear.each_ref().map(|w| w.map(&f2)),
                bias: l.bias.clone().map(|b| b.map(&f1)),
            })
            .collect();
        Decoder {
            config: self.config.clone(),
            embed: self.embed.map(&f2),
            lm_head: self.lm_head.map(&f2),
            norm: f1(self.norm.clone()),
            layers,
            inv_freq: self.inv_freq.clone(),
            device: device.clone(),
            kernels: Kernels::default_for::<C>(),
            dtype: self.dtype,
            attached: self.attached.as_ref().map(|lora| Arc::new(lora.map(|_, t| f2(t)))),
        }
    }

    /// Folds a steering through each layer's `o_proj`: `W_o · d` per steered layer, computed
    /// once (e.g. per subject and strength) and added after the attention output. Equals
    /// steering in head space at every position ([`Positions::All`]).
    pub fn o_proj_bias(&self, steering: &Steering) -> Result<OProjBias<B>> {
        if steering.geometry() != self.config.geometry() {
            return Err(Error::Input(format!("steering for {} on a model of {}", steering.geometry(), self.config.geometry())));
        }
        if steering.positions() != Positions::All {
            return Err(Error::Input("an o_proj bias steers every position; this steering is for the last only".into()));
        }
        let width = self.config.heads * self.config.head_dim;
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                steering.layer(l).map(|d| {
                    let d = Tensor::<B, 2>::from_data(TensorData::new(d.to_vec(), [1, width]), &self.device);
                    self.mm(d, layer.w(Target::O)).reshape([self.config.hidden]) // [hidden]
                })
            })
            .collect();
        Ok(OProjBias { layers })
    }

    /// Log-probabilities of `choices` as the next token after each row (rows may differ in
    /// length), under the given steering(s).
    pub fn choice_logprobs(&self, rows: &[&[u32]], steering: &[&Steering], choices: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.new_cache();
        let out = self.forward(rows, &mut cache, ForwardOptions { steering, ..Default::default() })?;
        logprobs_of(out.logits, choices)
    }
}

impl<A: AutodiffBackend> Decoder<A> {
    /// The model on an autodiff backend, sharing `inner`'s weights (no copy). Its weights
    /// are constants: gradients flow only to tensors that require them (adapters).
    pub fn from_inner(inner: &Decoder<A::InnerBackend>) -> Self {
        inner.map_tensors(inner.device(), Tensor::from_inner, Tensor::from_inner)
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

/// Log-softmax of `[batch, vocab]` logits, at the `choices` ids.
pub fn logprobs_of<B: Backend>(logits: Tensor<B, 2>, choices: &[u32]) -> Result<Vec<Vec<f32>>> {
    let [b, vocab] = logits.dims();
    if let Some(&c) = choices.iter().find(|&&c| c as usize >= vocab) {
        return Err(Error::Input(format!("choice token {c} is outside the vocabulary ({vocab})")));
    }
    let lp = activation::log_softmax(logits, 1).into_data().to_vec::<f32>().map_err(|e| Error::Input(format!("{e:?}")))?;
    Ok((0..b).map(|r| choices.iter().map(|&c| lp[r * vocab + c as usize]).collect()).collect())
}

/// RoPE inverse frequencies in `f32` as Hugging Face computes them (with Llama-3 scaling).
pub(crate) fn rope_inv_freq(c: &ModelConfig) -> Vec<f32> {
    let d = c.head_dim;
    let base = c.rope_theta as f32;
    let mut inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32)).collect();
    if let Some(r) = c.rope_scaling {
        let old = r.original_max_position_embeddings;
        let low_wavelen = old / r.low_freq_factor;
        let high_wavelen = old / r.high_freq_factor;
        for f in &mut inv {
            let freq = f64::from(*f);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let scaled = if wavelen < high_wavelen {
                freq
            } else if wavelen > low_wavelen {
                freq / r.factor
            } else {
                let smooth = (old / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
                (1.0 - smooth) * freq / r.factor + smooth * freq
            };
            *f = scaled as f32;
        }
    }
    inv
}
