//! dpo-baseline: the preference and RL baselines, DPO and PPO fine-tuning of LoRA adapters
//! on a person's answers, that PAS's optimisation time is compared against (the paper claims
//! PAS needs a fifth of DPO's time; the original code has neither DPO nor PPO).
//!
//! - [`data`]: preference pairs from a subject's known items (chosen = the person's option,
//!   rejected by a documented rule).
//! - [`train`]: the sigmoid DPO loss against the frozen base model (adapters off, its
//!   log-probabilities computed once), AdamW with global gradient clipping, held-out early
//!   stopping, a per-step log with TRL's metric names, and timings. A step's gradient is
//!   accumulated over micro-batches of prompts (`OptimiserConfig::micro_batch`), so that the
//!   activations held for the backward pass are a micro-batch's; the step's common prompt
//!   prefix runs once for all of them ([`prefix`]). Over quantized weights
//!   (`Dtype::File`, ...) the frozen projections run the engine's kernels both ways
//!   (`llm_burn::model::frozen`); the trained adapters then run unmerged
//!   (`Decoder::tuned`).
//! - [`ppo`]: PPO on the same adapters, optimiser and logs, exact over the five options
//!   (clipped surrogate, KL penalty to the reference in the reward, TRL's names).
//! - [`adapters`]: save and load the adapters as safetensors in PEFT's layout.
//!
//! # Example
//!
//! ```
//! use burn::backend::Autodiff;
//! use dpo_baseline::{DpoConfig, Example, Rejected, train};
//! use llm_burn::{CpuBackend, Decoder, tiny};
//!
//! let dir = std::env::temp_dir().join(format!("dpo-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! tiny::write_model(&dir, 7)?;
//! let model = Decoder::<CpuBackend>::load(&dir, &Default::default())?;
//! let options = [0, 1, 2, 3, 4].map(tiny::option_token);
//! // Two items the person agrees with (5) and one they disagree with (1).
//! let examples: Vec<Example> = [(1, vec![1, 40, 41, 42], 5), (2, vec![1, 40, 43], 5), (3, vec![1, 44, 45], 1)]
//!     .into_iter()
//!     .filter_map(|(item, prompt, answer)| Example::new(item, prompt, answer, Rejected::OppositeExtreme))
//!     .collect();
//! let config = DpoConfig { epochs: 2, batch_size: 2, ..Default::default() };
//! let trained = train::train::<Autodiff<CpuBackend>>(&model, &examples, &[], &options, &config, |_| {})?;
//! assert_eq!(trained.report.steps, 4);
//! assert!((trained.report.first_loss - std::f64::consts::LN_2).abs() < 1e-5);
//! let tuned = model.merged(&trained.lora)?; // runs at the base model's speed
//! # let _ = tuned;
//! # Ok::<(), dpo_baseline::Error>(())
//! ```

pub mod adapters;
pub mod config;
pub mod data;
pub mod error;
pub mod ppo;
pub mod prefix;
pub mod train;

pub use config::{DpoConfig, LoraConfig, OptimiserConfig, SystemPrompt};
pub use data::{Example, Pair, Rejected};
pub use error::{Error, Result};
pub use ppo::{PpoConfig, PpoLogLine, PpoReport, PpoStep};
pub use train::{LogLine, Metrics, TrainReport, Trained, TrainingLog};
