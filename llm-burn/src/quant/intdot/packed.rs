//! Eight weight rows interleaved (llama.cpp's `Q4_K_8x8` repacking, done per task rather than
//! at load): each 32-byte vector holds four consecutive inputs of each of eight outputs, so
//! one `vpmaddubsw` against an activation's four bytes broadcast gives eight outputs' partial
//! sums, which add up in 16 bits over a whole sub-block before one `vpmaddwd` applies its
//! scales. Against the row-at-a-time kernels that is one 16-to-32-bit multiply per eight
//! 8-bit ones instead of one per one, and no horizontal sums.
//!
//! Bounds of the 16-bit sums: Q4_K, eight products of two `15 · 127` (30,480); Q6_K, two of
//! two `63 · 127` (32,004); both below 32,767. Q8_0 (signed weights, multiplied as
//! `|q| · (activation with q's sign)`) has room for one pair only (2 · 128 · 127 = 32,512), so
//! each `vpmaddubsw` is widened by its own `vpmaddwd`.

use std::arch::x86_64::{__m256, __m256i};

use pulp::bytemuck::cast;
use pulp::x86::V3;

use super::Act;
use super::kernels::load;
use crate::quant::types::TensorType;
use crate::quant::dequant::{f16, scale_min_k4};

/// Outputs interleaved.
pub(super) const WIDTH: usize = 8;

/// Eight rows' super-blocks, interleaved (buffers reused from group to group).
#[derive(Default)]
pub(super) struct Packed {
    /// Q4_K: per super-block, 4 groups × 8 quads of 32 bytes (the packed nibbles: low for
    /// sub-block `2g`, high for `2g + 1`); Q6_K: 64 quads of 32 bytes (6-bit values); Q8_0:
    /// per block, 8 quads of 32 bytes (signed bytes).
    vals: Vec<u8>,
    /// Per scale (8 sub-blocks or 16 groups of 16): each output's scale in its two lanes.
    sc: Vec<[i16; 16]>,
    /// Per pair of scales: Q4_K the minimums of sub-blocks `2p`, `2p + 1`; Q6_K the scales of
    /// groups `2p`, `2p + 1`; each output's pair in its two lanes.
    pairs: Vec<[i16; 16]>,
    /// Per super-block (Q8_0: block), each output's `d` and `dmin`.
    d: Vec<[f32; 8]>,
    dmin: Vec<[f32; 8]>,
}

impl Packed {
    /// Rows `rows` (at most eight, each `row_bytes` of `kind` super-blocks; missing rows are
    /// zeros) interleaved.
    pub(super) fn pack(&mut self, kind: TensorType, rows: &[u8], row_bytes: usize) {
        let block = if kind == TensorType::Q4_K { 144 } else { 210 };
        let blocks = row_bytes / block;
        let n = rows.len() / row_bytes;
        let (per_scale, per_pair) = if kind == TensorType::Q4_K { (8, 4) } else { (16, 8) };
        let per_block = if kind == TensorType::Q4_K { 1024 } else { 2048 };
        self.vals.clear();
        self.vals.resize(blocks * per_block, 0);
        self.sc.clear();
        self.sc.resize(blocks * per_scale, [0; 16]);
        self.pairs.clear();
        self.pairs.resize(blocks * per_pair, [0; 16]);
        self.d.clear();
        self.d.resize(blocks, [0.0; 8]);
        self.dmin.clear();
        self.dmin.resize(blocks, [0.0; 8]);
        let mut six = [0u8; 256];
        for (o, row) in rows.chunks_exact(row_bytes).take(n).enumerate() {
            for (i, b) in row.chunks_exact(block).enumerate() {
                let vals = &mut self.vals[i * per_block..][..per_block];
                if kind == TensorType::Q4_K {
                    self.d[i][o] = f16(b);
                    self.dmin[i][o] = f16(&b[2..4]);
                    for j in 0..8 {
                        let (s, m) = scale_min_k4(j, &b[4..16]);
                        self.sc[i * 8 + j][2 * o..2 * o + 2].fill(i16::from(s));
                        self.pairs[i * 4 + j / 2][2 * o + j % 2] = i16::from(m);
                    }
                    for (quad, four) in b[16..144].chunks_exact(4).enumerate() {
                        vals[32 * quad + 4 * o..][..4].copy_from_slice(four);
                    }
                } else {
                    self.d[i][o] = f16(&b[208..210]);
                    for g in 0..16 {
                        let s = i16::from(b[192 + g] as i8);
                        self.sc[i * 16 + g][2 * o..2 * o + 2].fill(s);
                        self.pairs[i * 8 + g / 2][2 * o + g % 2] = s;
                    }
                    q6_values(b, &mut six);
                    for (quad, four) in six.chunks_exact(4).enumerate() {
                        vals[32 * quad + 4 * o..][..4].copy_from_slice(four);
                    }
                }
            }
        }
    }
}

