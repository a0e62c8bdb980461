//! Integer products of quantized weights with quantized activations, as llama.cpp computes
//! them on a CPU: each activation row is rounded to 8 bits per block (`Q8_K`, blocks of 256
//! with a sum per 16 values, against `Q4_K` and `Q6_K` weights; `Q8_0`-like blocks of 32
//! against `Q8_0` weights), and each block's dot product is summed in integers (AVX2
//! `vpmaddubsw`/`vpmaddwd`) before its scales are applied in float32.
//!
//! The result differs from the float32 product with the dequantized weights by the rounding of
//! the activations (relative 2⁻⁸ per block at most), as llama.cpp's does. Only x86-64 CPUs with
//! AVX2 and FMA run it ([`product_t`] answers `None` elsewhere, and the caller dequantizes).
//!
//! ```
//! use llm_burn::quant::TensorType;
//! use llm_burn::quant::qmatrix::QMatrix;
//! let w: Vec<f32> = (0..4 * 256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0).collect();
//! let q = QMatrix::quantize(TensorType::Q4_K, &w, 4, 256).unwrap(); // 4 outputs, 256 inputs
//! let x: Vec<f32> = (0..256).map(|i| (i as f32 / 64.0).sin()).collect(); // one row
//! if let Some(y) = llm_burn::quant::intdot::product_t(q.view(), &x, 1) {
//!     let exact: Vec<f32> = q.dequantize().chunks(256).map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum()).collect();
//!     assert!(y.iter().zip(&exact).all(|(a, b)| (a - b).abs() < 0.05));
//! }
//! ```

use rayon::prelude::*;

use crate::quant::types::TensorType;
use crate::quant::types::Blocks;

/// Whether weights of `kind` have an integer product here (and the CPU runs it).
pub fn available(kind: TensorType) -> bool {
    matches!(kind, TensorType::Q4_K | TensorType::Q6_K | TensorType::Q8_0) && simd().is_some()
}

/// Most activation rows for which a Q8_0 weight is multiplied in integers: from there on the
/// dequantized float product keeps up (Q8_0 has no 16-bit sums: two 128 · 127 products fill a
/// lane, so each `vpmaddubsw` needs its own `vpmaddwd`, two multiplies per 32 products, as
/// float32's two FMA pipes do). Measured on AMD Zen 2, a [8960, 1536] weight
/// (`cargo bench -p llm-burn --bench qmatrix -- "as the file holds it"`), integer against
/// dequantized: 64 rows 12.2 against 19.2 ms, 512 rows 107.4 against 110.6 ms; SmolLM2's Q4_K
/// file (181 Q8_0 matrices), all rows in integers against none: prefill of 64 tokens 0.15
/// against 0.21 s, 1,024 tokens 2.65-2.75 against 2.48 s.
pub const Q8_0_INTEGER_ROWS: usize = 512;

/// `x · Wᵀ` for `x` `[m, w.cols()]` (row-major) and `w` `[out, in]` in blocks along `in`:
/// `[m, w.rows()]`, or `None` when [`available`] is false for its type (or the weight is
/// Q8_0 and `m` exceeds [`Q8_0_INTEGER_ROWS`]).
pub fn product_t(w: Blocks<'_>, x: &[f32], m: usize) -> Option<Vec<f32>> {
    product_built(w, x, m, true)
}

/// [`product_t`] with the AVX2 kernels compiled for AVX2 alone (16 vector registers), as a CPU
/// without AVX-512 runs them: for side-by-side measurement and tests of the two builds.
#[doc(hidden)]
pub fn product_t_avx2(w: Blocks<'_>, x: &[f32], m: usize) -> Option<Vec<f32>> {
    product_built(w, x, m, false)
}

/// [`product_t`], the kernels compiled for AVX-512 where the CPU has it when `wide`.
fn product_built(w: Blocks<'_>, x: &[f32], m: usize, wide: bool) -> Option<Vec<f32>> {
    assert_eq!(x.len(), m * w.cols(), "[{m}, {}] activations hold {} values", w.cols(), m * w.cols());
    if !available(w.kind()) || (w.kind() == TensorType::Q8_0 && m > Q8_0_INTEGER_ROWS) {
        return None;
    }
    #[cfg(not(target_arch = "x86_64"))]
    return { let _ = wide; None };
    #[cfg(target_arch = "x86_64")]
    Some(x86_product_t(w, x, m, simd()?, wide))
}

