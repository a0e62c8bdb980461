//! Steering directions and their scales.

use serde::{Deserialize, Serialize};

/// How a head's steering direction is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionMethod {
    /// Normalised difference of the class means, μ(true) − μ(false) (the official code).
    MassMean,
    /// The normalised probe weights (the paper's description).
    ProbeWeights,
}

/// Normalised mass-mean difference μ(true) − μ(false) of `rows` (`[n, dim]`), or `None`
/// when a class is empty or the difference is zero (or not finite).
pub fn mass_mean(rows: &[f64], labels: &[bool], dim: usize) -> Option<Vec<f64>> {
    let mut pos = vec![0.0; dim];
    let mut neg = vec![0.0; dim];
    let (mut np, mut nn) = (0usize, 0usize);
    for (i, &l) in labels.iter().enumerate() {
        let row = &rows[i * dim..(i + 1) * dim];
        let (acc, count) = if l { (&mut pos, &mut np) } else { (&mut neg, &mut nn) };
        *count += 1;
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    if np == 0 || nn == 0 {
        return None;
    }
    let diff: Vec<f64> = pos.iter().zip(&neg).map(|(p, n)| p / np as f64 - n / nn as f64).collect();
    normalise(diff)
}

/// `v / ‖v‖`, or `None` for a zero or non-finite vector.
pub fn normalise(v: Vec<f64>) -> Option<Vec<f64>> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| v.into_iter().map(|x| x / norm).collect())
}

/// Standard deviation of the projections `rows · direction` with `ddof` degrees of freedom
/// removed (`ddof = 0` is NumPy's default, used by the official code); 0 with too few rows.
pub fn projection_sigma(rows: &[f64], direction: &[f64], ddof: u32) -> f64 {
    let dim = direction.len();
    let n = rows.len() / dim.max(1);
    if n <= ddof as usize {
        return 0.0;
    }
    let proj: Vec<f64> = (0..n).map(|i| crate::probe::dot(&rows[i * dim..(i + 1) * dim], direction)).collect();
    let mean = proj.iter().sum::<f64>() / n as f64;
    let ss: f64 = proj.iter().map(|p| (p - mean).powi(2)).sum();
    (ss / (n - ddof as usize) as f64).sqrt()
}
