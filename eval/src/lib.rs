//! eval: the PAPI benchmark end to end.
//!
//! - [`prompt`]: the official question template, system prompts and prefill.
//! - [`score`]: reading the model's option from next-token log-probabilities (format-aware
//!   by default), or by greedy generation parsed as the official code does; items under one
//!   system prompt share their prefix in the KV cache and run in batches.
//! - [`decision`]: how an answer is read from the five option log-probabilities (`argmax`,
//!   `median`, `calibrated`), and the answer-bias control's logit offsets.
//! - [`Method`]: the model methods `no-change`, `option-bias`, `few-shot`, `p2`, `pas`,
//!   `pas-only`, `pas-domain`, `dpo`, `ppo` and the reference predictors `always-3`, `own-mean`,
//!   `ridge`.
//! - [`request`]: what a method asks the model, and the one executor that asks it.
//! - [`Evaluator`]: a run over subjects ([`RunConfig`] in, [`Settings`] pinned) with resumable
//!   per-subject results and held-out (or oracle) strength selection.
//! - [`align`]: a persona from one person's answers file (PAS fitted and its strength
//!   searched held out on the items they answered).
//! - [`aggregate`], [`report`]: `results.json` (every method under every decision rule,
//!   paired differences against few-shot, always-3 and own-mean, answer histograms, the
//!   diagnostic), `report.md` and `totals.svg`, and re-deciding a finished run from its
//!   `samples.jsonl.gz`.
//! - [`files`]: how a run's files are written and read (atomic writes, JSON, the samples).
//! - [`published`]: the tables a README quotes, rendered from a published run's
//!   `results.json`, and the check that the README's copies are current.
//! - [`stats`]: bootstrap intervals over subjects and paired differences.
//!
//! # Example
//!
//! The official prompt of an item and the parser of generated answers:
//!
//! ```
//! use eval::prompt::{question, few_shot_system};
//! use eval::score::parse_official;
//!
//! assert!(question("Worry about things.").contains("\"You worry about things..\""));
//! assert_eq!(parse_official("Option (B). Moderately"), Some(1));
//! assert_eq!(parse_official("Option is unclear"), None);
//! ```
//!
//! Decision rules on one item's option log-probabilities (A..E):
//!
//! ```
//! use eval::Decision;
//!
//! let lp = [0.40f32.ln(), -30.0, 0.25f32.ln(), -30.0, 0.35f32.ln()];
//! assert_eq!(Decision::Argmax.decide(&lp, None), Some(0)); // A
//! assert_eq!(Decision::Median.decide(&lp, None), Some(2)); // C: the median answer
//! ```
//!
//! A whole run (see `cargo xtask reproduce` for the command line):
//!
//! ```no_run
//! use eval::{Evaluator, Provenance, RunConfig};
//! use llm_burn::{CpuBackend, Decoder, PromptEncoder};
//!
//! let dir = std::path::PathBuf::from(".cache/models/SmolLM2-135M-Instruct");
//! let model = Decoder::<CpuBackend>::load(&dir, &Default::default())?;
//! let prompts = PromptEncoder::from_dir(&dir)?;
//! let data = papi_data::Dataset::load("data/papi", None)?;
//! let p2 = eval::run::load_p2("data/papi/personality-prompts-dev-200.json".as_ref())?;
//! let provenance = Provenance { git_revision: "unknown".into(), device: "cpu".into(), model_id: "SmolLM2-135M-Instruct".into(), model_dir: dir };
//! let results = Evaluator::new(&model, &prompts, &data, Some(p2), RunConfig::default(), provenance, "results/example")?.run()?;
//! println!("{}", eval::report::render_markdown(&results));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod aggregate;
pub mod align;
pub mod config;
pub mod decision;
pub mod device_check;
pub mod error;
pub mod files;
pub mod merge;
pub mod method;
pub mod prompt;
pub mod published;
pub mod report;
pub mod request;
pub mod results;
pub mod run;
pub mod score;
pub mod stats;

pub use error::{Error, Result};
pub use method::Method;
pub use results::{Results, Run, SubjectResult};
pub use config::{AlphaSelection, Provenance, RunConfig, Settings};
pub use decision::Decision;
pub use run::{Evaluator, Phase};
pub use score::{Scorer, Scoring};