/// [`product_t`] with AVX2 (`wide`: compiled for AVX-512 where the CPU has it).
#[cfg(target_arch = "x86_64")]
fn x86_product_t(w: Blocks<'_>, x: &[f32], m: usize, simd: pulp::x86::V3, wide: bool) -> Vec<f32> {
    let block = if w.kind() == TensorType::Q8_0 { 32 } else { 256 };
    let acts = QActs::quantize(x, m, w.cols(), block);
    let n = w.rows();
    let row_bytes = w.bytes() / n.max(1);
    let mut blocks = vec![0.0f32; n * m]; // per task, `[m, its outputs]`
    if m > 0 {
        // With AVX-512 the same kernels compile with 32 vector registers: the packed tiles'
        // 24 accumulators stay in registers instead of the stack. AMD Zen 4, [8960, 1536],
        // CPU seconds per product (a scratch A/B run beside a training run, so not wall
        // time; `cargo bench -p llm-burn --bench qmatrix` has both builds): Q4_K 10% less
        // at 160 and 512 rows, Q6_K and Q8_0 within 4% either way.
        let wide = if wide { pulp::x86::V4::try_new() } else { None };
        blocks.par_chunks_mut(OUT_PER_TASK * m).zip(w.blocks().par_chunks(OUT_PER_TASK * row_bytes)).for_each(|(out, w_rows)| {
            let rows = Rows { simd, kind: w.kind(), w: w_rows, row_bytes, acts: &acts, out };
            match wide {
                Some(v4) => pulp::Simd::vectorize(v4, rows),
                None => pulp::Simd::vectorize(simd, rows),
            }
        });
    }
    assemble(blocks, n, m)
}

/// Weight rows (outputs) per parallel task: their blocks stay in the core's cache while every
/// activation row passes over them.
const OUT_PER_TASK: usize = 16;

/// Activation rows taken together against one weight row (the weight's blocks are unpacked
/// once for all of them).
const TILE: usize = 4;

/// Activation rows taken together against eight interleaved weight rows ([`packed`]); from
/// this many rows on, Q4_K and Q6_K weights are interleaved. Measured on AMD Zen 2 (Qwen2.5-1.5B
/// prefill of 256 tokens): 4 rows 5.07 s, 6 rows 4.05 s, 8 rows 3.76-3.83 s (2 rows 4.01 s).
const PACKED_TILE: usize = 8;

/// pulp's AVX2 + FMA token, where the CPU has them.
#[cfg(target_arch = "x86_64")]
fn simd() -> Option<pulp::x86::V3> {
    pulp::x86::V3::try_new()
}

/// No integer kernels off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn simd() -> Option<std::convert::Infallible> {
    None
}

/// The tasks' blocks (task `t`: `[m, outputs 16t..]`, one after the other) as `[m, n]`: each
/// row's run of outputs copied whole.
fn assemble(blocks: Vec<f32>, n: usize, m: usize) -> Vec<f32> {
    if m <= 1 {
        return blocks; // one row: the blocks are already in order
    }
    let mut y = vec![0.0f32; m * n];
    y.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        for (dst, block) in row.chunks_mut(OUT_PER_TASK).zip(blocks.chunks(OUT_PER_TASK * m)) {
            let w = dst.len();
            let src = &block[r * w..(r + 1) * w];
            match <&mut [f32; OUT_PER_TASK]>::try_from(&mut *dst) {
                Ok(whole) => *whole = src.try_into().expect("a whole task's outputs"), // two vector moves, not a memmove call
                Err(_) => dst.copy_from_slice(src),
            }
        }
    });
    y
}

/// Activation rows rounded to 8 bits per block of `block` values: `q = round(x / d)` (half
/// to even) with `d = max|x| / 127` per block, and the sum of each 16 consecutive `q`.
pub(crate) struct QActs {
    cols: usize,
    block: usize,
    /// `i8` values as bytes, row after row.
    q: Vec<u8>,
    /// One scale per block.
    d: Vec<f32>,
    /// One sum per 16 values.
    sums: Vec<i16>,
    /// One sum per 32 values.
    sums32: Vec<i16>,
}

/// One quantized activation row.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
struct Act<'a> {
    q: &'a [u8],
    d: &'a [f32],
    sums: &'a [i16],
}

