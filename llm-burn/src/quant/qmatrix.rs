//! Weight matrices kept quantized in memory (`--dtype q8_0`): rows of GGUF blocks (ggml's
//! `Q8_0` encoding: 32 signed bytes and an f16 scale, 8.5 bits a weight; other block types
//! dequantize the same way).
//!
//! The engine keeps a linear weight as `[in, out]` (the float layout the matrix product reads
//! fastest), so its blocks run along the output dimension: llama.cpp's run along the input.
//! A product dequantizes a panel of columns at a time into a float buffer (reused between
//! panels) and multiplies it with the float32 kernel: the result is the float32 product with
//! the dequantized weights (the activations are not rounded), and only one panel is ever
//! expanded. Dequantizing is one pass over the weights per product (about 7 G values/s on two
//! cores): small next to a batch of many tokens, the larger share for one token.
//!
//! ```
//! use llm_burn::quant::qmatrix::QMatrix;
//! let w: Vec<f32> = (0..2 * 64).map(|i| i as f32 / 100.0).collect(); // [rows = 2, cols = 64]
//! let q = QMatrix::quantize_q8_0(&w, 2, 64).unwrap();
//! assert_eq!(q.bytes(), 2 * 2 * 34); // two blocks of 32 per row, 34 bytes each
//! let back = q.dequantize();
//! assert!(w.iter().zip(&back).all(|(a, b)| (a - b).abs() < 0.01));
//! ```

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::quant::types::TensorType;
use crate::quant::dequant::dequantize_into;

/// Rows dequantized per parallel task.
const ROWS_PER_TASK: usize = 16;

/// Activation rows from which a file-layout product transposes its weight panels
/// ([`QMatrix::product_t`]); measured better below it at 64, above it at 256.
pub const FEW_ROWS: usize = 128;

/// An `[out, in]` matrix as rows of GGUF blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct QMatrix {
    kind: TensorType,
    rows: usize,
    cols: usize,
    /// `rows` runs of `row_bytes`.
    data: Vec<u8>,
    row_bytes: usize,
}

impl QMatrix {
    /// A matrix from a GGUF tensor's bytes (`[rows, cols]`, rows of whole blocks).
    pub fn from_blocks(kind: TensorType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, String> {
        let (per_block, block_bytes) = kind.block();
        if !cols.is_multiple_of(per_block) {
            return Err(format!("{kind:?} rows are whole blocks of {per_block} values; a row of {cols} is not"));
        }
        let row_bytes = cols / per_block * block_bytes;
        if data.len() != rows * row_bytes {
            return Err(format!("a [{rows}, {cols}] {kind:?} matrix is {} bytes, not {}", rows * row_bytes, data.len()));
        }
        Ok(QMatrix { kind, rows, cols, data, row_bytes })
    }

    /// Quantizes a row-major `[rows, cols]` float matrix to `Q8_0` as ggml's
    /// `quantize_row_q8_0_ref` does: per block of 32, `d = max|x| / 127` (stored as f16) and
    /// `q = round(x / d)`.
    pub fn quantize_q8_0(w: &[f32], rows: usize, cols: usize) -> Result<Self, String> {
        Self::quantize(TensorType::Q8_0, w, rows, cols)
    }

    /// Quantizes a row-major `[rows, cols]` float matrix to `kind` (`Q8_0` or `Q4_K`), its
    /// blocks along the rows ([`crate::quant::quantize`]), in parallel over rows.
    pub fn quantize(kind: TensorType, w: &[f32], rows: usize, cols: usize) -> Result<Self, String> {
        if w.len() != rows * cols {
            return Err(format!("a [{rows}, {cols}] matrix holds {} values, not {}", rows * cols, w.len()));
        }
        let (per_block, block_bytes) = kind.block();
        if !cols.is_multiple_of(per_block) {
            return Err(format!("{kind:?} rows are whole blocks of {per_block} values; a row of {cols} is not"));
        }
        let row_bytes = cols / per_block * block_bytes;
        let mut data = vec![0u8; rows * row_bytes];
        if rows > 0 && cols > 0 {
            data.par_chunks_mut(row_bytes).zip(w.par_chunks(cols)).try_for_each(|(out, x)| crate::quant::quantize::quantize_row(kind, x, out))?;
        }
        QMatrix::from_blocks(kind, rows, cols, data)
    }

    /// The block type.
    pub fn kind(&self) -> TensorType {
        self.kind
    }

    /// Rows (the engine stores a linear weight `[in, out]`: its inputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns, along which the blocks run (a linear weight's outputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The blocks, row after row (a GGUF tensor's data when the rows are its outputs).
    pub fn blocks(&self) -> &[u8] {
        &self.data
    }

    /// The blocks as a borrowed view (what the integer products read).
    pub fn view(&self) -> crate::quant::types::Blocks<'_> {
        crate::quant::types::Blocks::new(self.kind, self.rows, self.cols, &self.data)
    }

