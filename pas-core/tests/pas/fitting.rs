//! The PAS fit: determinism, degenerate subjects, directions and scales.

use pas_core::direction::{mass_mean, projection_sigma};
use pas_core::{DirectionMethod, Fallback, Geometry, LabelledSample, PasConfig, fit_intervention};

use crate::common::planted;

#[test]
fn results_are_identical_across_runs_with_the_same_seed() {
    let geometry = Geometry::new(5, 4, 16);
    let (acts, samples, _) = planted(geometry, 50, &[(7, 0.6), (12, 0.4)], 9);
    let config = PasConfig::heldout();
    let a = fit_intervention(&acts, &samples, &config).unwrap();
    let b = fit_intervention(&acts, &samples, &config).unwrap();
    assert_eq!(a, b);
    let c = fit_intervention(&acts, &samples, &PasConfig { seed: 43, ..config }).unwrap();
    assert_ne!(a.probes, c.probes, "another split seed changes the probes");
}

#[test]
fn too_few_pairs_and_one_class_fall_back_to_no_intervention() {
    let geometry = Geometry::new(2, 2, 8);
    let (acts, samples, _) = planted(geometry, 10, &[(1, 2.0)], 1);
    let three_pairs: Vec<LabelledSample> = samples.iter().copied().filter(|s| s.group < 3).collect();
    let fit = fit_intervention(&acts, &three_pairs, &PasConfig::heldout()).unwrap();
    assert!(fit.intervention.is_empty());
    assert_eq!(fit.fallback, Some(Fallback::TooFewPairs { have: 3, need: 4 }));
    let none = fit_intervention(&acts, &[], &PasConfig::heldout()).unwrap();
    assert_eq!(none.fallback, Some(Fallback::TooFewPairs { have: 0, need: 4 }));
    let one_class: Vec<LabelledSample> = samples.iter().copied().filter(|s| s.label).collect();
    let fit = fit_intervention(&acts, &one_class, &PasConfig::heldout()).unwrap();
    assert_eq!(fit.fallback, Some(Fallback::OneClass));
}

#[test]
fn zero_variance_heads_are_skipped_and_all_constant_data_falls_back() {
    let geometry = Geometry::new(2, 2, 4);
    let (acts, samples, _) = planted(geometry, 20, &[(3, 2.0)], 2);
    // Make every head but L1H1 constant.
    let mut data = acts.data().to_vec();
    let len = geometry.sample_len();
    for row in 0..acts.samples() {
        for v in &mut data[row * len..row * len + 3 * 4] {
            *v = 0.25;
        }
    }
    let acts = pas_core::HeadActivations::new(geometry, acts.samples(), data).unwrap();
    let fit = fit_intervention(&acts, &samples, &PasConfig::heldout()).unwrap();
    assert_eq!(fit.fallback, None);
    assert_eq!(fit.intervention.len(), 1, "only the one varying head is usable");
    assert!(fit.intervention.heads().iter().all(|h| h.sigma.is_finite() && h.sigma > 0.0));

    let constant = pas_core::HeadActivations::new(geometry, acts.samples(), vec![1.0; acts.samples() * len]).unwrap();
    let fit = fit_intervention(&constant, &samples, &PasConfig::heldout()).unwrap();
    assert_eq!(fit.fallback, Some(Fallback::NoUsableHead));
    assert!(fit.probes.iter().all(|p| p.train_accuracy.is_finite() && p.validation_accuracy.is_finite()));
}

#[test]
fn mass_mean_and_sigma_follow_their_definitions() {
    // Two samples per class in 2-D.
    let rows = [3.0, 0.0, 5.0, 0.0, 0.0, 1.0, 0.0, 3.0];
    let labels = [true, true, false, false];
    let d = mass_mean(&rows, &labels, 2).unwrap();
    // μ(true) − μ(false) = (4, 0) − (0, 2) = (4, −2), normalised.
    let n = 20f64.sqrt();
    assert!((d[0] - 4.0 / n).abs() < 1e-12 && (d[1] + 2.0 / n).abs() < 1e-12);
    let proj: Vec<f64> = rows.chunks(2).map(|r| r[0] * d[0] + r[1] * d[1]).collect();
    let mean = proj.iter().sum::<f64>() / 4.0;
    let var0 = proj.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / 4.0;
    assert!((projection_sigma(&rows, &d, 0) - var0.sqrt()).abs() < 1e-12);
    assert!((projection_sigma(&rows, &d, 1) - (var0 * 4.0 / 3.0).sqrt()).abs() < 1e-12);
    assert!(mass_mean(&rows, &[true; 4], 2).is_none());
}

#[test]
fn probe_weight_directions_point_to_the_preferred_class() {
    let geometry = Geometry::new(2, 2, 8);
    let (acts, samples, _) = planted(geometry, 40, &[(2, 2.0)], 5);
    let config = PasConfig { direction: DirectionMethod::ProbeWeights, top_k: 1, ..PasConfig::heldout() };
    let fit = fit_intervention(&acts, &samples, &config).unwrap();
    let head = &fit.intervention.heads()[0];
    let idx = geometry.index(head.head).unwrap();
    // Projections of preferred samples exceed the others on average.
    let proj = |row: usize| acts.head(row, idx).iter().zip(&head.direction).map(|(a, b)| a * b).sum::<f32>();
    let (mut me, mut other) = (0.0, 0.0);
    for s in &samples {
        if s.label { me += proj(s.row) } else { other += proj(s.row) }
    }
    assert!(me > other);
}

#[test]
fn selecting_rows_keeps_their_values_and_order() {
    let geometry = Geometry::new(2, 2, 3);
    let (acts, _, _) = planted(geometry, 4, &[], 3);
    let picked = acts.select(&[5, 0, 5]).unwrap();
    assert_eq!(picked.samples(), 3);
    let len = geometry.sample_len();
    assert_eq!(&picked.data()[..len], &acts.data()[5 * len..6 * len]);
    assert_eq!(&picked.data()[len..2 * len], &acts.data()[..len]);
    assert_eq!(picked.head(2, 3), acts.head(5, 3));
    assert!(acts.select(&[8]).is_err(), "row out of range");
    assert!(pas_core::HeadActivations::new(geometry, 2, vec![0.0; 5]).is_err(), "wrong buffer length");
}