impl Packed {
    /// Q8_0 rows (at most eight, each `row_bytes` of 34-byte blocks; missing rows are zeros)
    /// interleaved: per block, 8 quads of 32 bytes (four consecutive values of each output),
    /// an 8 × 8 transpose of 32-bit lanes.
    #[inline(always)]
    pub(super) fn pack_q8_0(&mut self, simd: V3, rows: &[u8], row_bytes: usize) {
        let blocks = row_bytes / 34;
        self.vals.clear();
        self.vals.resize(blocks * 256, 0);
        self.d.clear();
        self.d.resize(blocks, [0.0; 8]);
        let rows: Vec<&[u8]> = rows.chunks_exact(row_bytes).collect();
        let zero = [0u8; 34];
        for (i, (vals, d)) in self.vals.chunks_exact_mut(256).zip(&mut self.d).enumerate() {
            let b: [&[u8]; 8] = std::array::from_fn(|o| rows.get(o).map_or(&zero[..], |r| &r[34 * i..34 * i + 34]));
            *d = std::array::from_fn(|o| f16(b[o]));
            for (quad, v) in transpose8(simd, std::array::from_fn(|o| load(&b[o][2..]))).into_iter().enumerate() {
                vals[32 * quad..32 * quad + 32].copy_from_slice(&cast::<__m256i, [u8; 32]>(v));
            }
        }
    }
}

/// Eight vectors of eight 32-bit lanes, transposed: lane `j` of result `i` is lane `i` of
/// `r[j]`.
#[inline(always)]
fn transpose8(simd: V3, r: [__m256i; 8]) -> [__m256i; 8] {
    let avx2 = simd.avx2;
    let t: [__m256i; 8] = std::array::from_fn(|k| {
        let (a, b) = (r[2 * (k / 2)], r[2 * (k / 2) + 1]);
        if k % 2 == 0 { avx2._mm256_unpacklo_epi32(a, b) } else { avx2._mm256_unpackhi_epi32(a, b) }
    }); // t[2p]: lanes 0, 1 | 4, 5 of rows 2p, 2p + 1 interleaved; t[2p + 1]: lanes 2, 3 | 6, 7
    let u: [__m256i; 8] = std::array::from_fn(|k| {
        let (half, lane) = (k / 4, k % 4); // rows 4·half.., lanes `lane` | `lane + 4`
        let (a, b) = (t[4 * half + lane / 2], t[4 * half + 2 + lane / 2]);
        if lane % 2 == 0 { avx2._mm256_unpacklo_epi64(a, b) } else { avx2._mm256_unpackhi_epi64(a, b) }
    });
    std::array::from_fn(|lane| {
        let (a, b) = (u[lane % 4], u[4 + lane % 4]);
        if lane < 4 { avx2._mm256_permute2x128_si256::<0x20>(a, b) } else { avx2._mm256_permute2x128_si256::<0x31>(a, b) }
    })
}

