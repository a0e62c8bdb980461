//! LoRA adapters: low-rank updates `W + (alpha / rank) · A · B` of chosen projections,
//! applied inside [`Decoder::forward`](crate::Decoder::forward) (pass them in
//! [`ForwardOptions::lora`](crate::ForwardOptions)) or merged into a copy of the weights
//! ([`Decoder::merged`](crate::Decoder::merged)). The base weights are never changed.
//!
//! Shapes follow this crate's `[in, out]` storage: `A` is `[in, rank]`, `B` is `[rank, out]`.
//! (PEFT stores them transposed, `lora_A.weight` `[rank, in]` and `lora_B.weight`
//! `[out, rank]`; [`Target::peft_name`] gives its names.)
//!
//! # Example
//!
//! ```
//! use llm_burn::model::lora::{Lora, LoraSpec, Target};
//! use llm_burn::{CpuBackend, ModelConfig, tiny};
//!
//! let dir = std::env::temp_dir().join(format!("lora-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! tiny::write_weights(&dir, 7, tiny::VOCAB)?;
//! let config = ModelConfig::load(&dir.join("config.json"))?;
//! let spec = LoraSpec { rank: 4, alpha: 8.0, targets: Target::ALL.to_vec() };
//! let lora = Lora::<CpuBackend>::init(&config, &spec, 7, &Default::default())?;
//! assert_eq!(lora.scale(), 2.0);
//! assert_eq!(lora.tensors().len(), 2 * 7 * config.layers);
//! # Ok::<(), llm_burn::Error>(())
//! ```

use std::collections::BTreeMap;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::config::ModelConfig;
use crate::error::{Error, Result};

/// A projection an adapter can sit on (serialised as PEFT's `target_modules` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Target {
    /// `self_attn.q_proj`.
    #[serde(rename = "q_proj")]
    Q,
    /// `self_attn.k_proj`.
    #[serde(rename = "k_proj")]
    K,
    /// `self_attn.v_proj`.
    #[serde(rename = "v_proj")]
    V,
    /// `self_attn.o_proj`.
    #[serde(rename = "o_proj")]
    O,
    /// `mlp.gate_proj`.
    #[serde(rename = "gate_proj")]
    Gate,
    /// `mlp.up_proj`.
    #[serde(rename = "up_proj")]
    Up,
    /// `mlp.down_proj`.
    #[serde(rename = "down_proj")]
    Down,
}

impl Target {
    /// Every projection, in layer order.
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The module's short name as PEFT's `target_modules` spells it (`q_proj`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The module's path inside a layer (`self_attn.q_proj`, `mlp.up_proj`, ...).
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// Parses a short name (`q_proj`) or a single letter-ish alias (`q`, `gate`).
    pub fn parse(s: &str) -> Result<Target> {
        let s = s.trim();
        Target::ALL
            .into_iter()
            .find(|t| t.short_name() == s || t.short_name().trim_end_matches("_proj") == s)
            .ok_or_else(|| Error::Input(format!("unknown LoRA target {s:?} (use q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")))
    }

    /// The projection's `(in, out)` widths.
    pub fn dims(self, c: &ModelConfig) -> (usize, usize) {
        let (h, q, kv, i) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim, c.intermediate);
        match self {
            Target::Q => (h, q),
            Target::K | Target::V => (h, kv),
            Target::O => (q, h),
            Target::Gate | Target::Up => (h, i),
            Target::Down => (i, h),
        }
    }

    /// PEFT's tensor name of this adapter's `A` (`which = "lora_A"`) or `B` (`"lora_B"`).
    pub fn peft_name(self, layer: usize, which: &str) -> String {
        format!("base_model.model.model.layers.{layer}.{}.{which}.weight", self.module())
    }
}

/// Shape of a set of adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank of every adapter.
    pub rank: usize,
    /// PEFT's `lora_alpha`: the update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// The projections adapted in every layer.
    pub targets: Vec<Target>,
}

/// One adapter: `A` `[in, rank]`, `B` `[rank, out]`.
#[derive(Debug, Clone)]
pub struct Adapter<B: Backend> {
    /// Down-projection `[in, rank]`.
    pub a: Tensor<B, 2>,
    /// Up-projection `[rank, out]`.
    pub b: Tensor<B, 2>,
}

/// Adapters for every layer of a model (the same targets in each layer).
#[derive(Debug, Clone)]
pub struct Lora<B: Backend> {
    rank: usize,
    alpha: f64,
    layers: Vec<BTreeMap<Target, Adapter<B>>>,
}

