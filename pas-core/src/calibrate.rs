//! A strength unit defined by its effect: how far steering moves the model's five-option
//! answer distribution, in nats of KL(steered || unsteered), and where to steer.
//!
//! Raw alpha (alpha x sigma per head) means different things on different models: on
//! Llama-3-8B-Instruct the original grid's 1 is a nudge, on Qwen2.5-Coder-1.5B it already
//! turns every answer into "A". A grid of KL targets means the same on any model: each
//! intervention's [`KlCurve`] (mean KL over a fixed set of prompts, measured on a ladder of
//! raw strengths) says which raw alpha reaches each target.
//!
//! ```
//! use pas_core::calibrate::{KlCurve, one_se_choice};
//! // KL grows like alpha² near zero: 0.01 nat at 0.5, 0.04 at 1, 0.16 at 2.
//! let curve = KlCurve::new(vec![(0.5, 0.01), (1.0, 0.04), (2.0, 0.16)]);
//! assert!((curve.alpha_for(0.04).unwrap() - 1.0).abs() < 1e-12);
//! assert_eq!(curve.alpha_for(1.0), None); // beyond the ladder
//! // The smallest effect whose objective is within one standard error of the best.
//! assert_eq!(one_se_choice(&[(3.0, 0.1), (2.95, 0.1), (2.5, 0.2)]), Some(2));
//! assert_eq!(one_se_choice(&[(3.0, 0.1), (2.95, 0.1), (2.9, 0.2)]), Some(0));
//! ```

use serde::{Deserialize, Serialize};

use crate::intervention::Positions;

/// Which layers' heads an intervention may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerWindow {
    /// Every layer (the original).
    #[default]
    All,
    /// Every layer but the first two and the last (llama.cpp's control vectors never steer
    /// layer 0, where activations are largest).
    Inner,
}

impl LayerWindow {
    /// Whether it is [`LayerWindow::All`] (the default, left out of settings files).
    pub fn is_all(&self) -> bool {
        *self == LayerWindow::All
    }

    /// Whether a head of `layer` may be steered in a model of `layers` layers (a model too
    /// shallow to have inner layers keeps them all).
    pub fn holds(self, layer: u32, layers: u32) -> bool {
        match self {
            LayerWindow::All => true,
            LayerWindow::Inner if layers < 4 => true,
            LayerWindow::Inner => layer >= 2 && layer + 1 < layers,
        }
    }

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerWindow::All => "all",
            LayerWindow::Inner => "inner",
        }
    }
}

impl std::str::FromStr for LayerWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(LayerWindow::All),
            "inner" => Ok(LayerWindow::Inner),
            _ => Err(format!("unknown layer window `{s}` (expected all or inner)")),
        }
    }
}

/// Where an intervention steers: the layers its heads come from and the positions steered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Setting {
    /// The layers heads may come from.
    pub window: LayerWindow,
    /// The positions steered.
    pub positions: Positions,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} layers, {} positions", self.window.as_str(), self.positions.as_str())
    }
}

/// The unit of the strength grid.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum StrengthUnit {
    /// Raw alpha: alpha x sigma added per head (the original's).
    #[default]
    Raw,
    /// Nats of mean KL(steered || unsteered) over the five options: each grid value is the
    /// raw alpha whose measured KL reaches it, read off a curve measured at `ladder`.
    Kl {
        /// Raw strengths the curve is measured at, ascending and positive.
        ladder: Vec<f64>,
    },
}

impl StrengthUnit {
    /// Whether it is [`StrengthUnit::Raw`] (the default, left out of settings files).
    pub fn is_raw(&self) -> bool {
        *self == StrengthUnit::Raw
    }

    /// The KL unit on the default ladder: raw 1/64 to 16, doubling (11 strengths).
    pub fn kl() -> Self {
        StrengthUnit::Kl { ladder: (-6..=4).map(|k| 2f64.powi(k)).collect() }
    }
}

/// How the strength is chosen among those evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrengthChoice {
    /// The lowest objective (ties: the earliest evaluated).
    #[default]
    Best,
    /// The earliest evaluated (the smallest effect) whose objective is within one standard
    /// error of the lowest: a gain inside the objective's own noise is not trusted.
    OneSe,
}

impl StrengthChoice {
    /// Whether it is [`StrengthChoice::Best`] (the default, left out of settings files).
    pub fn is_best(&self) -> bool {
        *self == StrengthChoice::Best
    }