/// Eight Q8_0 rows against `R` activation rows (blocks of 32): each row's eight outputs in
/// one vector, `d·dy · Σ q·qy` per block, signed bytes multiplied as `|q| · (qy with q's
/// sign)` (two to a 16-bit lane: at most 2 · 128 · 127 = 32,512).
#[inline(always)]
pub(super) fn q8_0<const R: usize>(simd: V3, p: &Packed, a: [Act; R]) -> [__m256; R] {
    let (avx, avx2, fma) = (simd.avx, simd.avx2, simd.fma);
    let ones = avx._mm256_set1_epi16(1);
    let mut acc = [avx._mm256_setzero_ps(); R];
    for (i, vals) in p.vals.chunks_exact(256).enumerate() {
        let vals: &[u8; 256] = vals.try_into().expect("256 bytes");
        let ys: [&[u8; 32]; R] = std::array::from_fn(|r| a[r].q[32 * i..32 * i + 32].try_into().expect("32 values"));
        let mut sum = [avx._mm256_setzero_si256(); R];
        for t in 0..8 {
            let w = load(&vals[32 * t..]);
            let magnitude = avx2._mm256_sign_epi8(w, w);
            for r in 0..R {
                let y = avx2._mm256_sign_epi8(broadcast(simd, &ys[r][4 * t..]), w);
                sum[r] = avx2._mm256_add_epi32(sum[r], avx2._mm256_madd_epi16(avx2._mm256_maddubs_epi16(magnitude, y), ones));
            }
        }
        let d = cast::<[f32; 8], __m256>(p.d[i]);
        for r in 0..R {
            acc[r] = fma._mm256_fmadd_ps(avx._mm256_mul_ps(d, avx._mm256_set1_ps(a[r].d[i])), avx._mm256_cvtepi32_ps(sum[r]), acc[r]);
        }
    }
    acc
}

