//! Strength search: the official grid, golden-section search over an interval, and the
//! folds of the held-out objective (k folds over the subject's known pairs; their fits are
//! [`crate::fit::fit_held_out_folds`]).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the strength alpha is searched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Search {
    /// Try each value; keep the best (ties: the earliest listed).
    Grid {
        /// The strengths tried.
        alphas: Vec<f64>,
    },
    /// Golden-section search on `[lo, hi]` (the paper), stopping when the bracket is
    /// narrower than `tol` or after `max_evals` evaluations; the best evaluated point wins.
    GoldenSection {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
        /// Bracket width at which to stop.
        tol: f64,
        /// Objective evaluations at most.
        max_evals: usize,
    },
}

impl Search {
    /// The official grid {0, 1, 2, 4, 6, 8}.
    pub fn official_grid() -> Self {
        Search::Grid { alphas: vec![0.0, 1.0, 2.0, 4.0, 6.0, 8.0] }
    }

    /// Golden-section over [0, 10] as the paper describes, to a bracket of 0.25.
    pub fn paper_golden_section() -> Self {
        Search::GoldenSection { lo: 0.0, hi: 10.0, tol: 0.25, max_evals: 16 }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        match self {
            Search::Grid { alphas } if alphas.is_empty() || alphas.iter().any(|a| !a.is_finite()) => {
                Err(Error::Config("the strength grid must be non-empty and finite".into()))
            }
            Search::GoldenSection { lo, hi, tol, max_evals } if !(lo < hi && *tol > 0.0 && *max_evals >= 2) => {
                Err(Error::Config(format!("golden-section needs lo < hi, tol > 0, max_evals >= 2 (got {lo}, {hi}, {tol}, {max_evals})")))
            }
            _ => Ok(()),
        }
    }

    /// Minimises `objective` over alpha. A NaN objective value counts as +infinity.
    pub fn run<E>(&self, mut objective: impl FnMut(f64) -> Result<f64, E>) -> Result<SearchResult, E> {
        let mut evals: Vec<(f64, f64)> = Vec::new();
        let mut eval = |a: f64, evals: &mut Vec<(f64, f64)>| -> Result<f64, E> {
            let v = objective(a)?;
            let v = if v.is_nan() { f64::INFINITY } else { v };
            evals.push((a, v));
            Ok(v)
        };
        match self {
            Search::Grid { alphas } => {
                for &a in alphas {
                    eval(a, &mut evals)?;
                }
            }
            Search::GoldenSection { lo, hi, tol, max_evals } => {
                let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
                let (mut a, mut b) = (*lo, *hi);
                let mut c = b - inv_phi * (b - a);
                let mut d = a + inv_phi * (b - a);
                let mut fc = eval(c, &mut evals)?;
                let mut fd = eval(d, &mut evals)?;
                while (b - a) > *tol && evals.len() < *max_evals {
                    if fc <= fd {
                        b = d;
                        d = c;
                        fd = fc;
                        c = b - inv_phi * (b - a);
                        fc = eval(c, &mut evals)?;
                    } else {
                        a = c;
                        c = d;
                        fc = fd;
                        d = a + inv_phi * (b - a);
                        fd = eval(d, &mut evals)?;
                    }
                }
            }
        }
        let (alpha, value) = evals
            .iter()
            .copied()
            .fold((f64::NAN, f64::INFINITY), |best, (a, v)| if v < best.1 || best.0.is_nan() { (a, v) } else { best });
        Ok(SearchResult { alpha, value, evaluations: evals })
    }
}

/// The outcome of a strength search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The best strength.
    pub alpha: f64,
    /// Its objective value.
    pub value: f64,
    /// Every `(alpha, value)` evaluated, in order.
    pub evaluations: Vec<(f64, f64)>,
}

/// On which items the strength is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Selection {
    /// k folds over the subject's known pairs: fit on k − 1 folds, score the held-out fold.
    HeldOut {
        /// Number of folds.
        folds: usize,
        /// Seed of the fold assignment.
        seed: u64,
    },
    /// On the test items themselves, as the official code does (reports must say so).
    Oracle,
}

/// Deals group ids into `k` folds after a seeded shuffle (sizes differ by at most one).
pub fn kfold_groups(groups: &[usize], k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut g: Vec<usize> = groups.to_vec();
    g.sort_unstable();
    g.dedup();
    g.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut folds = vec![Vec::new(); k.max(1)];
    for (i, id) in g.into_iter().enumerate() {
        folds[i % k.max(1)].push(id);
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    folds
}

