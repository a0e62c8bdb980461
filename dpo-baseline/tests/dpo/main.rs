//! dpo-baseline tests: the DPO laws on a tiny random model, preference rules, adapter files,
//! and a few steps on the real default model when it is present.
#![allow(clippy::print_stderr)] // tests say on stderr when they skip for lack of the model

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use dpo_baseline::data::{Rejected, option_of_answer, pairs, preference, split_held_out};
use dpo_baseline::train::{self, LogLine, dpo_loss, evaluate, option_logprobs, reference_logprobs};
use dpo_baseline::{DpoConfig, Example, LoraConfig, OptimiserConfig, PpoConfig, adapters};
use llm_burn::model::lora::{Lora, Target};
use llm_burn::{CpuBackend, ForwardOptions, Decoder, LoraPass, PromptEncoder, tiny};
use proptest::prelude::*;

mod ppo;
mod quantized;

type B = CpuBackend;
type AD = Autodiff<CpuBackend>;

fn tiny_model() -> (tempfile::TempDir, Decoder<B>) {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_model(dir.path(), 5).unwrap();
    let model = Decoder::load(dir.path(), &Default::default()).unwrap();
    (dir, model)
}

fn options() -> [u32; 5] {
    [0, 1, 2, 3, 4].map(tiny::option_token)
}

/// A toy preference set: prompts sharing a header, answers that depend on the prompt.
fn toy_examples(n: usize, rule: Rejected) -> Vec<Example> {
    (0..n)
        .filter_map(|i| {
            let mut prompt = vec![1, 70, 71, 72];
            prompt.extend((0..1 + i % 3).map(|k| 80 + ((i * 7 + k * 3) % 90) as u32));
            let answer = [5, 1, 4, 2, 3][i % 5];
            Example::new(i as u16, prompt, answer, rule)
        })
        .collect()
}

fn small_config() -> DpoConfig {
    DpoConfig { optimiser: OptimiserConfig { learning_rate: 1e-2, ..Default::default() }, epochs: 1, batch_size: 4, held_out_fraction: 0.0, lora: LoraConfig { rank: 4, alpha: 8.0, ..Default::default() }, ..Default::default() }
}

fn logits(model: &Decoder<B>, rows: &[&[u32]]) -> Vec<f32> {
    let mut cache = model.new_cache();
    model.forward(rows, &mut cache, ForwardOptions::default()).unwrap().logits.into_data().to_vec::<f32>().unwrap()
}

fn values(t: &Tensor<B, 2>) -> Vec<f32> {
    t.clone().into_data().to_vec::<f32>().unwrap()
}

#[test]
fn the_first_step_loss_is_ln_2_and_its_log_has_trl_names() {
    let (_d, model) = tiny_model();
    let examples = toy_examples(10, Rejected::OppositeExtreme);
    let mut lines = Vec::new();
    let trained = train::train::<AD>(&model, &examples, &[], &options(), &small_config(), |l| lines.push(l.clone())).unwrap();
    assert!((trained.report.first_loss - std::f64::consts::LN_2).abs() < 1e-6, "{}", trained.report.first_loss);
    let LogLine::Step { step, stats: metrics, .. } = &lines[0] else { panic!("first line is a step: {:?}", lines[0]) };
    assert_eq!(*step, 1);
    // Policy = reference: zero rewards (to rounding: the reference ran in other batches).
    assert!(metrics.rewards_chosen.abs() < 1e-5 && metrics.rewards_rejected.abs() < 1e-5, "{metrics:?}");
    let json = serde_json::to_value(&lines[0]).unwrap();
    for key in ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "grad_norm", "learning_rate", "epoch", "step"] {
        assert!(json.get(key).is_some(), "log line lacks {key}: {json}");
    }
    // 10 items: 8 with one pair, 2 answered 3 with two.
    assert_eq!(trained.report.train_pairs, 12);
    assert_eq!(trained.report.steps, 3);
}