/// A Q6_K super-block's 256 values as unsigned 6-bit bytes (`q`, before `- 32`), in order.
fn q6_values(b: &[u8], out: &mut [u8; 256]) {
    for half in 0..2 {
        let (ql, qh) = (&b[half * 64..half * 64 + 64], &b[128 + half * 32..128 + half * 32 + 32]);
        let y = &mut out[half * 128..][..128];
        for l in 0..32 {
            y[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
            y[l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
            y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
}

/// Four bytes from the start of `b` in every 32-bit lane.
#[inline(always)]
fn broadcast(simd: V3, b: &[u8]) -> __m256i {
    simd.avx._mm256_set1_epi32(i32::from_le_bytes(b[..4].try_into().expect("4 bytes")))
}

/// Two 16-bit sums in every 32-bit lane.
#[inline(always)]
fn broadcast_pair(simd: V3, s: &[i16]) -> __m256i {
    simd.avx._mm256_set1_epi32(i32::from(s[0] as u16) | (i32::from(s[1] as u16) << 16))
}

/// Eight Q4_K rows against `R` activation rows (Q8_K, with sums per 32 in `sums32`): each
/// row's eight outputs in one vector.
#[inline(always)]
pub(super) fn q4_k<const R: usize>(simd: V3, p: &Packed, a: [Act; R], sums32: [&[i16]; R]) -> [__m256; R] {
    let (avx, avx2, fma) = (simd.avx, simd.avx2, simd.fma);
    let nibble = avx._mm256_set1_epi8(0x0F);
    let mut acc = [avx._mm256_setzero_ps(); R];
    for (i, vals) in p.vals.chunks_exact(1024).enumerate() {
        let vals: &[u8; 1024] = vals.try_into().expect("1,024 bytes");
        let ys: [&[u8; 256]; R] = std::array::from_fn(|r| a[r].q[256 * i..256 * i + 256].try_into().expect("256 values"));
        let mut sum = [avx._mm256_setzero_si256(); R];
        for g in 0..4 {
            for high in 0..2 {
                let mut part = [avx._mm256_setzero_si256(); R];
                for t in 0..8 {
                    let w = load(&vals[256 * g + 32 * t..]);
                    let w = if high == 1 { avx2._mm256_srli_epi16::<4>(w) } else { w };
                    let w = avx2._mm256_and_si256(w, nibble);
                    for r in 0..R {
                        let x = broadcast(simd, &ys[r][64 * g + 32 * high + 4 * t..]);
                        part[r] = avx2._mm256_add_epi16(part[r], avx2._mm256_maddubs_epi16(w, x));
                    }
                }
                let sc = cast::<[i16; 16], __m256i>(p.sc[8 * i + 2 * g + high]);
                for r in 0..R {
                    sum[r] = avx2._mm256_add_epi32(sum[r], avx2._mm256_madd_epi16(sc, part[r]));
                }
            }
        }
        let (d, dmin) = (cast::<[f32; 8], __m256>(p.d[i]), cast::<[f32; 8], __m256>(p.dmin[i]));
        for r in 0..R {
            let mut by_min = avx._mm256_setzero_si256();
            for q in 0..4 {
                let mins = cast::<[i16; 16], __m256i>(p.pairs[4 * i + q]);
                by_min = avx2._mm256_add_epi32(by_min, avx2._mm256_madd_epi16(mins, broadcast_pair(simd, &sums32[r][8 * i + 2 * q..])));
            }
            let dy = avx._mm256_set1_ps(a[r].d[i]);
            acc[r] = fma._mm256_fmadd_ps(avx._mm256_mul_ps(d, dy), avx._mm256_cvtepi32_ps(sum[r]), acc[r]);
            acc[r] = fma._mm256_fnmadd_ps(avx._mm256_mul_ps(dmin, dy), avx._mm256_cvtepi32_ps(by_min), acc[r]);
        }
    }
    acc
}

/// Eight Q6_K rows against `R` activation rows (Q8_K, sums per 16): each row's eight
/// outputs in one vector; `d·dy · (Σ scale·(q·qy) - 32 Σ scale·(Σ qy))` per super-block.
#[inline(always)]
pub(super) fn q6_k<const R: usize>(simd: V3, p: &Packed, a: [Act; R]) -> [__m256; R] {
    let (avx, avx2, fma) = (simd.avx, simd.avx2, simd.fma);
    let mut acc = [avx._mm256_setzero_ps(); R];
    for (i, vals) in p.vals.chunks_exact(2048).enumerate() {
        let vals: &[u8; 2048] = vals.try_into().expect("2,048 bytes");
        let ys: [&[u8; 256]; R] = std::array::from_fn(|r| a[r].q[256 * i..256 * i + 256].try_into().expect("256 values"));
        let mut sum = [avx._mm256_setzero_si256(); R];
        for g in 0..16 {
            let sc = cast::<[i16; 16], __m256i>(p.sc[16 * i + g]);
            for h in 0..2 {
                let (w0, w1) = (load(&vals[128 * g + 64 * h..]), load(&vals[128 * g + 64 * h + 32..]));
                for r in 0..R {
                    let y = &ys[r][16 * g + 8 * h..];
                    let part = avx2._mm256_add_epi16(avx2._mm256_maddubs_epi16(w0, broadcast(simd, y)), avx2._mm256_maddubs_epi16(w1, broadcast(simd, &y[4..])));
                    sum[r] = avx2._mm256_add_epi32(sum[r], avx2._mm256_madd_epi16(sc, part));
                }
            }
        }
        let d = cast::<[f32; 8], __m256>(p.d[i]);
        for r in 0..R {
            let mut offset = avx._mm256_setzero_si256();
            for q in 0..8 {
                let scales = cast::<[i16; 16], __m256i>(p.pairs[8 * i + q]);
                offset = avx2._mm256_add_epi32(offset, avx2._mm256_madd_epi16(scales, broadcast_pair(simd, &a[r].sums[16 * i + 2 * q..])));
            }
            let total = avx2._mm256_sub_epi32(sum[r], avx2._mm256_slli_epi32::<5>(offset));
            acc[r] = fma._mm256_fmadd_ps(avx._mm256_mul_ps(d, avx._mm256_set1_ps(a[r].d[i])), avx._mm256_cvtepi32_ps(total), acc[r]);
        }
    }
    acc
}