    /// The blocks, taken.
    pub fn into_blocks(self) -> Vec<u8> {
        self.data
    }

    /// Columns `c` (whole blocks) of every row dequantized into `out` (`[rows, c.len()]`),
    /// in parallel over rows.
    pub fn dequantize_cols(&self, c: Range<usize>, out: &mut [f32]) {
        let (per_block, block_bytes) = self.kind.block();
        assert!(c.start.is_multiple_of(per_block) && (c.end.is_multiple_of(per_block) || c.end == self.cols), "columns {c:?} are not whole {per_block}-value blocks");
        let width = c.len();
        assert_eq!(out.len(), self.rows * width, "columns {c:?} of {} rows hold {} values", self.rows, self.rows * width);
        let (first, len) = (c.start / per_block * block_bytes, width / per_block * block_bytes);
        let (kind, row_bytes) = (self.kind, self.row_bytes);
        out.par_chunks_mut(width * ROWS_PER_TASK).zip(self.data.par_chunks(row_bytes * ROWS_PER_TASK)).for_each(|(out, src)| {
            vectorized(|simd| DequantRows { simd, kind, src, row_bytes, bytes: first..first + len, out, width });
        });
    }

    /// Column `c` as floats (`[rows]`): an embedding lookup in a table stored `[hidden, vocab]`.
    pub fn column(&self, c: usize) -> Vec<f32> {
        let (per_block, block_bytes) = self.kind.block();
        let start = c / per_block * block_bytes;
        let mut block = vec![0.0f32; per_block];
        (0..self.rows)
            .map(|r| {
                dequantize_into(self.kind, &self.data[r * self.row_bytes + start..][..block_bytes], &mut block);
                block[c % per_block]
            })
            .collect()
    }

