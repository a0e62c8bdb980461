//! Synthetic activations for the tests.

use pas_core::{ContrastPair, Geometry, HeadActivations, LabelledSample, Preference, labelled_samples};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Gaussian noise.
pub fn normal(rng: &mut impl Rng) -> f32 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// `pairs` contrast pairs (rows 2i, 2i+1) of noise, with `signal` added along a random
/// direction of each planted head (layer-major index) for the preferred prompt and
/// subtracted for the other. Preferences cycle First, First, Second, with every fifth pair
/// unlabelled.
pub fn planted(
    geometry: Geometry,
    pairs: usize,
    planted: &[(usize, f32)],
    seed: u64,
) -> (HeadActivations, Vec<LabelledSample>, Vec<Option<Preference>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = geometry.sample_len();
    let d = geometry.head_dim as usize;
    let mut data: Vec<f32> = (0..2 * pairs * len).map(|_| normal(&mut rng)).collect();
    let prefs: Vec<Option<Preference>> = (0..pairs)
        .map(|i| match i % 5 {
            4 => None,
            2 => Some(Preference::Second),
            _ => Some(Preference::First),
        })
        .collect();
    for &(head, signal) in planted {
        let dir: Vec<f32> = (0..d).map(|_| normal(&mut rng)).collect();
        let norm = dir.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (i, pref) in prefs.iter().enumerate() {
            let Some(p) = *pref else { continue };
            let first_is_me = p == Preference::First;
            for (row, me) in [(2 * i, first_is_me), (2 * i + 1, !first_is_me)] {
                let s = if me { signal } else { -signal };
                for k in 0..d {
                    data[row * len + head * d + k] += s * dir[k] / norm;
                }
            }
        }
    }
    let acts = HeadActivations::new(geometry, 2 * pairs, data).expect("shape");
    let pair_rows: Vec<ContrastPair> = (0..pairs).map(|i| ContrastPair { first: 2 * i, second: 2 * i + 1 }).collect();
    (acts, labelled_samples(&pair_rows, &prefs), prefs)
}
