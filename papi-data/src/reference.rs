//! Reference predictors: simple baselines every report shows beside the LLM methods.
//!
//! - `always-3`: answer 3 ("Neither Accurate Nor Inaccurate") to every item.
//! - `own-mean`: the subject's own trait-direction mean over the known items of the item's
//!   domain, rounded half to even (as Python's `round`), mapped through the keying.
//! - `ridge`: a population ridge regression from the known items to the test items,
//!   fitted on *other* subjects (k folds over subjects, shuffled with a seed).
//!
//! All three predict in the trait direction and map the prediction through the keying, so
//! each has the same error under both keyings (up to the handling of missing answers).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::keying::{Keying, MISSING, Protocol};
use crate::linalg::{cholesky, cholesky_solve};
use crate::records::Subject;
use crate::scoring::{Aggregate, Predictions, aggregate, domain_scores_over, subject_mae};
use crate::split::Split;

/// The reference predictors, by their method names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reference {
    /// Always answer 3.
    #[serde(rename = "always-3")]
    Always3,
    /// The subject's own rounded domain mean.
    OwnMean,
    /// Population ridge regression fitted on other subjects.
    Ridge,
}

impl Reference {
    /// All three, in report order.
    pub const ALL: [Reference; 3] = [Reference::Always3, Reference::OwnMean, Reference::Ridge];

    /// The method name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Reference::Always3 => "always-3",
            Reference::OwnMean => "own-mean",
            Reference::Ridge => "ridge",
        }
    }
}

/// Rounds a trait-direction estimate to an answer in 1..=5 (half to even, as Python).
fn to_answer(x: f64) -> u8 {
    x.round_ties_even().clamp(1.0, 5.0) as u8
}

/// `always-3` for the split's test items.
pub fn always_3(inventory: &Inventory, split: &Split) -> Predictions {
    let mut p = Predictions::empty(inventory.len());
    for &n in &split.test {
        p.set(n, 3);
    }
    p
}

/// `own-mean` for one subject: the rounded domain mean of its known answers (3 where a
/// domain has no answered known item), mapped through `keying`.
pub fn own_mean(inventory: &Inventory, split: &Split, subject: &Subject, keying: Keying) -> Predictions {
    let means = domain_scores_over(inventory, subject, &split.known);
    let mut p = Predictions::empty(inventory.len());
    for &n in &split.test {
        if let Some(item) = inventory.item(n) {
            let trait_value = means[item.domain()].map_or(3, to_answer);
            p.set(n, keying.answer(trait_value, item.sign));
        }
    }
    p
}

/// Settings of the `ridge` reference predictor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RidgeConfig {
    /// L2 penalty on the centred least-squares problem (sum of squares scale).
    pub lambda: f64,
    /// Folds over subjects: each fold is predicted by a model fitted on the others.
    pub folds: usize,
    /// Seed of the subject shuffle that forms the folds.
    pub seed: u64,
}

impl Default for RidgeConfig {
    /// λ = 100 (best of 1..3000 on the 200 dev subjects, 5-fold), 5 folds, seed 0.
    fn default() -> Self {
        RidgeConfig { lambda: 100.0, folds: 5, seed: 0 }
    }
}

/// A fitted ridge model: trait-direction known answers → trait-direction test answers.
struct RidgeModel {
    mean_x: Vec<f64>,
    mean_y: Vec<f64>,
    /// `p × q`, row-major.
    weights: Vec<f64>,
}

/// Column means over the non-missing stored values of `items` for `subjects`
/// (3 where an item has no answer at all).
fn item_means(subjects: &[&Subject], items: &[u16]) -> Vec<f64> {
    items
        .iter()
        .map(|&n| {
            let (sum, count) = subjects
                .iter()
                .map(|s| s.stored(n))
                .filter(|&v| v != MISSING)
                .fold((0u64, 0u64), |(s, c), v| (s + u64::from(v), c + 1));
            if count == 0 { 3.0 } else { sum as f64 / count as f64 }
        })
        .collect()
}

/// Centred values of `items` for one subject, missing answers imputed with the means.
fn centred(subject: &Subject, items: &[u16], means: &[f64]) -> impl Iterator<Item = f64> {
    items.iter().zip(means).map(move |(&n, &m)| match subject.stored(n) {
        MISSING => 0.0,
        v => f64::from(v) - m,
    })
}

