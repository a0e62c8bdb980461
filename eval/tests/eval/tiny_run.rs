//! Whole runs on the tiny random model and synthetic subjects: every method, the reports,
//! resumption, and the laws between methods.

use eval::results::Results;
use eval::run::rerender;
use eval::{Evaluator, Method, Scoring};
use pas_core::Search;

use crate::{provenance, quick_config, synthetic_dataset, tiny_intervention, tiny_model};

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_method_runs_reports_parse_and_a_rerun_resumes() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(12);
    let p2: Vec<String> = (0..data.subjects.len()).map(|i| format!("You are person {i}.")).collect();
    let out = tempfile::tempdir().unwrap();
    let config = quick_config(&Method::ALL, 3);
    let run = || Evaluator::new(&model, &prompts, &data, Some(p2.clone()), config.clone(), provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    let first = run();

    // Every method has a row.
    let names: Vec<&str> = first.runs.iter().map(|r| r.method.name()).collect();
    for m in Method::ALL {
        assert!(names.contains(&m.name()), "{m} missing from {names:?}");
    }
    assert!(first.not_run.is_empty());
    for r in &first.runs {
        assert_eq!(r.subjects, 3, "{}", r.method);
        let total = r.total.unwrap();
        assert!((0.0..=20.0).contains(&total), "{}: {total}", r.method);
        let [lo, hi] = r.total_ci95.unwrap();
        assert!(lo <= total + 1e-9 && total <= hi + 1e-9, "{}: {total} outside [{lo}, {hi}]", r.method);
    }
    let pas = first.runs.iter().find(|r| r.method == Method::Pas).unwrap();
    assert!(pas.phases.collect > 0.0 && pas.tokens.search > 0 && pas.tokens.eval > 0);
    assert_eq!(pas.alpha.as_ref().unwrap().counts.values().sum::<usize>(), 3);
    // DPO: reference and training phases timed, and set beside PAS's optimisation time.
    let dpo = first.runs.iter().find(|r| r.method == Method::Dpo).unwrap();
    assert!(dpo.phases.reference > 0.0 && dpo.phases.train > 0.0 && dpo.tokens.train > dpo.tokens.reference);
    let t = first.optimisation_time.as_ref().unwrap();
    assert_eq!(t.pas_method, Method::Pas);
    let pas_s = (pas.phases.collect + pas.phases.probes + pas.phases.search) / 3.0;
    let (dpo_s, ppo_s) = (t.dpo_seconds.unwrap(), t.ppo_seconds.unwrap());
    assert!((t.pas_seconds - pas_s).abs() < 1e-9 && (t.ratio.unwrap() - dpo_s / t.pas_seconds).abs() < 1e-9);
    assert!((t.ppo_ratio.unwrap() - ppo_s / t.pas_seconds).abs() < 1e-9 && (t.ppo_dpo_ratio.unwrap() - ppo_s / dpo_s).abs() < 1e-9);
    let ppo = first.runs.iter().find(|r| r.method == Method::Ppo).unwrap();
    assert!((ppo.phases.reference + ppo.phases.train) / 3.0 - ppo_s < 1e-9 && ppo.tokens.train > 0);
    let case = data.subjects[0].case;
    let log = read(&out.path().join(format!("dpo/{case}.jsonl")));
    assert!(log.lines().all(|l| serde_json::from_str::<dpo_baseline::LogLine>(l).is_ok()) && log.contains("rewards/margins"));
    let log = read(&out.path().join(format!("ppo/{case}.jsonl")));
    assert!(log.lines().all(|l| serde_json::from_str::<dpo_baseline::PpoLogLine>(l).is_ok()) && log.contains("policy/clipfrac"));

    // results.json parses back to what the run returned; report.md is rendered from it alone.
    let parsed: Results = serde_json::from_str(&read(&out.path().join("results.json"))).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), serde_json::to_value(&first).unwrap());
    let report = read(&out.path().join("report.md"));
    std::fs::remove_file(out.path().join("report.md")).unwrap();
    rerender(out.path()).unwrap();
    assert_eq!(read(&out.path().join("report.md")), report);
    assert!(report.contains("| pas |") && report.contains("| ridge |") && report.contains("| dpo |") && report.contains("DPO / PAS = ") && report.contains("PPO / PAS = ") && report.contains("| `ppo` |"));
    assert!(read(&out.path().join("totals.svg")).starts_with("<svg"));

    // samples.jsonl.gz: one line per subject x method x item, the same bytes when written again.
    let gz = std::fs::read(out.path().join(eval::files::SAMPLES)).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3 * Method::ALL.len() * 10);
    assert!(lines.iter().all(|l| l["subject"].is_i64() && l["method"].is_string() && l["item"].is_u64()));
    assert!(lines.iter().filter(|l| l["method"] == "few-shot").all(|l| l["logprobs"].as_array().unwrap().len() == 5));

    // A rerun finds every subject done and recomputes nothing.
    let pas_file = out.path().join(format!("subjects/pas/{}.json", data.subjects[1].case));
    let before = std::fs::metadata(&pas_file).unwrap().modified().unwrap();
    let second = run();
    assert_eq!(std::fs::metadata(&pas_file).unwrap().modified().unwrap(), before);
    assert_eq!(std::fs::read(out.path().join(eval::files::SAMPLES)).unwrap(), gz, "the same samples compress to the same bytes");
    assert_eq!(second.runs.iter().map(|r| r.total).collect::<Vec<_>>(), first.runs.iter().map(|r| r.total).collect::<Vec<_>>());

    // A subject lost in a killed run is redone, identically (deterministic under the seed).
    let kept = read(&pas_file);
    std::fs::remove_file(&pas_file).unwrap();
    run();
    let redone: serde_json::Value = serde_json::from_str(&read(&pas_file)).unwrap();
    let mut kept: serde_json::Value = serde_json::from_str(&kept).unwrap();
    let mut redone = redone;
    for v in [&mut kept, &mut redone] {
        v["seconds"] = serde_json::Value::Null; // wall times differ
        // Tokens count what ran: the first run had few-shot's unsteered scores in memory.
        v["tokens"] = serde_json::Value::Null;
    }
    assert_eq!(kept, redone);

    // A DPO subject lost after its training reuses the saved adapters: same answers, same
    // training report (its times are the first run's).
    let dpo_file = out.path().join(format!("subjects/dpo/{case}.json"));
    let kept: serde_json::Value = serde_json::from_str(&read(&dpo_file)).unwrap();
    std::fs::remove_file(&dpo_file).unwrap();
    run();
    let redone: serde_json::Value = serde_json::from_str(&read(&dpo_file)).unwrap();
    assert_eq!(kept["items"], redone["items"]);
    assert_eq!(kept["dpo"], redone["dpo"]);
    // The same for PPO.
    let ppo_file = out.path().join(format!("subjects/ppo/{case}.json"));
    let kept: serde_json::Value = serde_json::from_str(&read(&ppo_file)).unwrap();
    std::fs::remove_file(&ppo_file).unwrap();
    run();
    let redone: serde_json::Value = serde_json::from_str(&read(&ppo_file)).unwrap();
    assert_eq!((&kept["items"], &kept["ppo"]), (&redone["items"], &redone["ppo"]));
}

