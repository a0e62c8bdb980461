//! The optimisation-time comparison divides each method's time over the people it ran on:
//! a run made in parts may have trained one person while it searched ten.

use eval::aggregate::optimisation_time;
use eval::method::Method;
use eval::results::{Phases, Results};

#[test]
fn each_methods_time_is_per_person_it_ran_on() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/published/qwen2.5-coder-1.5b-10/results.json");
    let results: Results = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pas = results.runs.iter().find(|r| r.method == Method::Pas).unwrap().clone();
    assert_eq!(pas.subjects, 10);
    let mut dpo = pas.clone();
    dpo.method = Method::Dpo;
    dpo.subjects = 1;
    dpo.phases = Phases { reference: 100.0, train: 900.0, ..Default::default() };
    let t = optimisation_time(&[pas.clone(), dpo]).unwrap();
    let pas_per = (pas.phases.collect + pas.phases.probes + pas.phases.search) / 10.0;
    assert!((t.pas_seconds - pas_per).abs() < 1e-9 && pas_per > 0.0);
    assert_eq!((t.dpo_seconds, t.subjects, t.tuned_subjects), (Some(1000.0), 10, 1));
    assert!((t.ratio.unwrap() - 1000.0 / pas_per).abs() < 1e-9);
    assert!(t.ppo_seconds.is_none());
}
