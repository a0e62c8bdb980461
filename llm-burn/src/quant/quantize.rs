//! Quantization of `f32` rows into GGUF blocks, as ggml's reference quantizers
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_K_ref`) compute them: the inverse of
//! [`crate::quant`], so that a matrix quantized here reads back with the same dequantization
//! a GGUF file's blocks get.
//!
//! ```
//! use llm_burn::quant::TensorType;
//! use llm_burn::quant::quantize::quantize_row;
//! let x: Vec<f32> = (0..256).map(|i| (i as f32 / 40.0).sin()).collect();
//! let mut blocks = vec![0u8; 144]; // one Q4_K super-block
//! quantize_row(TensorType::Q4_K, &x, &mut blocks).unwrap();
//! let back = llm_burn::quant::dequantize(TensorType::Q4_K, &blocks);
//! assert!(x.iter().zip(&back).all(|(a, b)| (a - b).abs() < 0.08));
//! ```

use crate::quant::types::TensorType;

/// Quantizes `x` (whole blocks) into `out` (`x.len() / per_block * block_bytes` bytes), for
/// the types this crate writes: `Q8_0` and `Q4_K`.
pub fn quantize_row(kind: TensorType, x: &[f32], out: &mut [u8]) -> Result<(), String> {
    let (per_block, block_bytes) = kind.block();
    if !x.len().is_multiple_of(per_block) {
        return Err(format!("{kind:?} rows are whole blocks of {per_block} values; a row of {} is not", x.len()));
    }
    if out.len() != x.len() / per_block * block_bytes {
        return Err(format!("{} values of {kind:?} take {} bytes, not {}", x.len(), x.len() / per_block * block_bytes, out.len()));
    }
    let block: fn(&[f32], &mut [u8]) = match kind {
        TensorType::Q8_0 => q8_0,
        TensorType::Q4_K => q4_k,
        other => return Err(format!("quantizing to {other:?} is not supported (Q8_0 and Q4_K are)")),
    };
    for (x, b) in x.chunks_exact(per_block).zip(out.chunks_exact_mut(block_bytes)) {
        block(x, b);
    }
    Ok(())
}

/// The type a matrix with rows of `cols` values is quantized to when `want` is asked for:
/// `want`, or `Q8_0` where its rows are not whole blocks of `want` (as llama.cpp falls back).
pub fn row_type(cols: usize, want: TensorType) -> TensorType {
    if cols.is_multiple_of(want.block().0) { want } else { TensorType::Q8_0 }
}

/// ggml's `nearest_int`: round half to even.
#[inline(always)]
fn nearest(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// One `Q8_0` block: `d = max|x| / 127` (stored as f16), `q = round(x / d)`.
fn q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    for (q, v) in b[2..].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

/// One `Q4_K` super-block of 256 values: eight sub-blocks of 32, each fitted with a scale and
/// a minimum by a weighted least-squares search ([`fit_scale_min`]); the eight scales and
/// minimums quantized to 6 bits against the largest of each (two f16s, `d` and `dmin`); the
/// values requantized to 4 bits with the stored scales.
fn q4_k(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; 256];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let av = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av + xs[l].abs());
        (scales[j], mins[j]) = fit_scale_min(xs, &weights, &mut levels[32 * j..32 * j + 32]);
    }
    let max_scale = scales.iter().fold(0.0f32, |m, &v| m.max(v));
    let max_min = mins.iter().fold(0.0f32, |m, &v| m.max(v));
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut b[4..16];
    packed.fill(0);
    for j in 0..8 {
        let ls = nearest(inv_scale * scales[j]).min(63) as u8;
        let lm = nearest(inv_min * mins[j]).min(63) as u8;
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = half::f16::from_f32(max_scale / 63.0);
    let dmin = half::f16::from_f32(max_min / 63.0);
    b[..2].copy_from_slice(&d.to_le_bytes());
    b[2..4].copy_from_slice(&dmin.to_le_bytes());
    for j in 0..8 {
        let (sc, m) = crate::quant::dequant::scale_min_k4(j, &b[4..16]);
        let dj = d.to_f32() * f32::from(sc);
        if dj == 0.0 {
            continue;
        }
        let mj = dmin.to_f32() * f32::from(m);
        for (l, &v) in levels[32 * j..32 * j + 32].iter_mut().zip(&x[32 * j..32 * j + 32]) {
            *l = nearest((v + mj) / dj).clamp(0, 15) as u8;
        }
    }
    for (g, q) in b[16..144].chunks_exact_mut(32).enumerate() {
        for (l, q) in q.iter_mut().enumerate() {
            *q = levels[64 * g + l] | (levels[64 * g + 32 + l] << 4);
        }
    }
}

