//! The held-out search over where to steer and how strongly (`PasConfig::calibrated`): for
//! each setting (layer window, positions) the folds' interventions, in the KL unit their
//! curves on a ladder of raw strengths, every grid value on the folds' held-out items, the
//! choice (the lowest Total, or the smallest effect within one standard error of it), and
//! the final intervention held to the chosen effect.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::backend::Backend;
use papi_data::{MissingAnswers, Protocol, Subject};
use pas_core::calibrate::option_kl;
use pas_core::{HeadActivations, Intervention, KlCurve, LabelledSample, PasFit, Positions, Search, SearchResult, Steering, StrengthUnit, fit_intervention};

use super::Evaluator;
use crate::decision::RuleChoice;
use crate::error::{Error, Result};
use crate::method::Method;
use crate::request::{Executor, Request, Steer};
use crate::results::{Candidate, Phases, SteeringSearch};
use crate::score::{ItemScore, Scored};

/// Time and tokens of one subject's phases, added up as the work goes (the search spends
/// them; the methods that search start them).
#[derive(Default)]
pub(super) struct Cost {
    pub seconds: Phases<f64>,
    pub tokens: Phases<u64>,
}

/// The folds of a held-out search: each fold's prompt (which leaves its answers out), the
/// held-out items scored, and the labelled groups held out of its intervention.
pub(super) struct FoldPlan {
    /// Each fold's system prompt.
    pub systems: Vec<String>,
    /// Each fold's held-out items scored.
    pub helds: Vec<Vec<u16>>,
    /// Each fold's held-out groups (pairs).
    pub groups: Vec<Vec<usize>>,
}

/// The outcome: the final intervention, its raw strength and where it steers.
pub(super) struct Steered {
    pub fit: PasFit,
    pub alpha: f64,
    pub positions: Positions,
    pub record: SteeringSearch,
    pub result: SearchResult,
    pub rule: Option<RuleChoice>,
}

/// One fold's scores: `[setting][grid value]`, `None` where the grid value was out of reach
/// (beside each setting's run at strength 0 in the same pass, the reference of its KL).
type FoldScores = Vec<Vec<Option<Vec<ItemScore>>>>;

/// Held-out items per fold whose answers measure the KL curve (the first of the fold's
/// balanced items); the final intervention's curve uses twice as many known items.
pub const CALIBRATION_ITEMS: usize = 8;

/// Mean KL of `steered` against `base`, item by item.
fn mean_kl(steered: &[ItemScore], base: &[ItemScore]) -> f64 {
    steered.iter().zip(base).map(|(s, b)| option_kl(&s.logprobs, &b.logprobs)).sum::<f64>() / base.len().max(1) as f64
}

