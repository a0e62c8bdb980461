//! The per-subject PAS path on the default model and the real data: the probe fit from the
//! shared activations, one strength evaluated on a held-out fold (its few-shot prefix plus
//! 8 items, steered), and the 16-item unit of test evaluation after the full few-shot
//! prefix. Needs `cargo xtask fetch-model` and the PAPI data: `PAPI_DIR` as an absolute path
//! (cargo runs benches from the crate's folder), else the embedded data/papi.
#![allow(clippy::print_stderr)] // says on stderr when it skips

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eval::prompt::{few_shot_system, question};
use eval::run::balanced;
use eval::{Evaluator, Method, Provenance, RunConfig, Scorer, Scoring};
use llm_burn::{CpuBackend, Decoder, PromptEncoder};
use papi_data::{Dataset, Keying, MissingAnswers};
use pas_core::{ContrastPair, PasConfig, Positions, Preference, fit_intervention, labelled_samples};

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_dir = root.join("../.cache/models/SmolLM2-135M-Instruct");
    let data_dir = std::env::var_os("PAPI_DIR").map_or_else(|| root.join("../data/papi"), Into::into);
    if !llm_burn::is_model_dir(&model_dir) || !data_dir.join("mpi_300_split.json").is_file() {
        eprintln!("skipped: needs the default model (cargo xtask fetch-model) and the PAPI data");
        return;
    }
    let model = Decoder::<CpuBackend>::load(&model_dir, &Default::default()).expect("model");
    let prompts = PromptEncoder::from_dir(&model_dir).expect("prompts");
    let data = Dataset::load(&data_dir, None).expect("data");
    let subject = &data.subjects[0];
    let out = tempfile::tempdir().expect("tempdir");
    let provenance = Provenance { git_revision: "bench".into(), device: "cpu".into(), model_id: "SmolLM2-135M-Instruct".into(), model_dir: model_dir.clone() };
    let config = RunConfig { methods: vec![Method::Pas], ..Default::default() };
    let evaluator = Evaluator::new(&model, &prompts, &data, None, config, provenance, out.path()).expect("evaluator");
    eprintln!("collecting the contrast activations once (shared by all subjects)...");
    let contrast = evaluator.contrast().expect("contrast");
    let known = &data.split.known;
    let inv = &data.inventory;
    let prefs: Vec<Option<Preference>> =
        known.iter().map(|&n| Preference::from_likert(Keying::Corrected.answer(subject.stored(n), inv.item(n).unwrap().sign))).collect();
    let pairs: Vec<ContrastPair> = (0..known.len()).map(|k| ContrastPair { first: 2 * k, second: 2 * k + 1 }).collect();
    let samples = labelled_samples(&pairs, &prefs);
    let pas = PasConfig::heldout();

    let mut g = c.benchmark_group("pas_subject_smollm2");
    g.sample_size(10);
    g.bench_function("probe_fit_all_heads", |b| b.iter(|| fit_intervention(&contrast.acts, &samples, &pas).expect("fit")));
    let fit = fit_intervention(&contrast.acts, &samples, &pas).expect("fit");
    let steering = fit.intervention.at(4.0, Positions::All);
    let scorer = Scorer::new(&model, &prompts, Scoring::FormatAware, 16).expect("scorer");
    // One fold of a 2-fold held-out search at one strength: half the known items in the
    // prompt, 8 of the other half scored.
    let half: Vec<u16> = known.iter().copied().step_by(2).collect();
    let held: Vec<u16> = balanced(&known.iter().copied().skip(1).step_by(2).collect::<Vec<_>>(), inv, Some(8));
    let fold_system = few_shot_system(inv, subject, &half, Keying::Corrected, MissingAnswers::Exclude);
    let held_q: Vec<String> = held.iter().map(|&n| question(&inv.item(n).unwrap().text)).collect();
    g.throughput(Throughput::Elements(held_q.len() as u64));
    g.bench_function("search_step_fold_prefix_and_8_items", |b| b.iter(|| scorer.score(&fold_system, &held_q, &steering).expect("score")));
    let system = few_shot_system(inv, subject, known, Keying::Corrected, MissingAnswers::Exclude);
    let test: Vec<String> = data.split.test.iter().take(16).map(|&n| question(&inv.item(n).unwrap().text)).collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("test_eval_full_prefix_and_16_items", |b| b.iter(|| scorer.score(&system, &test, &steering).expect("score")));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