#[test]
fn pas_at_strength_zero_is_few_shot_item_for_item() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(6);
    let out = tempfile::tempdir().unwrap();
    let mut config = quick_config(&[Method::FewShot, Method::Pas, Method::NoChange, Method::PasOnly, Method::PasDomain], 2);
    config.pas.search = Search::Grid { alphas: vec![0.0] };
    Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    for s in &data.subjects[..2] {
        let load = |m: &str| -> serde_json::Value { serde_json::from_str(&read(&out.path().join(format!("subjects/{m}/{}.json", s.case)))).unwrap() };
        for (steered, plain) in [("pas", "few-shot"), ("pas-only", "no-change"), ("pas-domain", "few-shot")] {
            let (a, b) = (load(steered), load(plain));
            if steered == "pas-domain" {
                let domains = a["pas_domains"].as_object().unwrap();
                assert_eq!(domains.len(), 5);
                assert!(domains.values().all(|d| d["alpha"] == 0.0));
            } else {
                assert_eq!(a["pas"]["alpha"], 0.0);
            }
            assert_eq!(a["items"], b["items"], "{steered} vs {plain}, case {}", s.case);
        }
    }
}

#[test]
fn an_output_folder_refuses_other_settings() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let out = tempfile::tempdir().unwrap();
    let config = quick_config(&[Method::Always3, Method::NoChange], 2);
    Evaluator::new(&model, &prompts, &data, None, config.clone(), provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    let other = eval::RunConfig { keying: papi_data::Keying::AsReleased, ..config };
    let err = Evaluator::new(&model, &prompts, &data, None, other, provenance(model_dir.path()), out.path()).unwrap().run().unwrap_err().to_string();
    assert!(err.contains("run.json") && err.contains("keying"), "{err}");
}