impl<B: Backend> Evaluator<'_, B> {
    /// Runs `steerings` on `items` under `system` (one request per kind of positions, so
    /// that last-position rows share their bodies); scores in the steerings' order.
    fn under_each(&self, exec: &Executor<'_, '_, B>, system: &str, items: &[u16], steerings: Vec<Steering>, cost: &mut Cost) -> Result<Vec<Vec<ItemScore>>> {
        let mut out: Vec<Option<Vec<ItemScore>>> = vec![None; steerings.len()];
        for p in [Positions::Last, Positions::Answer, Positions::All] {
            let mine: Vec<usize> = (0..steerings.len()).filter(|&i| steerings[i].positions() == p).collect();
            if mine.is_empty() {
                continue;
            }
            let runs: Vec<Scored> = exec.run(&Request::steered(system, items, Steer::Strengths(mine.iter().map(|&i| steerings[i].clone()).collect())))?;
            for (&i, s) in mine.iter().zip(runs) {
                cost.tokens.search += s.tokens;
                out[i] = Some(s.items);
            }
        }
        Ok(out.into_iter().map(|s| s.expect("every steering has positions")).collect())
    }

    /// A curve over `ladder` from one pass whose first run is the intervention at strength 0
    /// and the rest at the ladder's strengths: each one's mean KL against that zero, which
    /// took the same path through the scorer (shared item bodies, the same batches), so that
    /// the curve starts at 0 rather than at the numeric difference between two paths.
    fn curve(ladder: &[f64], runs: &[Vec<ItemScore>]) -> KlCurve {
        KlCurve::new(ladder.iter().copied().zip(runs[1..].iter().map(|r| mean_kl(r, &runs[0]))).collect())
    }

    /// The held-out search over `PasConfig::candidate_settings` and the strength grid (see
    /// the module's doc); `samples` label the split's known items, `plan` holds the folds.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_steering(
        &self,
        exec: &Executor<'_, '_, B>,
        subject: &Subject,
        method: Method,
        acts: &HeadActivations,
        samples: &[LabelledSample],
        plan: &FoldPlan,
        cost: &mut Cost,
    ) -> Result<Steered> {
        let cfg = self.pas_config(method);
        let cfg = &*cfg;
        let settings = cfg.candidate_settings();
        let Search::Grid { alphas: grid } = &cfg.search else {
            return Err(Error::Config("choosing where to steer or the KL unit needs a strength grid".into()));
        };
        let ladder: &[f64] = if let StrengthUnit::Kl { ladder } = &cfg.unit { ladder } else { &[] };
        let t = Instant::now();
        let mut by_window: BTreeMap<pas_core::LayerWindow, Vec<PasFit>> = BTreeMap::new();
        for s in &settings {
            if let std::collections::btree_map::Entry::Vacant(e) = by_window.entry(s.window) {
                e.insert(pas_core::fit::fit_held_out_folds(acts, samples, &cfg.at(*s), &plan.groups)?.into_iter().map(|f| f.fit).collect());
            }
        }
        cost.seconds.probes += t.elapsed().as_secs_f64();
        let iv = |s: usize, f: usize| -> &Intervention { &by_window[&settings[s].window][f].intervention };
        let mut fold_curves: Vec<Vec<KlCurve>> = vec![Vec::new(); if ladder.is_empty() { 0 } else { settings.len() }];
        let mut fold_alphas: Vec<Vec<Vec<Option<f64>>>> = vec![vec![Vec::new(); grid.len()]; settings.len()];
        let mut per_fold: Vec<(Vec<Vec<ItemScore>>, FoldScores)> = Vec::new();
        for (f, (system, held)) in plan.systems.iter().zip(&plan.helds).enumerate() {
            let base = exec.one(&Request::plain(system.clone(), held))?;
            cost.tokens.search += base.tokens;
            if !ladder.is_empty() {
                let steerings = (0..settings.len()).flat_map(|s| std::iter::once(0.0).chain(ladder.iter().copied()).map(move |a| (s, a))).map(|(s, a)| iv(s, f).at(a as f32, settings[s].positions)).collect();
                let runs = self.under_each(exec, system, &held[..held.len().min(CALIBRATION_ITEMS)], steerings, cost)?;
                for (s, chunk) in runs.chunks(ladder.len() + 1).enumerate() {
                    fold_curves[s].push(Self::curve(ladder, chunk));
                }
            }
            // Each setting's zero first: the reference of the KL measured at its strengths.
            let mut jobs: Vec<(usize, usize, Steering)> = (0..settings.len()).map(|s| (s, usize::MAX, iv(s, f).at(0.0, settings[s].positions))).collect();
            for s in 0..settings.len() {
                for (g, &v) in grid.iter().enumerate() {
                    let a = if ladder.is_empty() { Some(v) } else { fold_curves[s][f].alpha_for(v) };
                    fold_alphas[s][g].push(a);
                    if let Some(a) = a.filter(|&a| a > 0.0) {
                        jobs.push((s, g, iv(s, f).at(a as f32, settings[s].positions)));
                    }
                }
            }
            let runs = self.under_each(exec, system, held, jobs.iter().map(|j| j.2.clone()).collect(), cost)?;
            let mut scores: FoldScores = vec![vec![None; grid.len()]; settings.len()];
            let mut zeros: Vec<Vec<ItemScore>> = vec![Vec::new(); settings.len()];
            for ((s, g, _), r) in jobs.iter().zip(runs) {
                if *g == usize::MAX {
                    zeros[*s] = r;
                } else {
                    scores[*s][*g] = Some(r);
                }
            }
            for s in 0..settings.len() {
                for g in 0..grid.len() {
                    if fold_alphas[s][g][f] == Some(0.0) {
                        scores[s][g] = Some(base.items.clone());
                    }
                }
            }
            per_fold.push((zeros, scores));
        }
        // Candidates, smallest effect first: no steering once, then each grid value in every setting.
        let items: Vec<u16> = plan.helds.concat();
        let protocol = Protocol { keying: self.config.keying, missing: MissingAnswers::Exclude };
        let mut candidates = Vec::new();
        let mut rules = Vec::new();
        for (g, &v) in grid.iter().enumerate() {
            for (s, &setting) in settings.iter().enumerate() {
                if v == 0.0 && s > 0 {
                    continue;
                }
                let Some(scores) = per_fold.iter().map(|(_, sc)| sc[s][g].clone()).collect::<Option<Vec<_>>>() else { continue };
                let kl = if v == 0.0 { 0.0 } else { scores.iter().zip(&per_fold).map(|(sc, (zeros, _))| mean_kl(sc, &zeros[s])).sum::<f64>() / scores.len().max(1) as f64 };
                let scores = scores.concat();
                let (rule, (objective, se)) = if self.chooses_rule() {
                    let choice = self.rule_choice(subject, method, &items, &scores);
                    let se = self.total_se(choice.rule, subject, method, &items, &scores, protocol);
                    (Some(choice.clone()), (choice.best(), se.1))
                } else {
                    (None, self.total_se(self.config.decision, subject, method, &items, &scores, protocol))
                };
                let alphas = fold_alphas[s][g].iter().map(|a| a.unwrap_or(f64::NAN)).collect();
                candidates.push(Candidate { setting, value: v, alphas, kl, objective, se });
                rules.push(rule);
            }
        }
        let chosen = cfg.choice.choose(&candidates.iter().map(|c| (c.objective, c.se)).collect::<Vec<_>>()).unwrap_or(0);
        let (setting, value) = candidates.get(chosen).map_or((settings[0], 0.0), |c| (c.setting, c.value));
        let result = SearchResult {
            alpha: value,
            value: candidates.get(chosen).map_or(f64::INFINITY, |c| c.objective),
            evaluations: candidates.iter().filter(|c| c.setting == setting || c.value == 0.0).map(|c| (c.value, c.objective)).collect(),
        };
        let t = Instant::now();
        let fit = fit_intervention(acts, samples, &cfg.at(setting))?;
        cost.seconds.probes += t.elapsed().as_secs_f64();
        let (alpha, final_curve) = if value == 0.0 || fit.fallback.is_some() {
            (0.0, None)
        } else if ladder.is_empty() {
            (value, None)
        } else {
            let system = self.pas_system(subject, method, &self.data.split.known);
            let items: Vec<u16> = plan.helds.iter().flat_map(|h| h.iter().take(CALIBRATION_ITEMS).copied()).collect();
            let steerings = std::iter::once(0.0).chain(ladder.iter().copied()).map(|a| fit.intervention.at(a as f32, setting.positions)).collect();
            let runs = self.under_each(exec, &system, &items, steerings, cost)?;
            let curve = Self::curve(ladder, &runs);
            (curve.alpha_for(value).unwrap_or(ladder[ladder.len() - 1]), Some(curve))
        };
        let rule = rules.get(chosen).cloned().flatten();
        let record = SteeringSearch { candidates, chosen, fold_curves, final_curve };
        Ok(Steered { fit, alpha, positions: setting.positions, record, result, rule })
    }
}
