//! The DPO baseline for one subject.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use dpo_baseline::{Example, LogLine, SystemPrompt, TrainReport};
use papi_data::Subject;

use super::{Evaluator, balanced, model_hash};
use crate::error::{Error, Result};
use crate::method::Method;
use crate::prompt::{DEFAULT_SYSTEM, PREFILL, question};
use crate::results::{Phases, SubjectResult};
use crate::request::{Executor, Request};
use crate::score::Scorer;

impl<B: Backend> Evaluator<'_, B> {
    /// DPO for one subject: preference pairs from the known items, LoRA adapters trained
    /// (or read back from an interrupted run), merged, and the test items scored under the
    /// same system prompt. Writes `OUT/dpo/<case>.jsonl` (the training log) and
    /// `OUT/dpo/<case>.safetensors` (the adapters, with the report in their metadata).
    pub(super) fn dpo(&self, subject: &Subject) -> Result<SubjectResult> {
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
        let scored = Executor::new(&tuned_scorer, inv).one(&Request::plain(system, &self.test_items()))?;
        let seconds = Phases { eval: t.elapsed().as_secs_f64(), reference: report.reference_seconds, train: report.training_seconds, ..Default::default() };
        let tokens = Phases { eval: scored.tokens, reference: report.reference_tokens, train: report.training_tokens, ..Default::default() };
        let mut result = self.record(subject, Method::Dpo, &scored.items, seconds, tokens);
        result.dpo = Some(report);
        Ok(result)
    }
}