#[test]
fn p2_needs_one_description_per_subject() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let config = quick_config(&[Method::P2], 2);
    let err = Evaluator::new(&model, &prompts, &data, Some(vec!["x".into(); 3]), config, provenance(model_dir.path()), "unused").err().unwrap().to_string();
    assert!(err.contains("3 descriptions") && err.contains("4 subjects"), "{err}");
}

#[test]
fn scorings_agree_where_they_must() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let users: Vec<String> = ["Worry about things.", "Make friends easily.", "Love to read."].iter().map(|t| eval::prompt::question(t)).collect();
    let none = pas_core::Steering::none(pas_core::Steerable::geometry(&model));
    let score = |s: Scoring, batch| eval::Scorer::new(&model, &prompts, s, batch).unwrap().score("sys", &users, &none).unwrap();
    let next = score(Scoring::NextToken, 2);
    // The shared prefix and batching change nothing: one item at a time gives the same.
    for (u, item) in users.iter().zip(&next.items) {
        let alone = eval::Scorer::new(&model, &prompts, Scoring::NextToken, 1).unwrap().score("sys", std::slice::from_ref(u), &none).unwrap();
        for (a, b) in alone.items[0].logprobs.iter().zip(&item.logprobs) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let best = (0..5).fold(0, |b, i| if item.logprobs[i] > item.logprobs[b] { i } else { b });
        assert_eq!(item.choice, Some(best));
    }
    let aware = score(Scoring::FormatAware, 3);
    for item in &aware.items {
        assert!(item.path.tokens.len() <= eval::score::LOOKAHEAD);
        assert!(item.logprobs.iter().all(|l| *l <= 0.0));
        if item.path.tokens.is_empty() && item.path.found {
            // Read right after the prefill: both spellings combined, so at least the spaced one.
            let i = aware.items.iter().position(|x| x == item).unwrap();
            for k in 0..5 {
                assert!(item.logprobs[k] >= next.items[i].logprobs[k] - 1e-5);
            }
        }
    }
    let generated = score(Scoring::Generate, 3);
    for item in &generated.items {
        let text = item.text.as_ref().unwrap();
        assert_eq!(item.choice, eval::score::parse_official(&format!("Option{text}")));
        assert!(item.path.tokens.len() <= eval::score::GENERATE_TOKENS);
    }
}

