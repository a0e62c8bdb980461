//! A benchmark run: every method on every subject, shared work done once, results written
//! per subject as they finish (a killed run resumes where it stopped), then aggregated into
//! `results.json`, `report.md`, `totals.svg` and `samples.jsonl`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use dpo_baseline::{DpoConfig, Example, LogLine, SystemPrompt, TrainReport};
use indicatif::ProgressBar;
use llm_burn::{Llama, PromptEncoder};
use papi_data::reference::{self, RidgeConfig};
use papi_data::scoring::{Predictions, subject_mae, subject_total, target};
use papi_data::{Dataset, Folds, Inventory, Keying, MissingAnswers, PerDomain, Protocol, Subject};
use pas_core::{ContrastPair, HeadActivations, PasConfig, Positions, Preference, Search, Selection, Steerable, Steering, fit_intervention, labelled_samples};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::method::Method;
use crate::prompt::{DEFAULT_SYSTEM, LETTERS, PREFILL, answer_of_option, contrast_question, few_shot_system, question};
use crate::results::{
    AlphaSummary, Comparison, ItemRecord, Meta, OptimisationTime, PasRecord, Phases, Results, Run, SubjectResult, by_letter, ci_pair,
};
use crate::score::{ItemScore, Scored, Scorer, Scoring, short_hash};
use crate::stats::{Bootstrap, aggregate_ci, paired_difference};

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

/// The settings that must not change between a run and its resumption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fingerprint {
    keying: Keying,
    alpha_selection: AlphaSelection,
    scoring: Scoring,
    pas: PasConfig,
    test_items: Option<usize>,
    search_items: Option<usize>,
    model_id: String,
    model_hash: String,
    chat_template_hash: String,
    records: String,
    #[serde(default)]
    dpo: DpoConfig,
    #[serde(default)]
    dpo_items: Option<usize>,
}

/// Writes a file atomically (a temporary file renamed into place).
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, content).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("line {}, column {}: {e}", e.line(), e.column())))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::file(path, e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// Reads P² personality prompts: a JSON array of records whose `output` is a list holding
/// the description first (the PAPI `personality-prompts` file).
pub fn load_p2(path: &Path) -> Result<Vec<String>> {
    let records: Vec<serde_json::Value> = read_json(path)?;
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.get("output")
                .and_then(|o| o.get(0))
                .and_then(|o| o.as_str())
                .map(str::to_owned)
                .ok_or_else(|| Error::file(path, format!("record {i}: field `output` must be a list whose first element is the description text")))
        })
        .collect()
}

/// Up to `n` of `items` balanced over domains: round-robin over A, C, E, N, O, each domain's
/// items in the given order.
pub fn balanced(items: &[u16], inventory: &Inventory, n: Option<usize>) -> Vec<u16> {
    let Some(n) = n else { return items.to_vec() };
    let mut by_domain: Vec<std::collections::VecDeque<u16>> = vec![Default::default(); 5];
    for &i in items {
        if let Some(item) = inventory.item(i) {
            by_domain[item.domain().index()].push_back(i);
        }
    }
    let mut picked = Vec::new();
    while picked.len() < n && by_domain.iter().any(|d| !d.is_empty()) {
        for d in &mut by_domain {
            if picked.len() < n
                && let Some(i) = d.pop_front()
            {
                picked.push(i);
            }
        }
    }
    // Keep the split's order.
    items.iter().copied().filter(|i| picked.contains(i)).collect()
}

