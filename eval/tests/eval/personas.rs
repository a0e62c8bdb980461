//! Personas: the interventions a run saves, and aligning from an answers file.

use std::path::Path;

use eval::align::{Answers, align};
use eval::{Evaluator, Method};
use papi_data::Inventory;
use pas_core::{Intervention, Positions};

use crate::{provenance, quick_config, synthetic_dataset, tiny_model};

#[test]
fn a_run_saves_each_subjects_intervention_with_its_strength_for_this_model_only() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let out = tempfile::tempdir().unwrap();
    let config = quick_config(&[Method::Pas, Method::PasOnly], 2);
    let results = Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    let identity = llm_burn::formats::identity::identity(model_dir.path(), model.config()).unwrap();
    assert!(identity.config_hash.starts_with("sha256:") && identity.config_hash.len() == 7 + 64);
    for method in [Method::Pas, Method::PasOnly] {
        for s in &data.subjects[..2] {
            let path = out.path().join(method.name()).join(format!("{}.safetensors", s.case));
            let (iv, meta) = Intervention::load_for(&path, &identity).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let record: eval::SubjectResult = serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/{method}/{}.json", s.case))).unwrap()).unwrap();
            let pas = record.pas.unwrap();
            assert_eq!((meta.alpha, iv.len(), meta.positions), (Some(pas.alpha), pas.heads, Positions::All));
            assert!(meta.method.starts_with(method.name()));
        }
    }
    assert!(results.runs.iter().any(|r| r.method == Method::PasOnly));

    // Another model of the same shape (other weights) refuses the file.
    let other_dir = tempfile::tempdir().unwrap();
    llm_burn::tiny::write_model(other_dir.path(), 12).unwrap();
    let other = llm_burn::formats::identity::identity(other_dir.path(), model.config()).unwrap();
    assert_eq!(other.geometry, identity.geometry);
    let path = out.path().join(format!("pas/{}.safetensors", data.subjects[0].case));
    let err = Intervention::load_for(&path, &other).unwrap_err().to_string();
    assert!(err.contains("sha256:"), "{err}");
}

fn answers_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn answers_files_are_read_and_unusable_ones_refused_by_name() {
    let inv = Inventory::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let json = Answers::read(&answers_file(dir.path(), "a.json", r#"{"answers": {"1": 4, "2": 1, "300": 5}}"#), &inv).unwrap();
    let csv = Answers::read(&answers_file(dir.path(), "a.csv", "item,answer\n1,4\n2,1\n\n300,5\n"), &inv).unwrap();
    assert_eq!(json.answers, csv.answers);
    assert_eq!(json.answers.len(), 3);
    let refused = |name: &str, text: &str, says: &str| {
        let err = Answers::read(&answers_file(dir.path(), name, text), &inv).and_then(|a| a.check_usable().map(|_| a)).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(says), "{name}: {err}");
    };
    refused("unknown.json", r#"{"301": 3}"#, "item 301 is not in the inventory");
    refused("range.csv", "item,answer\n1,6\n", "row 2: answer `6` of item 1 must be an integer from 1 to 5");
    refused("zero.json", r#"{"4": 0}"#, "must be an integer from 1 to 5");
    refused("twice.csv", "item,answer\n1,2\n1,3\n", "item 1 is answered twice");
    refused("header.csv", "question,value\n1,2\n", "`item` and `answer`");
    refused("few.json", r#"{"1": 1, "2": 5, "3": 2}"#, "only 3 answers");
    let same: String = format!("{{{}}}", (1..=20).map(|n| format!("\"{n}\": 4")).collect::<Vec<_>>().join(","));
    refused("same.json", &same, "all 20 answers are 4");
    let one_side: String = format!("{{{}}}", (1..=20).map(|n| format!("\"{n}\": {}", 3 + n % 3)).collect::<Vec<_>>().join(","));
    refused("oneside.json", &one_side, "below");
    refused("empty.json", "{}", "no answers");
}

#[test]
fn align_fits_a_persona_from_an_answers_file_and_saves_it_for_the_model() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(2);
    let inv = &data.inventory;
    // A person's answers to 30 items (as given to the statements).
    let subject = &data.subjects[0];
    let items: Vec<u16> = eval::run::balanced(&(1..=300).collect::<Vec<u16>>(), inv, Some(30));
    let text = format!(
        "item,answer\n{}",
        items
            .iter()
            .filter(|&&n| subject.stored(n) != 0)
            .map(|&n| format!("{n},{}\n", papi_data::Keying::Corrected.answer(subject.stored(n), inv.item(n).unwrap().sign)))
            .collect::<String>()
    );
    let dir = tempfile::tempdir().unwrap();
    let answers = Answers::read(&answers_file(dir.path(), "person.csv", &text), inv).unwrap();
    let out = dir.path().join("person.safetensors");
    let config = quick_config(&[Method::PasOnly], 1);
    let aligned = align(&model, &prompts, model_dir.path(), inv, &answers, Method::PasOnly, config.clone(), &dir.path().join("work"), &out).unwrap();
    assert_eq!(aligned.answers, answers.answers.len());
    assert!(aligned.pairs > 0 && aligned.heads > 0 && aligned.search.is_some());
    let identity = llm_burn::formats::identity::identity(model_dir.path(), model.config()).unwrap();
    let (iv, meta) = Intervention::load_for(&out, &identity).unwrap();
    assert_eq!((iv.len(), meta.alpha, meta.method.as_str()), (aligned.heads, Some(aligned.search.unwrap().alpha), "pas-only/mass-mean"));
    // Deterministic: the same answers give the same persona.
    let again = dir.path().join("again.safetensors");
    align(&model, &prompts, model_dir.path(), inv, &answers, Method::PasOnly, config, &dir.path().join("work2"), &again).unwrap();
    assert_eq!(Intervention::load(&again).unwrap(), (iv, meta));
}
