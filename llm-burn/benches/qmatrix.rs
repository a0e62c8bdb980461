//! Quantized weights against float ones: dequantizing (the cost a quantized product adds),
//! and one Qwen2.5-1.5B MLP product (`[m, 1536] · [1536, 8960]`) each way.
//!
//! `cargo bench -p llm-burn --bench qmatrix`

use burn::tensor::{Tensor, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_burn::CpuBackend as B;
use llm_burn::quant::TensorType;
use llm_burn::quant::qmatrix::QMatrix;

const ROWS: usize = 8960;
const COLS: usize = 1536;

fn weights() -> Vec<f32> {
    (0..ROWS * COLS).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect()
}

fn dequantize(c: &mut Criterion) {
    let q8 = QMatrix::quantize_q8_0(&weights(), ROWS, COLS).expect("whole blocks");
    let mut out = vec![0.0f32; ROWS * COLS];
    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    g.sample_size(20);
    g.bench_function("q8_0 [8960, 1536] whole", |b| b.iter(|| q8.dequantize_cols(0..COLS, &mut out)));
    let t = QMatrix::quantize_q8_0(&weights(), COLS, ROWS).expect("whole blocks");
    let mut panel = vec![0.0f32; COLS * 672];
    g.throughput(Throughput::Elements((COLS * 672) as u64));
    g.bench_function("q8_0 [1536, 8960], a panel of 672 columns", |b| b.iter(|| t.dequantize_cols(672..1344, &mut panel)));
    // A file's k-quant weight ([out, in], blocks along in): all rows, and a panel of 672 rows
    // (what `--dtype file` dequantizes per panel).
    for kind in [TensorType::Q4_K, TensorType::Q6_K] {
        let k = k_quant(kind, ROWS, COLS);
        g.throughput(Throughput::Elements((ROWS * COLS) as u64));
        g.bench_function(format!("{kind:?} [8960, 1536] whole"), |b| b.iter(|| k.dequantize_cols(0..COLS, &mut out)));
        g.throughput(Throughput::Elements((COLS * 672) as u64));
        g.bench_function(format!("{kind:?} [8960, 1536], a panel of 672 rows"), |b| b.iter(|| k.dequantize_rows(672..1344, &mut panel)));
    }
    g.finish();
}

/// A k-quant matrix of random blocks with small scales.
fn k_quant(kind: TensorType, rows: usize, cols: usize) -> QMatrix {
    let (per, bytes) = kind.block();
    let mut s = 7u64;
    let mut data: Vec<u8> = (0..rows * cols / per * bytes).map(|_| { s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1); (s >> 56) as u8 }).collect();
    let d = half::f16::from_f32(0.01).to_le_bytes();
    for b in data.chunks_exact_mut(bytes) {
        match kind {
            TensorType::Q4_K => { b[..2].copy_from_slice(&d); b[2..4].copy_from_slice(&d); }
            _ => b[bytes - 2..].copy_from_slice(&d),
        }
    }
    QMatrix::from_blocks(kind, rows, cols, data).expect("whole blocks")
}

fn product(c: &mut Criterion) {
    let w = weights(); // [out, in], as a file holds it
    let q8 = QMatrix::quantize_q8_0(&llm_burn::formats::weight_files::transpose(&w, ROWS, COLS), COLS, ROWS).expect("whole blocks"); // [in, out]
    let dev = Default::default();
    let dense = Tensor::<B, 2>::from_data(TensorData::new(llm_burn::formats::weight_files::transpose(&w, ROWS, COLS), [COLS, ROWS]), &dev);
    let q8_file = QMatrix::quantize(TensorType::Q8_0, &w, ROWS, COLS).expect("whole blocks"); // [out, in]
    let strided = Tensor::<B, 2>::from_data(TensorData::new(w, [ROWS, COLS]), &dev).transpose();
    let mut g = c.benchmark_group("product");
    g.sample_size(10);
    for m in [1, 64, 512] {
        let x = Tensor::<B, 2>::from_data(TensorData::new((0..m * COLS).map(|i| (i % 13) as f32 / 13.0).collect::<Vec<_>>(), [m, COLS]), &dev);
        g.bench_function(format!("f32 [in, out], m = {m}"), |b| b.iter(|| x.clone().matmul(dense.clone()).into_data()));
        g.bench_function(format!("f32 [out, in]ᵀ, m = {m}"), |b| b.iter(|| x.clone().matmul(strided.clone()).into_data()));
        g.bench_function(format!("q8_0 panels, m = {m}"), |b| b.iter(|| q8.product(x.clone()).into_data()));
        let q4 = k_quant(TensorType::Q4_K, ROWS, COLS);
        for (kind, q) in [("Q4_K", &q4), ("Q8_0", &q8_file)] {
            g.bench_function(format!("{kind} as the file holds it, integer products, m = {m}"), |b| b.iter(|| q.product_t(x.clone()).into_data()));
            g.bench_function(format!("{kind} as the file holds it, dequantized, m = {m}"), |b| b.iter(|| q.product_t_dequantized(x.clone()).into_data()));
            let xv = x.clone().into_data().into_vec::<f32>().expect("float32");
            g.bench_function(format!("{kind} as the file holds it, integer products built for AVX2 alone, m = {m}"), |b| b.iter(|| llm_burn::quant::intdot::product_t_avx2(q.view(), &xv, m)));
        }
        let step = q8.panel_cols();
        let panels: Vec<Tensor<B, 2>> = (0..ROWS).step_by(step).map(|c| dense.clone().narrow(1, c, step.min(ROWS - c)).into_data()).map(|d| Tensor::from_data(d, &dev)).collect();
        g.bench_function(format!("f32 in the same panels, m = {m}"), |b| b.iter(|| Tensor::cat(panels.iter().map(|p| x.clone().matmul(p.clone())).collect(), 1).into_data()));
    }
    g.finish();
}

criterion_group!(benches, dequantize, product);
criterion_main!(benches);
