//! The AVX2 dot products of one weight row with `R` quantized activation rows (llama.cpp's
//! `ggml_vec_dot_*_q8_*` for AVX2, the weight's blocks unpacked once for all `R` rows).
//! Every integer stays in range: an unsigned weight below 64 (or a magnitude at most 128)
//! times an activation of magnitude at most 127, two to a 16-bit lane, is at most 32,512.

use std::arch::x86_64::{__m256, __m256i};

use pulp::bytemuck::cast;
use pulp::x86::V3;

use super::Act;
use crate::quant::dequant::{f16, scale_min_k4};

/// 32 bytes from the start of `b`.
#[inline(always)]
pub(super) fn load(b: &[u8]) -> __m256i {
    cast::<[u8; 32], __m256i>(b[..32].try_into().expect("32 bytes"))
}

/// 16 sums from the start of `s`.
#[inline(always)]
fn load_sums(s: &[i16]) -> __m256i {
    cast::<[i16; 16], __m256i>(s[..16].try_into().expect("16 sums"))
}

/// The eight lanes' sum.
#[inline(always)]
fn hsum(v: __m256) -> f32 {
    cast::<__m256, [f32; 8]>(v).iter().sum()
}

/// A weight block's scales, unpacked once per run of weight rows and reused by every
/// activation row: `d` (and `dmin`), and 16-bit lanes for `vpmaddwd`.
#[derive(Clone, Copy, Default)]
pub(super) struct Prep {
    d: f32,
    dmin: f32,
    /// Q4_K: the eight sub-blocks' scales; Q6_K: the sixteen scales.
    sc: [i16; 16],
    /// Q4_K: each minimum twice (one per 16 values).
    mins: [i16; 16],
}

/// The scales of a row's blocks of `kind` appended to `out`.
pub(super) fn prepare(kind: crate::quant::types::TensorType, row: &[u8], out: &mut Vec<Prep>) {
    use crate::quant::types::TensorType;
    match kind {
        TensorType::Q4_K => out.extend(row.chunks_exact(144).map(|b| {
            let mut p = Prep { d: f16(b), dmin: f16(&b[2..4]), ..Prep::default() };
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, &b[4..16]);
                p.sc[j] = i16::from(s);
                (p.mins[2 * j], p.mins[2 * j + 1]) = (i16::from(m), i16::from(m));
            }
            p
        })),
        TensorType::Q6_K => out.extend(row.chunks_exact(210).map(|b| Prep { d: f16(&b[208..210]), sc: std::array::from_fn(|k| i16::from(b[192 + k] as i8)), ..Prep::default() })),
        _ => out.extend(row.chunks_exact(34).map(|b| Prep { d: f16(b), ..Prep::default() })),
    }
}

