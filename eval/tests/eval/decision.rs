//! Decision rules and the answer-bias control: laws and properties.

use eval::decision::{Decision, argmax, distribution, expected_answer, fit_option_bias, median_option, option_of_answer, with_offsets};
use eval::prompt::answer_of_option;
use proptest::prelude::*;

fn logprobs() -> impl Strategy<Value = [f32; 5]> {
    prop::array::uniform5(-12.0f32..0.0)
}

/// Expected absolute error of answering `answer` under a distribution over options.
fn expected_error(p: &[f64; 5], answer: u8) -> f64 {
    (0..5).map(|o| p[o] * f64::from(answer_of_option(o).abs_diff(answer))).sum()
}

#[test]
fn the_rules_read_known_distributions() {
    // 40% A, 35% E, 25% C: argmax says A, the median answer is 3 (C).
    let lp = [0.40f32.ln(), f32::NEG_INFINITY, 0.25f32.ln(), f32::NEG_INFINITY, 0.35f32.ln()];
    assert_eq!(Decision::Argmax.decide(&lp, None), Some(0));
    assert_eq!(Decision::Median.decide(&lp, None), Some(2));
    // Calibrated against itself: uniform, whose median is the middle answer.
    assert_eq!(Decision::Calibrated.decide(&lp.map(|x| x.max(-30.0)), Some(&lp.map(|x| x.max(-30.0)))), Some(2));
    // Calibrated without the plain log-probabilities cannot decide.
    assert_eq!(Decision::Calibrated.decide(&lp, None), None);
    assert_eq!(Decision::Median.decide(&[f32::NEG_INFINITY; 5], None), None);
    assert_eq!("median".parse::<Decision>(), Ok(Decision::Median));
    assert!("mode".parse::<Decision>().is_err());
    assert_eq!(Decision::parse_list("all").unwrap(), Decision::ALL.to_vec());
    assert_eq!(Decision::parse_list("median, median,argmax").unwrap(), vec![Decision::Median, Decision::Argmax]);
    assert!(Decision::parse_list(" , ").unwrap_err().contains("no decision rule"));
    assert!(eval::Method::parse_list("").unwrap_err().contains("no method"));
}

proptest! {
    #[test]
    fn the_median_minimises_expected_absolute_error(lp in logprobs()) {
        let p = distribution(&lp).unwrap();
        let m = answer_of_option(median_option(&p).unwrap());
        let best = (1..=5u8).map(|a| expected_error(&p, a)).fold(f64::INFINITY, f64::min);
        prop_assert!(expected_error(&p, m) <= best + 1e-9);
    }

    #[test]
    fn argmax_is_the_most_probable_option(lp in logprobs()) {
        let a = argmax(&lp).unwrap();
        prop_assert!(lp.iter().all(|&v| v <= lp[a]));
        prop_assert_eq!(Decision::Argmax.decide(&lp, None), Some(a));
    }

    #[test]
    fn calibration_removes_a_constant_shift_of_the_plain_prompt(plain in logprobs(), shift in prop::array::uniform5(-3.0f32..3.0)) {
        // A method that only adds offsets to the plain log-probabilities: the calibrated rule
        // sees the offsets alone, whatever the item.
        let method: [f32; 5] = std::array::from_fn(|i| plain[i] + shift[i]);
        let from_shift = median_option(&distribution(&shift).unwrap());
        prop_assert_eq!(Decision::Calibrated.decide(&method, Some(&plain)), from_shift);
    }

    #[test]
    fn the_expected_answer_lies_between_1_and_5(lp in logprobs()) {
        let e = expected_answer(&lp).unwrap();
        prop_assert!((1.0..=5.0).contains(&e));
    }

    #[test]
    fn option_bias_raises_the_likelihood_of_the_known_answers(
        items in prop::collection::vec((logprobs(), 1u8..=5), 3..40),
    ) {
        let plain: Vec<[f32; 5]> = items.iter().map(|(l, _)| *l).collect();
        let chosen: Vec<usize> = items.iter().map(|(_, a)| option_of_answer(*a)).collect();
        let b = fit_option_bias(&plain, &chosen);
        let ll = |offsets: &[f64; 5]| -> f64 { plain.iter().zip(&chosen).map(|(l, &c)| f64::from(with_offsets(l, offsets)[c])).sum() };
        prop_assert!(b.iter().all(|x| x.is_finite()));
        prop_assert!(ll(&b) >= ll(&[0.0; 5]) - 1e-6);
    }
}

#[test]
fn option_bias_over_a_flat_model_recovers_the_answer_frequencies() {
    // Over a model with no preference the maximum-likelihood offsets are the log frequencies
    // of the person's answers (up to the small ridge).
    let answers = [5u8, 5, 5, 5, 4, 4, 3, 2, 1, 1];
    let plain = vec![[-(5f32).ln(); 5]; answers.len()];
    let chosen: Vec<usize> = answers.iter().map(|&a| option_of_answer(a)).collect();
    let b = fit_option_bias(&plain, &chosen);
    let p = distribution(&with_offsets(&plain[0], &b)).unwrap();
    let freq = [0.4, 0.2, 0.1, 0.1, 0.2]; // A (5) .. E (1)
    for o in 0..5 {
        assert!((p[o] - freq[o]).abs() < 0.01, "option {o}: fitted {:.3}, frequency {}", p[o], freq[o]);
    }
    // Its median answer is the person's median answer (4 here, option B).
    assert_eq!(median_option(&p), Some(1));
}

#[test]
fn option_bias_is_its_own_calibration() {
    use eval::Method;
    assert_eq!(Decision::Calibrated.for_method(Method::OptionBias), Decision::Median);
    assert_eq!(Decision::Calibrated.for_method(Method::FewShot), Decision::Calibrated);
    assert_eq!(Decision::Argmax.for_method(Method::OptionBias), Decision::Argmax);
}
