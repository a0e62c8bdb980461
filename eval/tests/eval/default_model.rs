//! The default model on the real development data: one subject, every method, a handful of
//! items; and the reference predictors against papi-data's.


use eval::{Evaluator, Method};
use llm_burn::{Decoder, PromptEncoder};
use papi_data::reference::{self, Reference, RidgeConfig};
use papi_data::{Dataset, Keying, Protocol};
use pas_core::Search;

use crate::{TestBackend, papi_dir, provenance, quick_config, tiny_model};

fn model_dir() -> Option<std::path::PathBuf> {
    let dir = llm_burn::default_model_dir();
    if dir.is_none() {
        eprintln!("skipped: no default model (run `cargo xtask fetch-model`, or set LLM_MODEL_DIR)");
    }
    dir
}

#[test]
fn reference_totals_reproduce_papi_data() {
    let Some(dir) = papi_dir() else { return };
    let data = Dataset::load(&dir, None).unwrap();
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    for keying in [Keying::Corrected, Keying::AsReleased] {
        let out = tempfile::tempdir().unwrap();
        let mut config = quick_config(&[Method::Always3, Method::OwnMean, Method::Ridge], 1);
        config.subjects = None;
        config.test_items = None;
        config.keying = keying;
        let results = Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
        for r in Reference::ALL {
            let expected = reference::evaluate(r, &data.inventory, &data.split, &data.subjects, Protocol::for_keying(keying), &RidgeConfig::default()).unwrap();
            let got = results.runs.iter().find(|x| x.method.reference() == Some(r)).unwrap();
            assert_eq!(got.subjects, data.subjects.len());
            assert!((got.total.unwrap() - expected.total.unwrap()).abs() < 1e-12, "{} {keying:?}: {:?} vs {:?}", r.name(), got.total, expected.total);
        }
    }
}

#[test]
fn one_real_subject_runs_every_method() {
    let (Some(data_dir), Some(model_dir)) = (papi_dir(), model_dir()) else { return };
    let data = Dataset::load(&data_dir, None).unwrap();
    let p2 = eval::run::load_p2(&data_dir.join("personality-prompts-dev-200.json")).unwrap();
    let model = Decoder::<TestBackend>::load(&model_dir, &Default::default()).unwrap();
    let prompts = PromptEncoder::from_dir(&model_dir).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut config = quick_config(&Method::ALL, 1);
    config.test_items = Some(5);
    config.search_items = Some(4);
    config.batch = 8;
    config.pas.top_k = 24;
    config.pas.search = Search::Grid { alphas: vec![0.0, 4.0] };
    config.dpo_items = Some(10);
    config.dpo = dpo_baseline::DpoConfig { epochs: 1, batch_size: 4, ..Default::default() };
    config.ppo = dpo_baseline::PpoConfig { epochs: 1, batch_size: 4, num_ppo_epochs: 2, ..Default::default() };
    let results = Evaluator::new(&model, &prompts, &data, Some(p2), config, provenance(&model_dir), out.path()).unwrap().run().unwrap();
    assert_eq!(results.runs.len(), Method::ALL.len());
    for r in &results.runs {
        assert_eq!(r.subjects, 1);
        assert!(r.total.is_some_and(|t| t.is_finite()), "{}", r.method);
    }
    // On the real model the letters " A".." E" are read after "Option" for an unsteered prompt.
    let no_change = results.runs.iter().find(|r| r.method == Method::NoChange).unwrap();
    assert_eq!(no_change.letter_found, Some(1.0));
    let pas = results.runs.iter().find(|r| r.method == Method::Pas).unwrap();
    assert!(pas.tokens.search > 0 && pas.phases.collect > 0.0);
    // DPO trained a few steps from ln 2 with a finite loss, and its time is set beside PAS's.
    let case = results.meta.cases[0];
    let dpo: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/dpo/{case}.json"))).unwrap()).unwrap();
    let report = &dpo["dpo"];
    assert!(report["steps"].as_u64().unwrap() >= 2, "{report}");
    assert!((report["first_loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4, "{report}");
    assert!(report["last_epoch"]["loss"].as_f64().unwrap().is_finite());
    let t = results.optimisation_time.as_ref().unwrap();
    assert!(t.pas_seconds > 0.0 && t.dpo_seconds.unwrap() > 0.0 && t.ratio.unwrap().is_finite());
    assert!(t.ppo_seconds.unwrap() > 0.0 && t.ppo_ratio.unwrap().is_finite());
    let ppo: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/ppo/{case}.json"))).unwrap()).unwrap();
    assert!(ppo["ppo"]["steps"].as_u64().unwrap() >= 2 && ppo["ppo"]["train_objective"][1]["objective/kl"].as_f64().unwrap().is_finite(), "{}", ppo["ppo"]);
}
