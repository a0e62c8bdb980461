//! Keying, splits, folds, scoring and the generator working together on synthetic data.

use papi_data::keying::MISSING;
use papi_data::reference::{self, Reference, RidgeConfig};
use papi_data::scoring::{Predictions, domain_scores, facet_scores, subject_mae, target};
use papi_data::synthetic::{SyntheticConfig, generate};
use papi_data::{Domain, Folds, Inventory, Keying, MissingAnswers, Protocol, Sign, Split};

use crate::common::{mean_cross_key_correlation, population};

#[test]
fn the_generator_is_deterministic_and_stores_reverse_keyed_items_reflected() {
    let inv = Inventory::synthetic();
    let cfg = SyntheticConfig { subjects: 300, seed: 3, missing_rate: 0.01, first_case: 10 };
    let a = generate(&inv, &cfg);
    assert_eq!(a, generate(&inv, &cfg));
    assert_ne!(a, generate(&inv, &SyntheticConfig { seed: 4, ..cfg }));
    assert_eq!(a[0].case, 10);
    let missing = a.iter().flat_map(|s| &s.answers).filter(|&&v| v == MISSING).count() as f64 / (300.0 * 300.0);
    assert!((0.005..0.02).contains(&missing), "missing share {missing}");
    // Like the release: '+' and '-' items of a facet correlate positively as stored.
    assert!(mean_cross_key_correlation(&inv, &a, |v, _| v) > 0.1);
    assert!(mean_cross_key_correlation(&inv, &a, |v, s| Keying::Corrected.answer(v, s)) < -0.1);
}

#[test]
fn keying_maps_stored_values_to_answers() {
    assert_eq!(Keying::Corrected.answer(5, Sign::Minus), 1);
    assert_eq!(Keying::Corrected.answer(2, Sign::Plus), 2);
    assert_eq!(Keying::AsReleased.answer(5, Sign::Minus), 5);
    assert_eq!(Keying::Corrected.answer(MISSING, Sign::Minus), MISSING);
    assert_eq!("as-released".parse::<Keying>(), Ok(Keying::AsReleased));
    assert!("reversed".parse::<Keying>().is_err());
}

#[test]
fn missing_targets_follow_the_protocol() {
    let (inv, mut subjects) = population(1, 0);
    let s = &mut subjects[0];
    let minus = inv.items().iter().find(|i| i.sign == Sign::Minus).unwrap().number;
    s.answers[usize::from(minus) - 1] = MISSING;
    assert_eq!(target(&inv, s, minus, Protocol::corrected()), None);
    assert_eq!(target(&inv, s, minus, Protocol::as_released()), Some(0));
    s.answers[usize::from(minus) - 1] = 4;
    assert_eq!(target(&inv, s, minus, Protocol::corrected()), Some(2));
    assert_eq!(target(&inv, s, minus, Protocol::as_released()), Some(4));
    // Predicting 2 for that one item: error 0 under corrected, 2 under as-released.
    let mut p = Predictions::empty(inv.len());
    p.set(minus, 2);
    let d = inv.item(minus).unwrap().domain();
    assert_eq!(subject_mae(&inv, s, &[minus], Protocol::corrected(), &p)[d], Some(0.0));
    assert_eq!(subject_mae(&inv, s, &[minus], Protocol::as_released(), &p)[d], Some(2.0));
    let other = Domain::ALL.into_iter().find(|&o| o != d).unwrap();
    assert_eq!(subject_mae(&inv, s, &[minus], Protocol::corrected(), &p)[other], None);
    let official = Protocol { keying: Keying::Corrected, missing: MissingAnswers::ScoreAsZero };
    assert_eq!(subject_mae(&inv, s, &[minus], official, &p)[d], Some(0.0));
}