#[test]
fn answer_and_last_positions_score_every_strength_over_one_unsteered_prefix() {
    use pas_core::Positions;
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let users: Vec<String> = ["Worry about things.", "Make friends easily.", "Love to read."].iter().map(|t| eval::prompt::question(t)).collect();
    let iv = tiny_intervention(&model);
    let scorer = eval::Scorer::new(&model, &prompts, Scoring::FormatAware, 4).unwrap();
    let alphas = [0.0f32, 2.0, 6.0];
    let all = scorer.score("sys", &users, &iv.at(6.0, Positions::All)).unwrap();
    for positions in [Positions::Answer, Positions::Last] {
        let steerings: Vec<_> = alphas.iter().map(|&a| iv.at(a, positions)).collect();
        let together = scorer.score_strengths("sys", &users, &steerings).unwrap();
        // Each strength alone, one item at a time: the same answers (batches of other
        // strengths, and for `last` the shared item bodies, change nothing).
        for (k, s) in steerings.iter().enumerate() {
            for (u, b) in users.iter().zip(&together[k].items) {
                let alone = eval::Scorer::new(&model, &prompts, Scoring::FormatAware, 1).unwrap().score("sys", std::slice::from_ref(u), s).unwrap();
                let a = &alone.items[0];
                assert_eq!((a.choice, &a.path), (b.choice, &b.path), "{positions:?} at {}", alphas[k]);
                assert!(a.logprobs.iter().zip(&b.logprobs).all(|(x, y)| (x - y).abs() < 1e-4), "{positions:?} at {}", alphas[k]);
            }
        }
        // Against the whole prompt in one unshared forward pass, steered as the setting says.
        let next = eval::Scorer::new(&model, &prompts, Scoring::NextToken, 4).unwrap();
        let shared = next.score_strengths("sys", &users, &steerings).unwrap();
        let letters = next.options().spaced;
        for (k, st) in steerings.iter().enumerate() {
            for (u, item) in users.iter().zip(&shared[k].items) {
                let ids = prompts.encode(&prompts.render("sys", u, eval::prompt::PREFILL).unwrap()).unwrap();
                let lp = if positions == Positions::Last {
                    model.choice_logprobs(&[&ids], &[st], &letters).unwrap().remove(0)
                } else {
                    // `answer`: the prompt before the user's message unsteered, the rest steered.
                    let lcp = next.user_start("sys").unwrap();
                    assert!(lcp > 0 && lcp < eval::score::shared_prefix_len(&[ids.clone(), prompts.encode(&prompts.render("sys", "other", eval::prompt::PREFILL).unwrap()).unwrap()]) + 1);
                    let mut cache = model.new_cache();
                    model.forward(&[&ids[..lcp]], &mut cache, llm_burn::ForwardOptions::default()).unwrap();
                    let out = model.forward(&[&ids[lcp..]], &mut cache, llm_burn::ForwardOptions { steering: &[st], ..Default::default() }).unwrap();
                    llm_burn::model::logprobs_of(out.logits, &letters).unwrap().remove(0)
                };
                assert!(lp.iter().zip(&item.logprobs).all(|(x, y)| (x - y).abs() < 1e-4), "{positions:?} at {}: {lp:?} vs {:?}", alphas[k], item.logprobs);
            }
        }
        // Under `last` the item bodies run once for all strengths: fewer tokens than separate runs.
        if positions == Positions::Last {
            let separate: u64 = steerings.iter().map(|s| scorer.score("sys", &users, s).unwrap().tokens).sum();
            assert!(together.iter().map(|s| s.tokens).sum::<u64>() < separate);
        }
        // Steering the prefix too (`all`) is another model: its log-probabilities differ.
        let differs = all.items.iter().zip(&together[2].items).any(|(a, b)| a.logprobs.iter().zip(&b.logprobs).any(|(x, y)| (x - y).abs() > 1e-3));
        assert!(differs, "{positions:?} and all positions gave the same log-probabilities");
    }
}

