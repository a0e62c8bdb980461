//! Dequantisation of GGUF block types to `f32`, value for value as ggml's `dequantize_row_*`
//! (and the `gguf` Python package) compute them: the same products in the same order, so the
//! results agree bit for bit.
//!
//! Block layouts (ggml's `ggml-common.h`): every block starts or ends with `f16` scales;
//! k-quants (`Q4_K`, `Q6_K`) are super-blocks of 256 values with per-sub-block scales.

use crate::quant::types::TensorType;

/// A little-endian f16 as f32.
#[inline(always)]
pub(crate) fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantises raw tensor bytes of a type to `f32` (a trailing partial block is ignored).
pub fn dequantize(kind: TensorType, bytes: &[u8]) -> Vec<f32> {
    let (per_block, block_bytes) = kind.block();
    let mut out = vec![0.0; bytes.len() / block_bytes * per_block];
    dequantize_into(kind, bytes, &mut out);
    out
}

/// [`dequantize`] into `out`, which holds `bytes.len() / block_bytes * per_block` values.
#[inline(always)]
pub fn dequantize_into(kind: TensorType, bytes: &[u8], out: &mut [f32]) {
    let (per_block, block_bytes) = kind.block();
    assert_eq!(out.len(), bytes.len() / block_bytes * per_block, "{kind:?}: {} bytes dequantize to {} values", bytes.len(), bytes.len() / block_bytes * per_block);
    for (b, o) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(per_block)) {
        match kind {
            TensorType::F32 => o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            TensorType::F16 => o[0] = f16(b),
            TensorType::BF16 => o[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            TensorType::Q4_0 => q4_0(b, o),
            TensorType::Q4_1 => q4_1(b, o),
            TensorType::Q5_0 => q5_0(b, o),
            TensorType::Q8_0 => {
                let d = f16(b);
                for (o, &q) in o.iter_mut().zip(&b[2..34]) {
                    *o = f32::from(q as i8) * d;
                }
            }
            TensorType::Q4_K => q4_k(b, o),
            TensorType::Q6_K => q6_k(b, o),
        }
    }
}

/// Writes `f(q)` for each of `qs` into `out`.
#[inline(always)]
fn fill(out: &mut [f32], qs: &[u8], f: impl Fn(u8) -> f32) {
    for (o, &q) in out.iter_mut().zip(qs) {
        *o = f(q);
    }
}

/// `d`, then 16 bytes of nibbles: low nibbles are values 0..16, high nibbles 16..32.
#[inline(always)]
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16(b);
    let qs = &b[2..18];
    fill(&mut out[..16], qs, |q| f32::from(i16::from(q & 0x0F) - 8) * d);
    fill(&mut out[16..], qs, |q| f32::from(i16::from(q >> 4) - 8) * d);
}

/// `d`, `m`, then nibbles as [`q4_0`], unsigned, plus the minimum.
#[inline(always)]
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16(b), f16(&b[2..4]));
    let qs = &b[4..20];
    fill(&mut out[..16], qs, |q| f32::from(q & 0x0F) * d + m);
    fill(&mut out[16..], qs, |q| f32::from(q >> 4) * d + m);
}

