//! The type a model's linear, embedding and output weights are stored in. Everything that
//! needs accuracy stays float32: norms, RoPE, attention's softmax, the residual stream,
//! log-probabilities and the head outputs handed to pas-core. With a float type, activations
//! are cast to it for each matrix product and the product back to float32; a quantized type
//! stays in blocks in memory and is dequantized a panel at a time inside each product
//! ([`crate::quant::qmatrix`]).

use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

/// Weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats (the CPU default).
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (the CUDA default).
    Bf16,
    /// ggml's `Q8_0`: blocks of 32 signed bytes with an f16 scale (8.5 bits a weight),
    /// quantized at load from the float weights.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// ggml's `Q4_K`: super-blocks of 256 with 6-bit scales and minimums per 32 (4.5 bits a
    /// weight), quantized at load from the float weights, kept as a GGUF file keeps them
    /// (`[out, in]`, blocks along the input); a matrix whose rows are not whole super-blocks
    /// (SmolLM2's width 576) falls back to `Q8_0`, as llama.cpp does.
    #[serde(rename = "q4_k")]
    Q4K,
    /// Each weight as the model's GGUF file holds it (Q4_K, Q6_K, Q8_0, ...), kept in its
    /// blocks ([`crate::model::load_gguf`]).
    File,
}

impl Dtype {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Q8_0 => "q8_0",
            Dtype::Q4K => "q4_k",
            Dtype::File => "file",
        }
    }

    /// burn's float type of the products: the weights' own for a float type, float32 for a
    /// quantized one (its panels are dequantized to float32).
    pub fn burn(self) -> FloatDType {
        match self {
            Dtype::F32 | Dtype::Q8_0 | Dtype::Q4K | Dtype::File => FloatDType::F32,
            Dtype::F16 => FloatDType::F16,
            Dtype::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether the weights stay quantized in memory.
    pub fn is_quantized(self) -> bool {
        matches!(self, Dtype::Q8_0 | Dtype::Q4K | Dtype::File)
    }

    /// The default for a device: bf16 on CUDA, f32 elsewhere.
    pub fn default_for(cuda: bool) -> Self {
        if cuda { Dtype::Bf16 } else { Dtype::F32 }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "f16" => Ok(Dtype::F16),
            "bf16" => Ok(Dtype::Bf16),
            "q8_0" => Ok(Dtype::Q8_0),
            "q4_k" => Ok(Dtype::Q4K),
            "file" => Ok(Dtype::File),
            _ => Err(format!("unknown dtype `{s}` (expected f32, f16, bf16, q8_0, q4_k or file)")),
        }
    }
}