#[test]
fn a_batched_answer_search_scores_each_strength_as_it_would_alone() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let mut config = quick_config(&[Method::Pas], 1);
    config.pas.positions = pas_core::Positions::Answer;
    let batched = tempfile::tempdir().unwrap();
    Evaluator::new(&model, &prompts, &data, None, config.clone(), provenance(model_dir.path()), batched.path()).unwrap().run().unwrap();
    let report = read(&batched.path().join("report.md"));
    assert!(report.contains("PAS steering at `answer` positions"), "{report}");
    let case = data.subjects[0].case;
    let load = |dir: &std::path::Path| -> serde_json::Value { serde_json::from_str(&read(&dir.join(format!("subjects/pas/{case}.json")))).unwrap() };
    let kept = load(batched.path());
    let evals = kept["pas"]["search"]["evaluations"].as_array().expect("the search's evaluations").clone();
    assert_eq!(evals.len(), 3, "every grid point scored once: {kept}");
    // Each grid point searched alone gives the same held-out objective.
    for e in &evals {
        let (alpha, value) = (e[0].as_f64().unwrap(), e[1].as_f64().unwrap());
        let mut one = config.clone();
        one.pas.search = Search::Grid { alphas: vec![alpha] };
        let out = tempfile::tempdir().unwrap();
        Evaluator::new(&model, &prompts, &data, None, one, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
        let alone = load(out.path());
        assert_eq!(alone["pas"]["search"]["evaluations"][0][1].as_f64().unwrap(), value, "alpha {alpha}");
        if alpha == kept["pas"]["alpha"].as_f64().unwrap() {
            assert_eq!(alone["items"], kept["items"], "the test answers at the chosen strength");
        }
    }
}

#[test]
fn per_row_steerings_score_each_row_as_its_steering_alone() {
    use pas_core::Positions;
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let users: Vec<String> = ["Worry about things.", "Make friends easily.", "Love to read.", "Am easily hurt."].iter().map(|t| eval::prompt::question(t)).collect();
    let iv = tiny_intervention(&model);
    let of_row = [1, 0, 2, 1];
    for positions in [Positions::All, Positions::Answer, Positions::Last] {
        let steerings: Vec<_> = [0.0f32, 3.0, 6.0].iter().map(|&a| iv.at(a, positions)).collect();
        let scorer = eval::Scorer::new(&model, &prompts, Scoring::FormatAware, 3).unwrap();
        let mixed = scorer.score_each("sys", &users, &steerings, &of_row).unwrap();
        for (i, item) in mixed.items.iter().enumerate() {
            let alone = scorer.score("sys", std::slice::from_ref(&users[i]), &steerings[of_row[i]]).unwrap();
            let a = &alone.items[0];
            assert_eq!((a.choice, &a.path), (item.choice, &item.path), "{positions:?} row {i}");
            assert!(a.logprobs.iter().zip(&item.logprobs).all(|(x, y)| (x - y).abs() < 1e-4), "{positions:?} row {i}");
        }
        // A wrong index is an error, not a panic.
        assert!(scorer.score_each("sys", &users, &steerings, &[0, 1, 2, 3]).is_err());
    }
}

#[test]
fn a_finished_run_is_re_decided_from_its_samples_alone() {
    use eval::Decision;
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(6);
    let methods = [Method::NoChange, Method::OptionBias, Method::FewShot, Method::Always3, Method::OwnMean];
    let run = |rule: Decision| {
        let out = tempfile::tempdir().unwrap();
        let config = eval::RunConfig { decision: rule, ..quick_config(&methods, 3) };
        let results = Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
        (out, results)
    };
    let (cal_dir, calibrated) = run(Decision::Calibrated);
    let (_arg_dir, argmax) = run(Decision::Argmax);
    let total = |r: &Results, m: Method| r.runs.iter().find(|x| x.method == m).unwrap().total;
    // Re-deciding under the run's own rule changes nothing; under argmax it gives what a run
    // decided by argmax gives, for every method (none of them searches a strength).
    let same = eval::aggregate::redecide_run(cal_dir.path(), Decision::Calibrated).unwrap();
    let other = eval::run::write_redecided(cal_dir.path(), Decision::Argmax).unwrap();
    assert!(read(&cal_dir.path().join("report-argmax.md")).contains("`argmax` decision"));
    for m in methods {
        assert_eq!(total(&same, m), total(&calibrated, m), "{m}");
        assert_eq!(total(&other, m), total(&argmax, m), "{m} re-decided under argmax");
        // The side-by-side table holds the same figures.
        if m.reference().is_none() {
            let row = calibrated.decisions.iter().find(|d| d.method == m && d.decision == Decision::Argmax).unwrap();
            assert_eq!(row.total, total(&argmax, m), "{m}");
        }
    }
    // Calibrated against itself, the unsteered model has no preference: its median is 3, so
    // no-change answers as always-3 does.
    assert_eq!(total(&calibrated, Method::NoChange), total(&calibrated, Method::Always3));
    let nc = calibrated.runs.iter().find(|r| r.method == Method::NoChange).unwrap();
    assert_eq!(nc.answers[2], 1.0);
    assert_eq!(nc.one_letter, Some('C'));
    // option-bias runs no model at all: its offsets come from the shared plain pass.
    let ob = calibrated.runs.iter().find(|r| r.method == Method::OptionBias).unwrap();
    assert_eq!(ob.tokens.sum(), 0);
    let case = data.subjects[0].case;
    let saved: serde_json::Value = serde_json::from_str(&read(&cal_dir.path().join(format!("subjects/option-bias/{case}.json")))).unwrap();
    assert_eq!(saved["option_bias"].as_array().unwrap().len(), 5);
    // Paired differences against the references, and the diagnostic, are in the report.
    assert!(calibrated.comparisons.iter().any(|c| c.baseline == Method::Always3 && c.method == Method::FewShot));
    assert!(calibrated.comparisons.iter().any(|c| c.baseline == Method::OwnMean));
    let d = calibrated.diagnostic.as_ref().unwrap();
    assert_eq!(d.items, 25 + 10);
    let report = read(&cal_dir.path().join("report.md"));
    assert!(report.contains("What the model can do at all") && report.contains("Decision rules side by side") && report.contains("against always-3"), "{report}");
}

