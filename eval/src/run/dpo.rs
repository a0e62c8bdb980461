//! The fine-tuned baselines for one subject: DPO and PPO on LoRA adapters.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use dpo_baseline::{Example, LogLine, PpoLogLine, PpoReport, Rejected, SystemPrompt, TrainReport};
use llm_burn::Lora;
use papi_data::Subject;
use serde::Serialize;

use super::{Evaluator, balanced, model_hash};
use crate::error::{Error, Result};
use crate::method::Method;
use crate::prompt::{DEFAULT_SYSTEM, PREFILL, question};
use crate::results::{Phases, SubjectResult};
use crate::request::{Executor, Request};
use crate::score::Scorer;

/// A training report of either baseline.
enum Report {
    Dpo(TrainReport),
    Ppo(PpoReport),
}

impl Report {
    /// (reference seconds, training seconds, reference tokens, training tokens).
    fn cost(&self) -> (f64, f64, u64, u64) {
        match self {
            Report::Dpo(r) => (r.reference_seconds, r.training_seconds, r.reference_tokens, r.training_tokens),
            Report::Ppo(r) => (r.reference_seconds, r.training_seconds, r.reference_tokens, r.training_tokens),
        }
    }
}

/// The key of the training report in the adapters' metadata.
const REPORT: &str = "train_report";

/// Writes log lines to a JSONL file as training goes (a fresh file per attempt); the first
/// write error is kept and reported when training ends.
struct JsonLog {
    file: std::io::BufWriter<std::fs::File>,
    error: Option<std::io::Error>,
}

impl JsonLog {
    fn create(path: &Path) -> Result<Self> {
        Ok(JsonLog { file: std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?), error: None })
    }

    fn line(&mut self, line: &impl Serialize) {
        let text = serde_json::to_string(line).unwrap_or_default();
        if let Err(e) = writeln!(self.file, "{text}").and_then(|()| self.file.flush()) {
            self.error.get_or_insert(e);
        }
    }

    fn finish(self, path: &Path) -> Result<()> {
        self.error.map_or(Ok(()), |e| Err(Error::io(path, e)))
    }
}