#[test]
fn training_raises_preference_accuracy_and_lowers_the_loss() {
    let (_d, model) = tiny_model();
    let examples = toy_examples(12, Rejected::OppositeExtreme);
    let config = DpoConfig { epochs: 15, ..small_config() };
    let (reference, _) = reference_logprobs(&model, &examples, &options(), 16).unwrap();
    let (before, _) = evaluate(&model, None, &examples, &reference, &options(), &config).unwrap();
    let trained = train::train::<AD>(&model, &examples, &[], &options(), &config, |_| {}).unwrap();
    let (after, _) = evaluate(&model, Some(&trained.lora), &examples, &reference, &options(), &config).unwrap();
    assert!((before.loss - std::f64::consts::LN_2).abs() < 1e-6);
    assert!(after.loss < before.loss - 0.1, "loss {} → {}", before.loss, after.loss);
    assert!(after.rewards_accuracies > 0.9, "accuracy {} → {}", before.rewards_accuracies, after.rewards_accuracies);
    assert!(after.rewards_margins > 0.0);
    // The merged model prefers the person's options more than the base model does.
    let merged = model.merged(&trained.lora).unwrap();
    let prompts: Vec<&[u32]> = examples.iter().map(|e| e.prompt.as_slice()).collect();
    let (lp, _) = option_logprobs(&merged, None, &prompts, &options()).unwrap();
    let lp = values(&lp);
    let gained = examples.iter().enumerate().filter(|(i, e)| lp[i * 5 + e.chosen] > reference[*i][e.chosen]).count();
    assert!(gained * 10 >= examples.len() * 8, "{gained} of {} chosen options gained", examples.len());
}

#[test]
fn every_adapter_tensor_moves_and_the_base_weights_do_not() {
    let (_d, model) = tiny_model();
    let rows: [&[u32]; 2] = [&[1, 70, 71, 90], &[1, 72]];
    let base_before = logits(&model, &rows);
    let config = DpoConfig { epochs: 2, ..small_config() };
    let trained = train::train::<AD>(&model, &toy_examples(10, Rejected::AllOthers), &[], &options(), &config, |_| {}).unwrap();
    let init = Lora::<B>::init(model.config(), &config.lora.spec(), config.seed, &Default::default()).unwrap();
    // B starts at zero, so A's gradient is zero on the first step; after that both move.
    for ((name, before), (_, after)) in init.tensors().into_iter().zip(trained.lora.tensors()) {
        let (x, y) = (values(before), values(after));
        assert!(x.iter().zip(&y).any(|(a, b)| a != b), "{name} did not move");
    }
    assert_eq!(logits(&model, &rows), base_before, "the base model changed");
}

#[test]
fn the_loss_gradient_matches_finite_differences() {
    let (_d, model) = tiny_model();
    let examples = toy_examples(6, Rejected::AllOthers);
    let (reference, _) = reference_logprobs(&model, &examples, &options(), 16).unwrap();
    let prompts: Vec<&[u32]> = examples.iter().map(|e| e.prompt.as_slice()).collect();
    let batch: Vec<_> = pairs(&examples).into_iter().map(|p| (p.example, p)).collect();
    // Adapters with a non-zero B, so every tensor has a gradient.
    let spec = LoraConfig { rank: 2, alpha: 4.0, targets: vec![Target::Q, Target::V, Target::Down], ..Default::default() }.spec();
    let mut k = 0.0f32;
    let lora = Lora::<B>::init(model.config(), &spec, 3, &Default::default()).unwrap().map(|_, t| {
        let dims = t.dims();
        k += 1.0;
        let v: Vec<f32> = (0..dims[0] * dims[1]).map(|i| ((i as f32 * 0.71 + k).sin()) * 0.4).collect();
        Tensor::from_data(TensorData::new(v, dims), &Default::default())
    });
    let beta = 0.5;
    let loss_at = |l: &Lora<B>| -> f64 {
        let (lp, _) = option_logprobs(&model, Some(LoraPass::new(l)), &prompts, &options()).unwrap();
        let (loss, _, _) = dpo_loss(lp, &batch, &reference, beta).unwrap();
        f64::from(loss.into_scalar())
    };
    let ad_model = Decoder::<AD>::from_inner(&model);
    let trainable = Lora::<AD>::trainable(&lora);
    let (lp, _) = option_logprobs(&ad_model, Some(LoraPass::new(&trainable)), &prompts, &options()).unwrap();
    let (loss, _, _) = dpo_loss(lp, &batch, &reference, beta).unwrap();
    let grads = loss.backward();
    let names: Vec<String> = lora.tensors().into_iter().map(|(n, _)| n).collect();
    let mut checked = 0;
    for (ti, (name, t)) in trainable.tensors().into_iter().enumerate().step_by(3) {
        let g = t.grad(&grads).expect("gradient").into_data().to_vec::<f32>().unwrap();
        for idx in [0, g.len() / 2, g.len() - 1] {
            let eps = 1e-2f32;
            let nudge = |d: f32| {
                lora.map(|n, x| {
                    if n != names[ti] {
                        return x;
                    }
                    let dims = x.dims();
                    let mut v = x.into_data().to_vec::<f32>().unwrap();
                    v[idx] += d;
                    Tensor::from_data(TensorData::new(v, dims), &Default::default())
                })
            };
            let fd = (loss_at(&nudge(eps)) - loss_at(&nudge(-eps))) / (2.0 * f64::from(eps));
            let an = f64::from(g[idx]);
            assert!((fd - an).abs() <= 2e-3 + 0.05 * an.abs(), "{name}[{idx}]: finite difference {fd}, autodiff {an}");
            checked += 1;
        }
    }
    assert!(checked >= 9);
}

