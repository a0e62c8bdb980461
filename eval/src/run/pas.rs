//! The PAS methods for one subject: `pas` (few-shot prompt + steering), `pas-only` (default
//! prompt + steering) and `pas-domain` (few-shot prompt + one intervention per domain).

use std::time::Instant;

use burn::tensor::backend::Backend;
use papi_data::{Domain, Folds, MissingAnswers, Protocol, Subject};
use pas_core::{ContrastPair, InterventionMeta, PasFit, Positions, Preference, Search, SearchResult, Selection, Steering, StrengthUnit, fit_intervention, labelled_samples};

use super::steer::{Cost, FoldPlan};
use super::{Contrast, Evaluator, balanced};
use crate::error::Result;
use crate::method::Method;
use crate::prompt::DEFAULT_SYSTEM;
use crate::results::{PasRecord, SubjectResult};
use crate::request::{Executor, Request, Steer};
use crate::score::{ItemScore, Scored};

/// One fitted intervention and its searched strength.
struct Searched {
    fit: PasFit,
    search: Option<SearchResult>,
    alpha: f64,
    /// The held-out rule choice at the chosen strength (`--decision held-out`).
    rule: Option<crate::decision::RuleChoice>,
    /// The positions it steers.
    positions: Positions,
    /// The search over where to steer and the KL unit, when the run has one.
    steering: Option<crate::results::SteeringSearch>,
}

