//! Aggregates with uncertainty: percentile bootstrap over subjects (seeded), for the
//! per-domain means, the Total and paired differences between methods.

use papi_data::PerDomain;
use papi_data::scoring::aggregate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Resamples drawn.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap { resamples: 2000, seed: 0 }
    }
}

/// The `q` quantile (0..=1) of sorted values, by linear interpolation (NumPy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn percentile_interval(mut stats: Vec<f64>) -> Option<Interval> {
    stats.retain(|v| v.is_finite());
    if stats.is_empty() {
        return None;
    }
    stats.sort_by(f64::total_cmp);
    Some(Interval { lo: quantile(&stats, 0.025), hi: quantile(&stats, 0.975) })
}

/// 95% percentile-bootstrap intervals of the per-domain means and of the Total, resampling
/// subjects with replacement. `None` where there are no values.
pub fn aggregate_ci(per_subject: &[PerDomain<Option<f64>>], boot: Bootstrap) -> (PerDomain<Option<Interval>>, Option<Interval>) {
    if per_subject.is_empty() {
        return (PerDomain::default(), None);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(boot.seed);
    let mut domains: Vec<Vec<f64>> = (0..5).map(|_| Vec::with_capacity(boot.resamples)).collect();
    let mut totals = Vec::with_capacity(boot.resamples);
    let n = per_subject.len();
    let mut sample = Vec::with_capacity(n);
    for _ in 0..boot.resamples {
        sample.clear();
        sample.extend((0..n).map(|_| per_subject[rng.random_range(0..n)]));
        let agg = aggregate(&sample);
        for (d, v) in agg.per_domain.iter() {
            domains[d.index()].push(v.unwrap_or(f64::NAN));
        }
        totals.push(agg.total.unwrap_or(f64::NAN));
    }
    let per_domain = PerDomain::from_fn(|d| percentile_interval(std::mem::take(&mut domains[d.index()])));
    (per_domain, percentile_interval(totals))
}

/// Mean of paired differences and its 95% bootstrap interval (resampling pairs).
pub fn paired_difference(diffs: &[f64], boot: Bootstrap) -> Option<(f64, Interval)> {
    if diffs.is_empty() {
        return None;
    }
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(boot.seed);
    let stats: Vec<f64> = (0..boot.resamples).map(|_| (0..n).map(|_| diffs[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    Some((mean, percentile_interval(stats)?))
}
