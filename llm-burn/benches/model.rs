//! The default model on the CPU: prefill throughput, batched scoring from a cached prefix,
//! and decoding; and short prefills on its Q4_K file in integer products. Needs `cargo xtask
//! fetch-model` first (and `cargo xtask quantize --type q4_k` for the second; skips otherwise).
#![allow(clippy::print_stderr)] // says on stderr when it skips

use std::path::Path;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use llm_burn::{CpuBackend, Dtype, ForwardOptions, Decoder};

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| 100 + (i.wrapping_mul(2654435761).wrapping_add(seed) % 40000)).collect()
}

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/SmolLM2-135M-Instruct");
    if !llm_burn::is_model_dir(&dir) {
        eprintln!("skipped: run `cargo xtask fetch-model` first");
        return;
    }
    let model = Decoder::<CpuBackend>::load(&dir, &Default::default()).expect("load");
    let mut g = c.benchmark_group("smollm2_135m");
    g.sample_size(10);
    prefills(&mut g, &model, &[64, 256, 1024]);
    // A subject's few-shot system prompt (~1,500 tokens) computed once, then 16 items of
    // ~60 tokens continued from it in one batch: the per-item scoring cost.
    let prefix = tokens(1500, 2);
    let mut prefix_cache = model.new_cache();
    model.forward(&[&prefix], &mut prefix_cache, ForwardOptions::default()).expect("prefix");
    let items: Vec<Vec<u32>> = (0..16).map(|i| tokens(55 + i % 8, 10 + i as u32)).collect();
    let rows: Vec<&[u32]> = items.iter().map(Vec::as_slice).collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("score_16_items_after_1500_token_prefix", |b| {
        b.iter(|| {
            let mut cache = prefix_cache.repeat(16).expect("repeat");
            model.forward(&rows, &mut cache, ForwardOptions::default()).expect("forward")
        })
    });
    // Decoding: one token at a time after a 100-token prompt, 16 tokens.
    let prompt = tokens(100, 3);
    g.throughput(Throughput::Elements(16));
    g.bench_function("decode_16_tokens_after_100", |b| {
        b.iter(|| {
            let mut cache = model.new_cache();
            model.forward(&[&prompt], &mut cache, ForwardOptions::default()).expect("prompt");
            for t in 0..16u32 {
                model.forward(&[&[200 + t]], &mut cache, ForwardOptions::default()).expect("step");
            }
        })
    });
    g.finish();
}

/// Prefills on SmolLM2's Q4_K file (`--dtype file`: Q4_K and Q8_0 blocks multiplied in
/// integers), where engine-bench's hundredths of a second cannot tell changes apart.
fn file_blocks(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/SmolLM2-135M-Instruct-q4_k");
    if !dir.join("model.gguf").is_file() {
        eprintln!("skipped: run `cargo xtask quantize --type q4_k` first");
        return;
    }
    let model = Decoder::<CpuBackend>::load_as(&dir, &Default::default(), Dtype::File).expect("load");
    let mut g = c.benchmark_group("smollm2_135m_q4_k_file");
    g.sample_size(20);
    prefills(&mut g, &model, &[64, 256]);
    g.finish();
}

/// One row of `n` tokens from an empty cache, for each `n`.
fn prefills(g: &mut BenchmarkGroup<'_, WallTime>, model: &Decoder<CpuBackend>, lengths: &[usize]) {
    for &n in lengths {
        let ids = tokens(n, 1);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("prefill_{n}"), |b| {
            b.iter(|| {
                let mut cache = model.new_cache();
                model.forward(&[&ids], &mut cache, ForwardOptions::default()).expect("forward")
            })
        });
    }
}

criterion_group!(benches, bench, file_blocks);
criterion_main!(benches);
