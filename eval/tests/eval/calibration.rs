//! The KL strength unit and the held-out choice of where to steer, on the tiny model: a
//! target KL is reached where the measured curve says, the raw grid stays exact, and the
//! choice never reads a test answer.

use eval::{Evaluator, Method, Scoring};
use pas_core::calibrate::option_kl;
use pas_core::{KlCurve, LayerWindow, PasConfig, Positions, Search, Selection, Setting, StrengthUnit};

use crate::{provenance, quick_config, synthetic_dataset, tiny_intervention, tiny_model};

#[test]
fn a_kl_target_is_reached_where_the_measured_curve_says() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let users: Vec<String> = ["Worry about things.", "Make friends easily.", "Love to read.", "Keep my promises."].iter().map(|t| eval::prompt::question(t)).collect();
    let iv = tiny_intervention(&model);
    let scorer = eval::Scorer::new(&model, &prompts, Scoring::NextToken, 8).unwrap();
    let base = scorer.score("sys", &users, &pas_core::Steering::none(pas_core::Steerable::geometry(&model))).unwrap().items;
    let mean_kl = |alpha: f64| -> f64 {
        let s = scorer.score("sys", &users, &iv.at(alpha as f32, Positions::Last)).unwrap().items;
        s.iter().zip(&base).map(|(a, b)| option_kl(&a.logprobs, &b.logprobs)).sum::<f64>() / base.len() as f64
    };
    let StrengthUnit::Kl { ladder } = StrengthUnit::kl() else { unreachable!() };
    let curve = KlCurve::new(ladder.iter().map(|&a| (a, mean_kl(a))).collect());
    // Monotone where it should be: the small strengths, before the answer saturates.
    let small: Vec<f64> = curve.points.iter().filter(|p| p.0 <= 1.0).map(|p| p.1).collect();
    assert!(small.len() >= 5 && small[0] > 0.0 && small.windows(2).all(|w| w[0] < w[1]), "KL over the small strengths: {small:?}");
    // Targets between ladder points are reached at the interpolated raw strength, to within
    // a fifth in log KL; the curve's own reading agrees with the measurement at its points.
    for i in [1, 3, 5] {
        let (k0, k1) = (curve.points[i].1, curve.points[i + 1].1);
        let target = (k0 * k1).sqrt();
        let alpha = curve.alpha_for(target).expect("inside the ladder");
        assert!(alpha > curve.points[i].0 && alpha < curve.points[i + 1].0, "{alpha} outside its bracket");
        let measured = mean_kl(alpha);
        assert!((measured / target).ln().abs() < 0.2, "target {target} nat: {measured} measured at alpha {alpha}");
        assert!((curve.kl_at(curve.points[i].0) - k0).abs() < 1e-12);
    }
    let top = curve.points.iter().map(|p| p.1).fold(0.0, f64::max);
    assert_eq!(curve.alpha_for(top * 2.0), None, "a KL beyond the ladder is out of reach, not extrapolated");
}

/// A calibrated PAS run on the tiny model, searching three settings, beside `pas-original`.
fn calibrated_config() -> eval::RunConfig {
    let mut config = quick_config(&[Method::Pas, Method::PasOriginal], 1);
    let settings = vec![
        Setting { window: LayerWindow::All, positions: Positions::Last },
        Setting { window: LayerWindow::Inner, positions: Positions::Last },
        Setting { window: LayerWindow::All, positions: Positions::Answer },
    ];
    config.pas = PasConfig { top_k: 4, selection: Selection::HeldOut { folds: 2, seed: 0 }, ..PasConfig::calibrated(settings) };
    // Targets the tiny model reaches at small strengths.
    config.pas.search = Search::Grid { alphas: vec![0.0, 0.001, 0.01, 0.1] };
    config
}

