//! L2-regularised logistic probes, one per head, and head ranking.
//!
//! The objective is scikit-learn's `LogisticRegression` default (`penalty="l2"`, `C = 1`,
//! intercept fitted and not penalised): minimise `C Σ log(1 + exp(-y (w·x + b))) + ½‖w‖²`.
//! It is strictly convex, so Newton's method (IRLS) with a backtracking line search reaches
//! the same optimum as sklearn's lbfgs, to a tighter tolerance.

use serde::{Deserialize, Serialize};

use crate::geometry::{HeadActivations, HeadId};
use crate::linalg::{cholesky_in_place, cholesky_solve};

/// A fitted probe: `p(label) = sigmoid(w·x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Weights, `[dim]`.
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
}

/// Settings of the probe fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Inverse regularisation strength (sklearn's `C`).
    pub c: f64,
    /// Newton iterations at most.
    pub max_iter: usize,
    /// Stop when the gradient's largest entry is below this.
    pub tol: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { c: 1.0, max_iter: 100, tol: 1e-8 }
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// log(1 + exp(-m)), stable for any margin m.
fn log1p_exp_neg(m: f64) -> f64 {
    if m > 0.0 { (-m).exp().ln_1p() } else { -m + m.exp().ln_1p() }
}

impl Probe {
    /// Fits a probe on `n` rows of `x` (`[n, dim]`, row-major) with labels `y`.
    ///
    /// Works for any data, separable or constant: the penalty keeps the optimum finite.
    pub fn fit(x: &[f64], y: &[bool], dim: usize, config: &ProbeConfig) -> Probe {
        let n = y.len();
        debug_assert_eq!(x.len(), n * dim);
        let p = dim + 1; // weights then intercept
        let mut theta = vec![0.0; p];
        let mut z = vec![0.0; n];
        let mut grad = vec![0.0; p];
        let mut hess = vec![0.0; p * p];
        let mut step = vec![0.0; p];
        let mut trial = vec![0.0; p];
        let c = config.c;
        let objective = |theta: &[f64], z: &mut [f64]| -> f64 {
            let mut loss = 0.0;
            for i in 0..n {
                let row = &x[i * dim..(i + 1) * dim];
                z[i] = dot(row, &theta[..dim]) + theta[dim];
                let m = if y[i] { z[i] } else { -z[i] };
                loss += log1p_exp_neg(m);
            }
            c * loss + 0.5 * dot(&theta[..dim], &theta[..dim])
        };
        let mut f = objective(&theta, &mut z);
        for _ in 0..config.max_iter {
            // Gradient and Hessian (lower triangle) at theta.
            grad[..dim].copy_from_slice(&theta[..dim]);
            grad[dim] = 0.0;
            hess.iter_mut().for_each(|h| *h = 0.0);
            for i in 0..n {
                let row = &x[i * dim..(i + 1) * dim];
                let pi = sigmoid(z[i]);
                let r = c * (pi - if y[i] { 1.0 } else { 0.0 });
                let s = c * pi * (1.0 - pi);
                axpy(r, row, &mut grad[..dim]);
                grad[dim] += r;
                for j in 0..dim {
                    let a = s * row[j];
                    axpy(a, &row[..=j], &mut hess[j * p..j * p + j + 1]);
                }
                axpy(s, row, &mut hess[dim * p..dim * p + dim]);
                hess[dim * p + dim] += s;
            }
            if grad.iter().fold(0.0f64, |m, g| m.max(g.abs())) < config.tol {
                break;
            }
            for j in 0..dim {
                hess[j * p + j] += 1.0;
            }
            hess[dim * p + dim] += 1e-10;
            if !cholesky_in_place(&mut hess, p) {
                break;
            }
            step.copy_from_slice(&grad);
            cholesky_solve(&hess, p, &mut step);
            // Backtracking line search on the objective.
            let mut t = 1.0;
            let decrease = dot(&grad, &step);
            let mut accepted = false;
            for _ in 0..30 {
                for k in 0..p {
                    trial[k] = theta[k] - t * step[k];
                }
                let ft = objective(&trial, &mut z);
                if ft <= f - 1e-4 * t * decrease || (f - ft).abs() <= 1e-15 * f.abs().max(1.0) {
                    accepted = ft <= f;
                    if accepted {
                        theta.copy_from_slice(&trial);
                        f = ft;
                    }
                    break;
                }
                t *= 0.5;
            }
            if !accepted {
                objective(&theta, &mut z);
                break;
            }
        }
        Probe { weights: theta[..dim].to_vec(), bias: theta[dim] }
    }

