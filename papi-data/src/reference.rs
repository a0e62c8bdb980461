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

use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
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
    /// `p × q`.
    weights: Array2<f64>,
}

/// Subjects per block of the normal equations: one `BLOCK × p` matrix product each, blocks
/// in parallel, summed in block order (so the result does not depend on the thread count).
const BLOCK: usize = 2048;

/// Column means over the non-missing stored values of `items` for `subjects`
/// (3 where an item has no answer at all).
fn item_means(subjects: &[&Subject], items: &[u16]) -> Vec<f64> {
    let mut sums = vec![(0u64, 0u64); items.len()];
    for s in subjects {
        for (acc, &n) in sums.iter_mut().zip(items) {
            let v = s.stored(n);
            if v != MISSING {
                *acc = (acc.0 + u64::from(v), acc.1 + 1);
            }
        }
    }
    sums.into_iter().map(|(sum, count)| if count == 0 { 3.0 } else { sum as f64 / count as f64 }).collect()
}

/// Centred values of `items` for `subjects` (one row each), missing answers imputed with the
/// means (a centred 0).
fn centred(subjects: &[&Subject], items: &[u16], means: &[f64]) -> Array2<f64> {
    Array2::from_shape_fn((subjects.len(), items.len()), |(r, c)| match subjects[r].stored(items[c]) {
        MISSING => 0.0,
        v => f64::from(v) - means[c],
    })
}

impl RidgeModel {
    fn fit(train: &[&Subject], split: &Split, lambda: f64) -> Result<Self> {
        let (p, q) = (split.known.len(), split.test.len());
        let mean_x = item_means(train, &split.known);
        let mean_y = item_means(train, &split.test);
        // Xᵀ[X | Y] per block of subjects, then summed in block order.
        let blocks: Vec<Array2<f64>> = train
            .par_chunks(BLOCK)
            .map(|block| {
                let x = centred(block, &split.known, &mean_x);
                let y = centred(block, &split.test, &mean_y);
                x.t().dot(&ndarray::concatenate![Axis(1), x, y])
            })
            .collect();
        let mut sum = Array2::zeros((p, p + q));
        for b in &blocks {
            sum += b;
        }
        let (xtx, xty) = sum.view().split_at(Axis(1), p);
        let mut xtx: Vec<f64> = xtx.iter().copied().collect();
        for i in 0..p {
            xtx[i * p + i] += lambda;
        }
        let mut xty: Vec<f64> = xty.iter().copied().collect();
        let l = cholesky(&xtx, p).ok_or_else(|| {
            Error::InvalidArgument(format!("ridge: the system is not positive definite (lambda = {lambda})"))
        })?;
        cholesky_solve(&l, p, &mut xty, q);
        let weights = Array2::from_shape_vec((p, q), xty).expect("p × q values");
        Ok(RidgeModel { mean_x, mean_y, weights })
    }

    /// Trait-direction predictions of the test items, one row per subject, unrounded.
    fn values(&self, split: &Split, subjects: &[&Subject]) -> Array2<f64> {
        let mut out = centred(subjects, &split.known, &self.mean_x).dot(&self.weights);
        out += &ndarray::aview1(&self.mean_y);
        out
    }
}

/// Maps one subject's trait-direction values of the test items to answers under `keying`.
fn to_predictions(inventory: &Inventory, split: &Split, values: &[f64], keying: Keying) -> Predictions {
    let mut p = Predictions::empty(inventory.len());
    for (&n, &v) in split.test.iter().zip(values) {
        if let Some(item) = inventory.item(n) {
            p.set(n, keying.answer(to_answer(v), item.sign));
        }
    }
    p
}

/// `ridge`'s unrounded trait-direction predictions of the split's test items (in
/// `split.test` order), one row per subject, each from a model fitted on the other folds'
/// subjects. Deterministic under `config.seed`; needs at least `config.folds` >= 2 subjects.
pub fn ridge_values(split: &Split, subjects: &[Subject], config: &RidgeConfig) -> Result<Vec<Vec<f64>>> {
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
    let mut out = vec![Vec::new(); subjects.len()];
    for f in 0..k {
        let in_fold = |g: &usize| *g == f;
        let train: Vec<&Subject> = subjects.iter().zip(&fold_of).filter(|(_, g)| !in_fold(g)).map(|(s, _)| s).collect();
        let model = RidgeModel::fit(&train, split, config.lambda)?;
        let (rows, held): (Vec<usize>, Vec<&Subject>) =
            subjects.iter().enumerate().filter(|(i, _)| in_fold(&fold_of[*i])).unzip();
        for (i, v) in rows.into_iter().zip(model.values(split, &held).rows()) {
            out[i] = v.to_vec();
        }
    }
    Ok(out)
}

/// `ridge` predictions for every subject: [`ridge_values`] rounded half to even and mapped
/// through `keying`.
pub fn ridge(
    inventory: &Inventory,
    split: &Split,
    subjects: &[Subject],
    keying: Keying,
    config: &RidgeConfig,
) -> Result<Vec<Predictions>> {
    Ok(ridge_values(split, subjects, config)?
        .iter()
        .map(|v| to_predictions(inventory, split, v, keying))
        .collect())
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
