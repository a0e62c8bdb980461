//! Model configuration: a tolerant mirror of Hugging Face's `config.json`, resolved into a
//! validated config with no options.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The decoder architectures this crate runs. They share the decoder ([`crate::Decoder`]);
/// what differs between them is one row of [`ARCHITECTURES`], so that a new family is a new
/// variant and its row (plus, if it has any, its own differences in the forward pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, Mistral, SmolLM2, TinyLlama: no projection biases; llama.cpp stores Q/K rows
    /// permuted for its interleaved RoPE.
    Llama,
    /// Qwen2 and Qwen2.5: biases on the q/k/v projections, RoPE base 1e6; llama.cpp keeps Hugging
    /// Face's row order (NeoX RoPE).
    Qwen2,
    /// A test-only third shape (Llama's permuted Q/K rows with Qwen2's biases): it proves that
    /// a family is its row of [`ARCHITECTURES`] and nothing else (`model::testbed`).
    #[cfg(test)]
    Testbed,
}

/// What differs between the decoder families: names in each file format and the weights'
/// layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Family {
    /// The architecture.
    pub arch: Architecture,
    /// Hugging Face `model_type`s read as this family (the first is the one written).
    pub model_types: &'static [&'static str],
    /// Hugging Face's model class (`architectures` in `config.json`).
    pub hf_class: &'static str,
    /// GGUF `general.architecture`, also the prefix of its hyper-parameter keys
    /// (`{gguf}.block_count`, ...).
    pub gguf: &'static str,
    /// Whether the q/k/v projections carry biases when the config does not say.
    pub qkv_bias: bool,
    /// Whether llama.cpp's GGUF files store the Q/K rows permuted (interleaved RoPE pairs):
    /// readers put them back in Hugging Face order, writers permute them.
    pub gguf_permutes_qk: bool,
}

/// One row per family: the architecture table every reader and writer goes through.
pub const ARCHITECTURES: &[Family] = &[
    Family { arch: Architecture::Llama, model_types: &["llama", "mistral"], hf_class: "LlamaForCausalLM", gguf: "llama", qkv_bias: false, gguf_permutes_qk: true },
    Family { arch: Architecture::Qwen2, model_types: &["qwen2"], hf_class: "Qwen2ForCausalLM", gguf: "qwen2", qkv_bias: true, gguf_permutes_qk: false },
    #[cfg(test)]
    Family { arch: Architecture::Testbed, model_types: &["testbed"], hf_class: "TestbedForCausalLM", gguf: "testbed", qkv_bias: true, gguf_permutes_qk: true },
];

impl Architecture {
    /// This architecture's row of [`ARCHITECTURES`].
    pub fn family(self) -> &'static Family {
        ARCHITECTURES.iter().find(|f| f.arch == self).expect("every architecture has its row")
    }

    /// The architecture of a Hugging Face `model_type` (`llama`, `mistral`, `qwen2`).
    pub fn from_model_type(name: &str) -> Option<Self> {
        ARCHITECTURES.iter().find(|f| f.model_types.contains(&name)).map(|f| f.arch)
    }

    /// The architecture of a GGUF `general.architecture` (`llama`, `qwen2`).
    pub fn from_gguf(name: &str) -> Option<Self> {
        ARCHITECTURES.iter().find(|f| f.gguf == name).map(|f| f.arch)
    }

    /// The names a reader accepts, for error messages (`llama, mistral, qwen2`).
    pub fn supported() -> String {
        ARCHITECTURES.iter().flat_map(|f| f.model_types.iter().copied()).collect::<Vec<_>>().join(", ")
    }

    /// Hugging Face's `model_type`.
    pub fn model_type(self) -> &'static str {
        self.family().model_types[0]
    }

    /// Hugging Face's model class (`architectures` in `config.json`).
    pub fn hf_class(self) -> &'static str {
        self.family().hf_class
    }

    /// Whether the q/k/v projections carry biases when the config does not say.
    pub fn default_qkv_bias(self) -> bool {
        self.family().qkv_bias
    }

    /// Whether llama.cpp's GGUF files store the Q/K rows permuted (interleaved RoPE pairs).
    pub fn gguf_permutes_qk(self) -> bool {
        self.family().gguf_permutes_qk
    }
}

