//! The PAS fit: from one subject's labelled samples to an [`Intervention`], as four pure
//! steps (split and fit probes, rank heads, directions, scales) with the seed passed in.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::calibrate::{LayerWindow, Setting, StrengthChoice, StrengthUnit};
use crate::direction::{DirectionMethod, mass_mean, normalise, projection_sigma};
use crate::error::{Error, Result};
use crate::geometry::HeadActivations;
use crate::intervention::{Intervention, Positions, SteeredHead};
use crate::labels::LabelledSample;
use crate::probe::{ProbeConfig, ProbeScore, Ranking, fit_probes, gather, rank_heads};
use crate::search::{Search, Selection};

/// Every setting of a PAS run; echoed into reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasConfig {
    /// The preset this started from (`official` or `heldout`), for reports.
    pub preset: String,
    /// Heads kept (K).
    pub top_k: usize,
    /// How heads are ranked.
    pub ranking: Ranking,
    /// How directions are obtained.
    pub direction: DirectionMethod,
    /// Degrees of freedom removed in sigma (0: NumPy's default, as the official code).
    pub sigma_ddof: u32,
    /// Share of pairs held out to validate the probes.
    pub validation_fraction: f64,
    /// The probe's regularisation and solver settings.
    pub probe: ProbeConfig,
    /// Seed of the probe train/validation split.
    pub seed: u64,
    /// Fewer labelled pairs than this: no intervention (see [`Fallback`]).
    pub min_pairs: usize,
    /// Which positions are steered.
    pub positions: Positions,
    /// How the strength alpha is searched.
    pub search: Search,
    /// On which items the strength is selected.
    pub selection: Selection,
    /// The assistant answers of the contrast prompts: (most agree, most disagree).
    pub contrast: (String, String),
    /// The layers steered heads may come from.
    #[serde(default, skip_serializing_if = "LayerWindow::is_all")]
    pub window: LayerWindow,
    /// The unit of the strength grid (`search`): raw alpha (the original's) or KL nats.
    #[serde(default, skip_serializing_if = "StrengthUnit::is_raw")]
    pub unit: StrengthUnit,
    /// How the strength is chosen among the grid's.
    #[serde(default, skip_serializing_if = "StrengthChoice::is_best")]
    pub choice: StrengthChoice,
    /// Where to steer, chosen held out beside the strength; empty: `window` and `positions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<Setting>,
}

impl PasConfig {
    /// The official code's settings: K = 24, grid {0,1,2,4,6,8}, ranking by the mean of
    /// validation and training accuracy, mass-mean directions, sigma with ddof 0, every
    /// position steered, contrast answers "A"/"E", strength chosen on the test items.
    pub fn official() -> Self {
        PasConfig {
            preset: "official".into(),
            top_k: 24,
            ranking: Ranking::MeanTrainValidation,
            direction: DirectionMethod::MassMean,
            sigma_ddof: 0,
            validation_fraction: 0.4,
            probe: ProbeConfig::default(),
            seed: 42,
            min_pairs: 4,
            positions: Positions::All,
            search: Search::official_grid(),
            selection: Selection::Oracle,
            contrast: ("A".into(), "E".into()),
            window: LayerWindow::All,
            unit: StrengthUnit::Raw,
            choice: StrengthChoice::Best,
            settings: Vec::new(),
        }
    }

    /// This project's default: the official settings with the strength selected on held-out
    /// folds of the subject's known items (5 folds), never on the test items.
    pub fn heldout() -> Self {
        PasConfig { preset: "heldout".into(), selection: Selection::HeldOut { folds: 5, seed: 0 }, ..Self::official() }
    }

    /// The KL-calibrated search: the strength grid in nats of KL (0, 0.01, 0.03, 0.1, 0.3, 1)
    /// with the smallest effect within one standard error chosen, held out, and where to
    /// steer chosen among `settings` on the same folds.
    pub fn calibrated(settings: Vec<Setting>) -> Self {
        PasConfig {
            preset: "calibrated".into(),
            search: Search::Grid { alphas: vec![0.0, 0.01, 0.03, 0.1, 0.3, 1.0] },
            unit: StrengthUnit::kl(),
            choice: StrengthChoice::OneSe,
            window: settings.first().map_or(LayerWindow::All, |s| s.window),
            positions: settings.first().map_or(Positions::All, |s| s.positions),
            settings,
            ..Self::heldout()
        }
    }

