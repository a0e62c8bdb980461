//! CPU kernels on plain `f32` buffers for the steps of a layer that are not one large matrix
//! product: RMS norm, SiLU-gated product, RoPE and attention (with a shared prefix).
//!
//! On the CPU backend these replace chains of tensor operations that each allocate, copy
//! strided views and call the C library's scalar `expf` (measured with `perf`: about a third of
//! a forward pass). Every kernel runs its rows in parallel (rayon) and the exponential is a
//! branch-free polynomial the compiler vectorises. The matrix products inside attention use
//! `matrixmultiply` (through ndarray), which picks AVX2/FMA kernels at run time.
//!
//! Layouts are row-major: `[tokens, width]` for activations, and a KV buffer is
//! `[positions, kv_heads * head_dim]` (one token's keys for all KV heads side by side).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, ShapeBuilder, Slice};
use rayon::prelude::*;

/// Rows handed to one parallel task by the element-wise kernels (enough work to amortise
/// the task, few enough to spread small batches over both cores).
const ROWS_PER_TASK: usize = 8;

/// Query positions per attention task: bounds the score block (`QUERY_BLOCK * group` rows by
/// the keys) so it stays in the L2 cache.
const QUERY_BLOCK: usize = 64;

/// `e^x` for `x` in f32, to about 2 ulp, as a branch-free polynomial (Cephes' `expf`
/// coefficients) that vectorises; inputs below -87 give about 1e-38 (not 0), above 88 are
/// clamped.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23 + 127: adding it rounds to an integer held in the low mantissa bits, already
    // biased as a float exponent.
    const MAGIC: f32 = 12_582_912.0 + 127.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(t.to_bits() << 23)
}

/// RMS norm of each row of `x` (`[rows, w.len()]`): `x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = vec![0.0; x.len()];
    let arch = pulp::Arch::new();
    out.par_chunks_mut(h * ROWS_PER_TASK).zip(x.par_chunks(h * ROWS_PER_TASK)).for_each(|(out, x)| arch.dispatch(RmsRows { out, x, w, eps }));
    out
}

/// [`rms_norm`] of a run of rows, compiled for the CPU's widest vectors (a closure handed to
/// pulp's dispatch here stayed SSE2).
struct RmsRows<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    w: &'a [f32],
    eps: f32,
}

impl pulp::WithSimd for RmsRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let h = self.w.len();
        for (o, x) in self.out.chunks_exact_mut(h).zip(self.x.chunks_exact(h)) {
            let inv = 1.0 / (sum_of_squares(x) / h as f32 + self.eps).sqrt();
            for ((o, x), w) in o.iter_mut().zip(x).zip(self.w) {
                *o = w * (x * inv);
            }
        }
    }
}

/// `Σ x²`, in eight running sums (so that it vectorises).
#[inline(always)]
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// `silu(gate) * up`, element-wise, in place in `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 16 * 1024;
    let arch = pulp::Arch::new(); // the widest vectors this CPU has (objdump shows AVX2 and AVX-512 copies of this closure)
    gate.par_chunks_mut(CHUNK).zip(up.par_chunks(CHUNK)).for_each(|(g, u)| {
        arch.dispatch(
            #[inline(always)]
            || {
                for (g, u) in g.iter_mut().zip(u) {
                    *g = *g / (1.0 + exp(-*g)) * u;
                }
            },
        )
    });
}

/// Rotates each head of each token in `x` (`[tokens, heads * head_dim]`) by its position
/// (`positions[token]`), in the rotate-half layout of Hugging Face checkpoints.
pub fn rope(x: &mut [f32], positions: &[usize], inv_freq: &[f32], head_dim: usize) {
    let half = head_dim / 2;
    let width = x.len() / positions.len().max(1);
    x.par_chunks_mut(width).zip(positions.par_iter()).for_each(|(row, &p)| {
        let (sin, cos): (Vec<f32>, Vec<f32>) = inv_freq.iter().map(|f| (p as f32 * f).sin_cos()).unzip();
        for head in row.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for j in 0..half {
                let (x1, x2) = (a[j], b[j]);
                a[j] = x1 * cos[j] - x2 * sin[j];
                b[j] = x2 * cos[j] + x1 * sin[j];
            }
        }
    });
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple).
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// New positions per row in this step.
    pub seq: usize,
    /// Positions cached before this step, shared prefix included (the same for every row).
    pub past: usize,
}

