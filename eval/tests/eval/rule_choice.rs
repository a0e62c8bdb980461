//! `--decision held-out`: each person's rule chosen on their held-out known items, recorded,
//! and the test answers read by it.

use eval::aggregate::redecide;
use eval::decision::{Decision, RuleChoice};
use eval::results::SubjectResult;
use eval::{Evaluator, Method};

use crate::{provenance, quick_config, synthetic_dataset, tiny_model};

#[test]
fn the_lowest_held_out_total_chooses_and_ties_prefer_the_median() {
    let c = RuleChoice::from_totals(vec![(Decision::Median, 3.0), (Decision::Calibrated, 2.5), (Decision::Argmax, 4.0)], 30);
    assert_eq!((c.rule, c.best()), (Decision::Calibrated, 2.5));
    let tie = RuleChoice::from_totals(vec![(Decision::Argmax, 2.0), (Decision::Median, 2.0), (Decision::Calibrated, 2.0)], 30);
    assert_eq!(tie.rule, Decision::Median);
    let nan = RuleChoice::from_totals(vec![(Decision::Median, f64::NAN), (Decision::Calibrated, f64::INFINITY), (Decision::Argmax, 3.0)], 30);
    assert_eq!(nan.rule, Decision::Argmax);
    assert_eq!(Decision::HeldOut.resolve(None), Decision::Median);
    assert_eq!(Decision::HeldOut.resolve(Some(Decision::Argmax)), Decision::Argmax);
    assert_eq!(Decision::Calibrated.resolve(Some(Decision::Argmax)), Decision::Calibrated);
    assert_eq!("held-out".parse::<Decision>(), Ok(Decision::HeldOut));
}

#[test]
fn each_person_gets_a_rule_chosen_held_out_and_answers_by_it() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let out = tempfile::tempdir().unwrap();
    let methods = [Method::NoChange, Method::FewShot, Method::PasOnly, Method::Always3];
    let mut config = quick_config(&methods, 2);
    config.decision = Decision::HeldOut;
    let results = Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    for method in [Method::NoChange, Method::FewShot, Method::PasOnly] {
        for subject in &data.subjects[..2] {
            let path = out.path().join(format!("subjects/{}/{}.json", method.name(), subject.case));
            let r: SubjectResult = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let choice = r.rule_choice.clone().unwrap_or_else(|| panic!("{method} {}: no rule choice", subject.case));
            assert!(choice.items > 0 && choice.totals.len() == 3, "{method}: {choice:?}");
            assert!(choice.totals.iter().all(|(_, t)| *t >= choice.best()), "{method}: the lowest Total chooses: {choice:?}");
            // The test answers are those of the chosen rule, and re-reading under held-out keeps them.
            let by_rule = redecide(&r, choice.rule);
            assert_eq!(by_rule.items.iter().map(|i| i.answer).collect::<Vec<_>>(), r.items.iter().map(|i| i.answer).collect::<Vec<_>>(), "{method}");
            assert_eq!(redecide(&r, Decision::HeldOut).total, r.total);
        }
    }
    // The report lists held-out beside the three rules, and the headline is read by it.
    assert!(results.decisions.iter().any(|d| d.decision == Decision::HeldOut && d.method == Method::FewShot));
    assert_eq!(results.meta.settings.decision, Decision::HeldOut);
}