#[test]
fn half_precision_weights_run_every_model_method() {
    let model_dir = tempfile::tempdir().unwrap();
    tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let prompts = llm_burn::PromptEncoder::from_dir(model_dir.path()).unwrap();
    for dtype in [llm_burn::Dtype::Bf16, llm_burn::Dtype::F16] {
        let model = llm_burn::Decoder::<crate::TestBackend>::load_as(model_dir.path(), &Default::default(), dtype).unwrap();
        let out = tempfile::tempdir().unwrap();
        let config = quick_config(&[Method::NoChange, Method::FewShot, Method::Pas, Method::PasDomain, Method::Dpo], 1);
        let results = Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
        assert_eq!(results.meta.settings.dtype, dtype);
        for r in &results.runs {
            assert!(r.total.is_some_and(f64::is_finite), "{dtype} {}", r.method);
        }
        assert!(read(&out.path().join("report.md")).contains(&format!("{dtype} weights")));
    }
}

/// The executor answers an item asked again unsteered under the same system prompt, or under
/// a zero steering, from memory (no tokens run, the same scores as asking afresh), and runs
/// whatever differs: new items, another system prompt, a steering that adds something.
#[test]
fn the_executor_remembers_unsteered_scores_and_nothing_else() {
    use eval::request::{Executor, Request, Steer};
    use pas_core::Positions;
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let inventory = papi_data::Inventory::synthetic();
    let n: Vec<u16> = inventory.items().iter().take(3).map(|i| i.number).collect();
    let scorer = eval::Scorer::new(&model, &prompts, Scoring::FormatAware, 2).unwrap();
    let exec = Executor::new(&scorer, &inventory);
    let iv = tiny_intervention(&model);
    let close = |a: &[eval::score::ItemScore], b: &[eval::score::ItemScore]| {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!((x.choice, &x.path), (y.choice, &y.path));
            assert!(x.logprobs.iter().zip(&y.logprobs).all(|(p, q)| (p - q).abs() < 1e-4), "{:?} vs {:?}", x.logprobs, y.logprobs);
        }
    };
    let first = exec.one(&Request::plain("sys", &n[..2])).unwrap();
    assert!(first.tokens > 0);
    // One item new: only it runs; both agree with a fresh executor's answers.
    let again = exec.one(&Request::plain("sys", &[n[1], n[2]])).unwrap();
    let fresh = Executor::new(&scorer, &inventory).one(&Request::plain("sys", &[n[1], n[2]])).unwrap();
    assert!(0 < again.tokens && again.tokens < fresh.tokens, "{} of {}", again.tokens, fresh.tokens);
    close(&again.items, &fresh.items);
    // Strength zero, at every position or the answer's: from memory, in the request's order.
    for positions in [Positions::All, Positions::Answer] {
        let zero = exec.one(&Request::steered("sys", &[n[2], n[0], n[1]], Steer::One(iv.at(0.0, positions)))).unwrap();
        assert_eq!(zero.tokens, 0);
        close(&zero.items, &[fresh.items[1].clone(), first.items[0].clone(), first.items[1].clone()]);
    }
    // A real steering and another system prompt run.
    let steered = exec.one(&Request::steered("sys", &n[..2], Steer::One(iv.at(6.0, Positions::All)))).unwrap();
    assert!(steered.tokens > 0);
    assert!(steered.items.iter().zip(&first.items).any(|(a, b)| a.logprobs != b.logprobs));
    assert!(exec.one(&Request::plain("other", &n[..2])).unwrap().tokens > 0);
}

