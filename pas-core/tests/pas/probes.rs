//! Probes: optimality, separable data, noise, ranking.

use pas_core::probe::{Probe, ProbeConfig, ProbeScore, Ranking, rank_heads};
use pas_core::{Geometry, HeadId, PasConfig, fit_intervention};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::common::{normal, planted};

/// Gradient of sklearn's objective C Σ log(1 + exp(-y z)) + ½‖w‖² at the probe.
fn gradient(p: &Probe, x: &[f64], y: &[bool], c: f64) -> Vec<f64> {
    let dim = p.weights.len();
    let mut g: Vec<f64> = p.weights.clone();
    g.push(0.0);
    for (i, &label) in y.iter().enumerate() {
        let row = &x[i * dim..(i + 1) * dim];
        let prob = 1.0 / (1.0 + (-p.decision(row)).exp());
        let r = c * (prob - if label { 1.0 } else { 0.0 });
        for k in 0..dim {
            g[k] += r * row[k];
        }
        g[dim] += r;
    }
    g
}

fn random_problem(n: usize, dim: usize, shift: f64, seed: u64) -> (Vec<f64>, Vec<bool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let y: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
    let x = (0..n * dim)
        .map(|k| f64::from(normal(&mut rng)) + if y[k / dim] && k % dim == 0 { shift } else { 0.0 })
        .collect();
    (x, y)
}

#[test]
fn the_probe_reaches_the_optimum_of_sklearns_objective() {
    for (n, dim, shift, c) in [(100, 64, 1.0, 1.0), (60, 128, 3.0, 1.0), (200, 8, 0.2, 0.1), (30, 4, 10.0, 10.0)] {
        let (x, y) = random_problem(n, dim, shift, 1);
        let cfg = ProbeConfig { c, ..ProbeConfig::default() };
        let p = Probe::fit(&x, &y, dim, &cfg);
        let g = gradient(&p, &x, &y, c);
        let max = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(max < 1e-6, "n={n} dim={dim}: gradient {max}");
    }
}

#[test]
fn separable_data_gives_accuracy_one_and_noise_about_one_half() {
    let (x, y) = random_problem(120, 16, 8.0, 2);
    let p = Probe::fit(&x, &y, 16, &ProbeConfig::default());
    assert_eq!(p.accuracy(&x, &y), 1.0);

    // Noise: held-out accuracy near chance over many heads.
    let geometry = Geometry::new(4, 8, 16);
    let (acts, samples, _) = planted(geometry, 100, &[], 3);
    let fit = fit_intervention(&acts, &samples, &PasConfig::heldout()).unwrap();
    let mean_val: f64 = fit.probes.iter().map(|s| s.validation_accuracy).sum::<f64>() / fit.probes.len() as f64;
    assert!((0.4..0.6).contains(&mean_val), "mean validation accuracy on noise {mean_val}");
}

#[test]
fn constant_features_give_a_finite_probe() {
    let x = vec![1.5; 40 * 3];
    let y: Vec<bool> = (0..40).map(|i| i % 4 == 0).collect();
    let p = Probe::fit(&x, &y, 3, &ProbeConfig::default());
    assert!(p.weights.iter().chain([&p.bias]).all(|v| v.is_finite()));
    assert_eq!(p.accuracy(&x, &y), 0.75, "predicts the majority class");
}

#[test]
fn a_planted_separable_head_is_ranked_first() {
    let geometry = Geometry::new(6, 4, 32);
    let head = 3 * 4 + 1; // L3H1
    let (acts, samples, _) = planted(geometry, 60, &[(head, 6.0)], 4);
    for config in [PasConfig::official(), PasConfig { ranking: Ranking::Validation, ..PasConfig::heldout() }] {
        let fit = fit_intervention(&acts, &samples, &config).unwrap();
        assert_eq!(fit.probes[0].head, HeadId::new(3, 1));
        assert_eq!(fit.probes[0].validation_accuracy, 1.0);
        assert_eq!(fit.intervention.heads()[0].head, HeadId::new(3, 1));
    }
}

#[test]
fn ties_are_broken_by_validation_accuracy_then_head_order() {
    let s = |l, h, t, v| ProbeScore { head: HeadId::new(l, h), train_accuracy: t, validation_accuracy: v };
    let mut scores = vec![s(2, 0, 1.0, 0.8), s(0, 1, 0.8, 1.0), s(1, 0, 1.0, 0.8), s(0, 0, 0.6, 0.6)];
    rank_heads(&mut scores, Ranking::MeanTrainValidation);
    let order: Vec<_> = scores.iter().map(|s| (s.head.layer, s.head.head)).collect();
    assert_eq!(order, vec![(0, 1), (1, 0), (2, 0), (0, 0)]);
    rank_heads(&mut scores, Ranking::Validation);
    assert_eq!(scores[0].head, HeadId::new(0, 1));
}