/// `eos_token_id` is one id or a list in Hugging Face configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

/// Hugging Face's `config.json` as found (only the fields a Llama-family model needs).
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    /// `model_type` (`llama`, `mistral`, `qwen2`).
    pub model_type: Option<String>,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    pub num_key_value_heads: Option<usize>,
    /// Head dimension (defaults to hidden / heads).
    pub head_dim: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: Option<f64>,
    /// Whether `lm_head` is the embedding.
    pub tie_word_embeddings: Option<bool>,
    /// Biases on q/k/v (Qwen2 has them).
    pub attention_bias: Option<bool>,
    /// Llama-3 style RoPE scaling.
    pub rope_scaling: Option<serde_json::Value>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<OneOrMany>,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// Context length the model was trained for.
    pub max_position_embeddings: Option<usize>,
}

/// Llama-3 RoPE frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeScaling {
    /// Scaling factor.
    pub factor: f64,
    /// Low-frequency factor.
    pub low_freq_factor: f64,
    /// High-frequency factor.
    pub high_freq_factor: f64,
    /// Original context length.
    pub original_max_position_embeddings: f64,
}

/// A validated model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The architecture (Llama when the config names none).
    pub arch: Architecture,
    /// Residual width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama-3 RoPE scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Whether `lm_head` is the embedding.
    pub tied: bool,
    /// Whether q/k/v have biases.
    pub qkv_bias: bool,
    /// End-of-sequence ids.
    pub eos: Vec<u32>,
    /// Context length (`max_position_embeddings`; 2,048 when the config has none).
    pub context: usize,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let hf: HfConfig = serde_json::from_str(&text).map_err(|e| Error::Config { path: path.to_owned(), message: e.to_string() })?;
        Self::try_from(hf).map_err(|message| Error::Config { path: path.to_owned(), message })
    }

    /// The head geometry steering works on.
    pub fn geometry(&self) -> pas_core::Geometry {
        pas_core::Geometry::new(self.layers as u32, self.heads as u32, self.head_dim as u32)
    }
}

impl TryFrom<HfConfig> for ModelConfig {
    type Error = String;
    fn try_from(c: HfConfig) -> std::result::Result<Self, String> {
        let arch = match &c.model_type {
            None => Architecture::Llama,
            Some(t) => Architecture::from_model_type(t)
                .ok_or_else(|| format!("model_type `{t}` is not supported ({})", Architecture::supported()))?,
        };
        let heads = c.num_attention_heads;
        let kv_heads = c.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(format!("{heads} query heads cannot be grouped over {kv_heads} key/value heads"));
        }
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {head_dim} must be even and positive"));
        }
        let rope_scaling = match &c.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).unwrap_or("");
                if kind != "llama3" {
                    return Err(format!("rope_scaling type `{kind}` is not supported (only `llama3`)"));
                }
                let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| format!("rope_scaling.{k} is missing"));
                Some(RopeScaling {
                    factor: f("factor")?,
                    low_freq_factor: f("low_freq_factor")?,
                    high_freq_factor: f("high_freq_factor")?,
                    original_max_position_embeddings: f("original_max_position_embeddings")?,
                })
            }
        };
        Ok(ModelConfig {
            arch,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads,
            kv_heads,
            head_dim,
            vocab: c.vocab_size,
            rms_eps: c.rms_norm_eps,
            rope_theta: c.rope_theta.unwrap_or(10000.0),
            rope_scaling,
            tied: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: c.attention_bias.unwrap_or(arch.default_qkv_bias()),
            eos: match c.eos_token_id {
                Some(OneOrMany::One(i)) => vec![i],
                Some(OneOrMany::Many(v)) => v,
                None => Vec::new(),
            },
            context: c.max_position_embeddings.unwrap_or(2048),
        })
    }
}
