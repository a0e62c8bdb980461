//! From per-subject results to `results.json`: aggregates with intervals, answer histograms,
//! every method under every decision rule, paired differences against the references, and
//! re-deciding a finished run from its `samples.jsonl` alone.

use std::collections::BTreeMap;
use std::path::Path;

use papi_data::{Domain, PerDomain};

use crate::decision::Decision;
use crate::error::{Error, Result};
use crate::method::Method;
use crate::prompt::{LETTERS, PREFILL, answer_of_option};
use crate::results::{
    AlphaSummary, Comparison, DecisionRow, ItemRecord, Meta, ONE_LETTER, OptimisationTime, PersonTime, Phases, Results, Run, SubjectResult, by_letter,
    ci_pair,
};
use crate::score::parse_official;
use crate::stats::{Bootstrap, aggregate_ci, paired_difference};

/// Seconds and tokens of work shared by all subjects, per method and phase.
pub type Shared = BTreeMap<Method, Phases<(f64, u64)>>;

/// The option an item's record under `method` gives under `rule`: the model's
/// log-probabilities read by the rule (see [`Decision::for_method`]; generated answers are
/// re-parsed under `argmax`); `None` for a reference predictor's record, which has no
/// log-probabilities.
pub fn decide_record(rule: Decision, method: Method, item: &ItemRecord) -> Option<Option<usize>> {
    let lp = item.logprobs?;
    let rule = rule.for_method(method);
    Some(match (rule, &item.text) {
        (Decision::Argmax, Some(text)) => parse_official(&format!("{PREFILL}{text}")),
        _ => rule.decide(&lp, item.plain_logprobs.as_ref()),
    })
}

/// A subject's result re-read under `rule` (`held-out`: the subject's own choice, the median
/// where it has none): answers, errors and MAEs from the records'
/// log-probabilities (reference predictors' records are kept as they are).
pub fn redecide(result: &SubjectResult, rule: Decision) -> SubjectResult {
    let rule = rule.resolve(result.rule_choice.as_ref().map(|c| c.rule));
    let items: Vec<ItemRecord> = result
        .items
        .iter()
        .map(|it| match decide_record(rule, result.method, it) {
            None => it.clone(),
            Some(choice) => {
                let answer = choice.map(answer_of_option);
                ItemRecord { choice: choice.map(|c| LETTERS[c]), answer, error: answer.zip(it.target).map(|(a, t)| a.abs_diff(t)), ..it.clone() }
            }
        })
        .collect();
    let mae = mae_of(&items);
    SubjectResult { mae, total: total_of(&mae), items, ..result.clone() }
}

