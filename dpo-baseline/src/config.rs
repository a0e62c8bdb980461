//! Settings of the adapters and of the DPO training, validated before any work.

use llm_burn::model::lora::{LoraSpec, Target};
use serde::{Deserialize, Serialize};

use crate::data::Rejected;
use crate::error::{Error, Result};

/// LoRA settings (PEFT's names and meanings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r` of every adapter.
    pub rank: usize,
    /// `lora_alpha`: updates are scaled by `alpha / rank`.
    pub alpha: f64,
    /// `lora_dropout`: probability of zeroing an adapter's input while training.
    pub dropout: f64,
    /// `target_modules`: the projections adapted in every layer.
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16, no dropout, every attention and MLP projection.
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, dropout: 0.0, targets: Target::ALL.to_vec() }
    }
}

impl LoraConfig {
    /// The adapters' shape.
    pub fn spec(&self) -> LoraSpec {
        LoraSpec { rank: self.rank, alpha: self.alpha, targets: self.targets.clone() }
    }
}

/// The system prompt the preferences (and the trained model's evaluation) are asked under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemPrompt {
    /// The default assistant prompt: the adapters must learn the person.
    #[default]
    Plain,
    /// The person's known answers in the system prompt (as the few-shot method).
    FewShot,
}

/// The optimiser DPO and PPO share: AdamW with a constant learning rate and the global
/// gradient norm clipped (TRL's defaults: `eps` 1e-8, no weight decay, clipped at 1), with a
/// learning rate suited to LoRA on ~100 items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimiserConfig {
    /// AdamW learning rate (constant).
    pub learning_rate: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW's `beta1`, `beta2`.
    pub adam_betas: (f64, f64),
    /// AdamW's `eps`.
    pub adam_epsilon: f64,
    /// Prompts per forward and backward pass: a step's gradient is accumulated over
    /// micro-batches of this many prompts, so that the activations kept for the backward
    /// pass are those of a micro-batch (on Qwen2.5-1.5B about 0.25 GB per prompt). The
    /// gradient is the step's to float rounding, so this is how a run executes, not what it
    /// computes: it is not written into a run's settings.
    #[serde(skip, default = "default_micro_batch")]
    pub micro_batch: usize,
}

/// Two prompts per pass: Qwen2.5-Coder-1.5B's DPO step of 8 prompts on its GGUF file peaks at
/// 2.7 GB (3.7 GB at 4 prompts, 5.5 GB at 8), for a few seconds more per step.
fn default_micro_batch() -> usize {
    2
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        OptimiserConfig { learning_rate: 5e-4, max_grad_norm: Some(1.0), weight_decay: 0.0, adam_betas: (0.9, 0.999), adam_epsilon: 1e-8, micro_batch: default_micro_batch() }
    }
}

impl OptimiserConfig {
    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let pos = |x: f64| x.is_finite() && x > 0.0;
        check(pos(self.learning_rate), "learning_rate", || format!("must be positive, not {}", self.learning_rate))?;
        check(self.max_grad_norm.is_none_or(pos), "max_grad_norm", || format!("must be positive, not {:?}", self.max_grad_norm))?;
        check(self.weight_decay.is_finite() && self.weight_decay >= 0.0, "weight_decay", || format!("must be ≥ 0, not {}", self.weight_decay))?;
        let (b1, b2) = self.adam_betas;
        check((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2), "adam_betas", || format!("must be in [0, 1), not ({b1}, {b2})"))?;
        check(pos(self.adam_epsilon), "adam_epsilon", || format!("must be positive, not {}", self.adam_epsilon))?;
        check(self.micro_batch >= 1, "micro_batch", || "must be at least 1".into())
    }
}

/// DPO training settings. Defaults follow TRL's `DPOConfig` where it has one (`beta` 0.1,
/// sigmoid loss, AdamW with `eps` 1e-8 and no weight decay, gradient norm clipped at 1),
/// with a learning rate and epoch count suited to LoRA on ~100 pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoConfig {
    /// Strength of the KL tie to the reference model.
    pub beta: f64,
    /// AdamW and gradient clipping (the keys sit at this level in JSON).
    #[serde(flatten)]
    pub optimiser: OptimiserConfig,
    /// Passes over the training pairs (at most; see `patience`).
    pub epochs: usize,
    /// Prompts (items) per optimisation step, each with all its pairs (one pair per
    /// prompt under the opposite-extreme rule, two for answers of 3, four under
    /// all-others). The loss is the mean over the step's pairs.
    pub batch_size: usize,
    /// Fraction of the known items kept out of training to choose the epoch (0: none).
    pub held_out_fraction: f64,
    /// Stop after this many epochs without a lower held-out loss.
    pub patience: usize,
    /// Prompts per forward pass when computing reference and held-out log-probabilities.
    pub eval_batch: usize,
    /// Which option is rejected against the person's.
    pub rejected: Rejected,
    /// The system prompt of the preference prompts.
    pub system: SystemPrompt,
    /// The adapters.
    pub lora: LoraConfig,
    /// Seed of the adapters' initialisation, the held-out split, the pair order and dropout.
    pub seed: u64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            optimiser: OptimiserConfig::default(),
            epochs: 3,
            batch_size: 8,
            held_out_fraction: 0.2,
            patience: 1,
            eval_batch: 16,
            rejected: Rejected::AllOthers,
            system: SystemPrompt::Plain,
            lora: LoraConfig::default(),
            seed: 0,
        }
    }
}

fn check(ok: bool, field: &'static str, message: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::Config { field, message: message() }) }
}

impl DpoConfig {
    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let pos = |x: f64| x.is_finite() && x > 0.0;
        check(pos(self.beta), "beta", || format!("must be positive, not {}", self.beta))?;
        self.optimiser.validate()?;
        check(self.epochs >= 1, "epochs", || "must be at least 1".into())?;
        check(self.batch_size >= 1, "batch_size", || "must be at least 1".into())?;
        check(self.eval_batch >= 1, "eval_batch", || "must be at least 1".into())?;
        check((0.0..=0.5).contains(&self.held_out_fraction), "held_out_fraction", || format!("must be in [0, 0.5], not {}", self.held_out_fraction))?;
        check(self.patience >= 1, "patience", || "must be at least 1".into())?;
        check(self.lora.rank >= 1, "lora.rank", || "must be at least 1".into())?;
        check(pos(self.lora.alpha), "lora.alpha", || format!("must be positive, not {}", self.lora.alpha))?;
        check((0.0..1.0).contains(&self.lora.dropout), "lora.dropout", || format!("must be in [0, 1), not {}", self.lora.dropout))?;
        check(!self.lora.targets.is_empty(), "lora.targets", || "name at least one projection".into())?;
        Ok(())
    }
}
