//! What a run is asked to do ([`RunConfig`]), where it comes from ([`Provenance`]) and the
//! resolved settings that define its results ([`Settings`]: stored in the output folder so
//! that a resumed run cannot mix settings, and in `results.json`'s `meta`).

use std::path::PathBuf;

use dpo_baseline::{DpoConfig, PpoConfig};
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
    /// Only this shard of those subjects (`None`: all of them).
    pub shard: Option<Shard>,
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
    /// Known items per subject used by DPO and PPO, training and held-out together
    /// (`None`: all), balanced over domains.
    pub dpo_items: Option<usize>,
    /// PPO settings.
    pub ppo: PpoConfig,
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
            shard: None,
            test_items: None,
            search_items: None,
            batch: 16,
            bootstrap: Bootstrap::default(),
            ridge: RidgeConfig::default(),
            dpo: DpoConfig::default(),
            dpo_items: None,
            ppo: PpoConfig::default(),
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
    /// Known items per subject used by DPO and PPO (`None`: all answered).
    pub dpo_items: Option<usize>,
    /// PPO settings.
    #[serde(default)]
    pub ppo: PpoConfig,
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

/// One of `count` shards of a run's subjects: those at positions `p` (in the records' order,
/// among the run's subjects) with `p % count == index`. The partition depends on the records
/// and `count` alone, so shards run anywhere, in any order, and merge into the unsharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based index, below `count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// A shard, checked.
    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: the index must be below the count (0-based: 0/{count} .. {}/{count})", count.saturating_sub(1)));
        }
        Ok(Shard { index, count })
    }

    /// The shard a scheduler gives this process, from its environment (`var` looks a variable
    /// up): Slurm's `SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN` (0 if unset) of
    /// `SLURM_ARRAY_TASK_COUNT`, else Kubernetes' `JOB_COMPLETION_INDEX` of `count` (or
    /// `SHARD_COUNT`); `None` when neither scheduler set one.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, count: Option<usize>) -> Result<Option<Shard>, String> {
        let num = |k: &str| -> Result<Option<usize>, String> {
            var(k).map(|v| v.trim().parse::<usize>().map_err(|_| format!("{k}={v} is not a number"))).transpose()
        };
        if let (Some(id), Some(n)) = (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?) {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
            return Shard::new(index, n).map(Some);
        }
        if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            let n = match count {
                Some(n) => n,
                None => num("SHARD_COUNT")?.ok_or("JOB_COMPLETION_INDEX is set but not the number of shards: pass --shard-count N or set SHARD_COUNT")?,
            };
            return Shard::new(i, n).map(Some);
        }
        Ok(None)
    }

    /// Whether the subject at position `p` belongs to it.
    pub fn holds(&self, p: usize) -> bool {
        p % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("shard `{s}`: expected I/N, e.g. 0/4"))?;
        let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("shard `{s}`: `{x}` is not a number"));
        Shard::new(num(i)?, num(n)?)
    }
}
