//! Property tests (proptest) on keying, scoring and record I/O.

use papi_data::keying::reflect;
use papi_data::reference::{self, Reference, RidgeConfig};
use papi_data::scoring::{aggregate, domain_scores, item_error};
use papi_data::{Demographics, Inventory, PerDomain, Protocol, Split, Subject, read_records, write_records};
use proptest::prelude::*;

use crate::common::population;

fn per_domain() -> impl Strategy<Value = PerDomain<Option<f64>>> {
    prop::array::uniform5(prop::option::weighted(0.9, 0.0f64..4.0)).prop_map(PerDomain)
}

fn subject(n_items: usize) -> impl Strategy<Value = Subject> {
    (
        any::<i64>(),
        prop::collection::vec(0u8..=5, n_items),
        prop::option::of(1i64..=2),
        prop::option::of(0i64..120),
        prop::option::of(prop::sample::select(vec!["USA", "UK", "New Zealand", "Côte d'Ivoire"])),
    )
        .prop_map(|(case, answers, sex, age, country)| Subject {
            case,
            demographics: Demographics { sex, age, country: country.map(str::to_owned), ..Default::default() },
            answers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reflecting_twice_is_the_identity(v in 0u8..=5) {
        prop_assert_eq!(reflect(reflect(v)), v);
        prop_assert!(v == 0 || (1..=5).contains(&reflect(v)));
    }

    #[test]
    fn per_item_error_is_between_0_and_4(p in 1u8..=5, t in 1u8..=5) {
        let e = item_error(p, t);
        prop_assert!(e <= 4);
        prop_assert_eq!(e, item_error(t, p));
    }

    #[test]
    fn total_is_the_sum_of_domains(subjects in prop::collection::vec(per_domain(), 1..40)) {
        let agg = aggregate(&subjects);
        let sum: Option<f64> = agg.per_domain.0.iter().copied().sum();
        prop_assert_eq!(agg.total, sum);
        if let Some(t) = agg.total {
            prop_assert!((0.0..=20.0).contains(&t));
        }
    }

    #[test]
    fn totals_do_not_depend_on_subject_order(subjects in prop::collection::vec(per_domain(), 1..40), seed in any::<u64>()) {
        let mut shuffled = subjects.clone();
        // A deterministic permutation from the seed.
        let n = shuffled.len();
        for i in (1..n).rev() {
            shuffled.swap(i, (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize);
        }
        let (a, b) = (aggregate(&subjects), aggregate(&shuffled));
        for d in papi_data::Domain::ALL {
            match (a.per_domain[d], b.per_domain[d]) {
                (Some(x), Some(y)) => prop_assert!((x - y).abs() < 1e-12),
                (x, y) => prop_assert_eq!(x, y),
            }
        }
    }

    #[test]
    fn domain_scores_lie_in_1_to_5(s in subject(300)) {
        let inv = Inventory::synthetic();
        for (_, v) in domain_scores(&inv, &s).iter() {
            if let Some(v) = v {
                prop_assert!((1.0..=5.0).contains(v), "{}", v);
            }
        }
    }

    #[test]
    fn records_written_and_read_back_are_equal(
        subjects in prop::collection::vec(subject(300), 1..6),
        ext in prop::sample::select(vec!["csv", "json", "parquet"]),
    ) {
        let mut subjects = subjects;
        subjects.sort_by_key(|s| s.case);
        subjects.dedup_by_key(|s| s.case);
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(format!("r.{ext}"));
        write_records(&p, &subjects).unwrap();
        let back = read_records(&p, &Inventory::synthetic()).unwrap();
        prop_assert_eq!(back, subjects);
    }

    #[test]
    fn the_validators_never_panic_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        ext in prop::sample::select(vec!["csv", "json", "parquet", "xls"]),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(format!("f.{ext}"));
        std::fs::write(&p, &bytes).unwrap();
        let inv = Inventory::synthetic();
        // Either outcome is fine; a panic fails the test.
        let _ = read_records(&p, &inv);
        let _ = Inventory::load(&p);
        let _ = Split::load(&p, &inv);
    }

    #[test]
    fn json_records_with_arbitrary_values_never_panic(
        values in prop::collection::vec(prop::sample::select(vec!["1", "-3", "2.5", "\"x\"", "null", "true", "[]", "{}", "1e9"]), 300),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("r.json");
        let cells: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("\"i{}\": {v}", i + 1)).collect();
        std::fs::write(&p, format!("[{{\"case\": 1, {}}}]", cells.join(", "))).unwrap();
        let _ = read_records(&p, &Inventory::synthetic());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn reference_totals_do_not_depend_on_subject_order(seed in any::<u64>(), rot in 1usize..39) {
        let (inv, subjects) = population(40, seed);
        let split = Split::short_form(&inv).unwrap();
        let mut rotated = subjects.clone();
        rotated.rotate_left(rot);
        for r in Reference::ALL {
            let cfg = RidgeConfig { folds: 4, ..RidgeConfig::default() };
            let a = reference::evaluate(r, &inv, &split, &subjects, Protocol::corrected(), &cfg).unwrap();
            let b = reference::evaluate(r, &inv, &split, &rotated, Protocol::corrected(), &cfg).unwrap();
            prop_assert!((a.total.unwrap() - b.total.unwrap()).abs() < 1e-9, "{}", r.name());
        }
    }
}