/// Copies a run folder as git would commit it under `results/published/`: no activation
/// cache, no intervention or adapter files.
fn copy_as_published(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (path, name) = (entry.path(), entry.file_name().to_string_lossy().into_owned());
        if name.starts_with("activations.") || name.ends_with(".safetensors") {
            continue;
        }
        if path.is_dir() {
            std::fs::create_dir_all(to.join(&name)).unwrap();
            copy_as_published(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

#[test]
fn a_run_committed_without_its_caches_is_finished_elsewhere() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let methods = [Method::NoChange, Method::FewShot, Method::Pas, Method::Always3];
    let here = tempfile::tempdir().unwrap();
    let run = |subjects: usize, out: &std::path::Path| {
        let todo = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = todo.clone();
        let results = Evaluator::new(&model, &prompts, &data, None, quick_config(&methods, subjects), provenance(model_dir.path()), out)
            .unwrap()
            .on_done(move |d| seen.set(d.total))
            .run()
            .unwrap();
        (results, todo.get())
    };
    // The first part: one person, interrupted there.
    let (part, todo) = run(1, here.path());
    assert_eq!((part.meta.cases.len(), todo), (1, 3));
    let text = read(&here.path().join("run.json")) + &read(&here.path().join("results.json"));
    assert!(!text.contains(&*here.path().to_string_lossy()) && !text.contains(&*model_dir.path().to_string_lossy()), "a machine's path was recorded");

    // Elsewhere, from the committed files alone: only the second person's methods run.
    let there = tempfile::tempdir().unwrap();
    copy_as_published(here.path(), there.path());
    assert!(!there.path().join("shared/activations.f32").exists() && there.path().join("shared/plain.json").exists());
    let first_file = format!("subjects/pas/{}.json", data.subjects[0].case);
    let before = read(&there.path().join(&first_file));
    let (whole, todo) = run(2, there.path());
    assert_eq!((whole.meta.cases.len(), todo), (2, 3), "the finished person was not run again");
    assert_eq!(read(&there.path().join(&first_file)), before);

    // The same as a run made in one go.
    let one_go = tempfile::tempdir().unwrap();
    let (direct, _) = run(2, one_go.path());
    for (a, b) in whole.runs.iter().zip(&direct.runs) {
        assert_eq!((a.method, a.total, &a.per_domain), (b.method, b.total, &b.per_domain));
    }
}

#[test]
fn an_unsteered_prefix_asked_again_is_not_run_again() {
    use pas_core::Positions;
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let users: Vec<String> = ["Worry about things.", "Make friends easily."].iter().map(|t| eval::prompt::question(t)).collect();
    let iv = tiny_intervention(&model);
    let fresh = || eval::Scorer::new(&model, &prompts, Scoring::FormatAware, 4).unwrap();
    let scorer = fresh();
    let first = scorer.score("a long system prompt", &users, &iv.at(2.0, Positions::Last)).unwrap();
    let again = scorer.score("a long system prompt", &users, &iv.at(2.0, Positions::Last)).unwrap();
    let lcp = eval::score::shared_prefix_len(&users.iter().map(|u| prompts.encode(&prompts.render("a long system prompt", u, eval::prompt::PREFILL).unwrap()).unwrap()).collect::<Vec<_>>());
    assert_eq!(first.tokens - again.tokens, lcp as u64, "the second request starts from the kept prefix");
    assert_eq!(first.items, again.items, "and reads the same answers");
    // A prefix steered at every position is another prefix: it runs.
    let all = scorer.score("a long system prompt", &users, &iv.at(2.0, Positions::All)).unwrap();
    assert_eq!(all.items, fresh().score("a long system prompt", &users, &iv.at(2.0, Positions::All)).unwrap().items);
    assert_eq!(all.tokens, first.tokens);
}

#[test]
fn pas_at_strength_zero_recalls_few_shot_finished_in_an_earlier_part() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(4);
    let out = tempfile::tempdir().unwrap();
    let mut config = quick_config(&[Method::FewShot], 1);
    config.pas.search = Search::Grid { alphas: vec![0.0] };
    Evaluator::new(&model, &prompts, &data, None, config.clone(), provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    // A second part adds PAS: its test answers at strength 0 are few-shot's, not asked again.
    config.methods = vec![Method::FewShot, Method::Pas];
    Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), out.path()).unwrap().run().unwrap();
    let case = data.subjects[0].case;
    let load = |m: &str| -> serde_json::Value { serde_json::from_str(&read(&out.path().join(format!("subjects/{m}/{case}.json")))).unwrap() };
    let (pas, few) = (load("pas"), load("few-shot"));
    assert_eq!(pas["pas"]["alpha"], 0.0);
    assert_eq!(pas["items"], few["items"]);
    assert_eq!(pas["tokens"]["eval"], 0, "the test items were recalled, not run");
}

