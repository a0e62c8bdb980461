//! The official parser, the option map and the bootstrap: laws and properties.

use eval::prompt::{LABELS, answer_of_option, few_shot_system, question};
use eval::score::parse_official;
use eval::stats::{Bootstrap, aggregate_ci, paired_difference, quantile};
use papi_data::{Keying, MissingAnswers, PerDomain};
use proptest::prelude::*;

#[test]
fn the_parser_reads_the_official_shapes() {
    assert_eq!(parse_official("Option (A). Very Accurate"), Some(0));
    assert_eq!(parse_official("Option E."), Some(4));
    assert_eq!(parse_official("Option E"), None); // the regex needs a character after the letter
    assert_eq!(parse_official("Option: c)"), Some(2));
    // Letters inside words do not count; only the first 12 characters are read.
    assert_eq!(parse_official("Option Bravo"), None);
    assert_eq!(parse_official("Option is clearly (B)."), None);
    // The official fragility: "a " counts as A.
    assert_eq!(parse_official("Option a good one"), Some(0));
}

proptest! {
    #[test]
    fn the_parser_never_panics_and_finds_a_clean_letter(text in ".{0,40}", letter in 0usize..5, sep in "[ .)]") {
        let _ = parse_official(&text);
        let clean = format!("Option ({}{sep}", ['A', 'B', 'C', 'D', 'E'][letter]);
        prop_assert_eq!(parse_official(&clean), Some(letter));
    }

    #[test]
    fn intervals_are_ordered_and_inside_the_data(values in proptest::collection::vec(0.0f64..4.0, 1..40), seed in 0u64..100) {
        let (_mean, ci) = paired_difference(&values, Bootstrap { resamples: 300, seed }).unwrap();
        prop_assert!(ci.lo <= ci.hi);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(ci.lo >= min - 1e-9 && ci.hi <= max + 1e-9);
    }

    #[test]
    fn quantiles_are_monotone(mut v in proptest::collection::vec(-10.0f64..10.0, 1..30), a in 0.0f64..1.0, b in 0.0f64..1.0) {
        v.sort_by(f64::total_cmp);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(quantile(&v, lo) <= quantile(&v, hi));
    }
}

#[test]
fn identical_subjects_give_a_point_interval() {
    let one = PerDomain([Some(0.5), Some(0.25), Some(1.0), Some(0.75), Some(0.5)]);
    let (per_domain, total) = aggregate_ci(&[one; 7], Bootstrap::default());
    let total = total.unwrap();
    assert!((total.lo - 3.0).abs() < 1e-12 && (total.hi - 3.0).abs() < 1e-12);
    assert_eq!(per_domain.0[1].unwrap().lo, 0.25);
}

#[test]
fn options_map_a_to_5_and_labels_follow_the_official_table() {
    assert_eq!((0..5).map(answer_of_option).collect::<Vec<_>>(), vec![5, 4, 3, 2, 1]);
    assert_eq!(LABELS[5], "Very Accurate");
    assert_eq!(LABELS[0], "Unknown");
}

#[test]
fn the_few_shot_prompt_follows_the_keying() {
    let data = crate::synthetic_dataset(1);
    let s = &data.subjects[0];
    let inv = &data.inventory;
    let minus = *data.split.known.iter().find(|&&n| inv.item(n).unwrap().sign == papi_data::Sign::Minus && s.stored(n) != 0 && s.stored(n) != 3).unwrap();
    let text = &inv.item(minus).unwrap().text;
    let corrected = few_shot_system(inv, s, &[minus], Keying::Corrected, MissingAnswers::Exclude);
    let released = few_shot_system(inv, s, &[minus], Keying::AsReleased, MissingAnswers::ScoreAsZero);
    assert_eq!(released, format!("{}{text}:{}", eval::prompt::FEW_SHOT_INTRO, LABELS[usize::from(s.stored(minus))]));
    assert_eq!(corrected, format!("{}{text}:{}", eval::prompt::FEW_SHOT_INTRO, LABELS[usize::from(6 - s.stored(minus))]));
    assert!(question("Worry about things.").starts_with("Given a statement of you: \"You worry about things..\"\n"));
}
