//! What a run writes: per-subject results, `results.json` (the DESIGN contract), and
//! `report.md` and `totals.svg` rendered from `results.json` alone.

use std::collections::BTreeMap;

use papi_data::PerDomain;
use pas_core::{Fallback, KlCurve, SearchResult, Setting};
use serde::{Deserialize, Serialize};

use dpo_baseline::{PpoReport, TrainReport};
use papi_data::Keying;

use crate::config::{AlphaSelection, Settings};
use crate::decision::Decision;
use crate::method::Method;
use crate::score::{ScorePath, Scoring};
use crate::stats::Interval;

/// The version of `results.json` and `samples.jsonl` (1: before decision rules; 2: typed
/// methods, `meta.settings`, decisions, diagnostic, `plain_logprobs`).
pub const FORMAT_VERSION: u32 = 2;

/// Seconds or tokens per phase of a method.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Phases<T> {
    /// Activation collection (shared by all subjects; PAS methods only).
    pub collect: T,
    /// Probe fits (PAS methods only).
    pub probes: T,
    /// Strength search (PAS methods only).
    pub search: T,
    /// Evaluation of the test items.
    pub eval: T,
    /// Reference log-probabilities of the preference prompts (DPO only).
    #[serde(default)]
    pub reference: T,
    /// Optimisation steps and held-out checks (DPO only).
    #[serde(default)]
    pub train: T,
}

impl<T: Copy> Phases<T> {
    /// Each phase through `f`.
    pub fn map<U>(&self, f: impl Fn(T) -> U) -> Phases<U> {
        Phases {
            collect: f(self.collect),
            probes: f(self.probes),
            search: f(self.search),
            eval: f(self.eval),
            reference: f(self.reference),
            train: f(self.train),
        }
    }
}

impl<T: Copy + std::ops::Add<Output = T>> Phases<T> {
    /// The sum of the phases.
    pub fn sum(&self) -> T {
        self.collect + self.probes + self.search + self.eval + self.reference + self.train
    }

    /// Phase-wise sum.
    pub fn plus(&self, o: &Self) -> Self {
        Phases {
            collect: self.collect + o.collect,
            probes: self.probes + o.probes,
            search: self.search + o.search,
            eval: self.eval + o.eval,
            reference: self.reference + o.reference,
            train: self.train + o.train,
        }
    }
}

/// One item of one subject under one method (a line of `samples.jsonl`, with the subject
/// and method added).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Item number (1..=300).
    pub item: u16,
    /// Domain letter.
    pub domain: char,
    /// Log-probabilities of options A..E where the answer was read (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<[f32; 5]>,
    /// The unsteered model's log-probabilities of the same item under the default system
    /// prompt (LLM methods): what the calibrated rule subtracts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_logprobs: Option<[f32; 5]>,
    /// The option letter read by the run's decision rule (LLM methods; none when generation
    /// did not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<char>,
    /// The predicted answer, 1..=5.
    pub answer: Option<u8>,
    /// The person's answer under the run's keying (0: missing, scored as-released only).
    pub target: Option<u8>,
    /// |answer - target| where both exist.
    pub error: Option<u8>,
    /// How the answer was read (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<ScorePath>,
    /// The generated text (generate scoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Hash of the rendered prompt (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hash: Option<String>,
}

/// What PAS did for one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasRecord {
    /// The strength used on the test items.
    pub alpha: f64,
    /// The search: every strength tried and its objective (held-out or oracle Total).
    pub search: Option<SearchResult>,
    /// Heads steered.
    pub heads: usize,
    /// Layers with a steered head, ascending.
    pub layers: Vec<u32>,
    /// Mean sigma of the steered heads.
    pub mean_sigma: f64,
    /// Labelled contrast pairs (items answered other than 3 or missing).
    pub pairs: usize,
    /// Why there is no intervention, if there is none.
    pub fallback: Option<Fallback>,
    /// The search over where to steer and the strength in KL nats (the `calibrated` PAS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteeringSearch>,
}

/// One candidate of the held-out search: a setting at one grid value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Where it steered.
    pub setting: Setting,
    /// The grid value: KL nats (KL unit) or raw alpha.
    pub value: f64,
    /// The raw strength it took on each fold.
    pub alphas: Vec<f64>,
    /// The mean KL(steered || unsteered) over the five options that it measured on the
    /// folds' items (nats).
    pub kl: f64,
    /// The held-out Total over the folds' items.
    pub objective: f64,
    /// Its standard error over those items.
    pub se: f64,
}