/// MAE per domain from item records: the mean error over the items with an answer and a
/// target (as `papi_data::scoring::subject_mae` counts them).
pub fn mae_of(items: &[ItemRecord]) -> PerDomain<Option<f64>> {
    PerDomain::from_fn(|d| {
        let errors: Vec<f64> = items.iter().filter(|i| i.domain == d.letter()).filter_map(|i| i.error).map(f64::from).collect();
        (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
    })
}

fn total_of(mae: &PerDomain<Option<f64>>) -> Option<f64> {
    Domain::ALL.iter().map(|&d| mae[d]).sum()
}

/// Share of answers 5..1 (options A..E) over every item of `results`.
pub fn answer_shares(results: &[SubjectResult]) -> [f64; 5] {
    let mut counts = [0usize; 5];
    for a in results.iter().flat_map(|r| r.items.iter().filter_map(|i| i.answer)) {
        counts[usize::from(5 - a.clamp(1, 5))] += 1;
    }
    let n = counts.iter().sum::<usize>().max(1) as f64;
    counts.map(|c| c as f64 / n)
}

fn one_letter(shares: &[f64; 5]) -> Option<char> {
    (0..5).find(|&o| shares[o] >= ONE_LETTER).map(|o| LETTERS[o])
}

/// Paired differences of Totals, `a` minus `b`, over the people both have (matched by case:
/// a method run on fewer people than the run holds is compared on its own people).
fn paired(a: &[SubjectResult], b: &[SubjectResult], boot: Bootstrap) -> Option<(usize, f64, [f64; 2])> {
    let diffs: Vec<f64> = a.iter().filter_map(|x| Some(x.total? - b.iter().find(|y| y.case == x.case)?.total?)).collect();
    paired_difference(&diffs, boot).map(|(mean, ci)| (diffs.len(), mean, ci_pair(ci)))
}

/// `results.json` from every method's per-subject results (decided under
/// `meta.settings.decision`), the work they shared, and the diagnostic.
pub fn summarise(meta: Meta, per_method: &[(Method, Vec<SubjectResult>)], shared: &Shared, diagnostic: Option<crate::results::Diagnostic>) -> Results {
    let boot = meta.bootstrap;
    let runs: Vec<Run> = per_method.iter().map(|(m, results)| run_row(&meta, *m, results, shared)).collect();
    let find = |m: Method| per_method.iter().find(|(x, _)| *x == m).map(|(_, r)| r);
    let mut comparisons = Vec::new();
    // Against PAS: the methods the paper sets it against (DPO and PPO).
    let against = |m: Method, baseline: Method| m != baseline && (baseline != Method::Pas || matches!(m, Method::Dpo | Method::Ppo));
    for baseline in [Method::FewShot, Method::Pas, Method::Always3, Method::OwnMean] {
        let Some(base) = find(baseline) else { continue };
        for (m, results) in per_method.iter().filter(|(m, _)| against(*m, baseline)) {
            if let Some((subjects, difference, ci95)) = paired(results, base, boot) {
                comparisons.push(Comparison { method: *m, baseline, subjects, difference, ci95 });
            }
        }
    }
    let mut decisions = Vec::new();
    for (m, results) in per_method.iter().filter(|(m, _)| m.reference().is_none()) {
        for rule in Decision::ALL {
            let re: Vec<SubjectResult> = results.iter().map(|r| redecide(r, rule)).collect();
            let maes: Vec<PerDomain<Option<f64>>> = re.iter().map(|r| r.mae).collect();
            let (_, tci) = aggregate_ci(&maes, boot);
            let against = |b: Method| find(b).and_then(|base| paired(&re, base, boot)).map(|(_, d, ci)| (d, ci));
            decisions.push(DecisionRow {
                method: *m,
                decision: rule,
                total: papi_data::scoring::aggregate(&maes).total,
                total_ci95: tci.map(ci_pair),
                vs_always3: against(Method::Always3),
                vs_own_mean: against(Method::OwnMean),
                answers: answer_shares(&re),
            });
        }
    }
    let optimisation_time = optimisation_time(&runs).map(|t| OptimisationTime { people: trained_people(&meta, per_method, t.pas_method), ..t });
    Results { meta, runs, comparisons, decisions, diagnostic, not_run: Vec::new(), optimisation_time }
}

/// Every person DPO or PPO trained, in the run's order: the optimisation seconds of PAS
/// (`pas_method`; its share of the run's activation collection included), DPO and PPO, and
/// the person's Totals under [`PersonTime::METHODS`].
pub fn trained_people(meta: &Meta, per_method: &[(Method, Vec<SubjectResult>)], pas_method: Method) -> Vec<PersonTime> {
    let of = |m: Method| per_method.iter().find(|(x, _)| *x == m).map(|(_, r)| r.as_slice()).unwrap_or_default();
    let find = |m: Method, case: i64| of(m).iter().find(|r| r.case == case);
    let pas_share = meta.collect_seconds / of(pas_method).len().max(1) as f64;
    let trained = |case: &i64| find(Method::Dpo, *case).or_else(|| find(Method::Ppo, *case)).is_some();
    meta.cases
        .iter()
        .filter(|c| trained(c))
        .map(|&case| {
            let tuned = |m: Method| find(m, case).map(|r| r.seconds.reference + r.seconds.train);
            PersonTime {
                case,
                pas_seconds: find(pas_method, case).map(|r| r.seconds.collect + r.seconds.probes + r.seconds.search + pas_share),
                dpo_seconds: tuned(Method::Dpo),
                ppo_seconds: tuned(Method::Ppo),
                totals: PersonTime::METHODS.iter().filter_map(|&m| Some((m.name().to_owned(), find(m, case)?.total?))).collect(),
            }
        })
        .collect()
}

/// PAS's optimisation time per subject against DPO's and PPO's, when PAS (`pas`, else
/// `pas-only`) and at least one of them ran; each method's time is divided over the
/// subjects it ran on (a run made in parts may have trained fewer people than it searched).
pub fn optimisation_time(runs: &[Run]) -> Option<OptimisationTime> {
    let p = runs.iter().find(|r| r.method == Method::Pas).or_else(|| runs.iter().find(|r| r.method == Method::PasOnly))?;
    let per = |r: &Run, s: f64| s / r.subjects.max(1) as f64;
    let tuned = |m: Method| runs.iter().find(|r| r.method == m).map(|r| (per(r, r.phases.reference + r.phases.train), r.subjects));
    let (dpo, ppo) = (tuned(Method::Dpo), tuned(Method::Ppo));
    if dpo.is_none() && ppo.is_none() {
        return None;
    }
    let (dpo_seconds, ppo_seconds) = (dpo.map(|d| d.0), ppo.map(|p| p.0));
    let pas_seconds = per(p, p.phases.collect + p.phases.probes + p.phases.search);
    let over = |a: Option<f64>, b: f64| a.map(|a| a / b.max(f64::MIN_POSITIVE));
    Some(OptimisationTime {
        pas_method: p.method,
        pas_seconds,
        dpo_seconds,
        ratio: over(dpo_seconds, pas_seconds),
        ppo_seconds,
        ppo_ratio: over(ppo_seconds, pas_seconds),
        ppo_dpo_ratio: ppo_seconds.zip(dpo_seconds).map(|(p, d)| p / d.max(f64::MIN_POSITIVE)),
        subjects: p.subjects,
        tuned_subjects: dpo.or(ppo).map_or(0, |t| t.1),
        people: Vec::new(),
    })
}

/// Per grid value, over the people's held-out searches: how many reached it, their folds'
/// mean Total there (each person's best setting) and the median raw strength it took.
fn by_value<'a>(searches: impl Iterator<Item = &'a crate::results::SteeringSearch>) -> Vec<crate::results::ValueSummary> {
    let mut per: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for s in searches {
        let mut best: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for c in s.candidates.iter().filter(|c| c.objective.is_finite()) {
            let alpha = c.alphas.iter().sum::<f64>() / c.alphas.len().max(1) as f64;
            let e = best.entry(c.value.to_bits()).or_insert((c.objective, alpha));
            if c.objective < e.0 {
                *e = (c.objective, alpha);
            }
        }
        for (k, v) in best {
            per.entry(k).or_default().push(v);
        }
    }
    let mut out: Vec<crate::results::ValueSummary> = per
        .into_iter()
        .map(|(k, v)| {
            let mut alphas: Vec<f64> = v.iter().map(|x| x.1).collect();
            alphas.sort_by(f64::total_cmp);
            crate::results::ValueSummary { value: f64::from_bits(k), people: v.len(), objective: v.iter().map(|x| x.0).sum::<f64>() / v.len() as f64, alpha: alphas[alphas.len() / 2] }
        })
        .collect();
    out.sort_by(|a, b| a.value.total_cmp(&b.value));
    out
}