#[test]
fn where_to_steer_and_how_strongly_are_chosen_without_the_test_answers() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(3);
    let config = calibrated_config();
    let run = |data: &papi_data::Dataset| -> (serde_json::Value, serde_json::Value, String) {
        let out = tempfile::tempdir().unwrap();
        Evaluator::new(&model, &prompts, data, None, config.clone(), provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
        let load = |m: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/{m}/{}.json", data.subjects[0].case))).unwrap()).unwrap()
        };
        let results: eval::results::Results = serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap()).unwrap();
        let table = eval::published::render(&results, eval::published::Table::Strengths, "run");
        (load("pas"), load("pas-original"), std::fs::read_to_string(out.path().join("report.md")).unwrap() + "\nSTRENGTHS\n" + &table)
    };
    let (pas, original, report) = run(&data);
    // Every test answer changed: a search that read one would differ.
    let mut changed = data.clone();
    for &n in &data.split.test {
        let a = &mut changed.subjects[0].answers[usize::from(n) - 1];
        *a = if *a == 1 { 5 } else { 1 };
    }
    let (pas2, original2, _) = run(&changed);
    assert_eq!(pas["pas"], pas2["pas"], "the calibrated search read a test answer");
    assert_eq!(pas["rule_choice"], pas2["rule_choice"]);
    assert_eq!(original["pas"], original2["pas"], "the original grid's search read a test answer");
    assert_ne!(pas["mae"], pas2["mae"], "the test answers count in the score");

    let steering = &pas["pas"]["steering"];
    let candidates = steering["candidates"].as_array().expect("the candidates are recorded");
    // No steering once, then each reachable target in each of the three settings.
    assert_eq!(candidates[0]["value"], 0.0);
    assert!(candidates.len() > 3, "{steering}");
    assert_eq!(steering["fold_curves"].as_array().unwrap().len(), 3);
    assert!(steering["fold_curves"].as_array().unwrap().iter().all(|c| c.as_array().unwrap().len() == 2), "one curve per fold");
    let chosen = &candidates[steering["chosen"].as_u64().unwrap() as usize];
    if chosen["value"].as_f64().unwrap() > 0.0 {
        // The final intervention is held to the chosen KL on its own curve.
        let curve: KlCurve = serde_json::from_value(steering["final_curve"].clone()).unwrap();
        let alpha = pas["pas"]["alpha"].as_f64().unwrap();
        assert!((curve.kl_at(alpha) / chosen["value"].as_f64().unwrap()).ln().abs() < 1e-6);
    }
    // The original grid stays raw and exact: 0, 1, 2, 4, 6, 8, every one evaluated as given.
    assert!(original["pas"]["steering"].is_null());
    let tried: Vec<f64> = original["pas"]["search"]["evaluations"].as_array().unwrap().iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert_eq!(tried, vec![0.0, 1.0, 2.0, 4.0, 6.0, 8.0]);
    assert!(report.contains("strength in KL nats") && report.contains("In KL of the five-option answer"), "{report}");
    // The published strengths table: the calibrated search per KL target, from 0 up.
    let table = report.split("\nSTRENGTHS\n").nth(1).unwrap();
    assert!(table.contains("| pas | 0 nat | 1 |") && !table.contains("pas-original"), "{table}");
}

#[test]
fn a_raw_grid_over_several_settings_tries_each_strength_as_given() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(3);
    let mut config = calibrated_config();
    config.methods = vec![Method::Pas];
    config.pas.unit = StrengthUnit::Raw;
    config.pas.search = Search::Grid { alphas: vec![0.0, 0.5, 3.0] };
    let out = tempfile::tempdir().unwrap();
    Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    let pas: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/pas/{}.json", data.subjects[0].case))).unwrap()).unwrap();
    let candidates = pas["pas"]["steering"]["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 1 + 2 * 3, "no steering, then two strengths in three settings");
    for c in candidates {
        let v = c["value"].as_f64().unwrap();
        assert!(c["alphas"].as_array().unwrap().iter().all(|a| a.as_f64() == Some(v)), "{c}");
    }
    assert!(pas["pas"]["steering"]["fold_curves"].is_null(), "no curve is measured in raw units");
}