impl RidgeModel {
    fn fit(train: &[&Subject], split: &Split, lambda: f64) -> Result<Self> {
        let (p, q) = (split.known.len(), split.test.len());
        let mean_x = item_means(train, &split.known);
        let mean_y = item_means(train, &split.test);
        let mut xtx = vec![0.0; p * p];
        let mut xty = vec![0.0; p * q];
        let mut x = vec![0.0; p];
        let mut y = vec![0.0; q];
        for s in train {
            for (slot, v) in x.iter_mut().zip(centred(s, &split.known, &mean_x)) {
                *slot = v;
            }
            for (slot, v) in y.iter_mut().zip(centred(s, &split.test, &mean_y)) {
                *slot = v;
            }
            for i in 0..p {
                let xi = x[i];
                if xi == 0.0 {
                    continue;
                }
                for j in 0..=i {
                    xtx[i * p + j] += xi * x[j];
                }
                for (acc, yj) in xty[i * q..(i + 1) * q].iter_mut().zip(&y) {
                    *acc += xi * yj;
                }
            }
        }
        for i in 0..p {
            for j in 0..i {
                xtx[j * p + i] = xtx[i * p + j];
            }
            xtx[i * p + i] += lambda;
        }
        let l = cholesky(&xtx, p).ok_or_else(|| {
            Error::InvalidArgument(format!("ridge: the system is not positive definite (lambda = {lambda})"))
        })?;
        cholesky_solve(&l, p, &mut xty, q);
        Ok(RidgeModel { mean_x, mean_y, weights: xty })
    }

    fn predict(&self, inventory: &Inventory, split: &Split, subject: &Subject, keying: Keying) -> Predictions {
        let q = split.test.len();
        let mut out = self.mean_y.clone();
        for (i, xi) in centred(subject, &split.known, &self.mean_x).enumerate() {
            if xi != 0.0 {
                for (o, w) in out.iter_mut().zip(&self.weights[i * q..(i + 1) * q]) {
                    *o += xi * w;
                }
            }
        }
        let mut p = Predictions::empty(inventory.len());
        for (&n, &v) in split.test.iter().zip(&out) {
            if let Some(item) = inventory.item(n) {
                p.set(n, keying.answer(to_answer(v), item.sign));
            }
        }
        p
    }
}

/// `ridge` predictions for every subject, each from a model fitted on the other folds'
/// subjects. Deterministic under `config.seed`; needs at least `config.folds` >= 2 subjects.
pub fn ridge(
    inventory: &Inventory,
    split: &Split,
    subjects: &[Subject],
    keying: Keying,
    config: &RidgeConfig,
) -> Result<Vec<Predictions>> {
    let k = config.folds;
    if k < 2 || subjects.len() < k {
        return Err(Error::InvalidArgument(format!(
            "ridge needs at least 2 folds and one subject per fold; got {k} folds for {} subjects",
            subjects.len()
        )));
    }
    if config.lambda.is_nan() || config.lambda <= 0.0 {
        return Err(Error::InvalidArgument(format!("ridge lambda must be > 0, got {}", config.lambda)));
    }
    // Folds are formed over the subjects sorted by case id, so the result does not depend
    // on the order in which subjects were given.
    let mut order: Vec<usize> = (0..subjects.len()).collect();
    order.sort_by_key(|&i| subjects[i].case);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed));
    let mut fold_of = vec![0usize; subjects.len()];
    for (pos, &i) in order.iter().enumerate() {
        fold_of[i] = pos % k;
    }
    let mut out = vec![Predictions::empty(inventory.len()); subjects.len()];
    for f in 0..k {
        let train: Vec<&Subject> = subjects.iter().zip(&fold_of).filter(|(_, g)| **g != f).map(|(s, _)| s).collect();
        let model = RidgeModel::fit(&train, split, config.lambda)?;
        for (i, s) in subjects.iter().enumerate().filter(|(i, _)| fold_of[*i] == f) {
            out[i] = model.predict(inventory, split, s, keying);
        }
    }
    Ok(out)
}

/// Predictions of one reference predictor for every subject.
pub fn predict(
    reference: Reference,
    inventory: &Inventory,
    split: &Split,
    subjects: &[Subject],
    keying: Keying,
    ridge_config: &RidgeConfig,
) -> Result<Vec<Predictions>> {
    Ok(match reference {
        Reference::Always3 => vec![always_3(inventory, split); subjects.len()],
        Reference::OwnMean => subjects.iter().map(|s| own_mean(inventory, split, s, keying)).collect(),
        Reference::Ridge => ridge(inventory, split, subjects, keying, ridge_config)?,
    })
}

/// Evaluates a reference predictor on the split's test items: the aggregate over subjects.
pub fn evaluate(
    reference: Reference,
    inventory: &Inventory,
    split: &Split,
    subjects: &[Subject],
    protocol: Protocol,
    ridge_config: &RidgeConfig,
) -> Result<Aggregate> {
    let preds = predict(reference, inventory, split, subjects, protocol.keying, ridge_config)?;
    let per_subject: Vec<_> = subjects
        .iter()
        .zip(&preds)
        .map(|(s, p)| subject_mae(inventory, s, &split.test, protocol, p))
        .collect();
    Ok(aggregate(&per_subject))
}
