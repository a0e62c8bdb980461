//! Strength search and the held-out objective.

use pas_core::fit::{fit_held_out_folds, held_out_objective};
use pas_core::search::kfold_groups;
use pas_core::{Geometry, PasConfig, Search};

use crate::common::planted;

#[test]
fn grid_search_takes_the_best_and_the_earliest_on_ties() {
    let r = Search::official_grid().run(|a| Ok::<_, ()>((a - 4.0).abs())).unwrap();
    assert_eq!(r.alpha, 4.0);
    assert_eq!(r.evaluations.len(), 6);
    let flat = Search::official_grid().run(|_| Ok::<_, ()>(1.0)).unwrap();
    assert_eq!(flat.alpha, 0.0);
    let nan = Search::official_grid().run(|a| Ok::<_, ()>(if a == 0.0 { f64::NAN } else { a })).unwrap();
    assert_eq!(nan.alpha, 1.0, "NaN counts as +inf");
}

#[test]
fn golden_section_finds_the_minimum_of_a_unimodal_objective() {
    let search = Search::GoldenSection { lo: 0.0, hi: 10.0, tol: 1e-3, max_evals: 60 };
    let r = search.run(|a| Ok::<_, ()>((a - 3.7).powi(2))).unwrap();
    assert!((r.alpha - 3.7).abs() < 1e-3, "{}", r.alpha);
    let paper = Search::paper_golden_section().run(|a| Ok::<_, ()>((a - 6.2).powi(2))).unwrap();
    assert!((paper.alpha - 6.2).abs() < 0.25 && paper.evaluations.len() <= 16);
    let err: Result<_, &str> = search.run(|_| Err("boom"));
    assert_eq!(err.unwrap_err(), "boom");
}

#[test]
fn held_out_folds_never_fit_on_their_own_groups() {
    let geometry = Geometry::new(3, 3, 8);
    let (acts, samples, _) = planted(geometry, 40, &[(4, 2.0)], 6);
    let groups: Vec<usize> = samples.iter().map(|s| s.group).collect();
    let folds = kfold_groups(&groups, 4, 1);
    assert_eq!(folds, kfold_groups(&groups, 4, 1));
    let mut all: Vec<usize> = folds.concat();
    all.sort_unstable();
    let mut expected = groups.clone();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(all, expected, "folds partition the groups");
    let fitted = fit_held_out_folds(&acts, &samples, &PasConfig::heldout(), &folds).unwrap();
    for f in &fitted {
        assert!(f.held_out_groups.iter().all(|g| !f.fit_groups.contains(g)));
        assert_eq!(f.fit.groups, f.fit_groups.len());
        assert!(!f.fit.intervention.is_empty());
    }
    // The objective is the mean of per-fold scores.
    let obj = held_out_objective(&fitted, 2.0, |f, a| Ok::<_, ()>(a * f.held_out_groups.len() as f64)).unwrap();
    let expect = 2.0 * folds.iter().map(Vec::len).sum::<usize>() as f64 / 4.0;
    assert!((obj - expect).abs() < 1e-12);
}

#[test]
fn invalid_configurations_are_rejected() {
    assert!(PasConfig { top_k: 0, ..PasConfig::official() }.validate().is_err());
    assert!(PasConfig { validation_fraction: 1.0, ..PasConfig::official() }.validate().is_err());
    assert!(PasConfig { search: Search::Grid { alphas: vec![] }, ..PasConfig::official() }.validate().is_err());
    assert!(PasConfig::official().validate().is_ok() && PasConfig::heldout().validate().is_ok());
    let json = serde_json::to_string(&PasConfig::heldout()).unwrap();
    assert_eq!(serde_json::from_str::<PasConfig>(&json).unwrap(), PasConfig::heldout());
    assert!(serde_json::from_str::<PasConfig>(&json.replace("\"top_k\"", "\"topk\"")).is_err(), "unknown fields are refused");
}
