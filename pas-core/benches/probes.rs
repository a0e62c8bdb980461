//! Fitting PAS for one subject: a probe for every head, ranking, directions and scales.
//!
//! Layouts: Llama-3-8B (32 layers × 32 heads × 128 dims) and SmolLM2-135M (30 × 9 × 64),
//! 240 samples (120 contrast pairs, all labelled: the worst case; PAPI subjects average ~82).

use criterion::{Criterion, criterion_group, criterion_main};
use pas_core::{ContrastPair, Geometry, HeadActivations, PasConfig, Preference, fit_intervention, labelled_samples};

/// Deterministic pseudo-random activations (no RNG crate needed in the bench).
fn activations(g: Geometry, samples: usize) -> HeadActivations {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data = (0..samples * g.sample_len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    HeadActivations::new(g, samples, data).expect("shape")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fit_intervention");
    group.sample_size(10);
    for (name, g) in [("smollm2_30x9x64", Geometry::new(30, 9, 64)), ("llama3_8b_32x32x128", Geometry::new(32, 32, 128))] {
        let acts = activations(g, 240);
        let pairs: Vec<ContrastPair> = (0..120).map(|i| ContrastPair { first: 2 * i, second: 2 * i + 1 }).collect();
        let prefs: Vec<Option<Preference>> = (0..120).map(|i| Some(if i % 2 == 0 { Preference::First } else { Preference::Second })).collect();
        let samples = labelled_samples(&pairs, &prefs);
        let config = PasConfig::official();
        group.bench_function(name, |b| b.iter(|| fit_intervention(&acts, &samples, &config).expect("fit")));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
