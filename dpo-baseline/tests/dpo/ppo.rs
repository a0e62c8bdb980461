//! PPO: the exact clipped objective, its gradient against REINFORCE's, training, determinism,
//! adapter files, and a few steps on the default model.

use burn::tensor::{Tensor, TensorData, activation};
use dpo_baseline::adapters;
use dpo_baseline::data::Rejected;
use dpo_baseline::ppo::{self, Baseline, PpoConfig, PpoLogLine, ppo_loss, rollout};
use dpo_baseline::{Example, LoraConfig, OptimiserConfig};
use llm_burn::{Decoder, PromptEncoder};

use super::{AD, B, model_dir, options, tiny_model, toy_examples};

fn small() -> PpoConfig {
    PpoConfig { optimiser: OptimiserConfig { learning_rate: 2e-2, ..Default::default() }, epochs: 3, batch_size: 4, held_out_fraction: 0.0, lora: LoraConfig { rank: 4, alpha: 8.0, ..Default::default() }, ..Default::default() }
}

/// Log-softmax of rows of logits, on the host.
fn log_softmax(rows: &[[f32; 5]]) -> Vec<[f32; 5]> {
    rows.iter()
        .map(|r| {
            let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z = r.iter().map(|x| (x - m).exp()).sum::<f32>().ln() + m;
            r.map(|x| x - z)
        })
        .collect()
}

#[test]
fn the_clipped_objective_equals_a_hand_computation() {
    let old = log_softmax(&[[0.1, 0.5, -0.3, 1.0, 0.0], [2.0, -1.0, 0.3, 0.2, -0.5], [0.0, 0.0, 0.0, 0.0, 0.0]]);
    let new = log_softmax(&[[0.4, 0.2, -0.3, 1.5, -0.6], [1.0, -0.5, 0.9, 0.2, -0.5], [0.3, -0.3, 0.1, 0.0, -0.1]]);
    let reference = log_softmax(&[[0.0, 0.3, 0.0, 0.8, 0.1], [1.5, -1.0, 0.0, 0.0, 0.0], [0.2, 0.0, -0.2, 0.0, 0.0]]);
    let chosen = [3, 0, 2];
    let (kl_coef, eps) = (0.1, 0.2);
    let (roll, obj) = rollout(&old, &reference, &chosen, kl_coef, Baseline::Expected);
    // By hand, in f64.
    let (mut loss, mut kl, mut scores, mut clipfrac) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..3 {
        let p: Vec<f64> = old[i].iter().map(|&l| f64::from(l).exp()).collect();
        let r: Vec<f64> = (0..5).map(|o| -((o as f64) - chosen[i] as f64).abs()).collect();
        let shaped: Vec<f64> = (0..5).map(|o| r[o] - kl_coef * f64::from(old[i][o] - reference[i][o])).collect();
        let value: f64 = (0..5).map(|o| p[o] * shaped[o]).sum();
        kl += (0..5).map(|o| p[o] * f64::from(old[i][o] - reference[i][o])).sum::<f64>() / 3.0;
        scores += (0..5).map(|o| p[o] * r[o]).sum::<f64>() / 3.0;
        for o in 0..5 {
            let a = shaped[o] - value;
            assert!((f64::from(roll.advantages[i][o]) - a).abs() < 1e-5);
            let ratio = f64::from(new[i][o] - old[i][o]).exp();
            let (u, c) = (-a * ratio, -a * ratio.clamp(1.0 - eps, 1.0 + eps));
            loss += p[o] * u.max(c) / 3.0;
            clipfrac += p[o] * f64::from(u8::from(c > u)) / 3.0;
        }
    }
    let policy = Tensor::<B, 2>::from_data(TensorData::new(new.iter().flatten().copied().collect::<Vec<_>>(), [3, 5]), &Default::default());
    let (t, stats) = ppo_loss(policy, &roll, eps).unwrap();
    assert!((f64::from(t.into_scalar()) - loss).abs() < 1e-5 && (stats.loss - loss).abs() < 1e-5, "{} vs {loss}", stats.loss);
    assert!((stats.clipfrac - clipfrac).abs() < 1e-6 && clipfrac > 0.0, "the batch should clip somewhere: {clipfrac}");
    assert!((obj.kl - kl).abs() < 1e-6 && (obj.scores - scores).abs() < 1e-6);
    assert!((obj.rlhf_reward - (scores - kl_coef * kl)).abs() < 1e-6);
    // The batch-mean baseline: advantages differ from the per-prompt ones by a constant per row.
    let (mean_roll, _) = rollout(&old, &reference, &chosen, kl_coef, Baseline::BatchMean);
    for i in 0..3 {
        let d0 = mean_roll.advantages[i][0] - roll.advantages[i][0];
        assert!((0..5).all(|o| (mean_roll.advantages[i][o] - roll.advantages[i][o] - d0).abs() < 1e-5));
    }
}