/// The activations of the contrast prompts: for known item k (split order), row 2k is the
/// most-agree answer and row 2k + 1 the most-disagree one.
#[derive(Debug, Clone)]
pub struct Contrast {
    /// `[2 * known, layers, heads, head_dim]`.
    pub acts: HeadActivations,
    /// Seconds it took (0 when read from the run's cache).
    pub seconds: f64,
    /// Tokens run.
    pub tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContrastMeta {
    prompts_hash: String,
    samples: usize,
    geometry: pas_core::Geometry,
    seconds: f64,
    tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedScores {
    items: Vec<ItemScore>,
    seconds: f64,
    tokens: u64,
}

/// One benchmark run over a dataset with one model.
pub struct Evaluator<'a, B: Backend> {
    model: &'a Llama<B>,
    prompts: &'a PromptEncoder,
    data: &'a Dataset,
    p2: Option<Vec<String>>,
    config: RunConfig,
    provenance: Provenance,
    out: PathBuf,
    progress: ProgressBar,
}

fn model_hash(dir: &Path) -> String {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    let size = std::fs::metadata(dir.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
    format!("{}-{size}", short_hash(&config))
}

impl<'a, B: Backend> Evaluator<'a, B> {
    /// Prepares a run writing into `out`. `p2` holds one description per subject of the
    /// dataset, in the records' order (needed for the `p2` method; the counts must agree).
    pub fn new(
        model: &'a Llama<B>,
        prompts: &'a PromptEncoder,
        data: &'a Dataset,
        p2: Option<Vec<String>>,
        mut config: RunConfig,
        provenance: Provenance,
        out: impl Into<PathBuf>,
    ) -> Result<Self> {
        config.pas.selection = match config.alpha_selection {
            AlphaSelection::Oracle => Selection::Oracle,
            AlphaSelection::Heldout => match config.pas.selection {
                s @ Selection::HeldOut { .. } => s,
                Selection::Oracle => PasConfig::heldout().selection,
            },
        };
        config.pas.validate()?;
        if config.methods.is_empty() {
            return Err(Error::Config("no method to run".into()));
        }
        if config.batch == 0 {
            return Err(Error::Config("--batch must be at least 1".into()));
        }
        if config.methods.contains(&Method::Dpo) {
            config.dpo.validate()?;
        }
        if config.dpo_items.is_some_and(|n| n < 2) {
            return Err(Error::Config("--dpo-items must be at least 2".into()));
        }
        if config.subjects == Some(0) {
            return Err(Error::Config("--subjects must be at least 1".into()));
        }
        if let Some(p) = &p2
            && p.len() != data.subjects.len()
        {
            return Err(Error::Config(format!(
                "the P² prompts file has {} descriptions but {} has {} subjects: they are matched by order, so the counts must agree",
                p.len(),
                data.records_path.display(),
                data.subjects.len()
            )));
        }
        if config.methods.contains(&Method::P2) && p2.is_none() {
            return Err(Error::Config("method p2 needs a personality-prompts file (--p2-prompts FILE)".into()));
        }
        Ok(Evaluator { model, prompts, data, p2, config, provenance, out: out.into(), progress: ProgressBar::hidden() })
    }

    /// Shows progress on this bar (subjects × model methods).
    pub fn with_progress(mut self, bar: ProgressBar) -> Self {
        self.progress = bar;
        self
    }

    /// The resolved settings.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    fn protocol(&self) -> Protocol {
        Protocol::for_keying(self.config.keying)
    }

    fn subjects(&self) -> &'a [Subject] {
        let n = self.config.subjects.unwrap_or(usize::MAX).min(self.data.subjects.len());
        &self.data.subjects[..n]
    }