/// A step whose gradient is accumulated over micro-batches is the whole batch's step: the
/// same loss, gradient norm and updated adapters, to float rounding (and with micro-batches
/// that split an item's pairs unevenly: answers of 3 have two pairs, the others four). The
/// prompts' common prefix runs once per step however many micro-batches continue from it,
/// and its share of the gradient (sent back through it at the step's end) is the one a
/// single graph of the whole batch gives.
#[test]
fn a_step_in_micro_batches_is_the_whole_batchs_step() {
    let (_d, model) = tiny_model();
    let examples = toy_examples(7, Rejected::AllOthers);
    let (reference, _) = reference_logprobs(&model, &examples, &options(), 16).unwrap();
    let prompts: Vec<&[u32]> = examples.iter().map(|e| e.prompt.as_slice()).collect();
    let batch: Vec<_> = pairs(&examples).into_iter().map(|p| (p.example, p)).collect();
    let policy = Decoder::<AD>::from_inner(&model);
    // Non-zero B, so that A's gradients count too.
    let config = small_config();
    let lora = Lora::<B>::init(model.config(), &config.lora.spec(), 1, &Default::default()).unwrap().map(|n, t| if n.contains(".lora_B.") { t.ones_like() * 0.1 } else { t });
    let run = |micro: usize| {
        let config = DpoConfig { optimiser: OptimiserConfig { micro_batch: micro, ..config.optimiser }, ..config.clone() };
        let mut adam = train::AdamW::new(&lora);
        train::step::<AD>(&policy, &lora, &mut adam, &prompts, &batch, &reference, &options(), &config, 9).unwrap()
    };
    let whole = run(7);
    // The whole batch as one graph, without the step's machinery: the same gradient.
    let trainable = Lora::<AD>::trainable(&lora);
    let pass = LoraPass { lora: &trainable, dropout: config.lora.dropout, seed: 9 };
    let (lp, tokens) = option_logprobs(&policy, Some(pass), &prompts, &options()).unwrap();
    let grads = dpo_loss(lp, &batch, &reference, config.beta).unwrap().0.backward();
    let squares: f64 = trainable.tensors().iter().filter_map(|(_, t)| t.grad(&grads)).map(|g| f64::from(g.powi_scalar(2).sum().into_scalar())).sum();
    assert!((squares.sqrt() - whole.grad_norm).abs() < 1e-5 * whole.grad_norm, "one graph: norm {} against the step's {}", squares.sqrt(), whole.grad_norm);
    assert_eq!(tokens, whole.tokens);
    for micro in [1, 3] {
        let part = run(micro);
        assert!((part.metrics.loss - whole.metrics.loss).abs() < 1e-6, "{micro}: loss {} against {}", part.metrics.loss, whole.metrics.loss);
        assert!((part.grad_norm - whole.grad_norm).abs() < 1e-5 * whole.grad_norm, "{micro}: norm {} against {}", part.grad_norm, whole.grad_norm);
        // The shared prefix ran once, not once per micro-batch.
        assert!(part.tokens == whole.tokens && part.metrics.rewards_accuracies == whole.metrics.rewards_accuracies, "{micro}: {} tokens against {}", part.tokens, whole.tokens);
        for ((name, a), (_, b)) in part.lora.tensors().into_iter().zip(whole.lora.tensors()) {
            let d = values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(d < 1e-6, "{micro}: {name} differs by {d}");
        }
    }
    assert!(whole.grad_norm > 1e-4, "the step has a gradient: {}", whole.grad_norm);
}

