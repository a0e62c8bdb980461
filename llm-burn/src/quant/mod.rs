//! Quantized weights, from the ground floor up: ggml's types ([`TensorType`]), dequantization,
//! quantization ([`quantize`]), the block matrix ([`qmatrix::QMatrix`]) with its two product
//! orientations, and integer products on a GGUF file's blocks with their kernels ([`intdot`]).

mod dequant;
pub mod intdot;
pub mod qmatrix;
pub mod quantize;
pub mod types;

pub use dequant::*;
pub use types::{Blocks, TensorType};