impl Searched {
    fn record(&self) -> PasRecord {
        let heads = self.fit.intervention.heads();
        let mut layers: Vec<u32> = heads.iter().map(|h| h.head.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        PasRecord {
            alpha: self.alpha,
            search: self.search.clone(),
            heads: heads.len(),
            layers,
            mean_sigma: if heads.is_empty() { 0.0 } else { heads.iter().map(|h| f64::from(h.sigma)).sum::<f64>() / heads.len() as f64 },
            pairs: self.fit.groups,
            fallback: self.fit.fallback.clone(),
            steering: self.steering.clone(),
        }
    }

    fn steering(&self) -> Steering {
        self.fit.intervention.at(self.alpha as f32, self.positions)
    }
}

impl<B: Backend> Evaluator<'_, B> {
    /// The PAS settings of `method`: the run's, or for `pas-original` the original code's
    /// search (raw grid 0, 1, 2, 4, 6, 8; every position and layer; the lowest Total) with
    /// the run's folds, heads and seed.
    pub(super) fn pas_config(&self, method: Method) -> std::borrow::Cow<'_, pas_core::PasConfig> {
        let run = &self.config.pas;
        if method != Method::PasOriginal {
            return std::borrow::Cow::Borrowed(run);
        }
        let o = pas_core::PasConfig::official();
        std::borrow::Cow::Owned(pas_core::PasConfig { search: o.search, unit: o.unit, choice: o.choice, window: o.window, positions: o.positions, settings: o.settings, ..run.clone() })
    }

    pub(super) fn pas_system(&self, subject: &Subject, method: Method, items: &[u16]) -> String {
        if method == Method::PasOnly { DEFAULT_SYSTEM.to_owned() } else { self.few_shot(subject, items) }
    }

    /// PAS (few-shot prompt + steering) or PAS-only (default prompt + steering) for one
    /// subject: labels, probes, strength search, evaluation at the chosen strength.
    pub(super) fn pas(&self, exec: &Executor<'_, '_, B>, subject: &Subject, method: Method, contrast: &Contrast) -> Result<SubjectResult> {
        let mut cost = Cost::default();
        let test = self.test_items();
        let s = self.fit_and_search(exec, subject, method, contrast, &self.data.split.known, &test, &mut cost)?;
        let t = Instant::now();
        let scored = exec.one(&Request::steered(self.pas_system(subject, method, &self.data.split.known), &test, Steer::One(s.steering())))?;
        cost.seconds.eval += t.elapsed().as_secs_f64();
        cost.tokens.eval += scored.tokens;
        let mut result = self.with_rule_choice(self.record(subject, method, &scored.items, cost.seconds, cost.tokens), s.rule.clone());
        result.pas = Some(s.record());
        self.save_intervention(&s, method, &self.out.join(method.name()).join(format!("{}.safetensors", subject.case)))?;
        Ok(result)
    }

    /// The persona of a one-person dataset (see [`crate::align::align`]): the intervention
    /// fitted from all known items, its strength searched held out on them, saved to `path`.
    pub(crate) fn align_subject(&self, method: Method, path: &std::path::Path) -> Result<crate::align::Aligned> {
        std::fs::create_dir_all(&self.out).map_err(|e| crate::Error::io(&self.out, e))?;
        let scorer = crate::score::Scorer::new(self.model, self.prompts, self.config.scoring, self.config.batch)?;
        let exec = Executor::new(&scorer, &self.data.inventory);
        let contrast = self.contrast()?;
        let plain = self.plain_scores(&exec)?;
        let _ = self.plain.set(plain.items.into_iter().zip(plain.scores).collect());
        let subject = &self.data.subjects[0];
        let mut cost = Cost::default();
        let s = self.fit_and_search(&exec, subject, method, &contrast, &self.data.split.known, &[], &mut cost)?;
        if let Some(f) = &s.fit.fallback {
            return Err(crate::Error::Config(format!("no intervention could be fitted from these answers ({f:?})")));
        }
        let meta = self.save_intervention(&s, method, path)?;
        Ok(crate::align::Aligned {
            meta,
            answers: self.data.split.known.len(),
            pairs: s.fit.groups,
            heads: s.fit.intervention.len(),
            search: s.search.clone(),
            seconds: 0.0,
        })
    }

    /// Saves a fitted intervention with its chosen strength, tied to the model's content
    /// hash (so that loading it for another model is refused).
    fn save_intervention(&self, s: &Searched, method: Method, path: &std::path::Path) -> Result<InterventionMeta> {
        let id = self.identity()?;
        let cfg = self.pas_config(method);
        let cfg = &*cfg;
        let direction = match cfg.direction {
            pas_core::DirectionMethod::MassMean => "mass-mean",
            pas_core::DirectionMethod::ProbeWeights => "probe-weights",
        };
        let meta = InterventionMeta {
            model_id: id.model_id.clone(),
            config_hash: id.config_hash.clone(),
            method: format!("{method}/{direction}"),
            top_k: cfg.top_k,
            seed: cfg.seed,
            sigma_ddof: cfg.sigma_ddof,
            positions: s.positions,
            alpha: Some(s.alpha),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        }
        s.fit.intervention.save(path, &meta)?;
        Ok(meta)
    }

    /// Per-domain PAS for one subject: for each Big Five domain an intervention fitted from
    /// that domain's known items alone, its strength searched on them (held out), and every
    /// test item asked under the few-shot prompt steered by its own domain's intervention
    /// (rows with different steerings in one batch where the steering leaves the prompt's
    /// prefix alone).
    pub(super) fn pas_domain(&self, exec: &Executor<'_, '_, B>, subject: &Subject, contrast: &Contrast) -> Result<SubjectResult> {
        let inv = &self.data.inventory;
        let mut cost = Cost::default();
        let test = self.test_items();
        let in_domain = |items: &[u16], d: Domain| -> Vec<u16> { items.iter().copied().filter(|&n| inv.item(n).is_some_and(|i| i.domain() == d)).collect() };
        let mut per_domain = Vec::new();
        for d in Domain::ALL {
            let known = in_domain(&self.data.split.known, d);
            let s = self.fit_and_search(exec, subject, Method::PasDomain, contrast, &known, &in_domain(&test, d), &mut cost)?;
            per_domain.push((d, s));
        }
        let steerings: Vec<Steering> = per_domain.iter().map(|(_, s)| s.steering()).collect();
        let of_row: Vec<usize> = test.iter().map(|&n| inv.item(n).map_or(0, |i| i.domain().index())).collect();
        let t = Instant::now();
        let scored = exec.one(&Request::steered(self.few_shot(subject, &self.data.split.known), &test, Steer::PerRow { steerings, of_row }))?;
        cost.seconds.eval += t.elapsed().as_secs_f64();
        cost.tokens.eval += scored.tokens;
        let mut result = self.record(subject, Method::PasDomain, &scored.items, cost.seconds, cost.tokens);
        result.pas_domains = Some(per_domain.iter().map(|(d, s)| (d.letter().to_string(), s.record())).collect());
        Ok(result)
    }

    /// Fits an intervention from the contrast pairs of `known` (a subset of the split's known
    /// items) and searches its strength: held out inside `known` by default, or on `test`
    /// (oracle). Probe and search time and tokens go to `cost`.
    #[allow(clippy::too_many_arguments)]
    fn fit_and_search(
        &self,
        exec: &Executor<'_, '_, B>,
        subject: &Subject,
        method: Method,
        contrast: &Contrast,
        known: &[u16],
        test: &[u16],
        cost: &mut Cost,
    ) -> Result<Searched> {
        let inv = &self.data.inventory;
        let all_known = &self.data.split.known;
        let keying = self.config.keying;
        let cfg = self.pas_config(method);
        let cfg = &*cfg;
        // Labels: group k is the split's known item k, its pair rows (2k, 2k + 1); items
        // outside `known` get no label.
        let pairs: Vec<ContrastPair> = (0..all_known.len()).map(|k| ContrastPair { first: 2 * k, second: 2 * k + 1 }).collect();
        let prefs: Vec<Option<Preference>> = all_known
            .iter()
            .map(|&n| known.contains(&n).then(|| Preference::from_likert(keying.answer(subject.stored(n), inv.item(n).expect("known item").sign))).flatten())
            .collect();
        let samples = labelled_samples(&pairs, &prefs);
        let t = Instant::now();
        let fit = fit_intervention(&contrast.acts, &samples, cfg)?;
        cost.seconds.probes += t.elapsed().as_secs_f64();
        let unsteered = |fit| Searched { fit, search: None, alpha: 0.0, rule: None, positions: cfg.positions, steering: None };
        if fit.fallback.is_some() {
            return Ok(unsteered(fit));
        }
        let t = Instant::now();
        let probes_before = cost.seconds.probes;
        // Under `held-out`: the rule choice at each strength tried.
        let mut choices: Vec<(f64, crate::decision::RuleChoice)> = Vec::new();
        let result = match cfg.selection {
            Selection::Oracle => {
                let system = self.pas_system(subject, method, all_known);
                cfg.search.run(|alpha| -> Result<f64> {
                    let scored = exec.one(&Request::steered(system.clone(), test, Steer::One(fit.intervention.at(alpha as f32, cfg.positions))))?;
                    cost.tokens.search += scored.tokens;
                    Ok(self.objective(subject, method, test, &scored.items, self.protocol()))
                })?
            }
            Selection::HeldOut { folds, seed } => {
                let answered: Vec<u16> = known.iter().copied().filter(|&n| subject.stored(n) != papi_data::keying::MISSING).collect();
                if answered.len() < folds {
                    // Too few answered items to hold any out (a domain with most answers
                    // missing): no search, the intervention unused.
                    return Ok(unsteered(fit));
                }
                let folds = Folds::new(&answered, inv, folds, seed)?;
                // The search budget is shared over the domains in `known`.
                let budget = self.config.search_items.map(|n| (n * known.len()).div_ceil(all_known.len()));
                let per_fold = budget.map(|n| n.div_ceil(folds.k()));
                let group_folds: Vec<Vec<usize>> =
                    (0..folds.k()).map(|f| folds.held_out(f).iter().filter_map(|n| all_known.iter().position(|k| k == n)).collect()).collect();
                // Each fold's intervention is fitted without it, and its prompt leaves it out too.
                if cfg.unit != StrengthUnit::Raw || cfg.settings.len() > 1 {
                    let plan = FoldPlan {
                        systems: (0..folds.k())
                            .map(|f| self.pas_system(subject, method, &all_known.iter().copied().filter(|n| !folds.held_out(f).contains(n)).collect::<Vec<_>>()))
                            .collect(),
                        helds: (0..folds.k()).map(|f| balanced(folds.held_out(f), inv, per_fold)).collect(),
                        groups: group_folds,
                    };
                    let s = self.search_steering(exec, subject, method, &contrast.acts, &samples, &plan, cost)?;
                    cost.seconds.search += t.elapsed().as_secs_f64() - (cost.seconds.probes - probes_before);
                    return Ok(Searched { fit: s.fit, search: Some(s.result), alpha: s.alpha, rule: s.rule, positions: s.positions, steering: Some(s.record) });
                }
                let t_fit = Instant::now();
                let fold_fits: Vec<(PasFit, String, Vec<u16>)> = pas_core::fit::fit_held_out_folds(&contrast.acts, &samples, cfg, &group_folds)?
                    .into_iter()
                    .enumerate()
                    .map(|(f, fold)| {
                        let held = folds.held_out(f);
                        let fit_items: Vec<u16> = all_known.iter().copied().filter(|n| !held.contains(n)).collect();
                        (fold.fit, self.pas_system(subject, method, &fit_items), balanced(held, inv, per_fold))
                    })
                    .collect();
                cost.seconds.probes += t_fit.elapsed().as_secs_f64();
                let all_held: Vec<u16> = fold_fits.iter().flat_map(|(_, _, items)| items.iter().copied()).collect();
                let protocol = Protocol { keying, missing: MissingAnswers::Exclude };
                // Steering that leaves the prompt's prefix alone: each fold's grid in one pass
                // over one prefix (rows = items × strengths).
                let batched: Option<Vec<Vec<Scored>>> = match (&cfg.search, cfg.positions) {
                    (Search::Grid { alphas }, Positions::Answer | Positions::Last) => Some(
                        fold_fits
                            .iter()
                            .map(|(fold_fit, system, items)| {
                                let steerings: Vec<Steering> = alphas.iter().map(|&a| fold_fit.intervention.at(a as f32, cfg.positions)).collect();
                                exec.run(&Request::steered(system.clone(), items, Steer::Strengths(steerings)))
                            })
                            .collect::<Result<_>>()?,
                    ),
                    _ => None,
                };
                cfg.search.run(|alpha| -> Result<f64> {
                    let mut items = Vec::new();
                    let mut scores = Vec::new();
                    for (f, (fold_fit, system, held)) in fold_fits.iter().enumerate() {
                        let scored = match (&batched, &cfg.search) {
                            (Some(per_fold), Search::Grid { alphas }) => {
                                let k = alphas.iter().position(|&a| a == alpha).expect("the grid evaluates its own strengths");
                                per_fold[f][k].clone()
                            }
                            _ => exec.one(&Request::steered(system.clone(), held, Steer::One(fold_fit.intervention.at(alpha as f32, cfg.positions))))?,
                        };
                        cost.tokens.search += scored.tokens;
                        items.extend_from_slice(held);
                        scores.extend(scored.items);
                    }
                    debug_assert_eq!(items, all_held);
                    if self.chooses_rule() {
                        let choice = self.rule_choice(subject, method, &items, &scores);
                        let best = choice.best();
                        choices.push((alpha, choice));
                        return Ok(best);
                    }
                    Ok(self.objective(subject, method, &items, &scores, protocol))
                })?
            }
        };
        cost.seconds.search += t.elapsed().as_secs_f64() - (cost.seconds.probes - probes_before);
        let rule = choices.into_iter().find(|(a, _)| *a == result.alpha).map(|(_, c)| c);
        Ok(Searched { alpha: result.alpha, search: Some(result), fit, rule, positions: cfg.positions, steering: None })
    }

    /// The search objective: the Total over `items` of the answers the run's decision rule
    /// reads from `scores` (domains without an item count 0).
    fn objective(&self, subject: &Subject, method: Method, items: &[u16], scores: &[ItemScore], protocol: Protocol) -> f64 {
        self.total_under(self.config.decision, subject, method, items, scores, protocol)
    }
}