/// The shared phases tell their progress from start to end, and the plain pass's known items
/// are scored exactly as one request over all of them scores them.
#[test]
fn shared_phases_report_progress_and_the_plain_pass_is_one_request_in_pieces() {
    use eval::request::{Executor, Request};
    use std::cell::RefCell;
    use std::rc::Rc;
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(2);
    let out = tempfile::tempdir().unwrap();
    let mut config = quick_config(&[Method::NoChange, Method::PasOnly], 1);
    config.batch = 3;
    config.pas.search = Search::Grid { alphas: vec![0.0] };
    let phases: Rc<RefCell<Vec<eval::Phase>>> = Rc::default();
    let seen = phases.clone();
    Evaluator::new(&model, &prompts, &data, None, config.clone(), provenance(model_dir.path()), out.path())
        .unwrap()
        .on_phase(move |p| seen.borrow_mut().push(p.clone()))
        .run()
        .unwrap();
    let phases = phases.borrow();
    let names: std::collections::BTreeSet<&str> = phases.iter().map(|p| p.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for name in names {
        let mine: Vec<&eval::Phase> = phases.iter().filter(|p| p.name == name).collect();
        assert!(mine.len() >= 3, "{name}: a start, progress and an end: {mine:?}");
        assert_eq!(mine[0].done, 0, "{name} starts at 0");
        assert_eq!(mine.last().map(|p| p.done), Some(mine[0].total), "{name} ends at its total");
        assert!(mine.windows(2).all(|w| w[0].done <= w[1].done && w[1].eta_seconds.is_some()), "{name}: {mine:?}");
    }
    let plain: serde_json::Value = serde_json::from_str(&read(&out.path().join("shared/plain.json"))).unwrap();
    let scorer = eval::Scorer::new(&model, &prompts, config.scoring, config.batch).unwrap();
    let whole = Executor::new(&scorer, &data.inventory).one(&Request::plain(eval::prompt::DEFAULT_SYSTEM, &data.split.known)).unwrap();
    let pieces: Vec<eval::score::ItemScore> = serde_json::from_value(plain["scores"].clone()).unwrap();
    assert_eq!(pieces.len(), data.split.known.len() + config.test_items.unwrap());
    for (a, b) in pieces.iter().zip(&whole.items) {
        assert_eq!((a.choice, &a.logprobs), (b.choice, &b.logprobs));
    }
}