    /// The chosen index among `(objective, standard error)` in preference order, `None` when
    /// no objective is finite.
    pub fn choose(self, candidates: &[(f64, f64)]) -> Option<usize> {
        match self {
            StrengthChoice::Best => best(candidates),
            StrengthChoice::OneSe => one_se_choice(candidates),
        }
    }
}

impl std::str::FromStr for StrengthChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "best" => Ok(StrengthChoice::Best),
            "one-se" => Ok(StrengthChoice::OneSe),
            _ => Err(format!("unknown strength choice `{s}` (expected best or one-se)")),
        }
    }
}

fn best(candidates: &[(f64, f64)]) -> Option<usize> {
    candidates.iter().enumerate().filter(|(_, c)| c.0.is_finite()).fold(None, |b: Option<usize>, (i, c)| match b {
        Some(j) if candidates[j].0 <= c.0 => Some(j),
        _ => Some(i),
    })
}

/// The first of `candidates` (objective, standard error; smallest effect first) whose
/// objective is at most the lowest plus the lowest's standard error.
pub fn one_se_choice(candidates: &[(f64, f64)]) -> Option<usize> {
    let b = best(candidates)?;
    let (v, se) = candidates[b];
    let bar = v + if se.is_finite() { se } else { 0.0 };
    candidates.iter().position(|c| c.0.is_finite() && c.0 <= bar)
}

/// KL(steered || base) between two five-option distributions given as log-probabilities,
/// each renormalised over the five options (non-finite entries count as probability 0).
pub fn option_kl(steered: &[f32; 5], base: &[f32; 5]) -> f64 {
    let norm = |lp: &[f32; 5]| -> [f64; 5] {
        let m = lp.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = lp.iter().map(|&v| if v.is_finite() { f64::from(v - m).exp() } else { 0.0 }).collect();
        let z: f64 = e.iter().sum();
        std::array::from_fn(|i| if z > 0.0 { e[i] / z } else { 0.2 })
    };
    let (p, q) = (norm(steered), norm(base));
    (0..5).filter(|&i| p[i] > 0.0).map(|i| p[i] * (p[i] / q[i].max(1e-30)).ln()).sum::<f64>().max(0.0)
}

/// Mean KL against raw strength for one intervention: `(alpha, kl)` ascending in alpha.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlCurve {
    /// The measured points, ascending in alpha (alpha 0, KL 0 implied).
    pub points: Vec<(f64, f64)>,
}

impl KlCurve {
    /// A curve from measured points (sorted by alpha; points at alpha <= 0 dropped).
    pub fn new(mut points: Vec<(f64, f64)>) -> Self {
        points.retain(|p| p.0 > 0.0 && p.0.is_finite());
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        KlCurve { points }
    }

    /// The raw strength at which the curve first reaches `kl`: 0 for a target of 0, else
    /// interpolated between the two measured points around the first crossing, linearly in
    /// log alpha and log KL (below the first point, as KL ∝ alpha² does near zero). `None`
    /// when no measured strength reaches it.
    pub fn alpha_for(&self, kl: f64) -> Option<f64> {
        if kl <= 0.0 {
            return Some(0.0);
        }
        let i = self.points.iter().position(|p| p.1 >= kl)?;
        let (a1, k1) = self.points[i];
        let below = i.checked_sub(1).map(|j| self.points[j]).filter(|p| p.1 > 0.0);
        Some(match below {
            None => a1 * (kl / k1).sqrt(),
            Some((a0, k0)) if k1 > k0 => (a0.ln() + (kl.ln() - k0.ln()) * (a1.ln() - a0.ln()) / (k1.ln() - k0.ln())).exp(),
            Some(_) => a1,
        })
    }

    /// The KL at raw strength `alpha`, interpolated as [`KlCurve::alpha_for`] does (beyond
    /// the last point: the last point's).
    pub fn kl_at(&self, alpha: f64) -> f64 {
        if alpha <= 0.0 || self.points.is_empty() {
            return 0.0;
        }
        match self.points.iter().position(|p| p.0 >= alpha) {
            None => self.points.last().map_or(0.0, |p| p.1),
            Some(0) => self.points[0].1 * (alpha / self.points[0].0).powi(2),
            Some(i) => {
                let ((a0, k0), (a1, k1)) = (self.points[i - 1], self.points[i]);
                if k0 <= 0.0 || k1 <= 0.0 {
                    return k0 + (k1 - k0) * (alpha - a0) / (a1 - a0);
                }
                (k0.ln() + (alpha.ln() - a0.ln()) * (k1.ln() - k0.ln()) / (a1.ln() - a0.ln())).exp()
            }
        }
    }
}