fn run_row(meta: &Meta, m: Method, results: &[SubjectResult], shared: &Shared) -> Run {
    // Per subject of this method's own people (a method run on fewer people than the run).
    let n = results.len().max(1) as f64;
    let st = &meta.settings;
    let maes: Vec<PerDomain<Option<f64>>> = results.iter().map(|r| r.mae).collect();
    let agg = papi_data::scoring::aggregate(&maes);
    let (dci, tci) = aggregate_ci(&maes, meta.bootstrap);
    let sh = shared.get(&m).copied().unwrap_or_default();
    let mut phases = sh.map(|(seconds, _)| seconds);
    let mut tokens = sh.map(|(_, tokens)| tokens);
    for r in results {
        phases = phases.plus(&r.seconds);
        tokens = tokens.plus(&r.tokens);
    }
    let alpha = m.is_pas().then(|| {
        let records: Vec<&crate::results::PasRecord> =
            results.iter().flat_map(|r| r.pas.iter().chain(r.pas_domains.iter().flat_map(|d| d.values()))).collect();
        let mut counts = BTreeMap::new();
        for p in &records {
            *counts.entry(format!("{}", p.alpha)).or_insert(0) += 1;
        }
        let (mut kl_counts, mut settings) = (BTreeMap::new(), BTreeMap::new());
        for c in records.iter().filter_map(|p| p.steering.as_ref().and_then(|s| s.choice())) {
            if st.pas.unit != pas_core::StrengthUnit::Raw {
                *kl_counts.entry(format!("{}", c.value)).or_insert(0) += 1;
            }
            if st.pas.settings.len() > 1 && c.value > 0.0 {
                *settings.entry(c.setting.to_string()).or_insert(0) += 1;
            }
        }
        AlphaSummary {
            mean: records.iter().map(|p| p.alpha).sum::<f64>() / records.len().max(1) as f64,
            counts,
            fallbacks: records.iter().filter(|p| p.fallback.is_some()).count(),
            kl_counts,
            settings,
            by_value: by_value(records.iter().filter_map(|p| p.steering.as_ref())),
        }
    });
    let mut rules_chosen = BTreeMap::new();
    for c in results.iter().filter_map(|r| r.rule_choice.as_ref()) {
        *rules_chosen.entry(c.rule.to_string()).or_insert(0) += 1;
    }
    let paths: Vec<bool> = results.iter().flat_map(|r| r.items.iter().filter_map(|i| i.path.as_ref().map(|p| p.found))).collect();
    let seconds = phases.sum();
    let answers = answer_shares(results);
    let model = m.reference().is_none();
    Run {
        method: m,
        reference: !model,
        keying: st.keying,
        alpha_selection: st.alpha_selection,
        scoring: model.then_some(st.scoring),
        decision: model.then_some(st.decision),
        answers,
        one_letter: one_letter(&answers),
        subjects: results.len(),
        per_domain: by_letter(&agg.per_domain),
        per_domain_ci95: by_letter(&dci.map(|_, i| i.map(ci_pair))),
        total: agg.total,
        total_ci95: tci.map(ci_pair),
        seconds,
        seconds_per_subject: seconds / n,
        phases,
        tokens,
        alpha,
        rules_chosen,
        letter_found: (!paths.is_empty()).then(|| paths.iter().filter(|f| **f).count() as f64 / paths.len() as f64),
    }
}

