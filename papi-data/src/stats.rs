//! A summary of a PAPI dataset: counts, answer histogram, trait scores and the reference
//! predictors (what `cargo xtask papi-stats` prints).

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::Result;
use crate::inventory::{Domain, PerDomain};
use crate::keying::Protocol;
use crate::reference::{Reference, RidgeConfig, evaluate};
use crate::scoring::{Aggregate, domain_scores};

/// Mean and sample standard deviation (ddof 1) of a quantity over subjects.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Standard deviation with ddof = 1 (0 for a single value).
    pub sd: f64,
}

impl MeanSd {
    /// Mean and SD of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Some(MeanSd { mean, sd: var.sqrt() })
    }
}

/// A reference predictor's result on the dataset's split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceResult {
    /// Method name (`always-3`, `own-mean`, `ridge`).
    pub method: String,
    /// Per-domain MAE and Total.
    #[serde(flatten)]
    pub aggregate: Aggregate,
}

/// What `papi-stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The records file.
    pub records: String,
    /// Number of subjects.
    pub subjects: usize,
    /// Number of items.
    pub items: usize,
    /// Known / test items of the split.
    pub split: (usize, usize),
    /// The protocol the reference predictors were scored under.
    pub protocol: Protocol,
    /// Count of each stored value 0..=5 over all subjects and items (0 = missing).
    pub histogram: [u64; 6],
    /// Trait-direction domain scores over all items: mean and SD over subjects.
    pub domain_scores: PerDomain<Option<MeanSd>>,
    /// The three reference predictors on the split's test items (empty when skipped).
    pub references: Vec<ReferenceResult>,
}

/// Computes the summary of a dataset under `protocol`; `ridge: None` skips the reference
/// predictors (for a quick look at a very large file).
pub fn summarize(data: &Dataset, protocol: Protocol, ridge: Option<&RidgeConfig>) -> Result<Summary> {
    let mut histogram = [0u64; 6];
    for s in &data.subjects {
        for &v in &s.answers {
            histogram[usize::from(v.min(5))] += 1;
        }
    }
    let scores: Vec<PerDomain<Option<f64>>> = data.subjects.iter().map(|s| domain_scores(&data.inventory, s)).collect();
    let domain_scores = PerDomain::from_fn(|d: Domain| MeanSd::of(&scores.iter().filter_map(|m| m[d]).collect::<Vec<_>>()));
    let references = match ridge {
        None => Vec::new(),
        Some(ridge) => Reference::ALL
            .into_iter()
            .map(|r| {
                Ok(ReferenceResult {
                    method: r.name().to_owned(),
                    aggregate: evaluate(r, &data.inventory, &data.split, &data.subjects, protocol, ridge)?,
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    Ok(Summary {
        records: data.records_path.display().to_string(),
        subjects: data.subjects.len(),
        items: data.inventory.len(),
        split: (data.split.known.len(), data.split.test.len()),
        protocol,
        histogram,
        domain_scores,
        references,
    })
}