#[test]
fn without_clip_or_kl_the_gradient_is_reinforces() {
    let logits = [[0.3f32, -0.2, 1.1, 0.0, -0.7], [1.5, 0.2, -0.4, 0.0, 0.3]];
    let old = log_softmax(&logits);
    let chosen = [1, 4];
    let (roll, _) = rollout(&old, &old, &chosen, 0.0, Baseline::Expected);
    let z = Tensor::<AD, 2>::from_data(TensorData::new(logits.iter().flatten().copied().collect::<Vec<_>>(), [2, 5]), &Default::default()).require_grad();
    let (loss, _) = ppo_loss(activation::log_softmax(z.clone(), 1), &roll, f64::INFINITY).unwrap();
    let grads = loss.backward();
    let g = z.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    // REINFORCE with the exact baseline: ∇J = Σ_o π(o) A(o) ∇log π(o); on logits,
    // ∂J/∂z_k = π_k A_k − π_k Σ_o π_o A_o. The loss is −J averaged over the rows.
    for i in 0..2 {
        let p: Vec<f64> = old[i].iter().map(|&l| f64::from(l).exp()).collect();
        let a: Vec<f64> = roll.advantages[i].iter().map(|&x| f64::from(x)).collect();
        let mean: f64 = (0..5).map(|o| p[o] * a[o]).sum();
        for k in 0..5 {
            let want = -(p[k] * a[k] - p[k] * mean) / 2.0;
            assert!((f64::from(g[i * 5 + k]) - want).abs() < 1e-5, "row {i} option {k}: {} vs {want}", g[i * 5 + k]);
        }
    }
}

#[test]
fn training_raises_the_mean_reward_keeps_the_kl_finite_and_is_deterministic() {
    let (_d, model) = tiny_model();
    let examples = toy_examples(12, Rejected::AllOthers);
    let run = || {
        let mut lines = Vec::new();
        let (lora, report) = ppo::train::<AD>(&model, &examples, &[], &options(), &small(), |l| lines.push(serde_json::to_string(l).unwrap())).unwrap();
        (lora, report, lines)
    };
    let (lora, report, lines) = run();
    let (before, after) = report.train_objective;
    assert!(after.scores > before.scores + 0.05, "mean reward {} -> {}", before.scores, after.scores);
    assert!(after.kl.is_finite() && after.kl > 0.0 && after.kl < 5.0, "KL {}", after.kl);
    assert_eq!(report.steps, 3 * 3 * 4, "3 epochs × 3 batches × 4 PPO epochs");
    // One JSONL line per step with TRL's names.
    assert_eq!(lines.len(), report.steps);
    for name in ["objective/kl", "objective/entropy", "objective/scores", "policy/approxkl", "policy/clipfrac", "loss/policy", "kl_coef", "grad_norm"] {
        assert!(lines[0].contains(&format!("\"{name}\"")), "{name} missing from {}", lines[0]);
    }
    let parsed: Vec<PpoLogLine> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(parsed.iter().all(|l| matches!(l, PpoLogLine::Step { stats, .. } if stats.policy.loss.is_finite())));
    // Deterministic under the seed.
    let (lora2, report2, lines2) = run();
    assert_eq!((report2.steps, &lines2.iter().map(|l| l.split("\"seconds\"").next().unwrap().to_owned()).collect::<Vec<_>>()), (report.steps, &lines.iter().map(|l| l.split("\"seconds\"").next().unwrap().to_owned()).collect::<Vec<_>>()));
    let flat = |l: &llm_burn::Lora<B>| l.tensors().iter().flat_map(|(_, t)| (*t).clone().into_data().to_vec::<f32>().unwrap()).collect::<Vec<f32>>();
    assert_eq!(flat(&lora), flat(&lora2));
    // Adapters round-trip.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ppo.safetensors");
    let meta = [("train_report".to_owned(), serde_json::to_string(&report).unwrap())].into_iter().collect();
    adapters::save(&path, &lora, &meta).unwrap();
    let (back, back_meta) = adapters::load::<B>(&path, model.config(), &Default::default()).unwrap();
    assert_eq!(flat(&back), flat(&lora));
    assert_eq!(serde_json::from_str::<ppo::PpoReport>(&back_meta["train_report"]).unwrap(), report);
}

