//! The predictors that need no model of their own: the answer-bias control (`option-bias`,
//! on the shared plain pass) and the reference predictors.

use std::time::Instant;

use burn::tensor::backend::Backend;
use papi_data::reference;
use papi_data::scoring::subject_mae;
use papi_data::Subject;

use super::Evaluator;
use crate::decision::{argmax, fit_option_bias, option_of_answer, with_offsets};
use crate::error::Result;
use crate::method::Method;
use crate::results::{Phases, SubjectResult};
use crate::score::ItemScore;

impl<B: Backend> Evaluator<'_, B> {
    /// The answer-bias control for one subject: five logit offsets fitted on the answered
    /// known items over the unsteered model's option log-probabilities, then added to the
    /// test items' ones. No model time: both come from the shared plain pass.
    pub(super) fn option_bias(&self, subject: &Subject, plain_test: &[ItemScore]) -> SubjectResult {
        let inv = &self.data.inventory;
        let t = Instant::now();
        let (base, chosen): (Vec<[f32; 5]>, Vec<usize>) = self
            .data
            .split
            .known
            .iter()
            .filter(|&&n| subject.stored(n) != papi_data::keying::MISSING)
            .filter_map(|&n| {
                let answer = self.config.keying.answer(subject.stored(n), inv.item(n)?.sign);
                Some((*self.plain_of(n)?, option_of_answer(answer)))
            })
            .unzip();
        let offsets = fit_option_bias(&base, &chosen);
        let scores: Vec<ItemScore> = plain_test
            .iter()
            .map(|s| {
                let logprobs = with_offsets(&s.logprobs, &offsets);
                ItemScore { logprobs, choice: argmax(&logprobs), ..s.clone() }
            })
            .collect();
        let seconds = Phases { probes: t.elapsed().as_secs_f64(), ..Default::default() };
        let mut result = self.record(subject, Method::OptionBias, &scores, seconds, Phases::default());
        result.option_bias = Some(offsets);
        result
    }

    /// The reference predictors' results for the run's subjects (ridge fitted across the
    /// whole records file, each subject predicted by a model that never saw it).
    pub(super) fn references(&self, positions: &[usize], methods: &[Method]) -> Result<Vec<(Method, Vec<SubjectResult>)>> {
        let inv = &self.data.inventory;
        let items = self.test_items();
        let mut out = Vec::new();
        for m in methods.iter().copied().filter(|m| m.reference().is_some()) {
            let r = m.reference().expect("filtered");
            let preds = reference::predict(r, inv, &self.data.split, &self.data.subjects, self.config.keying, &self.config.ridge)?;
            let results = positions
                .iter()
                .map(|&i| (&self.data.subjects[i], &preds[i]))
                .map(|(s, p)| {
                    let records = items
                        .iter()
                        .map(|&i| self.item_record(s, i, p.get(i)))
                        .collect();
                    let mae = subject_mae(inv, s, &items, self.protocol(), p);
                    SubjectResult::new(s.case, m, mae, records)
                })
                .collect();
            out.push((m, results));
        }
        Ok(out)
    }
}