impl QActs {
    /// `x` (`[rows, cols]`, `cols` whole blocks) quantized, in parallel over rows.
    pub(crate) fn quantize(x: &[f32], rows: usize, cols: usize, block: usize) -> Self {
        assert!(cols.is_multiple_of(block) && block.is_multiple_of(32), "rows of {cols} are not whole blocks of {block}");
        let mut a = QActs { cols, block, q: vec![0; rows * cols], d: vec![0.0; rows * cols / block], sums: vec![0; rows * cols / 16], sums32: Vec::new() };
        if rows * cols == 0 {
            return a;
        }
        let per_row = (a.q.par_chunks_mut(cols), a.d.par_chunks_mut(cols / block), a.sums.par_chunks_mut(cols / 16));
        per_row.0.zip(per_row.1).zip(per_row.2).zip(x.par_chunks(cols)).for_each(|(((q, d), sums), x)| {
            round_blocks(x, q, d, sums, block);
        });
        a.sums32 = a.sums.chunks_exact(2).map(|p| p[0] + p[1]).collect();
        a
    }

    /// Row `r`'s sums per 32 values.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn sums32(&self, r: usize) -> &[i16] {
        &self.sums32[r * self.cols / 32..(r + 1) * self.cols / 32]
    }

    /// Row `r`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn row(&self, r: usize) -> Act<'_> {
        let (c, b) = (self.cols, self.cols / self.block);
        Act { q: &self.q[r * c..(r + 1) * c], d: &self.d[r * b..(r + 1) * b], sums: &self.sums[r * c / 16..(r + 1) * c / 16] }
    }

    /// The rows' values as floats (`d · q`): what the integer products multiply.
    #[cfg(test)]
    pub(crate) fn dequantize(&self) -> Vec<f32> {
        self.q.chunks(self.block).zip(&self.d).flat_map(|(q, d)| q.iter().map(move |&b| f32::from(b as i8) * d)).collect()
    }
}

/// One row's blocks of `block` values rounded to 8 bits: `q = round(x / d)` (half to even)
/// with `d = max|x| / 127` per block, and the sum of each 16 consecutive `q`.
fn round_blocks(x: &[f32], q: &mut [u8], d: &mut [f32], sums: &mut [i16], block: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd() {
        return pulp::Simd::vectorize(simd, RoundBlocks { simd, x, q, d, sums, block });
    }
    for ((x, q), d) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)).zip(d) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *d = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in q.iter_mut().zip(x) {
            *q = ((v * inv).round_ties_even().clamp(-127.0, 127.0) as i8) as u8;
        }
    }
    for (s, q) in sums.iter_mut().zip(q.chunks_exact(16)) {
        *s = q.iter().map(|&b| i16::from(b as i8)).sum();
    }
}

/// [`round_blocks`] with AVX2: 32 values converted (rounding half to even), summed by 16,
/// then packed to bytes, at a time.
#[cfg(target_arch = "x86_64")]
struct RoundBlocks<'a> {
    simd: pulp::x86::V3,
    x: &'a [f32],
    q: &'a mut [u8],
    d: &'a mut [f32],
    sums: &'a mut [i16],
    block: usize,
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for RoundBlocks<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        use pulp::bytemuck::cast;
        use std::arch::x86_64::{__m256, __m256i};
        let (avx, avx2) = (self.simd.avx, self.simd.avx2);
        let load = |x: &[f32]| cast::<[f32; 8], __m256>(x[..8].try_into().expect("8 values"));
        let sign = avx._mm256_set1_ps(-0.0);
        let order = avx._mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let hsum = |v: __m256i| cast::<__m256i, [i32; 8]>(v).into_iter().sum::<i32>() as i16;
        let mut sums = self.sums.chunks_exact_mut(2);
        for ((x, q), d) in self.x.chunks_exact(self.block).zip(self.q.chunks_exact_mut(self.block)).zip(self.d) {
            let most = x.chunks_exact(8).fold(avx._mm256_setzero_ps(), |m, v| avx._mm256_max_ps(m, avx._mm256_andnot_ps(sign, load(v))));
            let amax = cast::<__m256, [f32; 8]>(most).into_iter().fold(0.0f32, f32::max);
            *d = amax / 127.0;
            let inv = avx._mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
            for (x, q) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
                let i: [__m256i; 4] = std::array::from_fn(|k| avx._mm256_cvtps_epi32(avx._mm256_mul_ps(load(&x[8 * k..]), inv)));
                let two = sums.next().expect("a sum per 16 values");
                (two[0], two[1]) = (hsum(avx2._mm256_add_epi32(i[0], i[1])), hsum(avx2._mm256_add_epi32(i[2], i[3])));
                let bytes = avx2._mm256_packs_epi16(avx2._mm256_packs_epi32(i[0], i[1]), avx2._mm256_packs_epi32(i[2], i[3]));
                q.copy_from_slice(&cast::<__m256i, [u8; 32]>(avx2._mm256_permutevar8x32_epi32(bytes, order)));
            }
        }
    }
}

