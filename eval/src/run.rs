//! A benchmark run: every method on every subject, shared work done once, results written
//! per subject as they finish (a killed run resumes where it stopped), then aggregated into
//! `results.json`, `report.md`, `totals.svg` and `samples.jsonl`.

mod controls;
mod dpo;
mod gather;
mod pas;
mod rules;
mod shared;
mod steer;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use indicatif::ProgressBar;
use llm_burn::{Decoder, PromptEncoder};
use papi_data::scoring::{Predictions, subject_mae, target};
use papi_data::{Dataset, Inventory, Protocol, Subject};
use pas_core::{HeadActivations, PasConfig, Selection};
use serde::{Deserialize, Serialize};

use crate::config::{AlphaSelection, Provenance, RunConfig, Settings};
use crate::decision::Decision;
use crate::error::{Error, Result};
use crate::method::Method;
use crate::prompt::{LETTERS, answer_of_option, few_shot_system};
use crate::results::{ItemRecord, Phases, Results, SubjectResult};
use crate::request::{Executor, Request};
use crate::score::{ItemScore, Scorer, short_hash};

pub use crate::files::{write_atomic, write_samples};
pub(crate) use crate::files::{read_json, write_json};

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
pub(crate) struct ContrastMeta {
    prompts_hash: String,
    samples: usize,
    geometry: pas_core::Geometry,
    seconds: f64,
    tokens: u64,
}

/// The unsteered model's scores under the default system prompt of every known and test
/// item: no-change's answers, option-bias's base and the calibrated rule's reference; computed
/// once per run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlainScores {
    items: Vec<u16>,
    scores: Vec<ItemScore>,
    seconds: f64,
    tokens: u64,
}

/// A subject × method just finished (see [`Evaluator::on_done`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    /// Finished in this session, this one included.
    pub done: usize,
    /// To do in this session.
    pub total: usize,
    /// The subject.
    pub case: i64,
    /// The method.
    pub method: Method,
    /// Seconds it took.
    pub seconds: f64,
    /// Seconds left at this pace.
    pub eta_seconds: f64,
}

/// What [`Evaluator::on_done`] calls.
type OnDone = Box<dyn Fn(&Done)>;

/// How far a phase shared by every subject is (the contrast prompts' activations, the
/// unsteered model on every item): what [`Evaluator::on_phase`] is called with, at its start
/// and after each batch.
#[derive(Debug, Clone)]
pub struct Phase {
    /// What runs.
    pub name: &'static str,
    /// Prompts done.
    pub done: usize,
    /// Prompts in the phase.
    pub total: usize,
    /// Seconds since the phase started.
    pub seconds: f64,
    /// Seconds left at this pace (`None` before the first batch is done).
    pub eta_seconds: Option<f64>,
}

/// What [`Evaluator::on_phase`] calls.
type OnPhase = Box<dyn Fn(&Phase)>;

/// One benchmark run over a dataset with one model.
pub struct Evaluator<'a, B: Backend> {
    model: &'a Decoder<B>,
    prompts: &'a PromptEncoder,
    data: &'a Dataset,
    p2: Option<Vec<String>>,
    config: RunConfig,
    settings: Settings,
    provenance: Provenance,
    out: PathBuf,
    progress: ProgressBar,
    on_done: Option<OnDone>,
    on_phase: Option<OnPhase>,
    plain: OnceCell<BTreeMap<u16, ItemScore>>,
    identity: OnceCell<pas_core::ModelIdentity>,
}

fn model_hash(dir: &Path) -> String {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    // The float32 weights' size, whether or not the copy was written (runs made before models
    // were loaded from their GGUF file recorded the written copy's).
    let size = llm_burn::formats::identity::float_weights_len(dir).unwrap_or(0);
    format!("{}-{size}", short_hash(&config))
}