#[test]
fn held_out_early_stopping_keeps_the_best_epoch_and_training_is_deterministic() {
    let (_d, model) = tiny_model();
    let (train_set, held) = split_held_out(toy_examples(20, Rejected::OppositeExtreme), 0.25, 1);
    assert_eq!(held.len(), 5);
    let config = DpoConfig { epochs: 6, optimiser: OptimiserConfig { learning_rate: 5e-2, ..Default::default() }, patience: 1, ..small_config() };
    let run = || {
        let mut evals = Vec::new();
        let t = train::train::<AD>(&model, &train_set, &held, &options(), &config, |l| {
            if let LogLine::Eval { eval, best, .. } = l {
                evals.push((eval.loss, *best));
            }
        })
        .unwrap();
        (t, evals)
    };
    let (a, evals) = run();
    let (b, _) = run();
    for ((_, x), (_, y)) in a.lora.tensors().into_iter().zip(b.lora.tensors()) {
        assert_eq!(values(x), values(y), "not deterministic");
    }
    let r = &a.report;
    assert_eq!(evals.len(), r.epochs);
    let best = evals.iter().enumerate().min_by(|x, y| x.1.0.total_cmp(&y.1.0)).map(|(i, _)| i + 1).unwrap();
    assert_eq!(r.best_epoch, best);
    let (_, kept) = r.held_out.unwrap();
    assert!((kept.loss - evals[best - 1].0).abs() < 1e-9);
    if r.stopped_early {
        assert!(r.epochs < config.epochs && !evals.last().unwrap().1);
    }
    assert!(r.reference_seconds > 0.0 && r.training_seconds > 0.0 && r.training_tokens > r.reference_tokens);
}