/// A run of weight rows against every activation row: `out` is `[m, rows]`.
#[cfg(target_arch = "x86_64")]
struct Rows<'a> {
    simd: pulp::x86::V3,
    kind: TensorType,
    w: &'a [u8],
    row_bytes: usize,
    acts: &'a QActs,
    out: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let rows = self.w.len() / self.row_bytes;
        let m = self.out.len() / rows;
        if m >= PACKED_TILE {
            return self.interleaved(m);
        }
        let mut prep = Vec::new();
        for w in self.w.chunks_exact(self.row_bytes) {
            kernels::prepare(self.kind, w, &mut prep);
        }
        let per_row = prep.len() / rows;
        let mut r0 = 0;
        while r0 < m {
            let take = if r0 + TILE <= m { TILE } else { 1 };
            for (o, (w, p)) in self.w.chunks_exact(self.row_bytes).zip(prep.chunks_exact(per_row)).enumerate() {
                if take == TILE {
                    let a: [Act; TILE] = std::array::from_fn(|i| self.acts.row(r0 + i));
                    for (i, v) in dot(self.simd, self.kind, w, p, a).into_iter().enumerate() {
                        self.out[(r0 + i) * rows + o] = v;
                    }
                } else {
                    self.out[r0 * rows + o] = dot(self.simd, self.kind, w, p, [self.acts.row(r0)])[0];
                }
            }
            r0 += take;
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Rows<'_> {
    /// Weight rows eight at a time, interleaved ([`packed`]), against every activation row.
    #[inline(always)]
    fn interleaved(self, m: usize) {
        let mut p = packed::Packed::default();
        let width = packed::WIDTH;
        let rows = self.w.len() / self.row_bytes;
        for (g, w) in self.w.chunks(width * self.row_bytes).enumerate() {
            let mut out = Outputs { out: &mut *self.out, rows, first: g * width, count: w.len() / self.row_bytes };
            if self.kind == TensorType::Q8_0 {
                p.pack_q8_0(self.simd, w, self.row_bytes);
            } else {
                p.pack(self.kind, w, self.row_bytes);
            }
            let mut r0 = 0;
            while r0 < m {
                if r0 + PACKED_TILE <= m {
                    let a: [Act; PACKED_TILE] = std::array::from_fn(|i| self.acts.row(r0 + i));
                    let v = match self.kind {
                        TensorType::Q4_K => packed::q4_k(self.simd, &p, a, std::array::from_fn(|i| self.acts.sums32(r0 + i))),
                        TensorType::Q8_0 => packed::q8_0(self.simd, &p, a),
                        _ => packed::q6_k(self.simd, &p, a),
                    };
                    out.put(&v, r0);
                    r0 += PACKED_TILE;
                } else {
                    let a = [self.acts.row(r0)];
                    let v = match self.kind {
                        TensorType::Q4_K => packed::q4_k(self.simd, &p, a, [self.acts.sums32(r0)]),
                        TensorType::Q8_0 => packed::q8_0(self.simd, &p, a),
                        _ => packed::q6_k(self.simd, &p, a),
                    };
                    out.put(&v, r0);
                    r0 += 1;
                }
            }
        }
    }
}

/// A group of interleaved outputs (`count` from `first`) in a task's `[m, rows]` block.
#[cfg(target_arch = "x86_64")]
struct Outputs<'a> {
    out: &'a mut [f32],
    rows: usize,
    first: usize,
    count: usize,
}

#[cfg(target_arch = "x86_64")]
impl Outputs<'_> {
    /// Each activation row's outputs (`v[r]`, from row `r0 + r`) in place.
    #[inline(always)]
    fn put(&mut self, v: &[std::arch::x86_64::__m256], r0: usize) {
        for (r, v) in v.iter().enumerate() {
            let v = pulp::bytemuck::cast::<std::arch::x86_64::__m256, [f32; 8]>(*v);
            self.out[(r0 + r) * self.rows + self.first..][..self.count].copy_from_slice(&v[..self.count]);
        }
    }
}