/// The held-out search over strength and where to steer, as recorded per subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeringSearch {
    /// Every candidate evaluated, in preference order (smallest effect first).
    pub candidates: Vec<Candidate>,
    /// The chosen candidate's index.
    pub chosen: usize,
    /// KL unit: each setting's curves on the folds (`[setting][fold]`, settings in
    /// [`pas_core::PasConfig::candidate_settings`] order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fold_curves: Vec<Vec<KlCurve>>,
    /// KL unit: the final intervention's curve under the full prompt on known items (the
    /// folds' calibration items), from which its raw strength was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_curve: Option<KlCurve>,
}

impl SteeringSearch {
    /// The chosen candidate (none when no grid value was reachable on every fold).
    pub fn choice(&self) -> Option<&Candidate> {
        self.candidates.get(self.chosen)
    }
}

/// One line of `samples.jsonl`: an item of a subject under a method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Subject id.
    pub subject: i64,
    /// The method.
    pub method: Method,
    /// Keying of the target.
    pub keying: Keying,
    /// The item.
    #[serde(flatten)]
    pub item: ItemRecord,
}

/// One subject under one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectResult {
    /// Subject id.
    pub case: i64,
    /// The method.
    pub method: Method,
    /// MAE per domain over the test items.
    pub mae: PerDomain<Option<f64>>,
    /// Sum of the five domain MAEs.
    pub total: Option<f64>,
    /// Per item.
    pub items: Vec<ItemRecord>,
    /// PAS details (pas, pas-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pas: Option<PasRecord>,
    /// Per-domain PAS details by domain letter (pas-domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pas_domains: Option<BTreeMap<String, PasRecord>>,
    /// The fitted logit offsets of options A..E (option-bias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_bias: Option<[f64; 5]>,
    /// The decision rule chosen on this person's held-out known items (`--decision held-out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_choice: Option<crate::decision::RuleChoice>,
    /// DPO training details (dpo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<TrainReport>,
    /// PPO training details (ppo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppo: Option<PpoReport>,
    /// DPO and PPO: whether the adapters were merged into float weights (`true`) or applied
    /// unmerged beside quantized ones (`false`), as the test items were scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters_merged: Option<bool>,
    /// Seconds per phase spent on this subject (shared work not included).
    pub seconds: Phases<f64>,
    /// Tokens run per phase for this subject (shared work not included).
    pub tokens: Phases<u64>,
}

impl SubjectResult {
    /// A result with its items and MAEs (Total derived), no method details and no time.
    pub fn new(case: i64, method: Method, mae: PerDomain<Option<f64>>, items: Vec<ItemRecord>) -> Self {
        SubjectResult {
            case,
            method,
            mae,
            total: papi_data::scoring::subject_total(&mae),
            items,
            pas: None,
            pas_domains: None,
            option_bias: None,
            rule_choice: None,
            dpo: None,
            ppo: None,
            adapters_merged: None,
            seconds: Phases::default(),
            tokens: Phases::default(),
        }
    }
}

/// The strengths chosen over subjects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlphaSummary {
    /// Mean chosen strength.
    pub mean: f64,
    /// How often each strength was chosen.
    pub counts: BTreeMap<String, usize>,
    /// Subjects that got no intervention (too few pairs, one class, ...).
    pub fallbacks: usize,
    /// How often each grid value in KL nats was chosen (the KL unit).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kl_counts: BTreeMap<String, usize>,
    /// How often each setting (where to steer) was chosen, when several were searched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, usize>,
    /// Per grid value of a held-out search over settings or in KL: the folds' Total and
    /// raw strength over the people (each person's best setting at that value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_value: Vec<ValueSummary>,
}

/// One grid value of the held-out searches over people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSummary {
    /// The grid value (KL nats, or raw alpha).
    pub value: f64,
    /// People whose folds reached it.
    pub people: usize,
    /// Mean over those people of the folds' Total at it (their best setting).
    pub objective: f64,
    /// Median over those people of the mean raw strength it took on their folds.
    pub alpha: f64,
}

