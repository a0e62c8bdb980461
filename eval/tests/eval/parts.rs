//! A run made in parts with different methods: a later part that runs another method on
//! fewer people keeps every earlier row, and says on how many people each method ran.

use eval::published::{Table, render};
use eval::{Evaluator, Method};

use crate::{provenance, quick_config, synthetic_dataset, tiny_model};

#[test]
fn a_part_with_another_method_on_fewer_people_keeps_every_row() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let out = tempfile::tempdir().unwrap();
    let run = |methods: &[Method], subjects: usize| {
        Evaluator::new(&model, &prompts, &data, None, quick_config(methods, subjects), provenance(model_dir.path()), out.path()).unwrap().run().unwrap()
    };
    let first_methods = [Method::NoChange, Method::FewShot, Method::Pas, Method::Always3];
    let first = run(&first_methods, 3);

    // The second part trains DPO on the first person only.
    let second = run(&[Method::Dpo], 1);
    let methods: Vec<Method> = second.runs.iter().map(|r| r.method).collect();
    assert_eq!(methods, [Method::NoChange, Method::FewShot, Method::Pas, Method::Dpo, Method::Always3]);
    assert_eq!(second.meta.cases, first.meta.cases);
    assert!(second.meta.dpo_ran && !first.meta.dpo_ran);
    for (a, b) in first.runs.iter().zip(second.runs.iter().filter(|r| r.method != Method::Dpo)) {
        // The earlier rows as they were, their shared passes (the plain pass, the contrast
        // prompts' activations) counted as before.
        assert_eq!((a.method, a.subjects, a.total, &a.per_domain), (b.method, b.subjects, b.total, &b.per_domain));
        assert!((a.phases.collect - b.phases.collect).abs() < 1e-9 && (a.phases.eval - b.phases.eval).abs() < 1e-9, "{}", a.method);
    }
    let dpo = second.runs.iter().find(|r| r.method == Method::Dpo).unwrap();
    assert_eq!(dpo.subjects, 1);
    assert!(dpo.seconds_per_subject > 0.0 && (dpo.seconds_per_subject - dpo.seconds).abs() < 1e-9, "per person it ran on");

    // Compared on the person it has: its Total minus few-shot's for that person.
    let case = data.subjects[0].case;
    let total = |m: &str| -> f64 {
        let path = out.path().join(format!("subjects/{m}/{case}.json"));
        let r: eval::SubjectResult = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        r.total.unwrap()
    };
    let c = second.comparisons.iter().find(|c| c.method == Method::Dpo && c.baseline == Method::FewShot).unwrap();
    assert_eq!(c.subjects, 1);
    assert!((c.difference - (total("dpo") - total("few-shot"))).abs() < 1e-9);
    // PAS is a baseline of the trained methods only.
    let c = second.comparisons.iter().find(|c| c.method == Method::Dpo && c.baseline == Method::Pas).unwrap();
    assert!(c.subjects == 1 && (c.difference - (total("dpo") - total("pas"))).abs() < 1e-9);
    assert!(!second.comparisons.iter().any(|c| c.baseline == Method::Pas && c.method != Method::Dpo));
    assert!(!first.comparisons.iter().any(|c| c.baseline == Method::Pas));
    let t = second.optimisation_time.as_ref().unwrap();
    assert_eq!((t.subjects, t.tuned_subjects), (3, 1));
    // Per trained person: each method's own seconds and the person's Totals.
    let [person] = &t.people[..] else { panic!("one trained person: {:?}", t.people) };
    let subject = |m: &str| -> eval::SubjectResult { serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/{m}/{case}.json"))).unwrap()).unwrap() };
    let (d, p) = (subject("dpo").seconds, subject("pas").seconds);
    assert_eq!(person.case, case);
    assert!((person.dpo_seconds.unwrap() - (d.reference + d.train)).abs() < 1e-9 && person.ppo_seconds.is_none());
    assert!((person.pas_seconds.unwrap() - (p.collect + p.probes + p.search + second.meta.collect_seconds / 3.0)).abs() < 1e-9);
    assert_eq!(person.totals.keys().map(String::as_str).collect::<Vec<_>>(), ["always-3", "dpo", "few-shot", "pas"]);
    assert!((person.totals["dpo"] - total("dpo")).abs() < 1e-12);
    let trained = render(&second, Table::Trained, "here");
    assert!(trained.contains(&format!("| {case} | ")) && trained.contains("Total dpo"), "{trained}");
    assert!(render(&first, Table::Trained, "here").contains("No person trained"));
    // With a second person (DPO only): means, each ratio over the people with both methods.
    let mut two = second.clone();
    let people = &mut two.optimisation_time.as_mut().unwrap().people;
    let other = eval::results::PersonTime { case: 7, pas_seconds: Some(10.0), dpo_seconds: Some(50.0), ppo_seconds: None, totals: [("dpo".to_owned(), 3.0)].into() };
    people[0] = eval::results::PersonTime { case, pas_seconds: Some(30.0), dpo_seconds: Some(150.0), ppo_seconds: Some(60.0), totals: [("dpo".to_owned(), 2.0)].into() };
    people.push(other);
    let table = render(&two, Table::Trained, "here");
    let mean = table.lines().find(|l| l.starts_with("| mean of 2 |")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(mean, "| mean of 2 | 20 | 100 | 5.00 | 60 | 2.00 | 2.500 |");

    // The tables say so.
    let table = render(&second, Table::Methods, "here");
    assert!(table.contains("| dpo (1 of 3 people) |") && table.contains("| pas |") && table.contains("| vs pas |"), "{table}");
    // One person gives no interval: the point, how many, no ✓.
    let dpo_row = table.lines().find(|l| l.starts_with("| dpo")).unwrap();
    assert!(dpo_row.contains(&format!("{:+.2} (1 person)", c.difference)) && !dpo_row.contains('✓') && !dpo_row.contains(" ["), "{dpo_row}");
    assert!(!render(&first, Table::Methods, "here").contains("vs pas"));
    assert!(std::fs::read_to_string(out.path().join("report.md")).unwrap().contains("| dpo (1 of 3 people) |"));

    // Running the first part's command again changes nothing and keeps DPO's row.
    let again = run(&first_methods, 3);
    assert_eq!(again.runs.iter().map(|r| (r.method, r.subjects, r.total)).collect::<Vec<_>>(), second.runs.iter().map(|r| (r.method, r.subjects, r.total)).collect::<Vec<_>>());

    // Earlier parts' reports that cannot be read are refused by name, saying what to do.
    std::fs::write(out.path().join("results.json"), "{").unwrap();
    let evaluator = Evaluator::new(&model, &prompts, &data, None, quick_config(&[Method::Dpo], 1), provenance(model_dir.path()), out.path()).unwrap();
    let err = evaluator.run().unwrap_err().to_string();
    assert!(err.contains("results.json") && err.contains("remove the file"), "{err}");
}