/// Keys and values one row attends to: an optional prefix shared by all rows, then the
/// row's own positions (this step's included); each `[positions, kv_heads * head_dim]`.
#[derive(Debug, Clone, Copy)]
pub struct RowKv<'a> {
    /// The shared prefix's keys and values.
    pub prefix: Option<(&'a [f32], &'a [f32])>,
    /// The row's own keys and values.
    pub own: (&'a [f32], &'a [f32]),
    /// Whether each position (prefix first) is a real token rather than padding.
    pub valid: &'a [bool],
}

/// Causal scaled dot-product attention with grouped KV heads.
///
/// `q`: `[rows, seq, heads * head_dim]` (rotated). Query `i` of a row sits at position
/// `past + i` and sees every valid position up to it. Returns the attention output in the
/// same layout as `q` (the input of `o_proj`).
pub fn attention(q: &[f32], rows: &[RowKv<'_>], shape: AttentionShape) -> Vec<f32> {
    let AttentionShape { heads, head_dim: hd, seq, .. } = shape;
    let width = heads * hd;
    let blocks = seq.div_ceil(QUERY_BLOCK);
    let mut out = vec![0.0f32; q.len()];
    // One task per (row, block of query positions): its output rows are contiguous.
    let tasks: Vec<(usize, usize)> = (0..rows.len()).flat_map(|r| (0..blocks).map(move |k| (r, k))).collect();
    let mut slices: Vec<&mut [f32]> = Vec::with_capacity(tasks.len());
    let mut rest = out.as_mut_slice();
    for &(_, k) in &tasks {
        let n = (seq - k * QUERY_BLOCK).min(QUERY_BLOCK) * width;
        let (head, tail) = rest.split_at_mut(n);
        slices.push(head);
        rest = tail;
    }
    slices.into_par_iter().zip(tasks.par_iter()).for_each(|(o, &(r, k))| {
        let first = k * QUERY_BLOCK;
        let n = o.len() / width;
        let q_rows = &q[(r * seq + first) * width..(r * seq + first + n) * width];
        attend_block(q_rows, &rows[r], shape, first, o);
    });
    out
}

/// One row's queries `first..first + n` (`q`: `[n, width]`) against its keys, into `out`.
fn attend_block(q: &[f32], kv: &RowKv<'_>, shape: AttentionShape, first: usize, out: &mut [f32]) {
    let AttentionShape { heads, kv_heads, head_dim: hd, past, .. } = shape;
    let group = heads / kv_heads;
    let width = heads * hd;
    let kv_width = kv_heads * hd;
    let n = q.len() / width;
    let sp = kv.prefix.map_or(0, |(k, _)| k.len() / kv_width);
    // Keys past the block's last query are never seen: leave them out of the products.
    let t = (sp + kv.own.0.len() / kv_width).min(past + first + n);
    let t_own = t - sp;
    let m = n * group; // score rows: (query, head in group)
    let scale = 1.0 / (hd as f32).sqrt();
    let mut qg = vec![0.0f32; m * hd];
    let mut scores = vec![0.0f32; m * t];
    let mut acc = vec![0.0f32; m * hd];
    // Padding positions: kept as 0 (multiplier) and -inf (for the maximum).
    let keep: Vec<f32> = kv.valid.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect();
    let bias: Vec<f32> = kv.valid.iter().map(|&v| if v { 0.0 } else { f32::NEG_INFINITY }).collect();
    // The last key each query may see (inclusive), by query.
    let last = |i: usize| (past + first + i).min(t - 1);
    for kvh in 0..kv_heads {
        // Gather the group's queries: score row i * group + g is query i, head kvh * group + g.
        for i in 0..n {
            for g in 0..group {
                let src = i * width + (kvh * group + g) * hd;
                qg[(i * group + g) * hd..][..hd].copy_from_slice(&q[src..src + hd]);
            }
        }
        let qv = ArrayView2::from_shape((m, hd), &qg).expect("query block shape");
        let keys = |buf, len| head_view(buf, len, hd, kv_width, kvh);
        let mut sv = ArrayViewMut2::from_shape((m, t), &mut scores).expect("score shape");
        if let Some((kp, _)) = kv.prefix {
            general_mat_mul(scale, &qv, &keys(kp, sp).t(), 0.0, &mut sv.slice_axis_mut(Axis(1), Slice::from(..sp)));
        }
        general_mat_mul(scale, &qv, &keys(kv.own.0, t_own).t(), 0.0, &mut sv.slice_axis_mut(Axis(1), Slice::from(sp..)));
        // Masked softmax, left unnormalised; the sums divide the output below.
        let mut sums = vec![0.0f32; m];
        let ends: Vec<usize> = (0..m).map(|idx| last(idx / group) + 1).collect();
        pulp::Arch::new().dispatch(MaskedSoftmax { scores: &mut scores, sums: &mut sums, ends: &ends, keep: &keep, bias: &bias });
        let sv = ArrayView2::from_shape((m, t), &scores).expect("score shape");
        let mut av = ArrayViewMut2::from_shape((m, hd), &mut acc).expect("output block shape");
        let values = |buf, len| head_view(buf, len, hd, kv_width, kvh);
        let mut beta = 0.0;
        if let Some((_, vp)) = kv.prefix {
            general_mat_mul(1.0, &sv.slice_axis(Axis(1), Slice::from(..sp)), &values(vp, sp), 0.0, &mut av);
            beta = 1.0;
        }
        general_mat_mul(1.0, &sv.slice_axis(Axis(1), Slice::from(sp..)), &values(kv.own.1, t_own), beta, &mut av);
        for i in 0..n {
            for g in 0..group {
                let row = i * group + g;
                // A padding query that sees no real token gets zeros (finite, never read).
                let inv = if sums[row] > 0.0 { 1.0 / sums[row] } else { 0.0 };
                let dst = &mut out[i * width + (kvh * group + g) * hd..][..hd];
                for (d, a) in dst.iter_mut().zip(&acc[row * hd..(row + 1) * hd]) {
                    *d = a * inv;
                }
            }
        }
    }
}

/// [`softmax_unnormalised`] of each score row up to its end (zeros after it), compiled for the
/// CPU's widest vectors (a closure given to pulp's dispatch was left outside its AVX2 code).
struct MaskedSoftmax<'a> {
    scores: &'a mut [f32],
    sums: &'a mut [f32],
    ends: &'a [usize],
    keep: &'a [f32],
    bias: &'a [f32],
}

