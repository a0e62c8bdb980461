//! The KL strength unit's arithmetic and the layer window of a fit.

use pas_core::calibrate::{KlCurve, LayerWindow, StrengthChoice, one_se_choice, option_kl};
use pas_core::{Geometry, PasConfig, StrengthUnit, fit_intervention};
use proptest::prelude::*;

use crate::common::planted;

fn ladder() -> Vec<f64> {
    let StrengthUnit::Kl { ladder } = StrengthUnit::kl() else { unreachable!() };
    ladder
}

proptest! {
    /// On a power law KL = c·alpha^p (as KL ∝ alpha² near zero) the log-log interpolation
    /// is exact: every target inside the ladder's range is reached at its own strength.
    #[test]
    fn a_power_law_curve_is_inverted_exactly(c in 1e-3f64..10.0, p in 1.0f64..3.0, at in 0.0f64..1.0) {
        let curve = KlCurve::new(ladder().iter().map(|&a| (a, c * a.powf(p))).collect());
        let (lo, hi) = (curve.points[0].1, curve.points[curve.points.len() - 1].1);
        let target = lo * (hi / lo).powf(at);
        let alpha = curve.alpha_for(target).expect("inside the ladder");
        prop_assert!(((alpha / (target / c).powf(1.0 / p)).ln()).abs() < 1e-9);
        prop_assert!(((curve.kl_at(alpha) / target).ln()).abs() < 1e-9);
    }

    /// Whatever the measurements (noisy, saturating), a larger target never needs a smaller
    /// strength, and an unreachable one is refused rather than extrapolated.
    #[test]
    fn the_strength_for_a_target_grows_with_the_target(kls in proptest::collection::vec(0.0f64..2.0, 11), t1 in 1e-4f64..2.0, t2 in 1e-4f64..2.0) {
        let curve = KlCurve::new(ladder().into_iter().zip(kls.iter().copied()).collect());
        let (lo, hi) = if t1 <= t2 { (t1, t2) } else { (t2, t1) };
        match (curve.alpha_for(lo), curve.alpha_for(hi)) {
            (Some(a), Some(b)) => prop_assert!(a <= b + 1e-12, "{lo} at {a}, {hi} at {b}"),
            (_, None) => prop_assert!(kls.iter().all(|&k| k < hi)),
            (None, Some(_)) => prop_assert!(false, "a smaller target out of reach"),
        }
    }

    /// KL over the five options: zero between a distribution and itself, positive between
    /// different ones, and blind to a constant added to the log-probabilities (each side is
    /// renormalised over the options).
    #[test]
    fn option_kl_compares_renormalised_distributions(a in proptest::array::uniform5(-8.0f32..0.0), b in proptest::array::uniform5(-8.0f32..0.0), shift in -5.0f32..5.0) {
        prop_assert!(option_kl(&a, &a).abs() < 1e-9);
        let shifted = a.map(|v| v + shift);
        prop_assert!((option_kl(&shifted, &b) - option_kl(&a, &b)).abs() < 1e-4);
        prop_assert!(option_kl(&a, &b) >= 0.0);
    }
}

#[test]
fn option_kl_matches_a_hand_computed_value() {
    let ln = |p: f32| p.ln();
    let p = [ln(0.5), ln(0.5), f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    let q = [ln(0.25), ln(0.25), ln(0.25), ln(0.25), f32::NEG_INFINITY];
    assert!((option_kl(&p, &q) - std::f64::consts::LN_2).abs() < 1e-6);
}

#[test]
fn the_one_se_rule_trusts_no_gain_inside_the_noise() {
    // The lowest Total (2.8 ± 0.3) does not beat no steering (3.0) by more than its error.
    let c = [(3.0, 0.2), (2.9, 0.2), (2.8, 0.3)];
    assert_eq!(one_se_choice(&c), Some(0));
    assert_eq!(StrengthChoice::Best.choose(&c), Some(2));
    // A gain larger than the error is taken, at the smallest effect that has it.
    let c = [(3.5, 0.2), (2.6, 0.2), (2.5, 0.2), (2.4, 0.2)];
    assert_eq!(StrengthChoice::OneSe.choose(&c), Some(1));
    // Ties go to the earlier, non-finite objectives never win.
    assert_eq!(StrengthChoice::Best.choose(&[(f64::INFINITY, 0.0), (2.0, 0.1), (2.0, 0.1)]), Some(1));
    assert_eq!(StrengthChoice::OneSe.choose(&[(f64::NAN, 0.0)]), None);
}

#[test]
fn the_inner_window_keeps_the_first_two_and_the_last_layer_unsteered() {
    let g = Geometry::new(6, 2, 4);
    // Strong signals planted in layers 0, 1 and 5; weaker ones in layers 2 to 4.
    let heads: Vec<(usize, f32)> = vec![(0, 3.0), (2, 3.0), (10, 3.0), (4, 1.5), (6, 1.5), (8, 1.5)];
    let (acts, samples, _) = planted(g, 60, &heads, 7);
    let layers = |window: LayerWindow| -> Vec<u32> {
        let fit = fit_intervention(&acts, &samples, &PasConfig { top_k: 3, window, ..PasConfig::heldout() }).unwrap();
        fit.intervention.heads().iter().map(|h| h.head.layer).collect()
    };
    let all = layers(LayerWindow::All);
    assert!(all.iter().any(|&l| l < 2 || l == 5), "the strongest heads are outside the inner layers: {all:?}");
    let inner = layers(LayerWindow::Inner);
    assert_eq!(inner.len(), 3);
    assert!(inner.iter().all(|&l| (2..5).contains(&l)), "{inner:?}");
    // A model too shallow for inner layers keeps them all.
    assert!(LayerWindow::Inner.holds(0, 3) && !LayerWindow::Inner.holds(1, 4) && LayerWindow::Inner.holds(2, 4));
}