    /// The settings searched: `settings`, or the one of `window` and `positions`.
    pub fn candidate_settings(&self) -> Vec<Setting> {
        if self.settings.is_empty() { vec![Setting { window: self.window, positions: self.positions }] } else { self.settings.clone() }
    }

    /// These settings with `setting`'s window and positions (and no others searched).
    pub fn at(&self, setting: Setting) -> Self {
        PasConfig { window: setting.window, positions: setting.positions, settings: Vec::new(), ..self.clone() }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if let StrengthUnit::Kl { ladder } = &self.unit {
            if ladder.is_empty() || ladder.iter().any(|a| !(*a > 0.0 && a.is_finite())) || ladder.windows(2).any(|w| w[0] >= w[1]) {
                return bad("the KL unit's ladder must be positive, finite and ascending".into());
            }
            if !matches!(&self.search, Search::Grid { alphas } if alphas.iter().all(|a| *a >= 0.0)) || self.selection == Selection::Oracle {
                return bad("the KL unit needs a grid of non-negative KL targets and held-out selection".into());
            }
        }
        if self.settings.len() > 1 && (self.selection == Selection::Oracle || !matches!(self.search, Search::Grid { .. })) {
            return bad("choosing where to steer needs a strength grid and held-out selection".into());
        }
        if self.top_k == 0 {
            return bad("top_k must be at least 1".into());
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad(format!("validation_fraction must be in (0, 1), got {}", self.validation_fraction));
        }
        if !(self.probe.c > 0.0 && self.probe.c.is_finite()) {
            return bad(format!("probe C must be > 0, got {}", self.probe.c));
        }
        if self.min_pairs < 2 {
            return bad("min_pairs must be at least 2 (one to train, one to validate)".into());
        }
        self.search.validate()?;
        if let Selection::HeldOut { folds, .. } = self.selection
            && folds < 2
        {
            return bad(format!("held-out selection needs at least 2 folds, got {folds}"));
        }
        Ok(())
    }
}

/// Why a subject gets no intervention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum Fallback {
    /// Too few labelled pairs (e.g. a person who answered 3 to almost everything).
    TooFewPairs {
        /// Labelled pairs available.
        have: usize,
        /// The configured minimum.
        need: usize,
    },
    /// All samples carry the same label.
    OneClass,
    /// No head had a usable direction (zero variance or identical class means everywhere).
    NoUsableHead,
}

/// The outcome of a PAS fit for one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct PasFit {
    /// The intervention (empty on a fallback).
    pub intervention: Intervention,
    /// Why there is no intervention, if there is none.
    pub fallback: Option<Fallback>,
    /// Every head's probe result, ranked best first (empty on an early fallback).
    pub probes: Vec<ProbeScore>,
    /// Labelled groups (pairs) used.
    pub groups: usize,
}

/// Splits group ids into train and validation with a seeded shuffle: the first
/// `round((1 - validation_fraction) * n)` shuffled groups train (at least one, and at least
/// one group is left to validate).
pub fn split_groups(groups: &[usize], validation_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut g: Vec<usize> = groups.to_vec();
    g.sort_unstable();
    g.dedup();
    g.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = g.len();
    let n_train = (((1.0 - validation_fraction) * n as f64).round() as usize).clamp(1.min(n), n.saturating_sub(1).max(1));
    let val = g.split_off(n_train.min(n));
    (g, val)
}

