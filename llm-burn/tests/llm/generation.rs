//! Generation: joining caches, sampling, and continuous batching with per-row steering.

use std::collections::BTreeMap;
use std::sync::Arc;

use llm_burn::{Batcher, Finish, ForwardOptions, Generation, KvCache, Kernels, Decoder, Sampler, Sampling};
use pas_core::{HeadId, Intervention, Positions, SteeredHead, Steering};
use proptest::prelude::*;

use crate::TestBackend;

fn tiny(kernels: Option<Kernels>) -> (tempfile::TempDir, Decoder<TestBackend>) {
    let dir = tempfile::tempdir().unwrap();
    llm_burn::tiny::write_weights(dir.path(), 11, 50).unwrap();
    let model = Decoder::load(dir.path(), &Default::default()).unwrap();
    let model = match kernels {
        Some(k) => model.with_kernels(k),
        None => model,
    };
    (dir, model)
}

fn steering(model: &Decoder<TestBackend>, alpha: f32, positions: Positions) -> Arc<Steering> {
    let iv = Intervention::new(
        model.config().geometry(),
        vec![
            SteeredHead { head: HeadId::new(0, 2), direction: vec![0.5, -0.5, 0.5, 0.5], sigma: 3.0 },
            SteeredHead { head: HeadId::new(1, 0), direction: vec![0.0, 1.0, 0.0, 0.0], sigma: 2.0 },
        ],
    )
    .unwrap();
    Arc::new(iv.at(alpha, positions))
}