/// ggml's `make_qkx2_quants` for 4-bit levels (`nmax` 15; `rmin` -1, `rdelta` 0.1, 20
/// steps, squared error): the scale `s` and minimum `m` (returned positive, value ≈
/// `s · level - m`) that minimise the weighted error over a grid of trial scales, each
/// refined by least squares; `levels` gets the chosen levels.
fn fit_scale_min(x: &[f32], w: &[f32], levels: &mut [u8]) -> (f32, f32) {
    const NMAX: f32 = 15.0;
    let mut min = x.iter().fold(x[0], |m, &v| m.min(v));
    let max = x.iter().fold(x[0], |m, &v| m.max(v));
    let sum_w: f32 = w.iter().sum();
    let sum_x: f32 = w.iter().zip(x).map(|(w, x)| w * x).sum();
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let quantize = |iscale: f32, min: f32, l: &mut [u8]| {
        for (l, &v) in l.iter_mut().zip(x) {
            *l = nearest(iscale * (v - min)).clamp(0, NMAX as i32) as u8;
        }
    };
    let error = |scale: f32, min: f32, l: &[u8]| -> f32 { l.iter().zip(x).zip(w).map(|((&l, &v), &w)| w * (scale * f32::from(l) + min - v).powi(2)).sum() };
    let iscale = NMAX / (max - min);
    let mut scale = 1.0 / iscale;
    quantize(iscale, min, levels);
    let mut best = error(scale, min, levels);
    let mut trial = [0u8; 32];
    let trial = &mut trial[..x.len()];
    for step in 0..=20 {
        let iscale = (-1.0 + 0.1 * step as f32 + NMAX) / (max - min);
        quantize(iscale, min, trial);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((&l, &v), &w) in trial.iter().zip(x).zip(w) {
            let l = f32::from(l);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let e = error(this_scale, this_min, trial);
            if e < best {
                levels.copy_from_slice(trial);
                best = e;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequant::dequantize;

    use crate::quant::qmatrix::tests::lcg;

    proptest::proptest! {
        /// Q4_K keeps each sub-block of 32 within one 4-bit step of its range (the step grows
        /// by the 6-bit rounding of the sub-block's scale and minimum), and its error is
        /// about a 15th of the range's: the root-mean-square error is under a tenth of the
        /// values' own, on uniform values, values with an offset, and values with an outlier.
        #[test]
        fn q4_k_values_come_back_within_a_step(blocks in 1usize..4, seed in 0u64..1000, offset in -1.0f32..1.0, scale in 0.001f32..10.0, outlier in proptest::bool::ANY) {
            let mut x: Vec<f32> = lcg(seed, 256 * blocks).iter().map(|v| scale * (v + offset)).collect();
            if outlier {
                let i = (seed as usize * 37) % x.len();
                x[i] = 8.0 * scale;
            }
            let mut b = vec![0u8; 144 * blocks];
            quantize_row(TensorType::Q4_K, &x, &mut b).unwrap();
            let back = dequantize(TensorType::Q4_K, &b);
            for (k, (xs, ys)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
                let lo = xs.iter().fold(0.0f32, |m, &v| m.min(v));
                let hi = xs.iter().fold(f32::MIN, |m, &v| m.max(v));
                let super_range = x[k / 8 * 256..][..256].iter().fold(0.0f32, |m, &v| m.max(v.abs()));
                let step = (hi - lo) / 15.0 + 2.0 * super_range / 63.0;
                for (a, c) in xs.iter().zip(ys) {
                    proptest::prop_assert!((a - c).abs() <= step, "sub-block {k}: {a} came back as {c} (step {step})");
                }
            }
            if !outlier {
                let rms = |v: &mut dyn Iterator<Item = f32>| { let (s, n) = v.fold((0.0f64, 0usize), |(s, n), e| (s + f64::from(e * e), n + 1)); (s / n as f64).sqrt() };
                let err = rms(&mut x.iter().zip(&back).map(|(a, b)| a - b));
                let own = rms(&mut x.iter().map(|&a| a - x.iter().sum::<f32>() / x.len() as f32));
                proptest::prop_assert!(err < 0.1 * own, "rms error {err} against rms {own}");
            }
        }

    }

    /// Constant and zero blocks, and a block whose values are all positive (the minimum
    /// clamped to 0), come back exactly or within rounding; bad lengths are refused.
    #[test]
    fn edge_blocks_and_bad_lengths() {
        let mut b = vec![0u8; 144];
        quantize_row(TensorType::Q4_K, &[0.0; 256], &mut b).unwrap();
        assert_eq!(dequantize(TensorType::Q4_K, &b), vec![0.0; 256]);
        let x: Vec<f32> = (0..256).map(|i| (i % 16) as f32 * 0.25).collect();
        quantize_row(TensorType::Q4_K, &x, &mut b).unwrap();
        let back = dequantize(TensorType::Q4_K, &b);
        assert!(x.iter().zip(&back).all(|(a, c)| (a - c).abs() < 2e-3), "{:?}", &back[..16]);
        assert!(quantize_row(TensorType::Q4_K, &[0.0; 128], &mut b).unwrap_err().contains("whole blocks of 256"));
        assert!(quantize_row(TensorType::Q4_K, &[0.0; 256], &mut [0u8; 10]).unwrap_err().contains("144"));
        assert!(quantize_row(TensorType::Q6_K, &[0.0; 256], &mut [0u8; 210]).unwrap_err().contains("not supported"));
    }
}