/// `Q4_K` weights (super-blocks of 256: `d`, `dmin`, eight 6-bit scales and minimums, 128
/// bytes of nibbles) against `Q8_K` activations: per super-block
/// `d·dy · Σ scale·(q·qy) - dmin·dy · Σ min·(Σ qy)`.
#[inline(always)]
pub(super) fn q4_k<const R: usize>(simd: V3, w: &[u8], prep: &[Prep], a: [Act; R]) -> [f32; R] {
    let (avx, avx2, fma) = (simd.avx, simd.avx2, simd.fma);
    let nibble = avx._mm256_set1_epi8(0x0F);
    let mut acc = [avx._mm256_setzero_ps(); R];
    for (i, (b, p)) in w.chunks_exact(144).zip(prep).enumerate() {
        let mins = cast::<[i16; 16], __m256i>(p.mins);
        let mut sum = [avx._mm256_setzero_si256(); R];
        for (g, bits) in b[16..144].chunks_exact(32).enumerate() {
            let bits = load(bits);
            let low = avx2._mm256_and_si256(bits, nibble);
            let high = avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(bits), nibble);
            let (s_low, s_high) = (avx._mm256_set1_epi16(p.sc[2 * g]), avx._mm256_set1_epi16(p.sc[2 * g + 1]));
            for r in 0..R {
                let y = &a[r].q[256 * i + 64 * g..];
                let p_low = avx2._mm256_madd_epi16(s_low, avx2._mm256_maddubs_epi16(low, load(y)));
                let p_high = avx2._mm256_madd_epi16(s_high, avx2._mm256_maddubs_epi16(high, load(&y[32..])));
                sum[r] = avx2._mm256_add_epi32(sum[r], avx2._mm256_add_epi32(p_low, p_high));
            }
        }
        for r in 0..R {
            let dy = a[r].d[i];
            acc[r] = fma._mm256_fmadd_ps(avx._mm256_set1_ps(p.d * dy), avx._mm256_cvtepi32_ps(sum[r]), acc[r]);
            let by_min = avx2._mm256_madd_epi16(mins, load_sums(&a[r].sums[16 * i..]));
            acc[r] = fma._mm256_fnmadd_ps(avx._mm256_set1_ps(p.dmin * dy), avx._mm256_cvtepi32_ps(by_min), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}

/// `Q6_K` weights (super-blocks of 256: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16
/// signed scales, `d`; value `d·scale·(q - 32)`) against `Q8_K` activations: per super-block
/// `d·dy · (Σ scale·(q·qy) - 32 Σ scale·(Σ qy))`, the sums per 16 values.
#[inline(always)]
pub(super) fn q6_k<const R: usize>(simd: V3, w: &[u8], prep: &[Prep], a: [Act; R]) -> [f32; R] {
    let (avx, avx2) = (simd.avx, simd.avx2);
    let (four, two) = (avx._mm256_set1_epi8(0x0F), avx._mm256_set1_epi8(3));
    let mut acc = [avx._mm256_setzero_ps(); R];
    for (i, (b, p)) in w.chunks_exact(210).zip(prep).enumerate() {
        let scales = cast::<[i16; 16], __m256i>(p.sc);
        let mut sum = [avx._mm256_setzero_si256(); R];
        for half in 0..2 {
            let (ql0, ql1) = (load(&b[64 * half..]), load(&b[64 * half + 32..]));
            let qh = load(&b[128 + 32 * half..]);
            let lift = |h: __m256i| avx2._mm256_slli_epi16::<4>(avx2._mm256_and_si256(h, two));
            let runs = [
                avx2._mm256_or_si256(avx2._mm256_and_si256(ql0, four), lift(qh)),
                avx2._mm256_or_si256(avx2._mm256_and_si256(ql1, four), lift(avx2._mm256_srli_epi16::<2>(qh))),
                avx2._mm256_or_si256(avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(ql0), four), lift(avx2._mm256_srli_epi16::<4>(qh))),
                avx2._mm256_or_si256(avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(ql1), four), lift(avx2._mm256_srli_epi16::<6>(qh))),
            ];
            for (k, run) in runs.into_iter().enumerate() {
                let g = 8 * half + 2 * k;
                let (lo, hi) = (simd.sse2._mm_set1_epi16(p.sc[g]), simd.sse2._mm_set1_epi16(p.sc[g + 1]));
                let s = avx._mm256_set_m128i(hi, lo);
                for r in 0..R {
                    let y = load(&a[r].q[256 * i + 128 * half + 32 * k..]);
                    sum[r] = avx2._mm256_add_epi32(sum[r], avx2._mm256_madd_epi16(s, avx2._mm256_maddubs_epi16(run, y)));
                }
            }
        }
        for r in 0..R {
            let offset = avx2._mm256_slli_epi32::<5>(avx2._mm256_madd_epi16(scales, load_sums(&a[r].sums[16 * i..])));
            let total = avx._mm256_cvtepi32_ps(avx2._mm256_sub_epi32(sum[r], offset));
            acc[r] = simd.fma._mm256_fmadd_ps(avx._mm256_set1_ps(p.d * a[r].d[i]), total, acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}

/// `Q8_0` weights (blocks of 32: `d`, 32 signed bytes) against activations in blocks of 32:
/// per block `d·dy · Σ q·qy`, signed bytes multiplied as `|q| · (qy with q's sign)`.
#[inline(always)]
pub(super) fn q8_0<const R: usize>(simd: V3, w: &[u8], prep: &[Prep], a: [Act; R]) -> [f32; R] {
    let (avx, avx2) = (simd.avx, simd.avx2);
    let ones = avx._mm256_set1_epi16(1);
    let mut acc = [avx._mm256_setzero_ps(); R];
    for (i, (b, p)) in w.chunks_exact(34).zip(prep).enumerate() {
        let q = load(&b[2..]);
        let magnitude = avx2._mm256_abs_epi8(q);
        for r in 0..R {
            let y = avx2._mm256_sign_epi8(load(&a[r].q[32 * i..]), q);
            let sum = avx2._mm256_madd_epi16(ones, avx2._mm256_maddubs_epi16(magnitude, y));
            acc[r] = simd.fma._mm256_fmadd_ps(avx._mm256_set1_ps(p.d * a[r].d[i]), avx._mm256_cvtepi32_ps(sum), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}