/// `d`, a 32-bit word of fifth bits (bit `j` for value `j`), then nibbles as [`q4_0`];
/// values are 5-bit, offset by 16.
#[inline(always)]
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16(b);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    let value = |j: usize, nibble: u8, high: u32| f32::from(i16::from(nibble | (((qh >> (j as u32 + high)) & 1) << 4) as u8) - 16) * d;
    for (j, q) in qs.iter().enumerate() {
        out[j] = value(j, q & 0x0F, 0);
        out[j + 16] = value(j, q >> 4, 16);
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j` (0..8) from the
/// 12 packed bytes.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `d`, `dmin`, 12 bytes of scales and minimums, 128 bytes of nibbles: four groups of 64
/// values, each 32 low nibbles (sub-block `2g`) then 32 high nibbles (sub-block `2g + 1`);
/// value = `d·scale · q - dmin·min`.
#[inline(always)]
fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16(b), f16(&b[2..4]));
    let scales = &b[4..16];
    for (g, qs) in b[16..144].chunks_exact(32).enumerate() {
        for (sub, shift) in [(2 * g, 0), (2 * g + 1, 4)] {
            let (sc, m) = scale_min_k4(sub, scales);
            let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
            fill(&mut out[sub * 32..][..32], qs, |q| d1 * f32::from((q >> shift) & 0x0F) - m1);
        }
    }
}

/// [`q4_k`] over whole super-blocks (`bytes`: a run of 144-byte blocks, `out`: 256 values
/// each) with AVX2: the nibbles widened eight at a time, each value `d·scale · q - dmin·min`
/// as a product then a difference (no fused multiply-add), so the values are [`q4_k`]'s bit
/// for bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn q4_k_avx2(simd: pulp::x86::V3, bytes: &[u8], out: &mut [f32]) {
    use pulp::bytemuck::cast;
    use std::arch::x86_64::__m256;
    let nibble = simd.avx._mm256_set1_epi32(0x0F);
    for (b, out) in bytes.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
        let (d, dmin) = (f16(b), f16(&b[2..4]));
        let scales = &b[4..16];
        for (g, (qs, o)) in b[16..144].chunks_exact(32).zip(out.chunks_exact_mut(64)).enumerate() {
            let (sc, m) = scale_min_k4(2 * g, scales);
            let (d1, m1) = (simd.avx._mm256_set1_ps(d * f32::from(sc)), simd.avx._mm256_set1_ps(dmin * f32::from(m)));
            let (sc, m) = scale_min_k4(2 * g + 1, scales);
            let (d2, m2) = (simd.avx._mm256_set1_ps(d * f32::from(sc)), simd.avx._mm256_set1_ps(dmin * f32::from(m)));
            let (lo, hi) = o.split_at_mut(32);
            for (q, (lo, hi)) in qs.chunks_exact(8).zip(lo.chunks_exact_mut(8).zip(hi.chunks_exact_mut(8))) {
                let eight = i64::from_le_bytes(q.try_into().expect("8 bytes"));
                let w = simd.avx2._mm256_cvtepu8_epi32(simd.sse2._mm_set_epi64x(0, eight));
                let low = simd.avx._mm256_cvtepi32_ps(simd.avx2._mm256_and_si256(w, nibble));
                let high = simd.avx._mm256_cvtepi32_ps(simd.avx2._mm256_srli_epi32::<4>(w));
                lo.copy_from_slice(&cast::<__m256, [f32; 8]>(simd.avx._mm256_sub_ps(simd.avx._mm256_mul_ps(d1, low), m1)));
                hi.copy_from_slice(&cast::<__m256, [f32; 8]>(simd.avx._mm256_sub_ps(simd.avx._mm256_mul_ps(d2, high), m2)));
            }
        }
    }
}

/// [`q6_k`] over whole super-blocks (`bytes`: a run of 210-byte blocks, `out`: 256 values
/// each) with AVX2, eight values at a time: the same 6-bit values and the same single product
/// `d·scale · (q - 32)`, so the values are [`q6_k`]'s bit for bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn q6_k_avx2(simd: pulp::x86::V3, bytes: &[u8], out: &mut [f32]) {
    use pulp::bytemuck::cast;
    use std::arch::x86_64::__m256;
    let widen = |b: &[u8]| simd.avx2._mm256_cvtepu8_epi32(simd.sse2._mm_set_epi64x(0, i64::from_le_bytes(b.try_into().expect("8 bytes"))));
    let (four, three, offset) = (simd.avx._mm256_set1_epi32(0x0F), simd.avx._mm256_set1_epi32(3), simd.avx._mm256_set1_epi32(32));
    for (b, out) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
        let d = f16(&b[208..210]);
        for (half, y) in out.chunks_exact_mut(128).enumerate() {
            let ql = &b[half * 64..half * 64 + 64];
            let qh = &b[128 + half * 32..128 + half * 32 + 32];
            let sc = &b[192 + half * 8..192 + half * 8 + 8];
            for (k, run) in y.chunks_exact_mut(32).enumerate() {
                let low = 32 * (k % 2);
                let (nibble, high) = (simd.avx._mm256_set1_epi32(4 * (k / 2) as i32), simd.avx._mm256_set1_epi32(2 * k as i32));
                for (is, part) in run.chunks_exact_mut(16).enumerate() {
                    let scale = simd.avx._mm256_set1_ps(d * f32::from(sc[is + 2 * k] as i8));
                    for (j, o) in part.chunks_exact_mut(8).enumerate() {
                        let at = 16 * is + 8 * j;
                        let l = simd.avx2._mm256_and_si256(simd.avx2._mm256_srlv_epi32(widen(&ql[low + at..low + at + 8]), nibble), four);
                        let h = simd.avx2._mm256_and_si256(simd.avx2._mm256_srlv_epi32(widen(&qh[at..at + 8]), high), three);
                        let q = simd.avx2._mm256_sub_epi32(simd.avx2._mm256_or_si256(l, simd.avx2._mm256_slli_epi32::<4>(h)), offset);
                        o.copy_from_slice(&cast::<__m256, [f32; 8]>(simd.avx._mm256_mul_ps(scale, simd.avx._mm256_cvtepi32_ps(q))));
                    }
                }
            }
        }
    }
}

/// 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed 8-bit scales, then `d`;
/// two halves of 128 values, each four runs of 32 (value = `d·scale · (q - 32)`).
#[inline(always)]
fn q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16(&b[208..210]);
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let y = &mut out[half * 128..][..128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, q) in q.into_iter().enumerate() {
                let scale = d * f32::from(sc[is + 2 * k] as i8);
                y[l + 32 * k] = scale * f32::from(i16::from(q) - 32);
            }
        }
    }
}