    /// The decision value `w·x + b`.
    pub fn decision(&self, x: &[f64]) -> f64 {
        dot(&self.weights, x) + self.bias
    }

    /// Share of rows classified correctly (decision > 0 means `true`); 0 rows give 0.
    pub fn accuracy(&self, x: &[f64], y: &[bool]) -> f64 {
        let dim = self.weights.len();
        if y.is_empty() {
            return 0.0;
        }
        let correct = y.iter().enumerate().filter(|(i, label)| (self.decision(&x[i * dim..(i + 1) * dim]) > 0.0) == **label).count();
        correct as f64 / y.len() as f64
    }
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// A head's probe result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeScore {
    /// The head.
    pub head: HeadId,
    /// Accuracy on the training part of the split.
    pub train_accuracy: f64,
    /// Accuracy on the validation part.
    pub validation_accuracy: f64,
}

/// How heads are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ranking {
    /// Validation accuracy (the paper).
    Validation,
    /// Mean of validation and training accuracy (the official code).
    MeanTrainValidation,
}

impl ProbeScore {
    /// The ranking score.
    pub fn score(&self, ranking: Ranking) -> f64 {
        match ranking {
            Ranking::Validation => self.validation_accuracy,
            Ranking::MeanTrainValidation => 0.5 * (self.validation_accuracy + self.train_accuracy),
        }
    }
}

/// Orders probe results best first. Ties (common: many heads reach training accuracy 1.0)
/// are broken deterministically: higher validation accuracy, then lower layer, then lower
/// head index.
pub fn rank_heads(scores: &mut [ProbeScore], ranking: Ranking) {
    scores.sort_by(|a, b| {
        b.score(ranking)
            .total_cmp(&a.score(ranking))
            .then(b.validation_accuracy.total_cmp(&a.validation_accuracy))
            .then(a.head.cmp(&b.head))
    });
}

/// Gathers one head's rows as `f64` (`[rows, head_dim]`).
pub(crate) fn gather(acts: &HeadActivations, head_index: usize, rows: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * acts.geometry().head_dim as usize);
    for &r in rows {
        out.extend(acts.head(r, head_index).iter().map(|&v| f64::from(v)));
    }
    out
}

/// Fits one probe per head on `train` rows and scores it on `train` and `validation` rows,
/// in parallel over heads (results do not depend on the number of threads).
pub fn fit_probes(
    acts: &HeadActivations,
    train: (&[usize], &[bool]),
    validation: (&[usize], &[bool]),
    config: &ProbeConfig,
) -> Vec<(Probe, ProbeScore)> {
    let geometry = acts.geometry();
    let dim = geometry.head_dim as usize;
    let heads: Vec<HeadId> = geometry.head_ids().collect();
    let heads = &heads;
    let fit_one = |idx: usize| {
        let xt = gather(acts, idx, train.0);
        let probe = Probe::fit(&xt, train.1, dim, config);
        let xv = gather(acts, idx, validation.0);
        let score = ProbeScore {
            head: heads[idx],
            train_accuracy: probe.accuracy(&xt, train.1),
            validation_accuracy: probe.accuracy(&xv, validation.1),
        };
        (probe, score)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(heads.len().max(1));
    let chunk = heads.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let fit_one = &fit_one;
                s.spawn(move || (t * chunk..((t + 1) * chunk).min(heads.len())).map(fit_one).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}