#[test]
fn folds_partition_the_known_items_by_domain() {
    let inv = Inventory::synthetic();
    let split = Split::short_form(&inv).unwrap();
    let folds = Folds::new(&split.known, &inv, 5, 11).unwrap();
    assert_eq!(folds.k(), 5);
    let mut all: Vec<u16> = (0..5).flat_map(|i| folds.held_out(i).to_vec()).collect();
    all.sort_unstable();
    let mut known = split.known.clone();
    known.sort_unstable();
    assert_eq!(all, known, "the folds partition the items");
    for i in 0..5 {
        assert_eq!(folds.held_out(i).len(), 24);
        assert_eq!(folds.fit(i).len(), 96);
        assert!(folds.fit(i).iter().all(|n| !folds.held_out(i).contains(n)));
        for d in Domain::ALL {
            assert!(folds.held_out(i).iter().any(|&n| inv.item(n).unwrap().domain() == d), "fold {i} lacks {d}");
        }
    }
    assert_eq!(folds, Folds::new(&split.known, &inv, 5, 11).unwrap());
    assert_ne!(folds, Folds::new(&split.known, &inv, 5, 12).unwrap());
    assert!(Folds::new(&split.known[..3], &inv, 5, 0).is_err());
    assert!(Folds::new(&split.known, &inv, 1, 0).is_err());
}

#[test]
fn references_rank_as_expected_on_a_synthetic_population() {
    let (inv, subjects) = population(300, 5);
    let split = Split::short_form(&inv).unwrap();
    let totals: Vec<f64> = Reference::ALL
        .iter()
        .map(|&r| {
            reference::evaluate(r, &inv, &split, &subjects, Protocol::corrected(), &RidgeConfig::default())
                .unwrap()
                .total
                .unwrap()
        })
        .collect();
    assert!(totals[2] < totals[1] && totals[1] < totals[0], "{totals:?}");
    // Predictions in trait direction mapped through keying score alike under both keyings
    // once missing answers are handled alike.
    let same_missing = Protocol { keying: Keying::AsReleased, missing: MissingAnswers::Exclude };
    let own = reference::evaluate(Reference::OwnMean, &inv, &split, &subjects, same_missing, &RidgeConfig::default())
        .unwrap()
        .total
        .unwrap();
    assert!((own - totals[1]).abs() < 1e-12);
    assert!(reference::ridge(&inv, &split, &subjects[..3], Keying::Corrected, &RidgeConfig::default()).is_err());
}

#[test]
fn facet_scores_average_to_domain_scores() {
    let (inv, subjects) = population(5, 2);
    let mut s = subjects[0].clone();
    s.answers.iter_mut().for_each(|v| if *v == MISSING { *v = 3 });
    let facets = facet_scores(&inv, &s);
    assert_eq!(facets.len(), 30);
    // Every facet has 10 items in the synthetic key, so the domain score is the facet mean.
    let domains = domain_scores(&inv, &s);
    for d in Domain::ALL {
        let of_domain: Vec<f64> = facets.iter().filter(|(f, _)| f.domain == d).map(|(_, v)| v.unwrap()).collect();
        assert_eq!(of_domain.len(), 6);
        let mean = of_domain.iter().sum::<f64>() / 6.0;
        assert!((mean - domains[d].unwrap()).abs() < 1e-12, "{d}");
    }
    // A facet whose answers are all missing has no score.
    let mut blank = s.clone();
    for item in inv.items().iter().filter(|i| i.facet == inv.items()[0].facet) {
        blank.answers[usize::from(item.number) - 1] = MISSING;
    }
    assert_eq!(facet_scores(&inv, &blank)[&inv.items()[0].facet], None);
}

#[test]
fn the_summary_counts_every_answer_and_scores_the_references_when_asked() {
    use papi_data::stats::summarize;
    let (inv, subjects) = population(40, 8);
    let split = Split::short_form(&inv).unwrap();
    let data = papi_data::Dataset { inventory: inv, split, subjects, records_path: "synthetic".into() };
    let cfg = RidgeConfig { folds: 4, ..RidgeConfig::default() };
    let full = summarize(&data, Protocol::corrected(), Some(&cfg)).unwrap();
    assert_eq!(full.histogram.iter().sum::<u64>(), 40 * 300);
    assert_eq!((full.subjects, full.items, full.split), (40, 300, (120, 180)));
    let names: Vec<&str> = full.references.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(names, ["always-3", "own-mean", "ridge"]);
    for d in Domain::ALL {
        let m = full.domain_scores[d].expect("every domain scored");
        assert!((1.0..=5.0).contains(&m.mean) && m.sd > 0.0, "{d}: {m:?}");
    }
    let quick = summarize(&data, Protocol::corrected(), None).unwrap();
    assert!(quick.references.is_empty());
    assert_eq!(quick.histogram, full.histogram);
}