    /// The whole matrix as floats, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.dequantize_cols(0..self.cols, &mut out);
        out
    }

    /// `x · Q` (`x`: `[m, rows]` float32; returns `[m, cols]`): dequantized a panel of columns
    /// at a time, each panel multiplied by the float32 kernel (on an autodiff backend the
    /// panels are constants: gradients reach `x`).
    pub fn product<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [m, k] = x.dims();
        assert_eq!(k, self.rows, "a product of [{m}, {k}] by a [{}, {}] weight", self.rows, self.cols);
        panels(x, self.cols, self.panel_cols(), |c, panel| self.dequantize_cols(c, panel))
    }

    /// `x · Qᵀ` (`x`: `[m, cols]` float32; returns `[m, rows]`): the product with a weight
    /// kept as a GGUF file holds it (`[out, in]`, blocks along `in`): integer products where
    /// [`integer_products`] and the type allow ([`crate::quant::intdot`]), else
    /// [`QMatrix::product_t_dequantized`], a panel of rows (outputs) at a time. Below [`FEW_ROWS`] activation rows it is computed as `(Q · xᵀ)ᵀ`,
    /// each panel dequantized as it lies and multiplied as the left operand; from there each
    /// panel is dequantized transposed into `[in, out]` (Qwen2.5-1.5B prefill on this AMD
    /// Zen 4: 64 tokens 2.70 s against 3.25 s, 1,024 tokens 18.7 s against 23.5 s).
    pub fn product_t<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.integer_product_t(&x) {
            Some(y) => y,
            None => self.product_t_dequantized(x),
        }
    }

    /// [`QMatrix::product_t`] with the float32 activations, each panel of weights dequantized.
    pub fn product_t_dequantized<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [m, k] = x.dims();
        assert_eq!(k, self.cols, "a product of [{m}, {k}] by the transpose of a [{}, {}] weight", self.rows, self.cols);
        let step = ((1usize << 20) / self.cols.max(1)).clamp(ROWS_PER_TASK, self.rows.max(ROWS_PER_TASK)) / ROWS_PER_TASK * ROWS_PER_TASK;
        if m >= FEW_ROWS {
            return panels(x, self.rows, step, |r, panel| self.dequantize_rows_t(r, panel));
        }
        let device = x.device();
        let xt = x.transpose(); // [k, m]
        let parts: Vec<Tensor<B, 2>> = (0..self.rows)
            .step_by(step)
            .map(|r0| {
                let r1 = (r0 + step).min(self.rows);
                let mut panel = spare_panel(k * (r1 - r0));
                self.dequantize_rows(r0..r1, &mut panel);
                let p = Tensor::<B, 2>::from_data(TensorData::new(panel, [r1 - r0, k]), &device);
                let y = p.clone().matmul(xt.clone()); // [rows of the panel, m]
                keep_panel::<B>(p);
                y
            })
            .collect();
        let yt = if parts.len() == 1 { parts.into_iter().next().expect("one panel") } else { Tensor::cat(parts, 0) };
        yt.transpose()
    }

    /// [`QMatrix::product_t`] as integer products ([`crate::quant::intdot`]) where they are on,
    /// the type has them, and the activations are float32 host memory (the CPU backend, no
    /// autodiff): `None` otherwise.
    fn integer_product_t<B: Backend>(&self, x: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        if !integer_products() || std::any::TypeId::of::<B>() != std::any::TypeId::of::<crate::CpuBackend>() || !crate::quant::intdot::available(self.kind) {
            return None;
        }
        let [m, _] = x.dims();
        let values = x.clone().into_data().into_vec::<f32>().ok()?;
        let y = crate::quant::intdot::product_t(self.view(), &values, m)?;
        Some(Tensor::from_data(TensorData::new(y, [m, self.rows]), &x.device()))
    }

    /// Rows `r` dequantized into `out` (`[r.len(), cols]`), in parallel over rows.
    pub fn dequantize_rows(&self, r: Range<usize>, out: &mut [f32]) {
        assert!(r.end <= self.rows, "rows {r:?} of {}", self.rows);
        assert_eq!(out.len(), r.len() * self.cols, "rows {r:?} of {} columns hold {} values", self.cols, r.len() * self.cols);
        let (kind, row_bytes, cols) = (self.kind, self.row_bytes, self.cols);
        let data = &self.data[r.start * row_bytes..r.end * row_bytes];
        out.par_chunks_mut(cols * ROWS_PER_TASK).zip(data.par_chunks(row_bytes * ROWS_PER_TASK)).for_each(|(out, src)| {
            vectorized(|simd| DequantRows { simd, kind, src, row_bytes, bytes: 0..row_bytes, out, width: cols });
        });
    }

    /// Rows `r` dequantized and transposed into `out` (`[cols, r.len()]`), in parallel over
    /// blocks of columns; rows are taken [`ROWS_PER_TASK`] at a time so that each write
    /// fills whole cache lines.
    pub fn dequantize_rows_t(&self, r: Range<usize>, out: &mut [f32]) {
        let (per_block, block_bytes) = self.kind.block();
        let width = r.len();
        assert!(r.end <= self.rows, "rows {r:?} of {}", self.rows);
        assert_eq!(out.len(), self.cols * width, "rows {r:?} of {} columns hold {} values", self.cols, self.cols * width);
        let (kind, row_bytes, data) = (self.kind, self.row_bytes, &self.data);
        out.par_chunks_mut(per_block * width).enumerate().for_each(|(j, out)| {
            let src = &data[j * block_bytes..];
            vectorized(|simd| DequantBlockColumn { simd, kind, src, row_bytes, rows: r.clone(), out });
        });
    }

    /// Row `r` as floats (`[cols]`): an embedding lookup in a table kept as the file holds it.
    pub fn row(&self, r: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; self.cols];
        dequantize_into(self.kind, &self.data[r * self.row_bytes..(r + 1) * self.row_bytes], &mut out);
        out
    }

    /// Columns per panel: about 4 MB of floats (below the size an allocator maps afresh for
    /// each request), in whole blocks.
    pub fn panel_cols(&self) -> usize {
        let per_block = self.kind.block().0;
        let cols = ((1usize << 20) / self.rows.max(1)).max(256) / per_block * per_block;
        cols.max(per_block).min(self.cols.max(1))
    }
}