/// Fits a PAS intervention from one subject's labelled samples.
///
/// Steps: split the groups (pairs) 60/40 with `config.seed`; fit a probe per head on the
/// training samples; rank heads by `config.ranking`; walk the ranking and keep the first
/// `top_k` heads with a usable direction (computed over all the subject's samples, as the
/// official code does) and a positive sigma. Degenerate inputs give an empty intervention
/// and a [`Fallback`], never NaN or a panic.
pub fn fit_intervention(acts: &HeadActivations, samples: &[LabelledSample], config: &PasConfig) -> Result<PasFit> {
    config.validate()?;
    let geometry = acts.geometry();
    for s in samples {
        if s.row >= acts.samples() {
            return Err(Error::Shape { what: format!("labelled sample row {}", s.row), expected: acts.samples(), found: s.row });
        }
    }
    let groups: Vec<usize> = {
        let mut g: Vec<usize> = samples.iter().map(|s| s.group).collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    let empty = |fallback, probes| PasFit { intervention: Intervention::empty(geometry), fallback: Some(fallback), probes, groups: groups.len() };
    if groups.len() < config.min_pairs {
        return Ok(empty(Fallback::TooFewPairs { have: groups.len(), need: config.min_pairs }, Vec::new()));
    }
    if samples.iter().all(|s| s.label) || samples.iter().all(|s| !s.label) {
        return Ok(empty(Fallback::OneClass, Vec::new()));
    }
    let (train_groups, _) = split_groups(&groups, config.validation_fraction, config.seed);
    let in_train = |g: usize| train_groups.binary_search(&g).is_ok();
    let mut train_rows = Vec::new();
    let mut train_y = Vec::new();
    let mut val_rows = Vec::new();
    let mut val_y = Vec::new();
    for s in samples {
        if in_train(s.group) {
            train_rows.push(s.row);
            train_y.push(s.label);
        } else {
            val_rows.push(s.row);
            val_y.push(s.label);
        }
    }
    let fitted = fit_probes(acts, (&train_rows, &train_y), (&val_rows, &val_y), &config.probe);
    let mut probes: Vec<ProbeScore> = fitted.iter().map(|(_, s)| s.clone()).collect();
    rank_heads(&mut probes, config.ranking);

    let all_rows: Vec<usize> = samples.iter().map(|s| s.row).collect();
    let all_y: Vec<bool> = samples.iter().map(|s| s.label).collect();
    let mut heads = Vec::with_capacity(config.top_k);
    for score in &probes {
        if heads.len() == config.top_k {
            break;
        }
        if !config.window.holds(score.head.layer, geometry.layers) {
            continue;
        }
        let idx = geometry.index(score.head)?;
        let x = gather(acts, idx, &all_rows);
        let direction = match config.direction {
            DirectionMethod::MassMean => mass_mean(&x, &all_y, geometry.head_dim as usize),
            DirectionMethod::ProbeWeights => normalise(fitted[idx].0.weights.clone()),
        };
        let Some(direction) = direction else { continue };
        let sigma = projection_sigma(&x, &direction, config.sigma_ddof);
        if !(sigma > 0.0 && sigma.is_finite()) {
            continue;
        }
        heads.push(SteeredHead { head: score.head, direction: direction.iter().map(|&v| v as f32).collect(), sigma: sigma as f32 });
    }
    if heads.is_empty() {
        return Ok(empty(Fallback::NoUsableHead, probes));
    }
    Ok(PasFit { intervention: Intervention::new(geometry, heads)?, fallback: None, probes, groups: groups.len() })
}

/// One fold of held-out selection: the intervention fitted without the fold, and the
/// fold's groups to score it on.
#[derive(Debug, Clone)]
pub struct HeldOutFold {
    /// Groups (pairs) the intervention was fitted on.
    pub fit_groups: Vec<usize>,
    /// Groups held out for scoring.
    pub held_out_groups: Vec<usize>,
    /// The fit on `fit_groups`.
    pub fit: PasFit,
}

/// Fits one intervention per fold (each without its fold's samples). `folds` partitions the
/// group ids (e.g. [`kfold_groups`], or folds stratified by domain from the caller).
pub fn fit_held_out_folds(
    acts: &HeadActivations,
    samples: &[LabelledSample],
    config: &PasConfig,
    folds: &[Vec<usize>],
) -> Result<Vec<HeldOutFold>> {
    folds
        .iter()
        .map(|held| {
            let train: Vec<LabelledSample> = samples.iter().copied().filter(|s| !held.contains(&s.group)).collect();
            let mut fit_groups: Vec<usize> = train.iter().map(|s| s.group).collect();
            fit_groups.dedup();
            Ok(HeldOutFold { fit_groups, held_out_groups: held.clone(), fit: fit_intervention(acts, &train, config)? })
        })
        .collect()
}

/// The held-out objective at `alpha`: the mean over folds of `score(fold, alpha)`, where
/// `score` evaluates the fold's intervention on its held-out groups (lower is better).
pub fn held_out_objective<E>(
    folds: &[HeldOutFold],
    alpha: f64,
    mut score: impl FnMut(&HeldOutFold, f64) -> Result<f64, E>,
) -> Result<f64, E> {
    let mut total = 0.0;
    for f in folds {
        total += score(f, alpha)?;
    }
    Ok(total / folds.len().max(1) as f64)
}
