//! eval's tests: scoring and parsing laws, statistics, and whole runs on a tiny random
//! model with synthetic subjects (fast) and on the default model with real data (when the
//! model is there; the data is the embedded data/papi unless PAPI_DIR names another folder).
#![allow(clippy::print_stderr)] // tests say on stderr why they skip

mod calibration;
mod decision;
mod default_model;
mod device_check;
mod llama3_shapes;
mod optimisation_time;
mod parts;
mod parsing;
mod qwen_shapes;
mod readme;
mod rule_choice;
mod personas;
mod shards;
mod tiny_run;

use std::path::{Path, PathBuf};

use eval::{Method, Provenance, RunConfig};
use llm_burn::{CpuBackend, Decoder, PromptEncoder};
use papi_data::synthetic::{SyntheticConfig, generate};
use papi_data::{Dataset, Inventory, Split};
use pas_core::Search;

/// The CPU backend every test uses.
pub type TestBackend = CpuBackend;

/// A tiny random model folder, loaded.
pub fn tiny_model(dir: &Path) -> (Decoder<TestBackend>, PromptEncoder) {
    llm_burn::tiny::write_model(dir, 11).expect("write tiny model");
    (Decoder::load(dir, &Default::default()).expect("load"), PromptEncoder::from_dir(dir).expect("prompts"))
}

/// A seeded intervention on two heads of the tiny model.
pub fn tiny_intervention(model: &Decoder<TestBackend>) -> pas_core::Intervention {
    use pas_core::{HeadId, Intervention, SteeredHead};
    let heads = vec![
        SteeredHead { head: HeadId::new(0, 1), direction: vec![0.5, 0.5, 0.5, 0.5], sigma: 2.0 },
        SteeredHead { head: HeadId::new(1, 3), direction: vec![1.0, 0.0, 0.0, 0.0], sigma: 1.5 },
    ];
    Intervention::new(pas_core::Steerable::geometry(model), heads).unwrap()
}

/// A synthetic PAPI dataset with a small split (25 known, 40 test items, balanced over
/// domains): the tiny tokenizer spells most text byte by byte, so prompts are long.
pub fn synthetic_dataset(subjects: usize) -> Dataset {
    let inventory = Inventory::synthetic();
    let full = Split::short_form(&inventory).expect("split");
    let known = eval::run::balanced(&full.known, &inventory, Some(25));
    let test = eval::run::balanced(&full.test, &inventory, Some(40));
    let split = Split::new(known, test, &inventory).expect("small split");
    let subjects = generate(&inventory, &SyntheticConfig { subjects, seed: 3, missing_rate: 0.01, first_case: 100 });
    Dataset { inventory, split, subjects, records_path: PathBuf::from("synthetic.json") }
}

/// One synthetic person with 10 known and 5 test items, and the cheapest run over them (every
/// test item, 4 search items, strengths 0 and 2): for the large random shapes.
pub fn one_person_cheap_run(methods: &[Method], seed: u64) -> (Dataset, RunConfig) {
    let inventory = Inventory::synthetic();
    let full = Split::short_form(&inventory).expect("split");
    let split = Split::new(eval::run::balanced(&full.known, &inventory, Some(10)), eval::run::balanced(&full.test, &inventory, Some(5)), &inventory).expect("small split");
    let subjects = generate(&inventory, &SyntheticConfig { subjects: 1, seed, missing_rate: 0.0, first_case: 1 });
    let mut config = quick_config(methods, 1);
    config.test_items = None;
    config.search_items = Some(4);
    config.pas.min_pairs = 2;
    config.pas.search = Search::Grid { alphas: vec![0.0, 2.0] };
    (Dataset { inventory, split, subjects, records_path: PathBuf::from("synthetic.json") }, config)
}

/// A quick configuration: few items, two folds, three strengths.
pub fn quick_config(methods: &[Method], subjects: usize) -> RunConfig {
    let mut c = RunConfig { methods: methods.to_vec(), subjects: Some(subjects), test_items: Some(10), search_items: Some(10), batch: 4, ..Default::default() };
    c.pas.top_k = 4;
    c.pas.search = Search::Grid { alphas: vec![0.0, 1.0, 4.0] };
    c.pas.selection = pas_core::Selection::HeldOut { folds: 2, seed: 0 };
    c.bootstrap.resamples = 200;
    c.dpo = dpo_baseline::DpoConfig { epochs: 2, optimiser: dpo_baseline::OptimiserConfig { learning_rate: 1e-2, ..Default::default() }, ..Default::default() };
    c.dpo_items = Some(20);
    c.ppo = dpo_baseline::PpoConfig { epochs: 2, optimiser: dpo_baseline::OptimiserConfig { learning_rate: 1e-2, ..Default::default() }, num_ppo_epochs: 2, ..Default::default() };
    c
}

/// Provenance for tests.
pub fn provenance(dir: &Path) -> Provenance {
    Provenance { git_revision: "test".into(), device: "cpu".into(), model_id: "tiny".into(), model_dir: dir.to_owned() }
}

/// The PAPI development folder: `PAPI_DIR`, else the embedded data/papi.
pub fn papi_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PAPI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/papi"));
    if dir.join("mpi_300_split.json").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: no PAPI data at {}", dir.display());
        None
    }
}