impl<'a, B: Backend> Evaluator<'a, B> {
    /// Prepares a run writing into `out`. `p2` holds one description per subject of the
    /// dataset, in the records' order (needed for the `p2` method; the counts must agree).
    pub fn new(
        model: &'a Decoder<B>,
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
        if config.methods.contains(&Method::Ppo) {
            config.ppo.validate()?;
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
        let settings = Settings {
            keying: config.keying,
            alpha_selection: config.alpha_selection,
            scoring: config.scoring,
            decision: config.decision,
            pas: config.pas.clone(),
            test_items: config.test_items,
            search_items: config.search_items,
            dpo: config.dpo.clone(),
            dpo_items: config.dpo_items,
            ppo: config.ppo.clone(),
            dtype: model.dtype(),
            model_id: provenance.model_id.clone(),
            model_hash: model_hash(&provenance.model_dir),
            chat_template_hash: short_hash(prompts.template.source()),
            records: data.records_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        Ok(Evaluator { model, prompts, data, p2, config, settings, provenance, out: out.into(), progress: ProgressBar::hidden(), on_done: None, on_phase: None, plain: OnceCell::new(), identity: OnceCell::new() })
    }

    /// Calls `f` after each subject × method is finished and saved (e.g. to print a line per
    /// subject where no progress bar can be shown, as in a batch job's log).
    pub fn on_done(mut self, f: impl Fn(&Done) + 'static) -> Self {
        self.on_done = Some(Box::new(f));
        self
    }

    /// Calls `f` as each phase shared by every subject starts and after each of its batches
    /// (e.g. to print progress lines in a batch job's log, where the shared passes of a
    /// large model run for minutes before the first subject).
    pub fn on_phase(mut self, f: impl Fn(&Phase) + 'static) -> Self {
        self.on_phase = Some(Box::new(f));
        self
    }

    /// Reports a shared phase's progress: on the bar's message and to [`Evaluator::on_phase`].
    fn phase(&self, name: &'static str, done: usize, total: usize, started: std::time::Instant) {
        let seconds = started.elapsed().as_secs_f64();
        let eta_seconds = (done > 0).then(|| seconds / done as f64 * total.saturating_sub(done) as f64);
        self.progress.set_message(format!("{name}: {done}/{total}"));
        if let Some(f) = &self.on_phase {
            f(&Phase { name, done, total, seconds, eta_seconds });
        }
    }

    /// Shows progress on this bar (subjects × model methods).
    pub fn with_progress(mut self, bar: ProgressBar) -> Self {
        self.progress = bar;
        self
    }

    /// The model's identity saved with its interventions (its content hash, computed once).
    fn identity(&self) -> Result<&pas_core::ModelIdentity> {
        if let Some(id) = self.identity.get() {
            return Ok(id);
        }
        let id = llm_burn::formats::identity::identity(&self.provenance.model_dir, self.model.config())?;
        Ok(self.identity.get_or_init(|| id))
    }

    /// The resolved settings.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    fn protocol(&self) -> Protocol {
        Protocol::for_keying(self.config.keying)
    }

    /// Positions in the records of the whole run's subjects (the first `--subjects`).
    fn selection(&self) -> std::ops::Range<usize> {
        0..self.config.subjects.unwrap_or(usize::MAX).min(self.data.subjects.len())
    }

    /// Positions in the records of this run's subjects: the selection, or this shard of it.
    fn positions(&self) -> Vec<usize> {
        self.selection().filter(|&p| self.config.shard.is_none_or(|s| s.holds(p))).collect()
    }

    fn test_items(&self) -> Vec<u16> {
        balanced(&self.data.split.test, &self.data.inventory, self.config.test_items)
    }

    /// Checks (or records) that `out` belongs to a run with these settings.
    fn claim_out_dir(&self) -> Result<()> {
        let path = self.out.join("run.json");
        let mine = &self.settings;
        if path.exists() {
            let a: serde_json::Value = read_json(&path)?;
            let b = serde_json::to_value(mine).unwrap_or_default();
            if a != b {
                let fields: Vec<String> = b
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| a.get(k.as_str()) != Some(v))
                    .map(|(k, v)| format!("{k}: {} there, {v} now", a.get(k.as_str()).cloned().unwrap_or_default()))
                    .collect();
                return Err(Error::file(
                    &path,
                    format!("this output folder holds a run with other settings ({}); use another --out", fields.join("; ")),
                ));
            }
            return Ok(());
        }
        write_json(&path, mine)
    }

    fn subject_path(&self, method: Method, case: i64) -> PathBuf {
        self.out.join("subjects").join(method.name()).join(format!("{case}.json"))
    }