/// One weight row against `R` activation rows.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot<const R: usize>(simd: pulp::x86::V3, kind: TensorType, w: &[u8], prep: &[kernels::Prep], a: [Act; R]) -> [f32; R] {
    match kind {
        TensorType::Q4_K => kernels::q4_k(simd, w, prep, a),
        TensorType::Q6_K => kernels::q6_k(simd, w, prep, a),
        TensorType::Q8_0 => kernels::q8_0(simd, w, prep, a),
        other => unreachable!("no integer product for {other:?}"),
    }
}

#[cfg(target_arch = "x86_64")]
mod packed;

#[cfg(target_arch = "x86_64")]
mod kernels;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::qmatrix::QMatrix;
    use crate::quant::qmatrix::tests::lcg;

    /// Weights of `kind`, `rows` by `blocks` blocks: Q4_K and Q8_0 quantized from seeded values,
    /// Q6_K arbitrary bytes with a finite f16 scale.
    fn weights(kind: TensorType, rows: usize, blocks: usize, seed: u64) -> QMatrix {
        let (per_block, block_bytes) = kind.block();
        let cols = per_block * blocks;
        if kind != TensorType::Q6_K {
            return QMatrix::quantize(kind, &lcg(seed, rows * cols), rows, cols).unwrap();
        }
        let mut data: Vec<u8> = lcg(seed, rows * blocks * block_bytes).iter().map(|v| ((v + 0.5) * 255.0) as u8).collect();
        for b in data.chunks_exact_mut(block_bytes) {
            b[209] &= 0xBB;
        }
        QMatrix::from_blocks(kind, rows, cols, data).unwrap()
    }

    proptest::proptest! {
        /// Each kernel equals the float product of the dequantized weights with the rounded
        /// activations (to float summation error), over activation tiles and a ragged rest,
        /// and stays within the activations' rounding of the float32 product.
        #[test]
        fn integer_products_equal_the_float_product_of_the_rounded_values(kind in 0usize..3, rows in 1usize..40, blocks in 1usize..3, m in 1usize..20, seed in 0u64..1000) {
            let kind = [TensorType::Q4_K, TensorType::Q6_K, TensorType::Q8_0][kind];
            let w = weights(kind, rows, blocks * if kind == TensorType::Q8_0 { 8 } else { 1 }, seed);
            let cols = w.cols();
            let x: Vec<f32> = lcg(seed + 1, m * cols).iter().map(|v| v * 4.0).collect();
            let Some(y) = product_t(w.view(), &x, m) else { return Ok(()) };
            // Built for AVX-512 or for AVX2 alone, the kernels compute the same values.
            let avx2 = product_t_avx2(w.view(), &x, m);
            proptest::prop_assert_eq!(avx2.as_ref(), Some(&y));
            let rounded = QActs::quantize(&x, m, cols, if kind == TensorType::Q8_0 { 32 } else { 256 }).dequantize();
            let wf = w.dequantize();
            for r in 0..m {
                for o in 0..rows {
                    let (wr, xr, xq) = (&wf[o * cols..][..cols], &x[r * cols..][..cols], &rounded[r * cols..][..cols]);
                    let exact: f32 = wr.iter().zip(xq).map(|(a, b)| a * b).sum();
                    let float: f32 = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
                    let scale: f32 = wr.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-6;
                    let got = y[r * rows + o];
                    proptest::prop_assert!((got - exact).abs() <= 1e-5 * scale, "{kind:?} row {r} out {o}: {got} against {exact} (scale {scale})");
                    proptest::prop_assert!((got - float).abs() <= scale / 127.0, "{kind:?} row {r} out {o}: {got} against the float product {float}");
                }
            }
        }
    }

    #[test]
    fn other_types_and_empty_inputs_are_answered() {
        let w = QMatrix::from_blocks(TensorType::Q4_0, 1, 32, vec![0; 18]).unwrap();
        assert_eq!(product_t(w.view(), &[0.0; 32], 1), None);
        let w = weights(TensorType::Q8_0, 3, 1, 0);
        if available(TensorType::Q8_0) {
            assert_eq!(product_t(w.view(), &[], 0), Some(vec![]));
            assert_eq!(product_t(w.view(), &[0.0; 32], 1), Some(vec![0.0; 3]));
            let many = Q8_0_INTEGER_ROWS + 1; // Q8_0 beyond its rows: the caller's float product
            assert_eq!(product_t(w.view(), &vec![0.0; many * 32], many), None);
            assert!(product_t(w.view(), &vec![0.0; Q8_0_INTEGER_ROWS * 32], Q8_0_INTEGER_ROWS).is_some());
        }
    }
}
