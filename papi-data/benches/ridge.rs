//! The `ridge` reference predictor at population scale: 5 folds over a synthetic population
//! (the normal equations of 120 known items → 180 test items, fitted 5 times).

use criterion::{Criterion, criterion_group, criterion_main};
use papi_data::reference::{RidgeConfig, ridge_values};
use papi_data::synthetic::{SyntheticConfig, generate};
use papi_data::{Inventory, Split};

fn bench(c: &mut Criterion) {
    let inventory = Inventory::synthetic();
    let split = Split::short_form(&inventory).expect("short form");
    let mut group = c.benchmark_group("ridge");
    group.sample_size(10);
    for n in [10_000, 100_000] {
        let subjects = generate(&inventory, &SyntheticConfig { subjects: n, seed: 1, ..Default::default() });
        group.bench_function(format!("{n}_subjects"), |b| {
            b.iter(|| ridge_values(&split, &subjects, &RidgeConfig::default()).expect("ridge"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