/// Whether file-layout products of Q4_K, Q6_K and Q8_0 weights on this thread round the
/// activations to 8 bits and multiply in integers ([`crate::quant::intdot`], as llama.cpp does; the
/// default), or multiply the float32 activations by dequantized weights
/// (`LLM_BURN_FLOAT_PRODUCTS=1` in the environment, or inside [`with_float_products`]).
pub fn integer_products() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !FLOAT_HERE.get() && *ENV.get_or_init(|| std::env::var("LLM_BURN_FLOAT_PRODUCTS").map_or(true, |v| v.is_empty() || v == "0"))
}

thread_local! {
    /// Set inside [`with_float_products`].
    static FLOAT_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the float products (the exact product of the file's values) on this thread,
/// whatever [`integer_products`] says elsewhere: for parity checks of the stored values.
pub fn with_float_products<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FLOAT_HERE.set(self.0);
        }
    }
    let _restore = Restore(FLOAT_HERE.replace(true));
    f()
}

/// The AVX2 token of the k-quant kernels ([`crate::quant::dequant::q4_k_avx2`]), where the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
type Avx2 = pulp::x86::V3;
/// No AVX2 kernels off x86-64.
#[cfg(not(target_arch = "x86_64"))]
type Avx2 = std::convert::Infallible;

/// Blocks of `kind` dequantized into `out`: Q4_K and Q6_K with their AVX2 kernels when `simd`
/// is given (the same values), the rest as [`dequantize_into`].
#[inline(always)]
fn dequantize_blocks(simd: Option<Avx2>, kind: TensorType, bytes: &[u8], out: &mut [f32]) {
    match (simd, kind) {
        #[cfg(target_arch = "x86_64")]
        (Some(simd), TensorType::Q4_K) => crate::quant::dequant::q4_k_avx2(simd, bytes, out),
        #[cfg(target_arch = "x86_64")]
        (Some(simd), TensorType::Q6_K) => crate::quant::dequant::q6_k_avx2(simd, bytes, out),
        _ => dequantize_into(kind, bytes, out),
    }
}

/// Runs a dequantization compiled for the CPU: inside pulp's AVX2 function with the k-quant
/// kernels where the CPU has AVX2, else through pulp's dispatch. The operations are
/// [`pulp::WithSimd`] structs rather than closures, so that their loops are compiled inside
/// pulp's target-feature functions (a closure's call shim was left outside them, and the
/// dequantization ran as scalar SSE2 code: a third of a Qwen2.5-1.5B prefill of 64 tokens).
fn vectorized<Op: pulp::WithSimd<Output = ()>>(op: impl FnOnce(Option<Avx2>) -> Op) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return pulp::Simd::vectorize(simd, op(Some(simd)));
    }
    pulp::Arch::new().dispatch(op(None))
}

/// Rows of blocks (each `row_bytes`, of which `bytes` are read) dequantized into rows of
/// `width` floats.
struct DequantRows<'a> {
    simd: Option<Avx2>,
    kind: TensorType,
    src: &'a [u8],
    row_bytes: usize,
    bytes: Range<usize>,
    out: &'a mut [f32],
    width: usize,
}

impl pulp::WithSimd for DequantRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (o, d) in self.out.chunks_exact_mut(self.width).zip(self.src.chunks_exact(self.row_bytes)) {
            dequantize_blocks(self.simd, self.kind, &d[self.bytes.clone()], o);
        }
    }
}

/// One block column (`src` starts at the block in row 0) of `rows` dequantized and
/// transposed into `out` (`[values per block, rows.len()]`), [`ROWS_PER_TASK`] rows at a time
/// so that each write fills whole cache lines.
struct DequantBlockColumn<'a> {
    simd: Option<Avx2>,
    kind: TensorType,
    src: &'a [u8],
    row_bytes: usize,
    rows: Range<usize>,
    out: &'a mut [f32],
}

