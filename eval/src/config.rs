//! What a run is asked to do ([`RunConfig`]), where it comes from ([`Provenance`]) and the
//! resolved settings that define its results ([`Settings`]: stored in the output folder so
//! that a resumed run cannot mix settings, and in `results.json`'s `meta`).

use std::path::PathBuf;

use dpo_baseline::DpoConfig;
use papi_data::Keying;
use papi_data::reference::RidgeConfig;
use pas_core::PasConfig;
use serde::{Deserialize, Serialize};

use crate::decision::Decision;
use crate::method::Method;
use crate::score::Scoring;
use crate::stats::Bootstrap;

/// How the PAS strength is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlphaSelection {
    /// k folds inside the subject's known items (the default; test items never seen).
    #[default]
    Heldout,
    /// On the test items, as the official code does.
    Oracle,
}

impl AlphaSelection {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AlphaSelection::Heldout => "heldout",
            AlphaSelection::Oracle => "oracle",
        }
    }
}

impl std::str::FromStr for AlphaSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "heldout" => Ok(AlphaSelection::Heldout),
            "oracle" => Ok(AlphaSelection::Oracle),
            _ => Err(format!("unknown alpha selection `{s}` (expected heldout or oracle)")),
        }
    }
}

/// Every setting of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Methods, in report order.
    pub methods: Vec<Method>,
    /// Keying of prompts and targets.
    pub keying: Keying,
    /// How the strength is selected.
    pub alpha_selection: AlphaSelection,
    /// How answers are read.
    pub scoring: Scoring,
    /// How an answer is decided from the five option log-probabilities (the search's
    /// objective and the headline; every rule is reported side by side).
    pub decision: Decision,
    /// PAS settings (their `selection` follows `alpha_selection`).
    pub pas: PasConfig,
    /// The first N subjects of the records file (`None`: all).
    pub subjects: Option<usize>,
    /// Test items per subject (`None`: all 180), balanced over domains.
    pub test_items: Option<usize>,
    /// Held-out known items scored per strength in the search (`None`: all), balanced.
    pub search_items: Option<usize>,
    /// Items continued from a shared prefix per forward pass.
    pub batch: usize,
    /// Bootstrap settings.
    pub bootstrap: Bootstrap,
    /// Ridge reference settings.
    pub ridge: RidgeConfig,
    /// DPO settings.
    pub dpo: DpoConfig,
    /// Known items per subject used by DPO, training and held-out together (`None`: all),
    /// balanced over domains.
    pub dpo_items: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            methods: Method::ALL.to_vec(),
            keying: Keying::Corrected,
            alpha_selection: AlphaSelection::Heldout,
            scoring: Scoring::FormatAware,
            decision: Decision::default(),
            pas: PasConfig::heldout(),
            subjects: Some(1),
            test_items: None,
            search_items: None,
            batch: 16,
            bootstrap: Bootstrap::default(),
            ridge: RidgeConfig::default(),
            dpo: DpoConfig::default(),
            dpo_items: None,
        }
    }
}

/// Where a run comes from, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Git revision of the code.
    pub git_revision: String,
    /// Device, e.g. `cpu (flex)`.
    pub device: String,
    /// Model id.
    pub model_id: String,
    /// The model folder (its `config.json` and weights are hashed).
    pub model_dir: PathBuf,
}

/// The resolved settings that define a run's results: what `run.json` pins for resumption
/// and `results.json` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Keying of prompts and targets.
    pub keying: Keying,
    /// How the strength is selected.
    pub alpha_selection: AlphaSelection,
    /// How answers are read.
    pub scoring: Scoring,
    /// The decision rule of the search and the headline.
    pub decision: Decision,
    /// PAS settings (selection resolved from `alpha_selection`).
    pub pas: PasConfig,
    /// Test items per subject asked for (`None`: all).
    pub test_items: Option<usize>,
    /// Held-out known items scored per strength in the search (`None`: all).
    pub search_items: Option<usize>,
    /// DPO settings.
    pub dpo: DpoConfig,
    /// Known items per subject used by DPO (`None`: all answered).
    pub dpo_items: Option<usize>,
    /// The model's weight type.
    #[serde(default)]
    pub dtype: llm_burn::Dtype,
    /// Model id.
    pub model_id: String,
    /// Hash of the model's `config.json` and the weights' size.
    pub model_hash: String,
    /// Hash of the chat template.
    pub chat_template_hash: String,
    /// The records file's name.
    pub records: String,
}