/// One method's aggregate (an entry of `results.json`'s `runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The method.
    pub method: Method,
    /// Whether it is a reference predictor (no model).
    pub reference: bool,
    /// Keying of prompts and targets.
    pub keying: Keying,
    /// How the strength was selected.
    pub alpha_selection: AlphaSelection,
    /// How answers were read (LLM methods).
    pub scoring: Option<Scoring>,
    /// The decision rule of this row (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Share of answers 5..1 (options A..E) over every subject's test items.
    #[serde(default)]
    pub answers: [f64; 5],
    /// The letter of nearly every answer (at least [`ONE_LETTER`] of them), if there is one:
    /// the method is an answer bias, not an alignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_letter: Option<char>,
    /// Subjects aggregated.
    pub subjects: usize,
    /// Mean over subjects of each domain's MAE.
    pub per_domain: BTreeMap<String, f64>,
    /// 95% bootstrap interval of each domain's mean.
    pub per_domain_ci95: BTreeMap<String, [f64; 2]>,
    /// Sum of the five domain means (lower is better); null when a domain has no value.
    pub total: Option<f64>,
    /// 95% bootstrap interval of the Total over subjects.
    pub total_ci95: Option<[f64; 2]>,
    /// Wall time of the method: its share of shared work plus every subject's.
    pub seconds: f64,
    /// `seconds` divided by the subjects.
    pub seconds_per_subject: f64,
    /// Seconds per phase (activation collection counted once).
    pub phases: Phases<f64>,
    /// Tokens run per phase.
    pub tokens: Phases<u64>,
    /// Chosen strengths (PAS methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<AlphaSummary>,
    /// How often each decision rule was chosen on the people's held-out known items
    /// (`--decision held-out`; empty otherwise).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules_chosen: BTreeMap<String, usize>,
    /// Share of items whose letter was found within the format-aware lookahead, or parsed
    /// from the generation (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter_found: Option<f64>,
}

/// Below this many people a bootstrap interval is degenerate (one person: a point): the
/// published tables show the point alone, with no interval and no ✓.
pub const FEW_PEOPLE: usize = 3;

impl Run {
    /// The method's name for tables, with the people it ran on when fewer than the run's
    /// `people` (a run made in parts): `dpo (2 of 10 people)`.
    pub fn label(&self, people: usize) -> String {
        if self.subjects < people { format!("{} ({} of {people} people)", self.method, self.subjects) } else { self.method.to_string() }
    }
}

/// A method compared with another on the same subjects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The method.
    pub method: Method,
    /// What it is compared with.
    pub baseline: Method,
    /// Subjects with a Total under both.
    pub subjects: usize,
    /// Mean over subjects of (method Total - baseline Total); negative: the method is better.
    pub difference: f64,
    /// Its 95% bootstrap interval.
    pub ci95: [f64; 2],
}

/// The optimisation time per subject of PAS, DPO and PPO side by side (the paper claims
/// PAS needs a fifth of DPO's), for those that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimisationTime {
    /// The PAS method measured (`pas`, else `pas-only`).
    pub pas_method: Method,
    /// PAS per subject: activation collection divided over the subjects, probe fits and
    /// the strength search (not the final evaluation).
    pub pas_seconds: f64,
    /// DPO per subject: reference log-probabilities and training (not the evaluation).
    pub dpo_seconds: Option<f64>,
    /// `dpo_seconds / pas_seconds`.
    pub ratio: Option<f64>,
    /// PPO per subject: reference log-probabilities and training (not the evaluation).
    #[serde(default)]
    pub ppo_seconds: Option<f64>,
    /// `ppo_seconds / pas_seconds`.
    #[serde(default)]
    pub ppo_ratio: Option<f64>,
    /// `ppo_seconds / dpo_seconds`.
    #[serde(default)]
    pub ppo_dpo_ratio: Option<f64>,
    /// Subjects PAS's time is averaged over.
    pub subjects: usize,
    /// Subjects DPO's (else PPO's) time is averaged over, when fewer have been trained than
    /// searched (0 in files written before it was recorded: the same as `subjects`).
    #[serde(default)]
    pub tuned_subjects: usize,
    /// Each trained person (DPO's or PPO's), in the run's order: the three methods'
    /// optimisation seconds and the person's Totals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<PersonTime>,
}

/// One trained person: PAS's, DPO's and PPO's optimisation seconds (as [`OptimisationTime`]
/// counts them: PAS with its share of the activation collection) and Totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonTime {
    /// The person.
    pub case: i64,
    /// PAS's optimisation seconds, if PAS ran on this person.
    pub pas_seconds: Option<f64>,
    /// DPO's reference and training seconds, if it trained this person.
    pub dpo_seconds: Option<f64>,
    /// PPO's reference and training seconds, if it trained this person.
    pub ppo_seconds: Option<f64>,
    /// The person's Total under each method of [`PersonTime::METHODS`] the run has.
    pub totals: BTreeMap<String, f64>,
}

impl PersonTime {
    /// The methods whose Totals are kept, in the order tables show them.
    pub const METHODS: [Method; 6] = [Method::FewShot, Method::Pas, Method::Dpo, Method::Ppo, Method::OwnMean, Method::Always3];
}

