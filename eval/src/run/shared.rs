//! Work shared by every subject of a run: the contrast prompts' head activations, the
//! unsteered model on every item under the default prompt, and the diagnostic built on it.

use std::time::Instant;

use burn::tensor::backend::Backend;
use pas_core::{HeadActivations, Steerable};

use super::{Contrast, ContrastMeta, Evaluator, PlainScores, read_json, write_atomic, write_json};
use crate::decision::{argmax, expected_answer};
use crate::error::{Error, Result};
use crate::prompt::{DEFAULT_SYSTEM, contrast_question};
use crate::request::{Executor, Request};
use crate::results::Diagnostic;
use crate::score::short_hash;

/// The contrast phase's name in progress reports.
const CONTRAST: &str = "head activations of the contrast prompts";
/// The plain pass's name in progress reports.
const PLAIN: &str = "the unsteered model on every item (shared by all subjects)";

impl<B: Backend> Evaluator<'_, B> {
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
        self.phase(CONTRAST, 0, rows.len(), t);
        let acts = self.model.capture_with_progress(&refs, &positions, &mut |done, total| self.phase(CONTRAST, done, total, t))?;
        let seconds = t.elapsed().as_secs_f64();
        let tokens = rows.iter().map(|r| r.len() as u64).sum();
        let bytes: Vec<u8> = acts.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        write_atomic(&bin_path, &bytes)?;
        write_json(&meta_path, &ContrastMeta { prompts_hash: hash, samples: rows.len(), geometry, seconds, tokens })?;
        Ok(Contrast { acts, seconds, tokens })
    }

    /// The unsteered model under the default system prompt on every known and test item
    /// (read from the run's cache when computed before).
    pub(super) fn plain_scores(&self, exec: &Executor<'_, '_, B>) -> Result<PlainScores> {
        let path = self.out.join("shared/plain.json");
        let items: Vec<u16> = self.data.split.known.iter().copied().chain(self.test_items()).collect();
        if path.exists() {
            let p: PlainScores = read_json(&path)?;
            if p.items == items {
                return Ok(p);
            }
        }
        let t = Instant::now();
        // Test items apart, in the order and batches every method asks them: no-change's
        // answers are then exactly what scoring the test items alone gives. Progress is told
        // batch by batch (running the parts in pieces instead would change each piece's
        // shared prefix, and so its rounding).
        self.phase(PLAIN, 0, items.len(), t);
        let (mut scores, mut tokens) = (Vec::with_capacity(items.len()), 0);
        for part in [self.data.split.known.clone(), self.test_items()] {
            if part.is_empty() {
                continue;
            }
            let before = (exec.scorer().prompts_scored(), scores.len());
            // The part runs on a scoped thread while this one reports its batches as they end.
            let scored = std::thread::scope(|s| {
                let job = s.spawn(|| exec.one(&Request::plain(DEFAULT_SYSTEM, &part)));
                let mut told = before.1;
                while !job.is_finished() {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let done = before.1 + (exec.scorer().prompts_scored() - before.0).min(part.len());
                    if done > told && done < items.len() {
                        self.phase(PLAIN, done, items.len(), t);
                        told = done;
                    }
                }
                job.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            })?;
            scores.extend(scored.items);
            tokens += scored.tokens;
            self.phase(PLAIN, scores.len(), items.len(), t);
        }
        let p = PlainScores { items, scores, seconds: t.elapsed().as_secs_f64(), tokens };
        write_json(&path, &p)?;
        Ok(p)
    }

    /// The unsteered model against the population: its expected answer per item against the
    /// mean answer of every subject of the records file.
    pub(super) fn diagnostic(&self) -> Option<Diagnostic> {
        let plain = self.plain.get()?;
        let inv = &self.data.inventory;
        let keying = self.config.keying;
        let test = self.test_items();
        let mut pairs = Vec::new();
        let mut test_pairs = Vec::new();
        let mut argmax_counts = [0usize; 5];
        for (&n, s) in plain {
            let sign = inv.item(n)?.sign;
            let answers: Vec<f64> = self
                .data
                .subjects
                .iter()
                .map(|sub| sub.stored(n))
                .filter(|&v| v != papi_data::keying::MISSING)
                .map(|v| f64::from(keying.answer(v, sign)))
                .collect();
            let (Some(e), false) = (expected_answer(&s.logprobs), answers.is_empty()) else { continue };
            let pop = answers.iter().sum::<f64>() / answers.len() as f64;
            pairs.push((e, pop));
            if test.contains(&n) {
                test_pairs.push((e, pop));
            }
            if let Some(c) = argmax(&s.logprobs) {
                argmax_counts[c] += 1;
            }
        }
        let total = argmax_counts.iter().sum::<usize>().max(1) as f64;
        let mean = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / pairs.len().max(1) as f64;
        Some(Diagnostic {
            items: pairs.len(),
            population: self.data.subjects.len(),
            correlation: pearson(&pairs),
            correlation_test: pearson(&test_pairs),
            argmax_answers: argmax_counts.map(|c| c as f64 / total),
            mean_expected: mean(|p| p.0),
            mean_population: mean(|p| p.1),
        })
    }
}

/// Pearson's correlation of the pairs; `None` with fewer than 3 or no spread.
fn pearson(pairs: &[(f64, f64)]) -> Option<f64> {
    let n = pairs.len() as f64;
    if pairs.len() < 3 {
        return None;
    }
    let (mx, my) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}