fn last_logits(model: &Decoder<TestBackend>, cache: &mut KvCache<TestBackend>, rows: &[&[u32]]) -> Vec<Vec<f32>> {
    let out = model.forward(rows, cache, ForwardOptions::default()).unwrap();
    out.logits.into_data().to_vec::<f32>().unwrap().chunks(50).map(<[f32]>::to_vec).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn joined_caches_of_different_lengths_continue_each_row_as_alone() {
    for kernels in [Kernels::Host, Kernels::Tensor] {
        let (_d, model) = tiny(Some(kernels));
        let rows: [&[u32]; 3] = [&[5, 9, 13, 21, 8, 3], &[7, 7], &[4, 40, 2, 11]];
        let next: [&[u32]; 3] = [&[17], &[30], &[9]];
        // Alone: the whole row then its next token.
        let alone: Vec<Vec<f32>> = rows
            .iter()
            .zip(&next)
            .map(|(r, n)| {
                let mut c = model.new_cache();
                model.forward(&[r], &mut c, ForwardOptions::default()).unwrap();
                last_logits(&model, &mut c, &[n]).remove(0)
            })
            .collect();
        // Row 0 and 1 prefilled together (padded), row 2 alone, then joined; row 0 leaves.
        let mut a = model.new_cache();
        model.forward(&rows[..2], &mut a, ForwardOptions::default()).unwrap();
        let mut b = model.new_cache();
        model.forward(&rows[2..], &mut b, ForwardOptions::default()).unwrap();
        let mut joined = KvCache::join(vec![a, b]).unwrap();
        assert_eq!((joined.batch(), joined.len()), (3, 6));
        let both = last_logits(&model, &mut joined.clone(), &next);
        for r in 0..3 {
            assert!(max_diff(&both[r], &alone[r]) < 1e-4, "{kernels:?} row {r}: {}", max_diff(&both[r], &alone[r]));
        }
        let mut rest = joined.select_rows(&[1, 2]).unwrap();
        rest.compact();
        assert_eq!(rest.len(), 4, "{kernels:?}: the padding only row 0 needed is dropped");
        let after = last_logits(&model, &mut rest, &next[1..]);
        for r in 0..2 {
            assert!(max_diff(&after[r], &alone[r + 1]) < 1e-4, "{kernels:?} compacted row {r}");
        }
        joined = KvCache::join(vec![rest]).unwrap();
        assert_eq!(joined.batch(), 2);
    }
}

#[test]
fn greedy_sampling_is_the_argmax_and_a_tiny_nucleus_is_too() {
    let logits = [0.1f32, 2.0, -1.0, 1.9];
    assert_eq!(Sampler::new(Sampling::default()).next(&logits), 1);
    let mut s = Sampler::new(Sampling { temperature: 1.0, top_p: 1e-6, seed: 3 });
    assert!((0..50).all(|_| s.next(&logits) == 1));
    assert!(Sampling { temperature: -1.0, ..Default::default() }.validate().is_err());
    assert!(Sampling { top_p: 0.0, ..Default::default() }.validate().is_err());
    assert!(Sampling { top_p: 1.5, ..Default::default() }.validate().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn sampling_is_seeded_and_stays_in_the_nucleus(logits in prop::collection::vec(-5.0f32..5.0, 2..30), seed in 0u64..1000, top_p in 0.05f32..1.0) {
        let sampling = Sampling { temperature: 0.7, top_p, seed };
        let draw = |n| { let mut s = Sampler::new(sampling); (0..n).map(|_| s.next(&logits)).collect::<Vec<u32>>() };
        let a = draw(40);
        prop_assert_eq!(&a, &draw(40));
        // The nucleus: the most likely tokens until their mass reaches top_p.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&x, &y| logits[y].total_cmp(&logits[x]).then(x.cmp(&y)));
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let p: Vec<f64> = logits.iter().map(|&l| f64::from((l - max) / 0.7).exp()).collect();
        let total: f64 = p.iter().sum();
        let (mut mass, mut nucleus) = (0.0, Vec::new());
        for &i in &order {
            nucleus.push(i as u32);
            mass += p[i] / total;
            if mass >= f64::from(top_p) { break; }
        }
        prop_assert!(a.iter().all(|t| nucleus.contains(t)), "{:?} outside {:?}", a, nucleus);
    }
}

/// Each request alone: its tokens and how it ended.
fn alone(model: &Decoder<TestBackend>, g: &Generation) -> (Vec<u32>, Finish) {
    let mut tokens = Vec::new();
    let finish = model.generate(g.clone(), |t| {
        tokens.push(t);
        true
    });
    (tokens, finish.unwrap().unwrap())
}

#[test]
fn a_mixed_continuous_batch_gives_each_request_the_tokens_it_gets_alone() {
    for kernels in [Kernels::Host, Kernels::Tensor] {
        let (_d, model) = tiny(Some(kernels));
        let prompts: [&[u32]; 6] = [&[3, 9, 14, 22, 5], &[8], &[40, 41, 42], &[5, 9, 13, 21, 8, 3, 30, 31], &[12, 12], &[1, 2, 3, 4]];
        let st = [
            None,
            Some(steering(&model, 4.0, Positions::All)),
            Some(steering(&model, -6.0, Positions::Last)),
            None,
            Some(steering(&model, 8.0, Positions::All)),
            Some(steering(&model, 2.0, Positions::Answer)),
        ];
        let gens: Vec<Generation> = prompts
            .iter()
            .zip(&st)
            .enumerate()
            .map(|(i, (p, s))| Generation {
                prompt: p.to_vec(),
                steering: s.clone(),
                sampling: if i % 2 == 0 { Sampling::default() } else { Sampling { temperature: 0.9, top_p: 0.9, seed: i as u64 } },
                max_new: 3 + 2 * i,
                stop: vec![0],
            })
            .collect();
        let expected: Vec<(Vec<u32>, Finish)> = gens.iter().map(|g| alone(&model, g)).collect();
        // Steering changes what a steered request generates (else the test would prove little).
        let plain = alone(&model, &Generation { steering: None, ..gens[4].clone() });
        assert_ne!(plain.0, expected[4].0, "{kernels:?}: steering should change the tokens");

        // Requests arrive over the first steps; at most 4 run at once.
        let mut batch = Batcher::new(&model, 4);
        let mut got: BTreeMap<u64, (Vec<u32>, Option<Finish>)> = BTreeMap::new();
        let mut step = 0;
        while step < 100 {
            if step < gens.len() {
                batch.add(step as u64, gens[step].clone()).unwrap();
            }
            for e in batch.step().unwrap() {
                let entry = got.entry(e.id).or_default();
                entry.0.extend(e.token);
                assert!(entry.1.is_none(), "an event after the end");
                entry.1 = e.finish;
            }
            step += 1;
            if step >= gens.len() && batch.is_idle() {
                break;
            }
        }
        for (i, (tokens, finish)) in &got {
            let (want, why) = &expected[*i as usize];
            assert_eq!((tokens, finish.as_ref()), (want, Some(why)), "{kernels:?} request {i}");
        }
        assert_eq!(got.len(), gens.len());
    }
}

#[test]
fn requests_the_model_cannot_run_are_refused_and_cancelled_ones_leave() {
    let (_d, model) = tiny(None);
    let mut batch = Batcher::new(&model, 8);
    let ok = Generation { prompt: vec![3, 4], steering: None, sampling: Sampling::default(), max_new: 50, stop: vec![] };
    assert!(batch.add(1, Generation { prompt: vec![], ..ok.clone() }).is_err());
    assert!(batch.add(1, Generation { prompt: vec![99], ..ok.clone() }).is_err());
    assert!(batch.add(1, Generation { max_new: 0, ..ok.clone() }).is_err());
    let context = model.config().context;
    assert!(batch.add(1, Generation { max_new: context, ..ok.clone() }).is_err());
    batch.add(1, ok.clone()).unwrap();
    batch.add(2, ok.clone()).unwrap();
    batch.step().unwrap();
    assert_eq!(batch.running(), 2);
    batch.cancel(1).unwrap();
    assert_eq!(batch.running(), 1);
    let e = batch.step().unwrap();
    assert!(e.iter().all(|e| e.id == 2));
}