/// A requested method that produced no row, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotRun {
    /// The method.
    pub method: Method,
    /// Why.
    pub reason: String,
}

/// Everything about how a run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The version of this format ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The tool and its version.
    pub tool: String,
    /// Git revision of the code (with `-dirty` when the tree had changes).
    pub git_revision: String,
    /// Where it ran, e.g. `cpu (flex)`.
    pub device: String,
    /// The settings that define the results.
    pub settings: Settings,
    /// The records file: relative to where the run was made, or its name alone.
    pub records_path: String,
    /// How missing answers count.
    pub missing_answers: String,
    /// Test items per subject.
    pub test_items: usize,
    /// Items continued from a shared prefix per forward pass.
    pub batch: usize,
    /// Subjects' case ids, in order (this shard's, when sharded).
    pub cases: Vec<i64>,
    /// The shard these results cover, if the run was sharded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::config::Shard>,
    /// Every subject of the whole (unsharded) run, in order.
    #[serde(default)]
    pub selection: Vec<i64>,
    /// Bootstrap resamples and seed.
    pub bootstrap: crate::stats::Bootstrap,
    /// Ridge reference settings.
    pub ridge: papi_data::reference::RidgeConfig,
    /// Shared work: activation collection seconds and tokens (once per run).
    pub collect_seconds: f64,
    /// Tokens of the activation collection.
    pub collect_tokens: u64,
    /// Shared work: the unsteered plain-prompt pass over the known and test items.
    #[serde(default)]
    pub plain_seconds: f64,
    /// Tokens of that pass.
    #[serde(default)]
    pub plain_tokens: u64,
    /// Whether DPO ran (its settings are in `settings.dpo`).
    pub dpo_ran: bool,
    /// Whether PPO ran (its settings are in `settings.ppo`).
    #[serde(default)]
    pub ppo_ran: bool,
}

/// One method under one decision rule (the rules side by side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// The method.
    pub method: Method,
    /// The rule.
    pub decision: Decision,
    /// Total (sum of the domain means).
    pub total: Option<f64>,
    /// Its 95% bootstrap interval.
    pub total_ci95: Option<[f64; 2]>,
    /// Paired difference against always-3 (negative: better), with its interval, when
    /// always-3 is in the run.
    pub vs_always3: Option<(f64, [f64; 2])>,
    /// Paired difference against own-mean, with its interval, when own-mean is in the run.
    pub vs_own_mean: Option<(f64, [f64; 2])>,
    /// Share of answers 5..1 (options A..E).
    pub answers: [f64; 5],
}

/// What the model can do at all, before any person: how its unsteered answers relate to the
/// population's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Items in the correlation (known and test items scored under the default prompt).
    pub items: usize,
    /// Subjects of the records file averaged per item.
    pub population: usize,
    /// Pearson correlation between the unsteered model's expected answer per item and the
    /// population's mean answer to that item (run keying, missing answers excluded).
    pub correlation: Option<f64>,
    /// The same over the test items only.
    pub correlation_test: Option<f64>,
    /// Share of the unsteered model's argmax answers A..E over those items.
    pub argmax_answers: [f64; 5],
    /// Mean of the unsteered model's expected answer over those items, and the population's.
    pub mean_expected: f64,
    /// The population's mean answer over those items.
    pub mean_population: f64,
}

/// The content of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// How the run was made.
    pub meta: Meta,
    /// One row per method, reference predictors included.
    pub runs: Vec<Run>,
    /// Every method against few-shot, always-3 and own-mean, and DPO and PPO against PAS
    /// (those in the run), paired by subject, under the headline rule.
    pub comparisons: Vec<Comparison>,
    /// Every method under every decision rule (reference predictors: one rule-free row).
    #[serde(default)]
    pub decisions: Vec<DecisionRow>,
    /// The unsteered model against the population.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<Diagnostic>,
    /// Requested methods without a row.
    pub not_run: Vec<NotRun>,
    /// PAS's optimisation time against DPO's (when both ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimisation_time: Option<OptimisationTime>,
}

/// The share of answers above which a method is flagged as answering one letter.
pub const ONE_LETTER: f64 = 0.9;

/// A domain map keyed by letter.
pub fn by_letter<T: Clone>(v: &PerDomain<Option<T>>) -> BTreeMap<String, T> {
    v.iter().filter_map(|(d, x)| x.clone().map(|x| (d.letter().to_string(), x))).collect()
}

/// An interval as `[lo, hi]`.
pub(crate) fn ci_pair(i: Interval) -> [f64; 2] {
    [i.lo, i.hi]
}

