//! The floating-point type a model's weights are stored and multiplied in. Everything that
//! needs accuracy stays float32: norms, RoPE, attention's softmax, the residual stream,
//! log-probabilities and the head outputs handed to pas-core; activations are cast to the
//! weights' type for each matrix product and the product back to float32.

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
}

impl Dtype {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    /// burn's float type.
    pub fn burn(self) -> FloatDType {
        match self {
            Dtype::F32 => FloatDType::F32,
            Dtype::F16 => FloatDType::F16,
            Dtype::Bf16 => FloatDType::BF16,
        }
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
            _ => Err(format!("unknown dtype `{s}` (expected f32, f16 or bf16)")),
        }
    }
}
