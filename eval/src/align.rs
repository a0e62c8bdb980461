//! Aligning a model to one person from their questionnaire answers alone (`cargo xtask
//! align`): the PAS fit and held-out strength search of a run, on whichever items the person
//! answered, saved as a persona file (an intervention with its strength and the model's
//! content hash).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use llm_burn::{Decoder, PromptEncoder};
use papi_data::{Dataset, Inventory, Keying, Split, Subject};
use pas_core::{InterventionMeta, SearchResult};

use crate::config::{AlphaSelection, Provenance, RunConfig};
use crate::error::{Error, Result};
use crate::method::Method;
use crate::run::Evaluator;

/// Fewest answers to align from: the strength search holds out five folds of them.
pub const MIN_ANSWERS: usize = 10;

/// One person's answers: item number → answer 1..=5 as given to the statement (1 "very
/// inaccurate" .. 5 "very accurate"; reverse-keyed items not reflected).
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    /// The file they came from.
    pub path: PathBuf,
    /// Item number → answer.
    pub answers: BTreeMap<u16, u8>,
}

impl Answers {
    /// Reads a JSON object (`{"1": 4, "7": 2}`, or the same under `"answers"`) or a CSV with
    /// the header `item,answer`. Refuses an unknown item, an answer outside 1..=5, an item
    /// given twice, and a file without answers, naming the entry.
    pub fn read(path: &Path, inventory: &Inventory) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |message: String| Error::file(path, message);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let entries: Vec<(String, String, String)> = match ext.as_str() {
            "json" => {
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
                let obj = v.get("answers").unwrap_or(&v).as_object().ok_or_else(|| bad("expected a JSON object of item number -> answer".into()))?;
                obj.iter().map(|(k, a)| (format!("key \"{k}\""), k.clone(), a.as_u64().map_or_else(|| a.to_string(), |n| n.to_string()))).collect()
            }
            "csv" => {
                let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
                let header: Vec<String> = lines.next().map(|(_, l)| l.split(',').map(|c| c.trim().trim_matches('"').to_ascii_lowercase()).collect()).unwrap_or_default();
                let (Some(ci), Some(ca)) = (header.iter().position(|c| c == "item"), header.iter().position(|c| c == "answer")) else {
                    return Err(bad("the CSV header must name the columns `item` and `answer`".into()));
                };
                lines
                    .map(|(i, l)| {
                        let cells: Vec<&str> = l.split(',').map(|c| c.trim().trim_matches('"')).collect();
                        (format!("row {}", i + 1), cells.get(ci).unwrap_or(&"").to_string(), cells.get(ca).unwrap_or(&"").to_string())
                    })
                    .collect()
            }
            _ => return Err(bad("answers must be a .json or .csv file".into())),
        };
        let mut answers = BTreeMap::new();
        for (at, item, answer) in entries {
            let n: u16 = item.parse().map_err(|_| bad(format!("{at}: item `{item}` is not an item number")))?;
            if inventory.item(n).is_none() {
                return Err(bad(format!("{at}: item {n} is not in the inventory (items 1..={})", inventory.len())));
            }
            let a: u8 = answer.parse().ok().filter(|a| (1..=5).contains(a)).ok_or_else(|| bad(format!("{at}: answer `{answer}` of item {n} must be an integer from 1 to 5")))?;
            if answers.insert(n, a).is_some() {
                return Err(bad(format!("{at}: item {n} is answered twice")));
            }
        }
        if answers.is_empty() {
            return Err(bad("the file holds no answers".into()));
        }
        Ok(Answers { path: path.to_owned(), answers })
    }

    /// Refuses answers PAS cannot fit from: fewer than [`MIN_ANSWERS`], all equal, or no
    /// answer on one side of the neutral 3 (no "like me" / "not like me" contrast).
    pub fn check_usable(&self) -> Result<()> {
        let bad = |message: String| Error::file(&self.path, message);
        let n = self.answers.len();
        if n < MIN_ANSWERS {
            return Err(bad(format!("only {n} answers: aligning needs at least {MIN_ANSWERS} (the strength is searched on five held-out folds of them)")));
        }
        let first = *self.answers.values().next().expect("not empty");
        if self.answers.values().all(|&a| a == first) {
            return Err(bad(format!("all {n} answers are {first}: PAS needs answers that agree and answers that disagree to find a direction")));
        }
        let agree = self.answers.values().filter(|&&a| a > 3).count();
        let disagree = self.answers.values().filter(|&&a| a < 3).count();
        if agree == 0 || disagree == 0 {
            return Err(bad(format!("{agree} answers above 3 and {disagree} below: PAS needs some of each to find a direction")));
        }
        Ok(())
    }

    /// The person as a subject of a one-person dataset (stored values in the release's
    /// keying, so that the corrected keying reads back these answers).
    fn subject(&self, inventory: &Inventory) -> Subject {
        let mut stored = vec![papi_data::keying::MISSING; inventory.len()];
        for (&n, &a) in &self.answers {
            let sign = inventory.item(n).expect("checked on reading").sign;
            stored[usize::from(n) - 1] = Keying::Corrected.answer(a, sign);
        }
        Subject { case: 0, demographics: Default::default(), answers: stored }
    }
}

/// A persona fitted by [`align`].
#[derive(Debug, Clone)]
pub struct Aligned {
    /// What was saved with it.
    pub meta: InterventionMeta,
    /// Answers used.
    pub answers: usize,
    /// Labelled contrast pairs the probes saw (answers other than 3).
    pub pairs: usize,
    /// Heads steered.
    pub heads: usize,
    /// The strength search (held out on the answered items).
    pub search: Option<SearchResult>,
    /// Seconds it took.
    pub seconds: f64,
}

/// Fits `method`'s intervention (`pas-only`: the persona steers the model under any prompt;
/// `pas`: meant for use under the few-shot prompt) from `answers`, searches its strength
/// held out on them, and saves it to `path`. Work in progress is kept in `work` (the
/// contrast activations), so an interrupted run resumes.
#[allow(clippy::too_many_arguments)]
pub fn align<B: Backend>(
    model: &Decoder<B>,
    prompts: &PromptEncoder,
    model_dir: &Path,
    inventory: &Inventory,
    answers: &Answers,
    method: Method,
    mut config: RunConfig,
    work: &Path,
    path: &Path,
) -> Result<Aligned> {
    if !matches!(method, Method::Pas | Method::PasOnly) {
        return Err(Error::Config(format!("a persona is made by pas or pas-only, not {method}")));
    }
    answers.check_usable()?;
    let t = std::time::Instant::now();
    let known: Vec<u16> = answers.answers.keys().copied().collect();
    let test: Vec<u16> = (1..=inventory.len() as u16).filter(|n| !answers.answers.contains_key(n)).collect();
    let data = Dataset { inventory: inventory.clone(), split: Split { known, test }, subjects: vec![answers.subject(inventory)], records_path: answers.path.clone() };
    config.keying = Keying::Corrected;
    config.alpha_selection = AlphaSelection::Heldout;
    config.methods = vec![method];
    config.test_items = Some(0);
    config.subjects = Some(1);
    let model_id = model_dir.file_name().map_or("model".into(), |f| f.to_string_lossy().into_owned());
    let provenance = Provenance { git_revision: String::new(), device: String::new(), model_id, model_dir: model_dir.to_owned() };
    let evaluator = Evaluator::new(model, prompts, &data, None, config, provenance, work)?;
    let mut aligned = evaluator.align_subject(method, path)?;
    aligned.seconds = t.elapsed().as_secs_f64();
    Ok(aligned)
}