    fn test_items(&self) -> Vec<u16> {
        balanced(&self.data.split.test, &self.data.inventory, self.config.test_items)
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            keying: self.config.keying,
            alpha_selection: self.config.alpha_selection,
            scoring: self.config.scoring,
            pas: self.config.pas.clone(),
            test_items: self.config.test_items,
            search_items: self.config.search_items,
            model_id: self.provenance.model_id.clone(),
            model_hash: model_hash(&self.provenance.model_dir),
            chat_template_hash: short_hash(self.prompts.template.source()),
            records: self.data.records_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            dpo: self.config.dpo.clone(),
            dpo_items: self.config.dpo_items,
        }
    }

    /// Checks (or records) that `out` belongs to a run with these settings.
    fn claim_out_dir(&self) -> Result<()> {
        let path = self.out.join("run.json");
        let mine = self.fingerprint();
        if path.exists() {
            let theirs: Fingerprint = read_json(&path)?;
            if theirs != mine {
                let a = serde_json::to_value(&theirs).unwrap_or_default();
                let b = serde_json::to_value(&mine).unwrap_or_default();
                let fields: Vec<String> = a
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                    .map(|(k, v)| format!("{k}: {v} there, {} now", b.get(k.as_str()).cloned().unwrap_or_default()))
                    .collect();
                return Err(Error::file(
                    &path,
                    format!("this output folder holds a run with other settings ({}); use another --out", fields.join("; ")),
                ));
            }
            return Ok(());
        }
        write_json(&path, &mine)
    }

    fn subject_path(&self, method: Method, case: i64) -> PathBuf {
        self.out.join("subjects").join(method.name()).join(format!("{case}.json"))
    }

    /// Runs what is not done yet and writes the reports; returns the results.
    pub fn run(&self) -> Result<Results> {
        std::fs::create_dir_all(&self.out).map_err(|e| Error::io(&self.out, e))?;
        self.claim_out_dir()?;
        let subjects = self.subjects();
        let mut seen = std::collections::HashSet::new();
        if let Some(s) = subjects.iter().find(|s| !seen.insert(s.case)) {
            return Err(Error::file(&self.data.records_path, format!("case {} appears twice; results are stored by case", s.case)));
        }
        let scorer = Scorer::new(self.model, self.prompts, self.config.scoring, self.config.batch)?;
        let model_methods: Vec<Method> =
            self.config.methods.iter().copied().filter(|m| m.reference().is_none()).collect();
        let todo: Vec<(usize, Method)> = subjects
            .iter()
            .enumerate()
            .flat_map(|(i, s)| model_methods.iter().map(move |&m| (i, m)).filter(move |&(_, m)| !self.subject_path(m, s.case).exists()))
            .collect();
        self.progress.set_length((subjects.len() * model_methods.len()) as u64);
        self.progress.set_position((subjects.len() * model_methods.len() - todo.len()) as u64);

        let mut shared = BTreeMap::<Method, Phases<(f64, u64)>>::new();
        let needs_contrast = model_methods.iter().any(|m| m.is_pas());
        let contrast = if needs_contrast {
            self.progress.set_message("collecting head activations of the contrast prompts");
            let c = self.contrast()?;
            for m in model_methods.iter().filter(|m| m.is_pas()) {
                shared.entry(*m).or_default().collect = (c.seconds, c.tokens);
            }
            Some(c)
        } else {
            None
        };
        let no_change = if model_methods.contains(&Method::NoChange) {
            self.progress.set_message("no-change (shared by all subjects)");
            let s = self.no_change(&scorer)?;
            shared.entry(Method::NoChange).or_default().eval = (s.seconds, s.tokens);
            Some(s)
        } else {
            None
        };

        for (i, method) in todo {
            let subject = &subjects[i];
            self.progress.set_message(format!("case {} · {method}", subject.case));
            let result = match method {
                Method::NoChange => {
                    let s = no_change.as_ref().expect("computed above");
                    self.record(subject, method, &s.items, None, Phases::default(), Phases::default())
                }
                Method::FewShot | Method::P2 => {
                    let system = if method == Method::P2 {
                        self.p2.as_ref().expect("checked in new")[i].clone()
                    } else {
                        self.few_shot(subject, &self.data.split.known)
                    };
                    let t = Instant::now();
                    let scored = scorer.score(&system, &self.questions(&self.test_items()), &Steering::none(self.model.geometry()))?;
                    let seconds = Phases { eval: t.elapsed().as_secs_f64(), ..Default::default() };
                    let tokens = Phases { eval: scored.tokens, ..Default::default() };
                    self.record(subject, method, &scored.items, None, seconds, tokens)
                }
                Method::Pas | Method::PasOnly => self.pas(&scorer, subject, method, contrast.as_ref().expect("computed above"))?,
                Method::Dpo => self.dpo(subject)?,
                _ => unreachable!("reference predictors are not model methods"),
            };
            write_json(&self.subject_path(method, subject.case), &result)?;
            self.progress.inc(1);
        }
        self.progress.set_message("writing reports");
        let results = self.aggregate(&shared)?;
        self.progress.finish_and_clear();
        Ok(results)
    }

    fn questions(&self, items: &[u16]) -> Vec<String> {
        items.iter().map(|&n| question(&self.data.inventory.item(n).expect("split items are in the inventory").text)).collect()
    }

    fn few_shot(&self, subject: &Subject, items: &[u16]) -> String {
        few_shot_system(&self.data.inventory, subject, items, self.config.keying, self.protocol().missing)
    }

    /// An item's record from a predicted answer alone (the model fields left empty).
    fn item_record(&self, subject: &Subject, item: u16, answer: Option<u8>) -> ItemRecord {
        let inv = &self.data.inventory;
        let t = target(inv, subject, item, self.protocol());
        ItemRecord {
            item,
            domain: inv.item(item).map_or('?', |i| i.domain().letter()),
            logprobs: None,
            choice: None,
            answer,
            target: t,
            error: answer.zip(t).map(|(a, t)| a.abs_diff(t)),
            path: None,
            text: None,
            prompt_hash: None,
        }
    }

    /// Turns item scores into a subject's result.
    fn record(
        &self,
        subject: &Subject,
        method: Method,
        scores: &[ItemScore],
        pas: Option<PasRecord>,
        seconds: Phases<f64>,
        tokens: Phases<u64>,
    ) -> SubjectResult {
        let items = self.test_items();
        let inv = &self.data.inventory;
        let mut preds = Predictions::empty(inv.len());
        let records = items
            .iter()
            .zip(scores)
            .map(|(&n, s)| {
                let answer = s.choice.map(answer_of_option);
                if let Some(a) = answer {
                    preds.set(n, a);
                }
                ItemRecord {
                    logprobs: Some(s.logprobs),
                    choice: s.choice.map(|c| LETTERS[c]),
                    path: Some(s.path.clone()),
                    text: s.text.clone(),
                    prompt_hash: Some(s.prompt_hash.clone()),
                    ..self.item_record(subject, n, answer)
                }
            })
            .collect();
        let mae = subject_mae(inv, subject, &items, self.protocol(), &preds);
        SubjectResult {
            case: subject.case,
            method: method.name().into(),
            mae,
            total: subject_total(&mae),
            items: records,
            pas,
            dpo: None,
            seconds,
            tokens,
        }
    }

    /// The activations of the 2 × known contrast prompts (read from the run's cache when
    /// they were computed before with the same prompts).
    pub fn contrast(&self) -> Result<Contrast> {
        let (agree, disagree) = &self.config.pas.contrast;
        let mut rows = Vec::new();
        let mut rendered = String::new();
        for &n in &self.data.split.known {
            let text = &self.data.inventory.item(n).expect("split items are in the inventory").text;
            for answer in [agree, disagree] {
                let r = self.prompts.render(DEFAULT_SYSTEM, &contrast_question(text), answer)?;
                rows.push(self.prompts.encode(&r)?);
                rendered.push_str(&r);
            }
        }
        let hash = short_hash(&rendered);
        let geometry = self.model.geometry();
        let (meta_path, bin_path) = (self.out.join("shared/activations.json"), self.out.join("shared/activations.f32"));
        if meta_path.exists() && bin_path.exists() {
            let meta: ContrastMeta = read_json(&meta_path)?;
            if meta.prompts_hash == hash && meta.samples == rows.len() && meta.geometry == geometry {
                let bytes = std::fs::read(&bin_path).map_err(|e| Error::io(&bin_path, e))?;
                let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                let acts = HeadActivations::new(geometry, rows.len(), data).map_err(|e| Error::file(&bin_path, e.to_string()))?;
                return Ok(Contrast { acts, seconds: meta.seconds, tokens: meta.tokens });
            }
        }
        let t = Instant::now();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let positions: Vec<usize> = rows.iter().map(|r| r.len() - 1).collect();
        let acts = self.model.capture(&refs, &positions)?;
        let seconds = t.elapsed().as_secs_f64();
        let tokens = rows.iter().map(|r| r.len() as u64).sum();
        let bytes: Vec<u8> = acts.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        write_atomic(&bin_path, &bytes)?;
        write_json(&meta_path, &ContrastMeta { prompts_hash: hash, samples: rows.len(), geometry, seconds, tokens })?;
        Ok(Contrast { acts, seconds, tokens })
    }

    /// The no-change answers: the same prompts for every subject, so computed once.
    fn no_change(&self, scorer: &Scorer<'_, B>) -> Result<SharedScores> {
        let path = self.out.join("shared/no-change.json");
        if path.exists() {
            return read_json(&path);
        }
        let t = Instant::now();
        let scored = scorer.score(DEFAULT_SYSTEM, &self.questions(&self.test_items()), &Steering::none(self.model.geometry()))?;
        let s = SharedScores { items: scored.items, seconds: t.elapsed().as_secs_f64(), tokens: scored.tokens };
        write_json(&path, &s)?;
        Ok(s)
    }

    /// PAS (few-shot prompt + steering) or PAS-only (default prompt + steering) for one
    /// subject: labels, probes, strength search, evaluation at the chosen strength.
    fn pas(&self, scorer: &Scorer<'_, B>, subject: &Subject, method: Method, contrast: &Contrast) -> Result<SubjectResult> {
        let inv = &self.data.inventory;
        let known = &self.data.split.known;
        let keying = self.config.keying;
        let cfg = &self.config.pas;
        let with_few_shot = method == Method::Pas;
        let system_for = |items: &[u16]| if with_few_shot { self.few_shot(subject, items) } else { DEFAULT_SYSTEM.to_owned() };
        // Labels: group k is known item k; its pair is rows (2k, 2k + 1).
        let answers: Vec<u8> = known.iter().map(|&n| keying.answer(subject.stored(n), inv.item(n).expect("known item").sign)).collect();
        let pairs: Vec<ContrastPair> = (0..known.len()).map(|k| ContrastPair { first: 2 * k, second: 2 * k + 1 }).collect();
        let prefs: Vec<Option<Preference>> = answers.iter().map(|&a| Preference::from_likert(a)).collect();
        let samples = labelled_samples(&pairs, &prefs);
        let mut seconds = Phases::<f64>::default();
        let mut tokens = Phases::<u64>::default();

        let t = Instant::now();
        let fit = fit_intervention(&contrast.acts, &samples, cfg)?;
        seconds.probes += t.elapsed().as_secs_f64();

        let test = self.test_items();
        let test_q = self.questions(&test);
        let full_system = system_for(known);
        let mut oracle_scores: Vec<(f64, Vec<ItemScore>)> = Vec::new();
        let search = if fit.fallback.is_some() {
            None
        } else {
            let t = Instant::now();
            let probes_before = seconds.probes;
            let result = match cfg.selection {
                Selection::Oracle => cfg.search.run(|alpha| -> Result<f64> {
                    let scored = scorer.score(&full_system, &test_q, &fit.intervention.at(alpha as f32, cfg.positions))?;
                    tokens.search += scored.tokens;
                    let r = self.record(subject, method, &scored.items, None, Phases::default(), Phases::default());
                    oracle_scores.push((alpha, scored.items));
                    Ok(r.total.unwrap_or(f64::INFINITY))
                })?,
                Selection::HeldOut { folds, seed } => {
                    // Folds over the answered known items; each fold's intervention is fitted
                    // without it, and its prompt leaves it out too.
                    let answered: Vec<u16> = known.iter().copied().filter(|&n| subject.stored(n) != papi_data::keying::MISSING).collect();
                    let folds = Folds::new(&answered, inv, folds, seed)?;
                    let per_fold = self.config.search_items.map(|n| n.div_ceil(folds.k()));
                    // pas-core fits each fold without its groups (group k = known item k).
                    let group_folds: Vec<Vec<usize>> = (0..folds.k())
                        .map(|f| folds.held_out(f).iter().filter_map(|n| known.iter().position(|k| k == n)).collect())
                        .collect();
                    let t_fit = Instant::now();
                    let fold_fits: Vec<_> = pas_core::search::fit_held_out_folds(&contrast.acts, &samples, cfg, &group_folds)?
                        .into_iter()
                        .enumerate()
                        .map(|(f, fold)| {
                            let held = folds.held_out(f);
                            let fit_items: Vec<u16> = known.iter().copied().filter(|n| !held.contains(n)).collect();
                            (fold.fit, system_for(&fit_items), balanced(held, inv, per_fold))
                        })
                        .collect();
                    seconds.probes += t_fit.elapsed().as_secs_f64();
                    let all_held: Vec<u16> = fold_fits.iter().flat_map(|(_, _, items)| items.iter().copied()).collect();
                    let protocol = Protocol { keying, missing: MissingAnswers::Exclude };
                    // Steering that leaves the prompt's prefix alone: each fold's grid in one
                    // pass over one prefix (rows = items × strengths).
                    let batched: Option<(Vec<f64>, Vec<Vec<Scored>>)> = match (&cfg.search, cfg.positions) {
                        (Search::Grid { alphas }, Positions::Answer | Positions::Last) => {
                            let per_fold = fold_fits
                                .iter()
                                .map(|(fold_fit, system, items)| {
                                    let steerings: Vec<Steering> = alphas.iter().map(|&a| fold_fit.intervention.at(a as f32, cfg.positions)).collect();
                                    scorer.score_strengths(system, &self.questions(items), &steerings)
                                })
                                .collect::<Result<Vec<_>>>()?;
                            Some((alphas.clone(), per_fold))
                        }
                        _ => None,
                    };
                    cfg.search.run(|alpha| -> Result<f64> {
                        let mut preds = Predictions::empty(inv.len());
                        for (f, (fold_fit, system, items)) in fold_fits.iter().enumerate() {
                            let scored = match &batched {
                                Some((alphas, per_fold)) => {
                                    let k = alphas.iter().position(|&a| a == alpha).expect("the grid evaluates its own strengths");
                                    per_fold[f][k].clone()
                                }
                                None => scorer.score(system, &self.questions(items), &fold_fit.intervention.at(alpha as f32, cfg.positions))?,
                            };
                            tokens.search += scored.tokens;
                            for (&n, s) in items.iter().zip(&scored.items) {
                                if let Some(c) = s.choice {
                                    preds.set(n, answer_of_option(c));
                                }
                            }
                        }
                        let mae = subject_mae(inv, subject, &all_held, protocol, &preds);
                        Ok(mae.0.iter().flatten().sum())
                    })?
                }
            };
            seconds.search += t.elapsed().as_secs_f64() - (seconds.probes - probes_before);
            Some(result)
        };
        let alpha = search.as_ref().map_or(0.0, |s| s.alpha);
        let scores = match oracle_scores.into_iter().find(|(a, _)| *a == alpha) {
            Some((_, items)) => items,
            None => {
                let t = Instant::now();
                let scored = scorer.score(&full_system, &test_q, &fit.intervention.at(alpha as f32, cfg.positions))?;
                seconds.eval += t.elapsed().as_secs_f64();
                tokens.eval += scored.tokens;
                scored.items
            }
        };
        let heads = fit.intervention.heads();
        let mut layers: Vec<u32> = heads.iter().map(|h| h.head.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        let record = PasRecord {
            alpha,
            search,
            heads: heads.len(),
            layers,
            mean_sigma: if heads.is_empty() { 0.0 } else { heads.iter().map(|h| f64::from(h.sigma)).sum::<f64>() / heads.len() as f64 },
            pairs: fit.groups,
            fallback: fit.fallback.clone(),
        };
        Ok(self.record(subject, method, &scores, Some(record), seconds, tokens))
    }

    /// DPO for one subject: preference pairs from the known items, LoRA adapters trained
    /// (or read back from an interrupted run), merged, and the test items scored under the
    /// same system prompt. Writes `OUT/dpo/<case>.jsonl` (the training log) and
    /// `OUT/dpo/<case>.safetensors` (the adapters, with the report in their metadata).
    fn dpo(&self, subject: &Subject) -> Result<SubjectResult> {
        let inv = &self.data.inventory;
        let cfg = &self.config.dpo;
        let known = &self.data.split.known;
        let system = match cfg.system {
            SystemPrompt::Plain => DEFAULT_SYSTEM.to_owned(),
            SystemPrompt::FewShot => self.few_shot(subject, known),
        };
        let answered: Vec<u16> = known.iter().copied().filter(|&n| subject.stored(n) != papi_data::keying::MISSING).collect();
        let items = balanced(&answered, inv, self.config.dpo_items);
        let mut examples = Vec::with_capacity(items.len());
        for &n in &items {
            let item = inv.item(n).expect("known items are in the inventory");
            let answer = self.config.keying.answer(subject.stored(n), item.sign);
            let prompt = self.prompts.encode(&self.prompts.render(&system, &question(&item.text), PREFILL)?)?;
            examples.extend(Example::new(n, prompt, answer, cfg.rejected));
        }
        let (train, held_out) = dpo_baseline::data::split_held_out(examples, cfg.held_out_fraction, cfg.seed ^ subject.case as u64);
        let scorer = Scorer::new(self.model, self.prompts, self.config.scoring, self.config.batch)?;
        let options: [u32; 5] = scorer.options().spaced;

        let dir = self.out.join("dpo");
        let (adapters_path, log_path) = (dir.join(format!("{}.safetensors", subject.case)), dir.join(format!("{}.jsonl", subject.case)));
        const REPORT: &str = "train_report";
        let device = self.model.device();
        let reuse = adapters_path
            .exists()
            .then(|| dpo_baseline::adapters::load::<B>(&adapters_path, self.model.config(), device))
            .transpose()?
            .and_then(|(lora, meta)| Some((lora, serde_json::from_str::<TrainReport>(meta.get(REPORT)?).ok()?)));
        let (lora, report) = match reuse {
            Some(done) => done,
            None => {
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                // The log is written line by line as training goes (a fresh file per attempt).
                let mut log = std::io::BufWriter::new(std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?);
                let mut log_error = None;
                let progress = &self.progress;
                let case = subject.case;
                let trained = dpo_baseline::train::train::<Autodiff<B>>(self.model, &train, &held_out, &options, cfg, |line| {
                    if let LogLine::Step { step, metrics, .. } = line {
                        progress.set_message(format!("case {case} · dpo step {step} · loss {:.3} · accuracy {:.2}", metrics.loss, metrics.rewards_accuracies));
                    }
                    let text = serde_json::to_string(line).unwrap_or_default();
                    if let Err(e) = writeln!(log, "{text}").and_then(|()| log.flush()) {
                        log_error.get_or_insert(e);
                    }
                })?;
                if let Some(e) = log_error {
                    return Err(Error::io(&log_path, e));
                }
                let meta: BTreeMap<String, String> = [
                    ("case".to_owned(), subject.case.to_string()),
                    ("keying".to_owned(), self.config.keying.as_str().to_owned()),
                    ("model_hash".to_owned(), model_hash(&self.provenance.model_dir)),
                    ("dpo_config".to_owned(), serde_json::to_string(cfg).unwrap_or_default()),
                    (REPORT.to_owned(), serde_json::to_string(&trained.report).unwrap_or_default()),
                ]
                .into_iter()
                .collect();
                dpo_baseline::adapters::save(&adapters_path, &trained.lora, &meta)?;
                (trained.lora, trained.report)
            }
        };
        let tuned = self.model.merged(&lora)?;
        let tuned_scorer = Scorer::new(&tuned, self.prompts, self.config.scoring, self.config.batch)?;
        let t = Instant::now();
        let scored = tuned_scorer.score(&system, &self.questions(&self.test_items()), &Steering::none(self.model.geometry()))?;
        let seconds = Phases { eval: t.elapsed().as_secs_f64(), reference: report.reference_seconds, train: report.training_seconds, ..Default::default() };
        let tokens = Phases { eval: scored.tokens, reference: report.reference_tokens, train: report.training_tokens, ..Default::default() };
        let mut result = self.record(subject, Method::Dpo, &scored.items, None, seconds, tokens);
        result.dpo = Some(report);
        Ok(result)
    }

    /// The reference predictors' results for the run's subjects (ridge fitted across the
    /// whole records file, each subject predicted by a model that never saw it).
    fn references(&self) -> Result<Vec<(Method, Vec<SubjectResult>)>> {
        let inv = &self.data.inventory;
        let n = self.subjects().len();
        let items = self.test_items();
        let mut out = Vec::new();
        for m in self.config.methods.iter().copied().filter(|m| m.reference().is_some()) {
            let r = m.reference().expect("filtered");
            let preds = reference::predict(r, inv, &self.data.split, &self.data.subjects, self.config.keying, &self.config.ridge)?;
            let results = self.data.subjects[..n]
                .iter()
                .zip(&preds)
                .map(|(s, p)| {
                    let records = items
                        .iter()
                        .map(|&i| self.item_record(s, i, p.get(i)))
                        .collect();
                    let mae = subject_mae(inv, s, &items, self.protocol(), p);
                    SubjectResult {
                        case: s.case,
                        method: m.name().into(),
                        mae,
                        total: subject_total(&mae),
                        items: records,
                        pas: None,
                        dpo: None,
                        seconds: Phases::default(),
                        tokens: Phases::default(),
                    }
                })
                .collect();
            out.push((m, results));
        }
        Ok(out)
    }

    /// Reads every finished subject and writes `results.json`, `report.md`, `totals.svg` and
    /// `samples.jsonl`.
    fn aggregate(&self, shared: &BTreeMap<Method, Phases<(f64, u64)>>) -> Result<Results> {
        let subjects = self.subjects();
        let mut per_method: Vec<(Method, Vec<SubjectResult>)> = Vec::new();
        let not_run = Vec::new();
        let references = self.references()?;
        for &m in &self.config.methods {
            if let Some((_, r)) = references.iter().find(|(rm, _)| *rm == m) {
                per_method.push((m, r.clone()));
                continue;
            }
            let results: Vec<SubjectResult> = subjects.iter().map(|s| read_json(&self.subject_path(m, s.case))).collect::<Result<_>>()?;
            per_method.push((m, results));
        }
        let n = subjects.len().max(1) as f64;
        let runs: Vec<Run> = per_method
            .iter()
            .map(|(m, results)| {
                let maes: Vec<PerDomain<Option<f64>>> = results.iter().map(|r| r.mae).collect();
                let agg = papi_data::scoring::aggregate(&maes);
                let (dci, tci) = aggregate_ci(&maes, self.config.bootstrap);
                let sh = shared.get(m).copied().unwrap_or_default();
                let mut phases = sh.map(|(seconds, _)| seconds);
                let mut tokens = sh.map(|(_, tokens)| tokens);
                for r in results {
                    phases = phases.plus(&r.seconds);
                    tokens = tokens.plus(&r.tokens);
                }
                let alpha = m.is_pas().then(|| {
                    let mut counts = BTreeMap::new();
                    let mut sum = 0.0;
                    let mut fallbacks = 0;
                    for p in results.iter().filter_map(|r| r.pas.as_ref()) {
                        *counts.entry(format!("{}", p.alpha)).or_insert(0) += 1;
                        sum += p.alpha;
                        fallbacks += usize::from(p.fallback.is_some());
                    }
                    AlphaSummary { mean: sum / results.len().max(1) as f64, counts, fallbacks }
                });
                let paths: Vec<bool> = results.iter().flat_map(|r| r.items.iter().filter_map(|i| i.path.as_ref().map(|p| p.found))).collect();
                let seconds = phases.sum();
                Run {
                    method: m.name().into(),
                    reference: m.reference().is_some(),
                    keying: self.config.keying.as_str().into(),
                    alpha_selection: self.config.alpha_selection.as_str().into(),
                    scoring: m.reference().is_none().then(|| self.config.scoring.as_str().to_owned()),
                    subjects: results.len(),
                    per_domain: by_letter(&agg.per_domain),
                    per_domain_ci95: by_letter(&dci.map(|_, i| i.map(ci_pair))),
                    total: agg.total,
                    total_ci95: tci.map(ci_pair),
                    seconds,
                    seconds_per_subject: seconds / n,
                    phases,
                    tokens,
                    alpha,
                    letter_found: (!paths.is_empty()).then(|| paths.iter().filter(|f| **f).count() as f64 / paths.len() as f64),
                }
            })
            .collect();
        let mut comparisons = Vec::new();
        if let Some((_, base)) = per_method.iter().find(|(m, _)| *m == Method::FewShot) {
            for (m, results) in per_method.iter().filter(|(m, _)| *m != Method::FewShot) {
                let diffs: Vec<f64> = results.iter().zip(base).filter_map(|(a, b)| Some(a.total? - b.total?)).collect();
                if let Some((mean, ci)) = paired_difference(&diffs, self.config.bootstrap) {
                    comparisons.push(Comparison {
                        method: m.name().into(),
                        baseline: Method::FewShot.name().into(),
                        subjects: diffs.len(),
                        difference: mean,
                        ci95: [ci.lo, ci.hi],
                    });
                }
            }
        }
        let optimisation_time = {
            let pas = runs.iter().find(|r| r.method == Method::Pas.name()).or_else(|| runs.iter().find(|r| r.method == Method::PasOnly.name()));
            let dpo = runs.iter().find(|r| r.method == Method::Dpo.name());
            pas.zip(dpo).map(|(p, d)| {
                let pas_seconds = (p.phases.collect + p.phases.probes + p.phases.search) / n;
                let dpo_seconds = (d.phases.reference + d.phases.train) / n;
                OptimisationTime {
                    pas_method: p.method.clone(),
                    pas_seconds,
                    dpo_seconds,
                    ratio: dpo_seconds / pas_seconds.max(f64::MIN_POSITIVE),
                    subjects: subjects.len(),
                }
            })
        };
        let fp = self.fingerprint();
        let collect = shared.values().map(|p| p.collect).find(|c| c.1 > 0).unwrap_or_default();
        let results = Results {
            meta: Meta {
                tool: format!("personality-alignment eval {}", env!("CARGO_PKG_VERSION")),
                git_revision: self.provenance.git_revision.clone(),
                model_id: fp.model_id,
                model_hash: fp.model_hash,
                chat_template_hash: fp.chat_template_hash,
                device: self.provenance.device.clone(),
                records: self.data.records_path.display().to_string(),
                keying: self.config.keying.as_str().into(),
                missing_answers: match self.protocol().missing {
                    MissingAnswers::Exclude => "excluded".into(),
                    MissingAnswers::ScoreAsZero => "scored as 0 (official)".into(),
                },
                alpha_selection: self.config.alpha_selection.as_str().into(),
                scoring: self.config.scoring.as_str().into(),
                pas: self.config.pas.clone(),
                test_items: self.test_items().len(),
                search_items: self.config.search_items,
                batch: self.config.batch,
                cases: subjects.iter().map(|s| s.case).collect(),
                bootstrap: self.config.bootstrap,
                ridge: self.config.ridge,
                collect_seconds: collect.0,
                collect_tokens: collect.1,
                dpo: self.config.methods.contains(&Method::Dpo).then(|| self.config.dpo.clone()),
                dpo_items: self.config.dpo_items.filter(|_| self.config.methods.contains(&Method::Dpo)),
            },
            runs,
            comparisons,
            not_run,
            optimisation_time,
        };
        let mut samples = String::new();
        for (m, results) in &per_method {
            for r in results {
                for item in &r.items {
                    let mut v = serde_json::to_value(item).map_err(|e| Error::Config(e.to_string()))?;
                    if let Some(o) = v.as_object_mut() {
                        o.insert("subject".into(), r.case.into());
                        o.insert("method".into(), m.name().into());
                        o.insert("keying".into(), self.config.keying.as_str().into());
                    }
                    samples.push_str(&v.to_string());
                    samples.push('\n');
                }
            }
        }
        write_atomic(&self.out.join("samples.jsonl"), samples.as_bytes())?;
        write_reports(&self.out, &results)?;
        Ok(results)
    }
}

/// Writes `results.json`, and `report.md` and `totals.svg` rendered from it.
pub fn write_reports(out: &Path, results: &Results) -> Result<()> {
    write_json(&out.join("results.json"), results)?;
    write_atomic(&out.join("report.md"), crate::results::render_markdown(results).as_bytes())?;
    write_atomic(&out.join("totals.svg"), crate::results::render_svg(results).as_bytes())
}

/// Re-renders `report.md` and `totals.svg` from a folder's `results.json` alone.
pub fn rerender(out: &Path) -> Result<Results> {
    let results: Results = read_json(&out.join("results.json"))?;
    write_atomic(&out.join("report.md"), crate::results::render_markdown(&results).as_bytes())?;
    write_atomic(&out.join("totals.svg"), crate::results::render_svg(&results).as_bytes())?;
    Ok(results)
}