impl pulp::WithSimd for DequantBlockColumn<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let (per_block, block_bytes) = self.kind.block();
        let width = self.rows.len();
        let mut block = vec![0.0f32; per_block * ROWS_PER_TASK];
        for g0 in (0..width).step_by(ROWS_PER_TASK) {
            let n = ROWS_PER_TASK.min(width - g0);
            for (i, b) in block.chunks_exact_mut(per_block).take(n).enumerate() {
                let start = (self.rows.start + g0 + i) * self.row_bytes;
                dequantize_blocks(self.simd, self.kind, &self.src[start..start + block_bytes], b);
            }
            for (kk, line) in self.out.chunks_exact_mut(width).enumerate() {
                for (i, v) in line[g0..g0 + n].iter_mut().enumerate() {
                    *v = block[i * per_block + kk];
                }
            }
        }
    }
}

/// `x · W` for a weight of `n` outputs, `step` outputs at a time: `fill(outputs, buffer)`
/// writes the panel's float weights (`[k, outputs.len()]`) into the buffer.
fn panels<B: Backend>(x: Tensor<B, 2>, n: usize, step: usize, fill: impl Fn(Range<usize>, &mut [f32])) -> Tensor<B, 2> {
    let k = x.dims()[1];
    let device = x.device();
    let parts: Vec<Tensor<B, 2>> = (0..n)
        .step_by(step.max(1))
        .map(|c0| {
            let c1 = (c0 + step).min(n);
            let mut panel = spare_panel(k * (c1 - c0));
            fill(c0..c1, &mut panel);
            let p = Tensor::<B, 2>::from_data(TensorData::new(panel, [k, c1 - c0]), &device);
            let y = x.clone().matmul(p.clone());
            keep_panel::<B>(p);
            y
        })
        .collect();
    if parts.len() == 1 { parts.into_iter().next().expect("one panel") } else { Tensor::cat(parts, 1) }
}