/// Re-decides a finished run under `rule` from its `results.json` (settings, timings, the
/// diagnostic) and `samples.jsonl.gz` (every item's log-probabilities), without a model. PAS
/// strengths stay those searched under the run's own rule.
pub fn redecide_run(out: &Path, rule: Decision) -> Result<Results> {
    let old: Results = crate::files::read_json(&out.join("results.json"))?;
    let path = out.join(crate::files::SAMPLES);
    let mut by_method: BTreeMap<Method, BTreeMap<i64, Vec<ItemRecord>>> = BTreeMap::new();
    for s in crate::files::read_samples(out)? {
        by_method.entry(s.method).or_default().entry(s.subject).or_default().push(s.item);
    }
    let mut per_method = Vec::new();
    for run in &old.runs {
        let subjects = by_method.remove(&run.method).unwrap_or_default();
        let results: Vec<SubjectResult> = old
            .meta
            .cases
            .iter()
            .map(|case| {
                let items = subjects.get(case).cloned().ok_or_else(|| Error::file(&path, format!("no line for method {} and subject {case}", run.method)))?;
                // A held-out rule choice lives in the subject's own file (absent: the median).
                let chosen: Option<SubjectResult> = crate::files::read_json(&out.join("subjects").join(run.method.name()).join(format!("{case}.json"))).ok();
                let result = SubjectResult { rule_choice: chosen.and_then(|c| c.rule_choice), ..SubjectResult::new(*case, run.method, mae_of(&items), items) };
                Ok(redecide(&result, rule))
            })
            .collect::<Result<_>>()?;
        per_method.push((run.method, results));
    }
    let mut meta = old.meta.clone();
    meta.settings.decision = rule;
    let mut new = summarise(meta, &per_method, &Shared::new(), old.diagnostic.clone());
    // Timings and strengths are the run's own.
    for run in &mut new.runs {
        if let Some(o) = old.runs.iter().find(|o| o.method == run.method) {
            (run.seconds, run.seconds_per_subject, run.phases, run.tokens, run.alpha) = (o.seconds, o.seconds_per_subject, o.phases, o.tokens, o.alpha.clone());
        }
    }
    // Seconds are the run's own; each trained person's Totals are under the new rule.
    let totals = new.optimisation_time.take().map(|t| t.people).unwrap_or_default();
    new.optimisation_time = old.optimisation_time.clone().map(|mut t| {
        for p in &mut t.people {
            if let Some(q) = totals.iter().find(|q| q.case == p.case) {
                p.totals = q.totals.clone();
            }
        }
        t
    });
    new.not_run = old.not_run.clone();
    Ok(new)
}
