//! Seeded synthetic populations in the PAPI record layout, for tests that must not depend on
//! the real data and for scale tests.
//!
//! The model: five latent traits drawn from a correlated normal (typical Big Five
//! intercorrelations), a facet score per facet loading on its domain, an item response
//! loading on its facet plus noise, a per-person acquiescence bias on the *actual* answer,
//! and fixed per-item thresholds that cut the response into 1..=5. Answers are stored as
//! released: reverse-keyed items reflected into the trait direction. A small share of
//! answers is missing (0).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::inventory::{Domain, Inventory, Sign};
use crate::keying::{MISSING, reflect};
use crate::linalg::cholesky;
use crate::records::{Demographics, Subject};

/// Settings of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Number of subjects.
    pub subjects: usize,
    /// Seed: the same seed gives the same population.
    pub seed: u64,
    /// Probability that an answer is missing (stored 0).
    pub missing_rate: f64,
    /// The first subject's `case` id; ids are consecutive.
    pub first_case: i64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { subjects: 200, seed: 0, missing_rate: 0.001, first_case: 1 }
    }
}

/// Big Five intercorrelations, in [`Domain::ALL`] order (A, C, E, N, O).
const TRAIT_CORRELATION: [[f64; 5]; 5] = [
    [1.00, 0.30, 0.20, -0.30, 0.10],
    [0.30, 1.00, 0.20, -0.40, 0.00],
    [0.20, 0.20, 1.00, -0.30, 0.30],
    [-0.30, -0.40, -0.30, 1.00, -0.10],
    [0.10, 0.00, 0.30, -0.10, 1.00],
];

fn normal(rng: &mut impl Rng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Fixed per-item parameters, drawn from the seed (so a population is reproducible).
struct ItemParams {
    loading: f64,
    thresholds: [f64; 4],
}

/// Generates `config.subjects` subjects answering every item of `inventory`.
pub fn generate(inventory: &Inventory, config: &SyntheticConfig) -> Vec<Subject> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let corr: Vec<f64> = TRAIT_CORRELATION.iter().flatten().copied().collect();
    let chol = cholesky(&corr, 5).unwrap_or_else(|| unreachable!("the trait correlation matrix is positive definite"));
    let items: Vec<ItemParams> = inventory
        .items()
        .iter()
        .map(|_| {
            let shift = 0.5 * normal(&mut rng);
            let spread = 0.8 + 0.4 * rng.random::<f64>();
            ItemParams {
                loading: 0.55 + 0.3 * rng.random::<f64>(),
                thresholds: [-1.5, -0.5, 0.3, 1.2].map(|t| t * spread + shift),
            }
        })
        .collect();
    let countries = ["USA", "USA", "USA", "UK", "Canada", "Australia", "India", "Germany"];
    let mut facet_score = [[0.0f64; 7]; 5];
    (0..config.subjects)
        .map(|k| {
            let z: [f64; 5] = std::array::from_fn(|_| normal(&mut rng));
            let traits: [f64; 5] = std::array::from_fn(|i| (0..=i).map(|j| chol[i * 5 + j] * z[j]).sum());
            for d in Domain::ALL {
                for slot in &mut facet_score[d.index()][1..=6] {
                    *slot = 0.8 * traits[d.index()] + 0.6 * normal(&mut rng);
                }
            }
            let acquiescence = 0.3 * normal(&mut rng);
            let answers = inventory
                .items()
                .iter()
                .zip(&items)
                .map(|(item, p)| {
                    let f = facet_score[item.domain().index()][usize::from(item.facet.number)];
                    let y = p.loading * f + (1.0 - p.loading * p.loading).sqrt() * normal(&mut rng);
                    let agreement = match item.sign {
                        Sign::Plus => y,
                        Sign::Minus => -y,
                    } + acquiescence;
                    let actual = 1 + p.thresholds.iter().filter(|&&t| agreement > t).count() as u8;
                    let stored = match item.sign {
                        Sign::Plus => actual,
                        Sign::Minus => reflect(actual),
                    };
                    if rng.random::<f64>() < config.missing_rate { MISSING } else { stored }
                })
                .collect();
            let demographics = Demographics {
                sex: Some(rng.random_range(1..=2)),
                age: Some(rng.random_range(14..=75)),
                sec: Some(rng.random_range(0..60)),
                min: Some(rng.random_range(0..60)),
                hour: Some(rng.random_range(0..24)),
                date: Some(rng.random_range(1..=28)),
                month: Some(rng.random_range(1..=12)),
                year: Some(rng.random_range(99..=110)),
                country: Some(countries[rng.random_range(0..countries.len())].to_owned()),
            };
            Subject { case: config.first_case + k as i64, demographics, answers }
        })
        .collect()
}