thread_local! {
    /// Panel buffers given back after their product, for the next one: an allocator returns
    /// freed pages to the system after a few milliseconds (mimalloc's purge delay), and each
    /// fresh page costs a fault and zeroing, about a fifth of a quantized prefill.
    static SPARE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most buffers kept per thread.
const SPARE_MAX: usize = 4;

/// A buffer of `len` floats (its values are overwritten by the caller), reused if one is kept.
fn spare_panel(len: usize) -> Vec<f32> {
    let mut v = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    v.resize(len, 0.0);
    v
}

/// Keeps a panel's buffer for the next product when the tensor holds it in host memory alone
/// (on the CPU backend; elsewhere reading it back would copy).
fn keep_panel<B: Backend>(p: Tensor<B, 2>) {
    if std::any::TypeId::of::<B>() != std::any::TypeId::of::<crate::CpuBackend>() {
        return;
    }
    if let Ok(v) = p.into_data().into_vec::<f32>() {
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_MAX {
                s.push(v);
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Seeded uniform values in [-0.5, 0.5).
    pub(crate) fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    proptest::proptest! {
        /// Each value comes back within half a step of its block (`d / 2`), plus the rounding
        /// of `d` to f16 (relative 2⁻¹¹) times the largest quantized value (127),
        /// and a row read alone equals the same row of the whole matrix.
        #[test]
        fn q8_0_values_come_back_within_half_a_step(rows in 1usize..40, blocks in 1usize..6, seed in 0u64..1000) {
            let cols = 32 * blocks;
            let w = lcg(seed, rows * cols);
            let q = QMatrix::quantize_q8_0(&w, rows, cols).unwrap();
            let back = q.dequantize();
            for (k, (x, y)) in w.chunks(32).zip(back.chunks(32)).enumerate() {
                let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                for (a, b) in x.iter().zip(y) {
                    proptest::prop_assert!((a - b).abs() <= d * (0.5 + 127.0 / 2048.0) + 1e-7, "block {k}: {a} came back as {b}");
                }
            }
            let c0 = 32 * (blocks / 2);
            let mut part = vec![0.0; rows * (cols - c0)];
            q.dequantize_cols(c0..cols, &mut part);
            for i in 0..rows {
                proptest::prop_assert_eq!(&part[i * (cols - c0)..(i + 1) * (cols - c0)], &back[i * cols + c0..(i + 1) * cols]);
            }
            let col: Vec<f32> = (0..rows).map(|i| back[i * cols + cols - 1]).collect();
            proptest::prop_assert_eq!(q.column(cols - 1), col);
        }
    }

    proptest::proptest! {
        /// A range of rows (a panel of a file-layout weight), the same transposed, and rows
        /// read alone equal the whole matrix's, for a k-quant (Q4_K, super-blocks of 256),
        /// ragged groups of rows included.
        #[test]
        fn rows_read_in_panels_equal_the_whole_matrix(rows in 1usize..40, blocks in 1usize..3, start in 0usize..40, seed in 0u64..1000) {
            let cols = 256 * blocks;
            let mut data: Vec<u8> = lcg(seed, rows * blocks * 144).iter().map(|v| ((v + 0.5) * 255.0) as u8).collect();
            for b in data.chunks_exact_mut(144) {
                b[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                b[2..4].copy_from_slice(&half::f16::from_f32(0.002).to_le_bytes());
            }
            let q = QMatrix::from_blocks(TensorType::Q4_K, rows, cols, data).unwrap();
            let all = q.dequantize();
            let r = start.min(rows - 1)..rows;
            let mut t = vec![0.0; cols * r.len()];
            q.dequantize_rows(r.clone(), &mut t);
            proptest::prop_assert_eq!(&t[..], &all[r.start * cols..]);
            q.dequantize_rows_t(r.clone(), &mut t);
            for (i, row) in r.clone().enumerate() {
                for k in 0..cols {
                    proptest::prop_assert_eq!(t[k * r.len() + i], all[row * cols + k]);
                }
            }
            for row in r {
                proptest::prop_assert_eq!(q.row(row), all[row * cols..(row + 1) * cols].to_vec());
            }
        }
    }

    proptest::proptest! {
        /// The k-quant AVX2 kernels (on a CPU with AVX2; elsewhere the scalar code runs both
        /// sides) give the scalar dequantization's values bit for bit (the scalar code is the
        /// one checked against the gguf package), through a row, a panel of columns and the
        /// transposed panel, on arbitrary blocks with finite f16 scales.
        #[test]
        fn kquant_kernels_give_the_scalar_values_bit_for_bit(blocks in 1usize..4, seed in 0u64..1000, six in proptest::bool::ANY) {
            let kind = if six { TensorType::Q6_K } else { TensorType::Q4_K };
            let (per_block, block_bytes) = kind.block();
            let mut data: Vec<u8> = lcg(seed, blocks * block_bytes).iter().map(|v| ((v + 0.5) * 255.0) as u8).collect();
            let halves: &[usize] = if six { &[208] } else { &[0, 2] };
            for b in data.chunks_exact_mut(block_bytes) {
                for &h in halves {
                    b[h + 1] &= 0xBB; // exponent below all ones: a finite f16
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let want = bits(&crate::quant::dequant::dequantize(kind, &data));
            let q = QMatrix::from_blocks(kind, 1, blocks * per_block, data).unwrap();
            proptest::prop_assert_eq!(bits(&q.dequantize()), want.clone());
            let mut part = vec![0.0; per_block];
            q.dequantize_cols(per_block * (blocks - 1)..per_block * blocks, &mut part);
            proptest::prop_assert_eq!(bits(&part), want[per_block * (blocks - 1)..].to_vec());
            let mut t = vec![0.0; blocks * per_block];
            q.dequantize_rows_t(0..1, &mut t);
            proptest::prop_assert_eq!(bits(&t), want);
        }
    }

    #[test]
    fn a_zero_block_stays_zero_and_bad_shapes_are_refused() {
        let q = QMatrix::quantize_q8_0(&[0.0; 64], 1, 64).unwrap();
        assert_eq!(q.dequantize(), vec![0.0; 64]);
        assert!(QMatrix::quantize_q8_0(&[0.0; 48], 1, 48).unwrap_err().contains("whole blocks of 32"));
        assert!(QMatrix::from_blocks(TensorType::Q4_K, 2, 256, vec![0; 144]).unwrap_err().contains("288"));
    }
}