impl<B: Backend> Evaluator<'_, B> {
    /// DPO or PPO for one subject: examples from the known items, LoRA adapters trained (or
    /// read back from an interrupted run), merged (float weights) or attached unmerged
    /// (quantized weights), and the test items scored under the same
    /// system prompt. Writes `OUT/<method>/<case>.jsonl` (the training log) and
    /// `OUT/<method>/<case>.safetensors` (the adapters, with the report in their metadata).
    pub(super) fn tuned(&self, subject: &Subject, method: Method) -> Result<SubjectResult> {
        let inv = &self.data.inventory;
        let (dpo, ppo) = (&self.config.dpo, &self.config.ppo);
        let (system_kind, held_fraction, seed, rule) = match method {
            Method::Ppo => (ppo.system, ppo.held_out_fraction, ppo.seed, Rejected::AllOthers),
            _ => (dpo.system, dpo.held_out_fraction, dpo.seed, dpo.rejected),
        };
        let known = &self.data.split.known;
        let system = match system_kind {
            SystemPrompt::Plain => DEFAULT_SYSTEM.to_owned(),
            SystemPrompt::FewShot => self.few_shot(subject, known),
        };
        let answered: Vec<u16> = known.iter().copied().filter(|&n| subject.stored(n) != papi_data::keying::MISSING).collect();
        let mut examples = Vec::new();
        for n in balanced(&answered, inv, self.config.dpo_items) {
            let item = inv.item(n).expect("known items are in the inventory");
            let answer = self.config.keying.answer(subject.stored(n), item.sign);
            let prompt = self.prompts.encode(&self.prompts.render(&system, &question(&item.text), PREFILL)?)?;
            examples.extend(Example::new(n, prompt, answer, rule));
        }
        let (train, held_out) = dpo_baseline::data::split_held_out(examples, held_fraction, seed ^ subject.case as u64);
        let scorer = Scorer::new(self.model, self.prompts, self.config.scoring, self.config.batch)?;
        let options: [u32; 5] = scorer.options().spaced;

        let dir = self.out.join(method.name());
        let (adapters_path, log_path) = (dir.join(format!("{}.safetensors", subject.case)), dir.join(format!("{}.jsonl", subject.case)));
        let device = self.model.device();
        let reuse = adapters_path
            .exists()
            .then(|| dpo_baseline::adapters::load::<B>(&adapters_path, self.model.config(), device))
            .transpose()?
            .and_then(|(lora, meta)| {
                let text = meta.get(REPORT)?;
                let report = match method {
                    Method::Ppo => Report::Ppo(serde_json::from_str(text).ok()?),
                    _ => Report::Dpo(serde_json::from_str(text).ok()?),
                };
                Some((lora, report))
            });
        let (lora, report) = match reuse {
            Some(done) => done,
            None => {
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                let (lora, report) = self.train(method, subject.case, &train, &held_out, &options, &log_path)?;
                let (settings, report_json) = match &report {
                    Report::Dpo(r) => (serde_json::to_string(dpo), serde_json::to_string(r)),
                    Report::Ppo(r) => (serde_json::to_string(ppo), serde_json::to_string(r)),
                };
                let meta: BTreeMap<String, String> = [
                    ("case".to_owned(), subject.case.to_string()),
                    ("keying".to_owned(), self.config.keying.as_str().to_owned()),
                    ("model_hash".to_owned(), model_hash(&self.provenance.model_dir)),
                    (format!("{method}_config"), settings.unwrap_or_default()),
                    (REPORT.to_owned(), report_json.unwrap_or_default()),
                ]
                .into_iter()
                .collect();
                dpo_baseline::adapters::save(&adapters_path, &lora, &meta)?;
                (lora, report)
            }
        };
        // Float weights take the adapters merged; quantized blocks cannot without loss, so
        // there the adapters run unmerged beside them.
        let (tuned, merged) = self.model.tuned(&lora)?;
        let tuned_scorer = Scorer::new(&tuned, self.prompts, self.config.scoring, self.config.batch)?;
        let t = Instant::now();
        let scored = Executor::new(&tuned_scorer, inv).one(&Request::plain(system, &self.test_items()))?;
        let (ref_s, train_s, ref_t, train_t) = report.cost();
        let seconds = Phases { eval: t.elapsed().as_secs_f64(), reference: ref_s, train: train_s, ..Default::default() };
        let tokens = Phases { eval: scored.tokens, reference: ref_t, train: train_t, ..Default::default() };
        let mut result = self.record(subject, method, &scored.items, seconds, tokens);
        result.adapters_merged = Some(merged);
        match report {
            Report::Dpo(r) => result.dpo = Some(r),
            Report::Ppo(r) => result.ppo = Some(r),
        }
        Ok(result)
    }

    /// Trains one subject's adapters, logging to `log_path` line by line.
    fn train(&self, method: Method, case: i64, train: &[Example], held_out: &[Example], options: &[u32; 5], log_path: &Path) -> Result<(Lora<B>, Report)> {
        let mut log = JsonLog::create(log_path)?;
        let progress = &self.progress;
        let out = match method {
            Method::Ppo => {
                let (lora, r) = dpo_baseline::ppo::train::<Autodiff<B>>(self.model, train, held_out, options, &self.config.ppo, |line| {
                    if let PpoLogLine::Step { step, stats, .. } = line {
                        progress.set_message(format!("case {case} · ppo step {step} · mean reward {:.3} · KL {:.4}", stats.objective.scores, stats.objective.kl));
                    }
                    log.line(line);
                })?;
                (lora, Report::Ppo(r))
            }
            _ => {
                let t = dpo_baseline::train::train::<Autodiff<B>>(self.model, train, held_out, options, &self.config.dpo, |line| {
                    if let LogLine::Step { step, stats: metrics, .. } = line {
                        progress.set_message(format!("case {case} · dpo step {step} · loss {:.3} · accuracy {:.2}", metrics.loss, metrics.rewards_accuracies));
                    }
                    log.line(line);
                })?;
                (t.lora, Report::Dpo(t.report))
            }
        };
        log.finish(log_path)?;
        Ok(out)
    }
}
