//! The held-out choice of a decision rule (`--decision held-out`): per person and method, the
//! rule that reads that person's held-out known items best, on the folds of the strength search.

use burn::tensor::backend::Backend;
use papi_data::scoring::{Predictions, subject_mae};
use papi_data::{Folds, MissingAnswers, Protocol, Subject};

use super::{Evaluator, balanced};
use crate::decision::{Decision, RuleChoice};
use crate::error::Result;
use crate::method::Method;
use crate::prompt::{DEFAULT_SYSTEM, answer_of_option};
use crate::request::{Executor, Request};
use crate::results::SubjectResult;
use crate::score::ItemScore;

impl<B: Backend> Evaluator<'_, B> {
    /// Whether the run chooses its rule per person.
    pub(super) fn chooses_rule(&self) -> bool {
        self.config.decision == Decision::HeldOut
    }

    /// The Total over `items` (known items, with their `scores`) under `rule`, against the
    /// person's answers (domains without an item count 0).
    pub(super) fn total_under(&self, rule: Decision, subject: &Subject, method: Method, items: &[u16], scores: &[ItemScore], protocol: Protocol) -> f64 {
        let inv = &self.data.inventory;
        let mut preds = Predictions::empty(inv.len());
        for (&n, s) in items.iter().zip(scores) {
            if let Some(c) = self.decide_by(rule, method, n, s) {
                preds.set(n, answer_of_option(c));
            }
        }
        subject_mae(inv, subject, items, protocol, &preds).0.iter().flatten().sum()
    }

    /// The Total over `items` under `rule` (as [`Evaluator::total_under`]) and its standard
    /// error over the items: per domain the errors' variance over their count, summed.
    pub(super) fn total_se(&self, rule: Decision, subject: &Subject, method: Method, items: &[u16], scores: &[ItemScore], protocol: Protocol) -> (f64, f64) {
        let inv = &self.data.inventory;
        let mut errors: [Vec<f64>; 5] = Default::default();
        for (&n, s) in items.iter().zip(scores) {
            let (Some(item), Some(c), Some(t)) = (inv.item(n), self.decide_by(rule, method, n, s), papi_data::scoring::target(inv, subject, n, protocol)) else {
                continue;
            };
            errors[item.domain().index()].push(f64::from(papi_data::scoring::item_error(answer_of_option(c), t)));
        }
        let mut total = 0.0;
        let mut var = 0.0;
        for e in errors.iter().filter(|e| !e.is_empty()) {
            let n = e.len() as f64;
            let mean = e.iter().sum::<f64>() / n;
            total += mean;
            if e.len() > 1 {
                var += e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) / n;
            }
        }
        (total, var.sqrt())
    }

    /// Every reading rule's Total on held-out `items` and the choice among them.
    pub(super) fn rule_choice(&self, subject: &Subject, method: Method, items: &[u16], scores: &[ItemScore]) -> RuleChoice {
        let protocol = Protocol { keying: self.config.keying, missing: MissingAnswers::Exclude };
        let totals = Decision::READING.iter().map(|&r| (r, self.total_under(r, subject, method, items, scores, protocol))).collect();
        RuleChoice::from_totals(totals, items.len())
    }

    /// `result` with its rule choice attached and, under `held-out`, its answers read by it.
    pub(super) fn with_rule_choice(&self, result: SubjectResult, choice: Option<RuleChoice>) -> SubjectResult {
        let result = SubjectResult { rule_choice: choice, ..result };
        if self.chooses_rule() { crate::aggregate::redecide(&result, Decision::HeldOut) } else { result }
    }

    /// The known items a person answered, split into the strength search's folds.
    fn answered_folds(&self, subject: &Subject) -> Result<Option<Folds>> {
        let inv = &self.data.inventory;
        let answered: Vec<u16> = self.data.split.known.iter().copied().filter(|&n| subject.stored(n) != papi_data::keying::MISSING).collect();
        let Selection { folds, seed } = self.fold_settings();
        if answered.len() < folds.max(2) {
            return Ok(None);
        }
        Ok(Some(Folds::new(&answered, inv, folds, seed)?))
    }

    /// The held-out rule choice of a prompt-only method (no-change, few-shot, P²): each fold's
    /// held-out items (at most `--search-items` in all) asked under the method's prompt, which
    /// for few-shot leaves that fold's answers out. No-change reuses the unsteered pass.
    pub(super) fn prompt_rule_choice(&self, exec: &Executor<'_, '_, B>, subject: &Subject, method: Method, p2: Option<&str>) -> Result<Option<RuleChoice>> {
        if !self.chooses_rule() {
            return Ok(None);
        }
        let Some(folds) = self.answered_folds(subject)? else { return Ok(None) };
        let inv = &self.data.inventory;
        let per_fold = self.config.search_items.map(|n| n.div_ceil(folds.k()));
        let (mut items, mut scores) = (Vec::new(), Vec::new());
        for f in 0..folds.k() {
            let held = balanced(folds.held_out(f), inv, per_fold);
            let fold_scores: Vec<ItemScore> = match method {
                Method::NoChange => held.iter().map(|n| self.plain.get().and_then(|p| p.get(n)).cloned().expect("known items are in the plain pass")).collect(),
                Method::P2 => exec.one(&Request::plain(p2.unwrap_or(DEFAULT_SYSTEM).to_owned(), &held))?.items,
                _ => {
                    let rest: Vec<u16> = self.data.split.known.iter().copied().filter(|n| !folds.held_out(f).contains(n)).collect();
                    exec.one(&Request::plain(self.few_shot(subject, &rest), &held))?.items
                }
            };
            items.extend(held);
            scores.extend(fold_scores);
        }
        Ok(Some(self.rule_choice(subject, method, &items, &scores)))
    }
}

/// The fold settings of held-out selection (the run's, or 2 folds with its seed under oracle).
pub(super) struct Selection {
    pub(super) folds: usize,
    pub(super) seed: u64,
}