    /// Runs what is not done yet and writes the reports; returns the results.
    pub fn run(&self) -> Result<Results> {
        std::fs::create_dir_all(&self.out).map_err(|e| Error::io(&self.out, e))?;
        self.claim_out_dir()?;
        let subjects = &self.data.subjects;
        let positions = self.positions();
        let mut seen = std::collections::HashSet::new();
        if let Some(s) = subjects[self.selection()].iter().find(|s| !seen.insert(s.case)) {
            return Err(Error::file(&self.data.records_path, format!("case {} appears twice; results are stored by case", s.case)));
        }
        let scorer = Scorer::new(self.model, self.prompts, self.config.scoring, self.config.batch)?;
        let exec = Executor::new(&scorer, &self.data.inventory);
        let model_methods: Vec<Method> = self.config.methods.iter().copied().filter(|m| m.reference().is_none()).collect();
        let previous = self.previous()?;
        let methods = gather::union_methods(&previous.methods(), &self.config.methods);
        let todo: Vec<(usize, Method)> = positions
            .iter()
            .flat_map(|&i| model_methods.iter().map(move |&m| (i, m)).filter(move |&(i, m)| !self.subject_path(m, subjects[i].case).exists()))
            .collect();
        self.progress.set_length((positions.len() * model_methods.len()) as u64);
        self.progress.set_position((positions.len() * model_methods.len() - todo.len()) as u64);

        let contrast = if model_methods.iter().any(|m| m.is_pas()) { Some(self.contrast()?) } else { None };
        let mut plain_cost = (0.0, 0);
        if methods.iter().any(|m| m.reference().is_none()) {
            let p = self.plain_scores(&exec)?;
            plain_cost = (p.seconds, p.tokens);
            let _ = self.plain.set(p.items.into_iter().zip(p.scores).collect());
        }

        let started = std::time::Instant::now();
        let total = todo.len();
        for (k, (i, method)) in todo.into_iter().enumerate() {
            let t = std::time::Instant::now();
            let subject = &subjects[i];
            self.progress.set_message(format!("case {} · {method}", subject.case));
            let test = self.test_items();
            let plain_test = || -> Vec<ItemScore> { test.iter().map(|n| self.plain.get().and_then(|p| p.get(n)).cloned().expect("every test item is in the plain pass")).collect() };
            let result = match method {
                Method::NoChange => {
                    let choice = self.prompt_rule_choice(&exec, subject, method, None)?;
                    self.with_rule_choice(self.record(subject, method, &plain_test(), Phases::default(), Phases::default()), choice)
                }
                Method::OptionBias => self.option_bias(subject, &plain_test()),
                Method::FewShot | Method::P2 => {
                    let system = if method == Method::P2 { self.p2.as_ref().expect("checked in new")[i].clone() } else { self.few_shot(subject, &self.data.split.known) };
                    let t = Instant::now();
                    let scored = exec.one(&Request::plain(system.clone(), &test))?;
                    let seconds = Phases { eval: t.elapsed().as_secs_f64(), ..Default::default() };
                    let tokens = Phases { eval: scored.tokens, ..Default::default() };
                    let t = Instant::now();
                    let choice = self.prompt_rule_choice(&exec, subject, method, Some(&system))?;
                    let seconds = Phases { search: t.elapsed().as_secs_f64(), ..seconds };
                    self.with_rule_choice(self.record(subject, method, &scored.items, seconds, tokens), choice)
                }
                Method::Pas | Method::PasOriginal | Method::PasOnly => {
                    if method != Method::PasOnly {
                        self.recall_few_shot(&exec, subject)?;
                    }
                    self.pas(&exec, subject, method, contrast.as_ref().expect("computed above"))?
                }
                Method::PasDomain => self.pas_domain(&exec, subject, contrast.as_ref().expect("computed above"))?,
                Method::Dpo | Method::Ppo => self.tuned(subject, method)?,
                // Reference predictors need no model: `references` computes them.
                Method::Always3 | Method::OwnMean | Method::Ridge => continue,
            };
            write_json(&self.subject_path(method, subject.case), &result)?;
            self.progress.inc(1);
            if let Some(f) = &self.on_done {
                let elapsed = started.elapsed().as_secs_f64();
                f(&Done { done: k + 1, total, case: subject.case, method, seconds: t.elapsed().as_secs_f64(), eta_seconds: elapsed / (k + 1) as f64 * (total - k - 1) as f64 });
            }
        }
        self.progress.set_message("writing reports");
        let results = self.aggregate(contrast.as_ref().map(|c| (c.seconds, c.tokens)), plain_cost, &previous, &methods)?;
        self.progress.finish_and_clear();
        Ok(results)
    }

    /// Few-shot's test answers of `subject`, finished in an earlier part of the run (its
    /// file in this folder), into the executor's memory: what PAS at strength 0 asks (the
    /// unsteered few-shot prompt) is then not asked again, as within one part. Not under
    /// `generate` scoring, whose reading the file does not keep whole.
    fn recall_few_shot(&self, exec: &Executor<'_, '_, B>, subject: &Subject) -> Result<()> {
        let path = self.subject_path(Method::FewShot, subject.case);
        if self.config.scoring == crate::score::Scoring::Generate || !path.exists() {
            return Ok(());
        }
        let done: SubjectResult = read_json(&path)?;
        let scores = done.items.iter().filter_map(|r| {
            let (lp, path) = (r.logprobs?, r.path.clone()?);
            // The scorer's own reading: the first most probable option.
            let choice = crate::decision::argmax(&lp);
            Some((r.item, ItemScore { logprobs: lp, choice, path, text: r.text.clone(), prompt_hash: r.prompt_hash.clone().unwrap_or_default() }))
        });
        exec.remember(&self.few_shot(subject, &self.data.split.known), scores);
        Ok(())
    }