#[test]
fn adapters_round_trip_through_safetensors_with_metadata() {
    let (_d, model) = tiny_model();
    let trained = train::train::<AD>(&model, &toy_examples(8, Rejected::OppositeExtreme), &[], &options(), &DpoConfig { epochs: 2, ..small_config() }, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/adapters.safetensors");
    let meta = [("subject".to_owned(), "42".to_owned())].into_iter().collect();
    adapters::save(&path, &trained.lora, &meta).unwrap();
    let (back, m) = adapters::load::<B>(&path, model.config(), &Default::default()).unwrap();
    assert_eq!(m["subject"], "42");
    assert_eq!(m[adapters::RANK], "4");
    assert_eq!((back.rank(), back.alpha(), back.targets()), (4, 8.0, Target::ALL.to_vec()));
    for ((n1, x), (n2, y)) in trained.lora.tensors().into_iter().zip(back.tensors()) {
        assert_eq!(n1, n2);
        assert_eq!(values(x), values(y), "{n1}");
    }
    // PEFT's layout: lora_A is [rank, in].
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").unwrap().shape(), &[4, 16]);
    // A model of another shape is refused, naming the tensor.
    let other = tempfile::tempdir().unwrap();
    tiny::write_weights(other.path(), 1, 40).unwrap();
    let mut cfg = llm_burn::ModelConfig::load(&other.path().join("config.json")).unwrap();
    cfg.intermediate = 20;
    let err = adapters::load::<B>(&path, &cfg, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("gate_proj") && err.contains("expected"), "{err}");
}

#[test]
fn bad_settings_are_refused_by_name() {
    let (_d, model) = tiny_model();
    for (config, field) in [
        (DpoConfig { beta: 0.0, ..Default::default() }, "beta"),
        (DpoConfig { batch_size: 0, ..Default::default() }, "batch_size"),
        (DpoConfig { held_out_fraction: 0.9, ..Default::default() }, "held_out_fraction"),
        (DpoConfig { lora: LoraConfig { dropout: 1.0, ..Default::default() }, ..Default::default() }, "lora.dropout"),
        (DpoConfig { lora: LoraConfig { targets: vec![], ..Default::default() }, ..Default::default() }, "lora.targets"),
    ] {
        let err = train::train::<AD>(&model, &toy_examples(4, Rejected::OppositeExtreme), &[], &options(), &config, |_| {}).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    let none: Vec<Example> = Vec::new();
    assert!(train::train::<AD>(&model, &none, &[], &options(), &small_config(), |_| {}).is_err());
}

#[test]
fn the_rejection_rules() {
    assert_eq!(preference(5, Rejected::OppositeExtreme), Some((0, vec![4])));
    assert_eq!(preference(4, Rejected::OppositeExtreme), Some((1, vec![4])));
    assert_eq!(preference(3, Rejected::OppositeExtreme), Some((2, vec![0, 4])));
    assert_eq!(preference(2, Rejected::OppositeExtreme), Some((3, vec![0])));
    assert_eq!(preference(1, Rejected::OppositeExtreme), Some((4, vec![0])));
    assert_eq!(preference(2, Rejected::AllOthers), Some((3, vec![0, 1, 2, 4])));
    assert_eq!(preference(0, Rejected::AllOthers), None);
    assert_eq!("all-others".parse::<Rejected>(), Ok(Rejected::AllOthers));
    assert!("nearest".parse::<Rejected>().is_err());
}

proptest! {
    #[test]
    fn preferences_never_reject_the_chosen_option(answer in 0u8..8, all in any::<bool>()) {
        let rule = if all { Rejected::AllOthers } else { Rejected::OppositeExtreme };
        match preference(answer, rule) {
            None => prop_assert!(option_of_answer(answer).is_none()),
            Some((c, r)) => {
                prop_assert_eq!(c, 5 - answer as usize);
                prop_assert!(!r.is_empty() && !r.contains(&c) && r.iter().all(|&o| o < 5));
                // The rejected extreme is on the other side of the scale (or both for 3).
                if !all {
                    prop_assert!(r.iter().all(|&o| (o as i32 - 2) * (c as i32 - 2) <= 0));
                }
            }
        }
    }

    #[test]
    fn the_held_out_split_partitions_the_items(n in 1usize..60, fraction in 0.0f64..0.5, seed in any::<u64>()) {
        let examples = toy_examples(n, Rejected::OppositeExtreme);
        let (a, b) = split_held_out(examples.clone(), fraction, seed);
        prop_assert_eq!(a.len() + b.len(), n);
        prop_assert!(!a.is_empty());
        prop_assert!(a.iter().all(|e| !b.iter().any(|h| h.item == e.item)));
        let (a2, _) = split_held_out(examples, fraction, seed);
        prop_assert_eq!(a, a2);
    }
}

/// The converted default model (`LLM_MODEL_DIR`, else the xtask cache), if present.
fn model_dir() -> Option<PathBuf> {
    let dir = llm_burn::default_model_dir();
    if dir.is_none() {
        eprintln!("skipped: no default model (run `cargo xtask fetch-model`, or set LLM_MODEL_DIR)");
    }
    dir
}

#[test]
fn a_few_steps_on_the_default_model_give_a_finite_loss() {
    let Some(dir) = model_dir() else { return };
    let model = Decoder::<B>::load(&dir, &Default::default()).unwrap();
    let prompts = PromptEncoder::from_dir(&dir).unwrap();
    let options = [" A", " B", " C", " D", " E"].map(|t| prompts.single_token(t).unwrap());
    let items = ["I worry about things.", "I make friends easily.", "I love to read challenging material.", "I trust others.", "I complete tasks successfully.", "I get angry easily."];
    let examples: Vec<Example> = items
        .iter()
        .zip([5u8, 1, 4, 2, 3, 5])
        .enumerate()
        .filter_map(|(i, (text, answer))| {
            let user = format!("Given a statement of you: \"You {}\" Please choose from the following options to identify how accurately this statement describes you.\nOptions:\n(A). Very Accurate\n(B). Moderately Accurate\n(C). Neither Accurate Nor Inaccurate\n(D). Moderately Inaccurate\n(E). Very Inaccurate\n\nAnswer:", text.trim_start_matches("I ").trim_end_matches('.'));
            let ids = prompts.encode_chat("You are a helpful, honest and concise assistant.", &user, "Option").unwrap();
            Example::new(i as u16, ids, answer, Rejected::OppositeExtreme)
        })
        .collect();
    let config = DpoConfig { epochs: 1, batch_size: 4, held_out_fraction: 0.0, ..Default::default() };
    let trained = train::train::<AD>(&model, &examples, &[], &options, &config, |_| {}).unwrap();
    assert_eq!(trained.report.steps, 2);
    assert!((trained.report.first_loss - std::f64::consts::LN_2).abs() < 1e-4, "{}", trained.report.first_loss);
    assert!(trained.report.last_epoch.loss.is_finite());
}

/// The shared optimiser settings keep their keys where run files have them (a published
/// `run.json` reads back and is written again unchanged, so its folder still resumes).
#[test]
fn the_optimiser_keys_stay_where_published_run_files_have_them() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/published/qwen2.5-coder-1.5b-10-kl/run.json");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let dpo: DpoConfig = serde_json::from_value(run["dpo"].clone()).unwrap();
    let ppo: PpoConfig = serde_json::from_value(run["ppo"].clone()).unwrap();
    assert_eq!(serde_json::to_value(&dpo).unwrap(), run["dpo"]);
    assert_eq!(serde_json::to_value(&ppo).unwrap(), run["ppo"]);
    assert_eq!((dpo.optimiser, ppo.optimiser), (OptimiserConfig::default(), OptimiserConfig::default()));
    assert_eq!(run["dpo"]["learning_rate"], 5e-4);
}