impl pulp::WithSimd for MaskedSoftmax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let t = self.scores.len() / self.sums.len().max(1);
        for ((row, sum), &end) in self.scores.chunks_exact_mut(t).zip(self.sums.iter_mut()).zip(self.ends) {
            let (seen, unseen) = row.split_at_mut(end);
            unseen.fill(0.0);
            *sum = softmax_unnormalised(seen, &self.keep[..end], &self.bias[..end]);
        }
    }
}

/// KV head `kvh` of a KV buffer (`[len, kv_width]`) as a `[len, head_dim]` view.
fn head_view(buf: &[f32], len: usize, hd: usize, kv_width: usize, kvh: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((len, hd).strides((kv_width, 1)), &buf[kvh * hd..]).expect("a KV buffer holds len * kv_width values")
}

/// Lanes of the reductions below: independent accumulators, so the compiler vectorises
/// them (a single running sum is a serial chain it may not reorder).
const LANES: usize = 8;

/// Replaces `x` by `keep * e^(x - max)`, where the maximum is over the kept entries
/// (`bias` is 0 there, -inf elsewhere), and returns the sum (inlined into its caller's
/// vector width).
#[inline(always)]
fn softmax_unnormalised(x: &mut [f32], keep: &[f32], bias: &[f32]) -> f32 {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let (xc, xr) = x.split_at(x.len() - x.len() % LANES);
    for (c, b) in xc.chunks_exact(LANES).zip(bias.chunks_exact(LANES)) {
        for j in 0..LANES {
            mx[j] = mx[j].max(c[j] + b[j]);
        }
    }
    let mut max = mx.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    for (x, b) in xr.iter().zip(&bias[xc.len()..]) {
        max = max.max(x + b);
    }
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return 0.0;
    }
    for (x, k) in x.iter_mut().zip(keep) {
        *x = exp(*x - max) * k;
    }
    let mut acc = [0.0f32; LANES];
    let (xc, xr) = x.split_at(x.len() - x.len() % LANES);
    for c in xc.chunks_exact(LANES) {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    let sum: f32 = acc.iter().sum::<f32>() + xr.iter().sum::<f32>();
    sum
}