impl<B: Backend> Lora<B> {
    /// PEFT's initialisation: `A` uniform in `±1/√in` (Kaiming-uniform with `a = √5`), `B`
    /// zero, so fresh adapters leave the model unchanged. Seeded.
    pub fn init(config: &ModelConfig, spec: &LoraSpec, seed: u64, device: &B::Device) -> Result<Self> {
        if spec.rank == 0 {
            return Err(Error::Input("LoRA rank must be at least 1".into()));
        }
        if !(spec.alpha.is_finite() && spec.alpha > 0.0) {
            return Err(Error::Input(format!("LoRA alpha must be positive, not {}", spec.alpha)));
        }
        if spec.targets.is_empty() {
            return Err(Error::Input("LoRA needs at least one target module".into()));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let r = spec.rank;
        let layers = (0..config.layers)
            .map(|_| {
                let mut m = BTreeMap::new();
                for &t in &Target::ALL {
                    if !spec.targets.contains(&t) {
                        continue;
                    }
                    let (i, o) = t.dims(config);
                    let bound = 1.0 / (i as f32).sqrt();
                    let a: Vec<f32> = (0..i * r).map(|_| rng.random_range(-bound..bound)).collect();
                    m.insert(
                        t,
                        Adapter {
                            a: Tensor::from_data(TensorData::new(a, [i, r]), device),
                            b: Tensor::zeros([r, o], device),
                        },
                    );
                }
                m
            })
            .collect();
        Ok(Lora { rank: r, alpha: spec.alpha, layers })
    }

    /// Builds adapters from per-layer tensors, checking every shape against the model.
    pub fn from_parts(config: &ModelConfig, rank: usize, alpha: f64, layers: Vec<BTreeMap<Target, Adapter<B>>>) -> Result<Self> {
        if layers.len() != config.layers {
            return Err(Error::Input(format!("adapters for {} layers on a model of {}", layers.len(), config.layers)));
        }
        for (l, m) in layers.iter().enumerate() {
            for (t, ad) in m {
                let (i, o) = t.dims(config);
                if ad.a.dims() != [i, rank] || ad.b.dims() != [rank, o] {
                    return Err(Error::Tensor {
                        name: t.peft_name(l, "lora_A/B"),
                        message: format!("A {:?} and B {:?}, expected [{i}, {rank}] and [{rank}, {o}]", ad.a.dims(), ad.b.dims()),
                    });
                }
            }
        }
        Ok(Lora { rank, alpha, layers })
    }

    /// Rank of the adapters.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// PEFT's `lora_alpha`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The factor of the update, `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Layers the adapters cover.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The adapter on `target` of `layer`, if any.
    pub fn get(&self, layer: usize, target: Target) -> Option<&Adapter<B>> {
        self.layers.get(layer).and_then(|m| m.get(&target))
    }

    /// The adapted projections (those of the first layer; every layer has the same).
    pub fn targets(&self) -> Vec<Target> {
        self.layers.first().map(|m| m.keys().copied().collect()).unwrap_or_default()
    }

    /// Every tensor with its PEFT name, `A` then `B` per adapter, in layer and target order.
    pub fn tensors(&self) -> Vec<(String, &Tensor<B, 2>)> {
        let mut out = Vec::new();
        for (l, m) in self.layers.iter().enumerate() {
            for (t, ad) in m {
                out.push((t.peft_name(l, "lora_A"), &ad.a));
                out.push((t.peft_name(l, "lora_B"), &ad.b));
            }
        }
        out
    }

    /// The same adapters with every tensor passed through `f` (in [`Lora::tensors`] order),
    /// possibly onto another backend.
    pub fn map<C: Backend>(&self, mut f: impl FnMut(&str, Tensor<B, 2>) -> Tensor<C, 2>) -> Lora<C> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, m)| {
                m.iter()
                    .map(|(t, ad)| {
                        let a = f(&t.peft_name(l, "lora_A"), ad.a.clone());
                        let b = f(&t.peft_name(l, "lora_B"), ad.b.clone());
                        (*t, Adapter { a, b })
                    })
                    .collect()
            })
            .collect();
        Lora { rank: self.rank, alpha: self.alpha, layers }
    }
}

impl<A: AutodiffBackend> Lora<A> {
    /// The adapters without autodiff tracking (for inference or merging).
    pub fn inner(&self) -> Lora<A::InnerBackend> {
        self.map(|_, t| t.inner())
    }

    /// Trainable copies of `lora` (every tensor requires a gradient).
    pub fn trainable(lora: &Lora<A::InnerBackend>) -> Self {
        lora.map(|_, t| Tensor::<A, 2>::from_inner(t).require_grad())
    }
}