#[test]
fn an_adaptive_kl_coefficient_moves_and_bad_settings_are_refused() {
    let (_d, model) = tiny_model();
    let examples = toy_examples(8, Rejected::AllOthers);
    let config = PpoConfig { adaptive_kl: Some(ppo::AdaptiveKl { target_kl: 1e-6, horizon: 10.0 }), held_out_fraction: 0.0, ..small() };
    let (_, report) = ppo::train::<AD>(&model, &examples, &[], &options(), &config, |_| {}).unwrap();
    assert!(report.final_kl_coef > config.kl_coef, "KL above target raises the coefficient: {}", report.final_kl_coef);
    for (bad, field) in [(PpoConfig { cliprange: 0.0, ..small() }, "cliprange"), (PpoConfig { num_ppo_epochs: 0, ..small() }, "num_ppo_epochs"), (PpoConfig { kl_coef: -1.0, ..small() }, "kl_coef")] {
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn a_few_ppo_steps_on_the_default_model_log_finite_values() {
    let Some(dir) = model_dir() else { return };
    let model = Decoder::<B>::load(&dir, &Default::default()).unwrap();
    let prompts = PromptEncoder::from_dir(&dir).unwrap();
    let options = [" A", " B", " C", " D", " E"].map(|t| prompts.single_token(t).unwrap());
    let examples: Vec<Example> = ["worry about things", "make friends easily", "love to read challenging material", "trust others"]
        .iter()
        .zip([5u8, 1, 4, 2])
        .enumerate()
        .filter_map(|(i, (text, answer))| {
            let user = format!("Given a statement of you: \"You {text}.\" Please choose from the following options to identify how accurately this statement describes you.\nOptions:\n(A). Very Accurate\n(B). Moderately Accurate\n(C). Neither Accurate Nor Inaccurate\n(D). Moderately Inaccurate\n(E). Very Inaccurate\n\nAnswer:");
            Example::new(i as u16, prompts.encode_chat("You are a helpful, honest and concise assistant.", &user, "Option").unwrap(), answer, Rejected::AllOthers)
        })
        .collect();
    let config = PpoConfig { epochs: 1, batch_size: 4, num_ppo_epochs: 2, held_out_fraction: 0.0, ..Default::default() };
    let mut lines = Vec::new();
    let (_, report) = ppo::train::<AD>(&model, &examples, &[], &options, &config, |l| lines.push(l.clone())).unwrap();
    assert_eq!(report.steps, 2);
    for l in &lines {
        let PpoLogLine::Step { stats: ppo::PpoStep { objective, policy, .. }, grad_norm, .. } = l else { panic!("a step line") };
        assert!([objective.kl, objective.entropy, objective.scores, policy.loss, policy.approxkl, policy.clipfrac, *grad_norm].iter().all(|x| x.is_finite()), "{l:?}");
    }
}
