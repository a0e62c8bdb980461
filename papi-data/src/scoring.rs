//! Trait scores and the evaluation's metric helpers.
//!
//! Metric (DESIGN): for subject s and domain t, MAE = mean over the domain's test items of
//! |model answer - person's answer|; per domain, the mean over subjects; Total, the sum over
//! the five domains. Lower is better.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inventory::{Domain, Facet, Inventory, PerDomain};
use crate::keying::{MISSING, MissingAnswers, Protocol};
use crate::records::Subject;

/// Answers predicted for one subject, by item number (`None`: no prediction, e.g. an
/// unparsable generation, which the metric leaves out as the official code does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predictions(Vec<Option<u8>>);

impl Predictions {
    /// No predictions for an inventory of `n_items` items.
    pub fn empty(n_items: usize) -> Self {
        Predictions(vec![None; n_items])
    }

    /// Sets the predicted answer (1..=5) of item `number`.
    ///
    /// # Panics
    /// If `number` is not in 1..=n_items (a programming error, not an input error).
    pub fn set(&mut self, number: u16, answer: u8) {
        self.0[usize::from(number) - 1] = Some(answer);
    }

    /// The predicted answer of item `number`, if any.
    pub fn get(&self, number: u16) -> Option<u8> {
        usize::from(number).checked_sub(1).and_then(|i| self.0.get(i).copied().flatten())
    }
}

/// Trait-direction mean of the subject's stored values over `items`, per domain; missing
/// answers are left out; `None` for a domain with no answered item.
pub fn domain_scores_over(inventory: &Inventory, subject: &Subject, items: &[u16]) -> PerDomain<Option<f64>> {
    let mut sum = PerDomain::<(u32, u32)>::default();
    for &n in items {
        let Some(item) = inventory.item(n) else { continue };
        let v = subject.stored(n);
        if v != MISSING {
            let s = &mut sum[item.domain()];
            s.0 += u32::from(v);
            s.1 += 1;
        }
    }
    sum.map(|_, &(total, count)| (count > 0).then(|| f64::from(total) / f64::from(count)))
}

/// Trait-direction domain scores over every item of the inventory (each in 1..=5).
pub fn domain_scores(inventory: &Inventory, subject: &Subject) -> PerDomain<Option<f64>> {
    let all: Vec<u16> = inventory.items().iter().map(|i| i.number).collect();
    domain_scores_over(inventory, subject, &all)
}

/// Trait-direction facet scores over every item of the inventory.
pub fn facet_scores(inventory: &Inventory, subject: &Subject) -> BTreeMap<Facet, Option<f64>> {
    let mut sum: BTreeMap<Facet, (u32, u32)> = BTreeMap::new();
    for item in inventory.items() {
        let s = sum.entry(item.facet).or_default();
        let v = subject.stored(item.number);
        if v != MISSING {
            s.0 += u32::from(v);
            s.1 += 1;
        }
    }
    sum.into_iter().map(|(f, (t, c))| (f, (c > 0).then(|| f64::from(t) / f64::from(c)))).collect()
}

/// Absolute error of one item: |predicted - target| (0..=4 for answers on 1..=5; a target
/// of 0 only arises under [`MissingAnswers::ScoreAsZero`]).
pub fn item_error(predicted: u8, target: u8) -> u8 {
    predicted.abs_diff(target)
}

/// The target answer of item `number` for this subject under `protocol`: `None` when the
/// answer is missing and the protocol excludes missing answers.
pub fn target(inventory: &Inventory, subject: &Subject, number: u16, protocol: Protocol) -> Option<u8> {
    let item = inventory.item(number)?;
    match subject.stored(number) {
        MISSING => match protocol.missing {
            MissingAnswers::Exclude => None,
            MissingAnswers::ScoreAsZero => Some(0),
        },
        v => Some(protocol.keying.answer(v, item.sign)),
    }
}

/// One subject's per-domain MAE over `items`, predictions in the protocol's answer space.
/// A domain with no scored item is `None`.
pub fn subject_mae(
    inventory: &Inventory,
    subject: &Subject,
    items: &[u16],
    protocol: Protocol,
    predictions: &Predictions,
) -> PerDomain<Option<f64>> {
    let mut sum = PerDomain::<(u32, u32)>::default();
    for &n in items {
        let (Some(item), Some(pred), Some(t)) =
            (inventory.item(n), predictions.get(n), target(inventory, subject, n, protocol))
        else {
            continue;
        };
        let s = &mut sum[item.domain()];
        s.0 += u32::from(item_error(pred, t));
        s.1 += 1;
    }
    sum.map(|_, &(total, count)| (count > 0).then(|| f64::from(total) / f64::from(count)))
}

/// The aggregate over subjects: per-domain mean MAE and Total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Mean over subjects of each domain's MAE (subjects without a value left out).
    pub per_domain: PerDomain<Option<f64>>,
    /// Sum of the five per-domain values; `None` if any domain has none.
    pub total: Option<f64>,
    /// Number of subjects aggregated.
    pub subjects: usize,
}

/// Aggregates per-subject MAEs (order does not matter).
pub fn aggregate(per_subject: &[PerDomain<Option<f64>>]) -> Aggregate {
    let per_domain = PerDomain::from_fn(|d: Domain| {
        let vals: Vec<f64> = per_subject.iter().filter_map(|m| m[d]).collect();
        (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
    });
    let total = per_domain.0.iter().copied().sum::<Option<f64>>();
    Aggregate { per_domain, total, subjects: per_subject.len() }
}

/// One subject's Total (sum of its per-domain MAEs), `None` if a domain has none.
pub fn subject_total(mae: &PerDomain<Option<f64>>) -> Option<f64> {
    mae.0.iter().copied().sum()
}