    fn few_shot(&self, subject: &Subject, items: &[u16]) -> String {
        few_shot_system(&self.data.inventory, subject, items, self.config.keying, self.protocol().missing)
    }

    /// The option the run's decision rule reads from an item's score under `method` (under
    /// `held-out`, the median until the person's choice is attached: [`Self::with_rule_choice`]).
    fn decide(&self, method: Method, item: u16, score: &ItemScore) -> Option<usize> {
        self.decide_by(self.config.decision, method, item, score)
    }

    /// The option `rule` reads from an item's score under `method`.
    fn decide_by(&self, rule: Decision, method: Method, item: u16, score: &ItemScore) -> Option<usize> {
        match rule.for_method(method) {
            // The scorer's own reading (the parsed text under generate scoring).
            Decision::Argmax => score.choice,
            rule => rule.decide(&score.logprobs, self.plain_of(item)),
        }
    }

    /// Folds and seed of held-out selection (2 folds and the run's seed under oracle selection).
    fn fold_settings(&self) -> rules::Selection {
        match self.config.pas.selection {
            Selection::HeldOut { folds, seed } => rules::Selection { folds, seed },
            Selection::Oracle => rules::Selection { folds: 2, seed: 0 },
        }
    }

    fn plain_of(&self, item: u16) -> Option<&[f32; 5]> {
        self.plain.get()?.get(&item).map(|s| &s.logprobs)
    }

    /// An item's record from a predicted answer alone (the model fields left empty).
    fn item_record(&self, subject: &Subject, item: u16, answer: Option<u8>) -> ItemRecord {
        let inv = &self.data.inventory;
        let t = target(inv, subject, item, self.protocol());
        ItemRecord {
            item,
            domain: inv.item(item).map_or('?', |i| i.domain().letter()),
            logprobs: None,
            plain_logprobs: None,
            choice: None,
            answer,
            target: t,
            error: answer.zip(t).map(|(a, t)| a.abs_diff(t)),
            path: None,
            text: None,
            prompt_hash: None,
        }
    }

    /// Turns the test items' scores into a subject's result under the run's decision rule.
    fn record(&self, subject: &Subject, method: Method, scores: &[ItemScore], seconds: Phases<f64>, tokens: Phases<u64>) -> SubjectResult {
        let items = self.test_items();
        let inv = &self.data.inventory;
        let mut preds = Predictions::empty(inv.len());
        let records = items
            .iter()
            .zip(scores)
            .map(|(&n, s)| {
                let choice = self.decide(method, n, s);
                let answer = choice.map(answer_of_option);
                if let Some(a) = answer {
                    preds.set(n, a);
                }
                ItemRecord {
                    logprobs: Some(s.logprobs),
                    plain_logprobs: self.plain_of(n).copied(),
                    choice: choice.map(|c| LETTERS[c]),
                    path: Some(s.path.clone()),
                    text: s.text.clone(),
                    prompt_hash: Some(s.prompt_hash.clone()),
                    ..self.item_record(subject, n, answer)
                }
            })
            .collect();
        let mae = subject_mae(inv, subject, &items, self.protocol(), &preds);
        SubjectResult { seconds, tokens, ..SubjectResult::new(subject.case, method, mae, records) }
    }
}

/// Writes `results.json`, and `report.md` and `totals.svg` rendered from it.
pub fn write_reports(out: &Path, results: &Results) -> Result<()> {
    write_json(&out.join("results.json"), results)?;
    write_atomic(&out.join("report.md"), crate::report::render_markdown(results).as_bytes())?;
    write_atomic(&out.join("totals.svg"), crate::report::render_svg(results).as_bytes())
}

/// Re-renders `report.md` and `totals.svg` from a folder's `results.json` alone.
pub fn rerender(out: &Path) -> Result<Results> {
    let results: Results = read_json(&out.join("results.json"))?;
    write_atomic(&out.join("report.md"), crate::report::render_markdown(&results).as_bytes())?;
    write_atomic(&out.join("totals.svg"), crate::report::render_svg(&results).as_bytes())?;
    Ok(results)
}

/// Re-decides a finished run under `rule` (see [`crate::aggregate::redecide_run`]) and writes
/// `results-<rule>.json` and `report-<rule>.md` beside the run's own files, which stay as they are.
pub fn write_redecided(out: &Path, rule: Decision) -> Result<Results> {
    let results = crate::aggregate::redecide_run(out, rule)?;
    write_json(&out.join(format!("results-{rule}.json")), &results)?;
    write_atomic(&out.join(format!("report-{rule}.md")), crate::report::render_markdown(&results).as_bytes())?;
    Ok(results)
}
