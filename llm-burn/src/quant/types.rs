//! The ground floor of the quantized formats: ggml's tensor types, their ids and block
//! sizes. Everything above (dequantization, quantization, the block matrix, integer
//! products, the GGUF reader and writer) is written in these terms.

/// A tensor's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)] // ggml's names
pub enum TensorType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, blocks of 32 with a scale.
    Q4_0,
    /// 4-bit, blocks of 32 with a scale and a minimum.
    Q4_1,
    /// 5-bit, blocks of 32 with a scale (the fifth bits packed apart).
    Q5_0,
    /// 8-bit, blocks of 32 with a scale.
    Q8_0,
    /// 4-bit k-quant: super-blocks of 256, eight sub-blocks with 6-bit scales and minimums.
    Q4_K,
    /// 6-bit k-quant: super-blocks of 256, sixteen sub-blocks with 8-bit scales.
    Q6_K,
}

impl TensorType {
    /// The type of a ggml type id, if this crate reads it.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            3 => TensorType::Q4_1,
            6 => TensorType::Q5_0,
            8 => TensorType::Q8_0,
            12 => TensorType::Q4_K,
            14 => TensorType::Q6_K,
            30 => TensorType::BF16,
            _ => return None,
        })
    }

    /// ggml's type id (what a GGUF tensor table stores).
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
            TensorType::Q4_1 => 3,
            TensorType::Q5_0 => 6,
            TensorType::Q8_0 => 8,
            TensorType::Q4_K => 12,
            TensorType::Q6_K => 14,
            TensorType::BF16 => 30,
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            TensorType::F32 => (1, 4),
            TensorType::F16 | TensorType::BF16 => (1, 2),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q4_1 => (32, 20),
            TensorType::Q5_0 => (32, 22),
            TensorType::Q8_0 => (32, 34),
            TensorType::Q4_K => (256, 144),
            TensorType::Q6_K => (256, 210),
        }
    }
}

/// A matrix's blocks as stored, borrowed: `rows` rows of `cols` values, each row whole blocks
/// of `kind` along `cols`. What the integer products read ([`crate::quant::intdot`]); the
/// block matrix that owns them is [`crate::quant::qmatrix::QMatrix`].
#[derive(Debug, Clone, Copy)]
pub struct Blocks<'a> {
    kind: TensorType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> Blocks<'a> {
    /// A view of `data` as `rows` × `cols` values in `kind`'s blocks (the caller checked that
    /// the sizes agree).
    pub fn new(kind: TensorType, rows: usize, cols: usize, data: &'a [u8]) -> Self {
        Blocks { kind, rows, cols, data }
    }

    /// The block type.
    pub fn kind(&self) -> TensorType {
        self.kind
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes in all.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The blocks, row after row.
    pub fn blocks(&self) -> &'a [u8] {
        self.data
    }
}
