//! `report.md` and `totals.svg`, rendered from `results.json` alone.

use std::fmt::Write as _;

use papi_data::Domain;

use crate::config::AlphaSelection;
use crate::method::Method;
use crate::prompt::LETTERS;
use crate::results::{DecisionRow, Results, Run};

fn cell(v: Option<f64>, ci: Option<[f64; 2]>) -> String {
    match (v, ci) {
        (Some(v), Some([lo, hi])) => format!("{v:.3} [{lo:.2}, {hi:.2}]"),
        (Some(v), _) => format!("{v:.3}"),
        _ => "–".into(),
    }
}

/// Shares of A..E as `A 12% · E 88%` (letters under 0.5% left out).
pub fn histogram(shares: &[f64; 5]) -> String {
    let parts: Vec<String> = (0..5).filter(|&o| shares[o] >= 0.005).map(|o| format!("{} {:.0}%", LETTERS[o], 100.0 * shares[o])).collect();
    if parts.is_empty() { "–".into() } else { parts.join(" · ") }
}

fn diff_cell(d: Option<(f64, [f64; 2])>) -> String {
    d.map_or("–".into(), |(m, [lo, hi])| {
        let mark = if hi < 0.0 { " ✓" } else { "" };
        format!("{m:+.3} [{lo:+.2}, {hi:+.2}]{mark}")
    })
}

/// Renders `report.md` from the results alone.
pub fn render_markdown(r: &Results) -> String {
    let m = &r.meta;
    let st = &m.settings;
    let mut s = String::new();
    let oracle = st.alpha_selection == AlphaSelection::Oracle;
    let _ = writeln!(
        s,
        "# PAPI benchmark: {} subjects, {} keying, `{}` decision{}\n",
        m.cases.len(),
        st.keying.as_str(),
        st.decision,
        if oracle { ", ORACLE strength selection (alpha chosen on the test items)" } else { "" }
    );
    let _ = writeln!(
        s,
        "Model `{}` ({}, {} weights), scoring `{}`, answers decided by `{}`, strength selection `{}`, PAS steering at {}, missing answers {}; {} test items per subject; records `{}`; code `{}`; chat template `{}`.\n",
        st.model_id, m.device, st.dtype, st.scoring.as_str(), st.decision, st.alpha_selection.as_str(), steering_text(&st.pas), m.missing_answers, m.test_items, m.records_path, m.git_revision, st.chat_template_hash
    );
    diagnostic(&mut s, r);
    let _ = writeln!(s, "Mean absolute error per domain (lower is better) and Total (their sum), each with a 95% bootstrap interval over subjects; answers: the share of each option letter (A = 5 .. E = 1).\n");
    let header = |s: &mut String| {
        let _ = writeln!(s, "| method | A | C | E | N | O | Total | answers |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    };
    let row = |s: &mut String, run: &Run| {
        let flag = run.one_letter.map_or(String::new(), |l| format!(" ⚠ one letter ({l})"));
        let mut line = format!("| {}{flag} |", run.label(r.meta.cases.len()));
        for d in Domain::ALL {
            let k = d.letter().to_string();
            line += &format!(" {} |", cell(run.per_domain.get(&k).copied(), run.per_domain_ci95.get(&k).copied()));
        }
        line += &format!(" **{}** | {} |", cell(run.total, run.total_ci95), histogram(&run.answers));
        let _ = writeln!(s, "{line}");
    };
    let _ = writeln!(s, "## Methods\n");
    header(&mut s);
    for run in r.runs.iter().filter(|r| !r.reference) {
        row(&mut s, run);
    }
    for n in &r.not_run {
        let _ = writeln!(s, "| {} | not run: {} | | | | | | |", n.method, n.reason);
    }
    let _ = writeln!(s, "\n⚠ one letter: at least {:.0}% of the answers are that letter: an answer bias, not an alignment.", 100.0 * crate::results::ONE_LETTER);
    let _ = writeln!(s, "\n## Reference predictors (same subjects and items)\n");
    if r.runs.iter().any(|r| r.reference) {
        header(&mut s);
        for run in r.runs.iter().filter(|r| r.reference) {
            row(&mut s, run);
        }
    } else {
        let _ = writeln!(s, "None requested (add `always-3,own-mean,ridge` to `--methods`).");
    }
    decisions(&mut s, r);
    comparisons(&mut s, r);
    time(&mut s, r);
    let alphas: Vec<&Run> = r.runs.iter().filter(|r| r.alpha.is_some()).collect();
    if !alphas.is_empty() {
        let _ = writeln!(s, "\n## Chosen strengths\n");
        for run in alphas {
            let a = run.alpha.as_ref().expect("filtered");
            let counts: Vec<String> = a.counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "- `{}`: mean alpha {:.2}; {}; {} intervention(s) fell back to none.", run.method, a.mean, counts.join(", "), a.fallbacks);
            if !a.kl_counts.is_empty() {
                let kl: Vec<String> = a.kl_counts.iter().map(|(k, v)| format!("{k} nat: {v}")).collect();
                let _ = writeln!(s, "  In KL of the five-option answer (the unit searched): {}.", kl.join(", "));
            }
            if !a.settings.is_empty() {
                let set: Vec<String> = a.settings.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                let _ = writeln!(s, "  Where it steered (people who were steered): {}.", set.join("; "));
            }
            if !a.by_value.is_empty() {
                let unit = if a.kl_counts.is_empty() { "raw alpha" } else { "KL (nat)" };
                let _ = writeln!(s, "\n  | {unit} | people reaching it | raw alpha (median) | held-out Total (mean, best setting) |\n  |---|---|---|---|");
                for v in &a.by_value {
                    let _ = writeln!(s, "  | {} | {} | {:.3} | {:.3} |", v.value, v.people, v.alpha, v.objective);
                }
            }
        }
    }
    let _ = writeln!(s, "\n![Totals with 95% intervals](totals.svg)");
    s
}

/// Where PAS steers, for reports: the positions (`` `last` positions``), or with a held-out choice of
/// setting or the KL unit, what was searched (`last|answer` positions × `all|inner` layers,
/// strength in KL nats).
pub fn steering_text(pas: &pas_core::PasConfig) -> String {
    if pas.settings.is_empty() && pas.window.is_all() && pas.unit.is_raw() {
        return format!("`{}` positions", pas.positions.as_str());
    }
    let mut positions: Vec<&str> = Vec::new();
    let mut layers: Vec<&str> = Vec::new();
    for s in pas.candidate_settings() {
        if !positions.contains(&s.positions.as_str()) {
            positions.push(s.positions.as_str());
        }
        if !layers.contains(&s.window.as_str()) {
            layers.push(s.window.as_str());
        }
    }
    let unit = if pas.unit.is_raw() { "" } else { ", strength in KL nats" };
    format!("`{}` positions × `{}` layers (chosen per person){unit}", positions.join("|"), layers.join("|"))
}

fn diagnostic(s: &mut String, r: &Results) {
    let Some(d) = &r.diagnostic else { return };
    let _ = writeln!(s, "## What the model can do at all\n");
    let _ = writeln!(s, "{}\n", diagnostic_text(d));
}

/// The diagnostic in one paragraph: the unsteered model's expected answers against the
/// population's mean answers, and its own answers.
pub fn diagnostic_text(d: &crate::results::Diagnostic) -> String {
    let corr = |c: Option<f64>| c.map_or("–".into(), |c| format!("{c:+.2}"));
    format!(
        "Unsteered, under the default system prompt, over {} items: its expected answer correlates at r = {} with the population's mean answer per item ({} people; r = {} on the test items alone); its mean expected answer is {:.2} against the population's {:.2}; its own answers (argmax): {}. A model with no item-level signal (r near 0) can only shift a constant answer, whatever the method.",
        d.items,
        corr(d.correlation),
        d.population,
        corr(d.correlation_test),
        d.mean_expected,
        d.mean_population,
        histogram(&d.argmax_answers)
    )
}

fn decisions(s: &mut String, r: &Results) {
    if r.decisions.is_empty() {
        return;
    }
    let rules: Vec<crate::decision::Decision> = {
        let mut v: Vec<_> = r.decisions.iter().map(|d| d.decision).collect();
        v.sort();
        v.dedup();
        v
    };
    let _ = writeln!(s, "\n## Decision rules side by side\n");
    let _ = writeln!(
        s,
        "The same runs read by each rule (`argmax`: the most probable option, as the official code; `median`: the median answer of the five-option distribution; `calibrated`: the method's log-probabilities minus the unsteered plain-prompt ones of the same item, then the median; `option-bias` is read by the median under it, its offsets being its calibration). PAS strengths were searched under `{}`. Each cell: Total [95% interval] · paired difference against always-3 [interval] (✓: the whole interval below zero) · answers.\n",
        r.meta.settings.decision
    );
    let _ = writeln!(s, "| method | {} |", rules.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(rules.len()));
    let mut methods: Vec<Method> = r.decisions.iter().filter(|d| d.method.reference().is_none()).map(|d| d.method).collect();
    methods.dedup();
    for m in methods {
        let cells: Vec<String> = rules
            .iter()
            .map(|&rule| {
                r.decisions.iter().find(|d| d.method == m && d.decision == rule).map_or("–".into(), |d: &DecisionRow| {
                    format!("{} · {} · {}", cell(d.total, d.total_ci95), diff_cell(d.vs_always3), histogram(&d.answers))
                })
            })
            .collect();
        let _ = writeln!(s, "| {m} | {} |", cells.join(" | "));
    }
}

fn comparisons(s: &mut String, r: &Results) {
    if r.comparisons.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Paired differences in Total (negative: the method is better; ✓: the whole interval below zero)\n");
    let mut baselines: Vec<Method> = r.comparisons.iter().map(|c| c.baseline).collect();
    baselines.sort();
    baselines.dedup();
    let _ = writeln!(s, "| method | subjects | {} |", baselines.iter().map(|b| format!("against {b}")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---|".repeat(baselines.len()));
    let mut methods: Vec<Method> = Vec::new();
    for c in &r.comparisons {
        if !methods.contains(&c.method) {
            methods.push(c.method);
        }
    }
    for m in methods {
        let of = |b: Method| r.comparisons.iter().find(|c| c.method == m && c.baseline == b);
        let subjects = baselines.iter().find_map(|&b| of(b)).map_or(0, |c| c.subjects);
        // Below FEW_PEOPLE people the interval is degenerate: the point alone.
        let cells: Vec<String> = baselines
            .iter()
            .map(|&b| match of(b) {
                Some(c) if c.subjects < crate::results::FEW_PEOPLE => format!("{:+.3} (no interval)", c.difference),
                c => diff_cell(c.map(|c| (c.difference, c.ci95))),
            })
            .collect();
        let _ = writeln!(s, "| {m} | {subjects} | {} |", cells.join(" | "));
    }
}

fn time(s: &mut String, r: &Results) {
    let m = &r.meta;
    let _ = writeln!(s, "\n## Time\n");
    let _ = writeln!(
        s,
        "Activation collection (shared by all subjects and by the PAS methods): {:.1} s, {} tokens. The unsteered plain-prompt pass over the known and test items (shared by all subjects; no-change's answers, option-bias's base and the calibrated rule's reference) is counted under no-change.\n",
        m.collect_seconds, m.collect_tokens
    );
    let _ = writeln!(s, "| method | s / subject | collect s | probes s | search s | reference s | train s | eval s | tokens | letter found |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for run in r.runs.iter().filter(|r| !r.reference) {
        let p = &run.phases;
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            run.label(m.cases.len()),
            run.seconds_per_subject,
            p.collect,
            p.probes,
            p.search,
            p.reference,
            p.train,
            p.eval,
            run.tokens.sum(),
            run.letter_found.map_or("–".into(), |f| format!("{:.1}%", 100.0 * f))
        );
    }
    if let Some(t) = &r.optimisation_time {
        let st = &m.settings;
        let _ = writeln!(s, "\n## Optimisation time: PAS against DPO and PPO\n");
        let _ = writeln!(
            s,
            "Per subject, from the person's known answers to a ready model (evaluation excluded), over {} subject(s){}: `{}` {:.1} s with steering at `{}` positions (activation collection divided over the subjects, probes, strength search).",
            t.subjects,
            if t.tuned_subjects > 0 && t.tuned_subjects != t.subjects { format!(" for PAS and {} for DPO and PPO", t.tuned_subjects) } else { String::new() },
            t.pas_method,
            t.pas_seconds,
            st.pas.positions.as_str()
        );
        let _ = writeln!(s, "\n| method | seconds per subject | / PAS |\n|---|---|---|\n| `{}` | {:.1} | 1.00 |", t.pas_method, t.pas_seconds);
        for (name, secs, ratio) in [("dpo", t.dpo_seconds, t.ratio), ("ppo", t.ppo_seconds, t.ppo_ratio)] {
            if let (Some(secs), Some(ratio)) = (secs, ratio) {
                let _ = writeln!(s, "| `{name}` | {secs:.1} | {ratio:.2} |");
            }
        }
        let _ = writeln!(s, "\nDPO and PPO: reference log-probabilities, training, held-out checks.");
        if st.dtype.is_quantized() {
            let _ = writeln!(s, "Their adapters were trained over the {} weights and the test items scored with them applied unmerged (merging into quantized blocks would re-quantize the weights).", st.dtype);
        }
        if let Some(r) = t.ratio {
            let _ = writeln!(s, "**DPO / PAS = {r:.2}**.");
        }
        if let Some(r) = t.ppo_ratio {
            let _ = writeln!(s, "**PPO / PAS = {r:.2}**.");
        }
        if let Some(r) = t.ppo_dpo_ratio {
            let _ = writeln!(s, "PPO / DPO = {r:.2}.");
        }
        let _ = writeln!(s, "\nEach trained person:\n");
        trained_people(s, r);
        if m.dpo_ran {
            let d = &st.dpo;
            let _ = writeln!(
                s,
                "\nDPO settings: beta {}, learning rate {}, up to {} epochs (patience {}), {} items per step, LoRA rank {} alpha {} on {}, rejected `{}`, system prompt `{}`, {} held out{}.",
                d.beta,
                d.optimiser.learning_rate,
                d.epochs,
                d.patience,
                d.batch_size,
                d.lora.rank,
                d.lora.alpha,
                d.lora.targets.iter().map(|t| t.short_name()).collect::<Vec<_>>().join(", "),
                serde_json::to_value(d.rejected).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                serde_json::to_value(d.system).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                d.held_out_fraction,
                st.dpo_items.map_or(String::new(), |n| format!(", {n} known items per subject"))
            );
        }
        if m.ppo_ran {
            let p = &st.ppo;
            let _ = writeln!(
                s,
                "\nPPO settings (exact over the five options): learning rate {}, up to {} epochs (patience {}), {} prompts per rollout batch, {} PPO epochs × {} mini-batches, clip {}, KL coefficient {}{}, baseline `{}`, LoRA rank {} alpha {}, system prompt `{}`, {} held out.",
                p.optimiser.learning_rate,
                p.epochs,
                p.patience,
                p.batch_size,
                p.num_ppo_epochs,
                p.num_mini_batches,
                p.cliprange,
                p.kl_coef,
                p.adaptive_kl.map_or(String::new(), |a| format!(" (adaptive, target {})", a.target_kl)),
                serde_json::to_value(p.baseline).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                p.lora.rank,
                p.lora.alpha,
                serde_json::to_value(p.system).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                p.held_out_fraction,
            );
        }
    }
}

/// Renders `totals.svg`: each method's Total with its 95% interval.
pub fn render_svg(r: &Results) -> String {
    let rows: Vec<&Run> = r.runs.iter().collect();
    let top = |r: &Run| r.total_ci95.map_or(r.total.unwrap_or(0.0), |c| c[1].max(r.total.unwrap_or(0.0)));
    let max = rows.iter().map(|r| top(r)).fold(1.0f64, f64::max) * 1.1;
    let (left, width, row_h) = (110.0, 420.0, 26.0);
    let height = 40.0 + row_h * rows.len() as f64 + 30.0;
    let x = |v: f64| left + width * (v / max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Total MAE ({} keying, {} selection; lower is better)</text>\n",
        left + width + 60.0,
        r.meta.settings.keying.as_str(),
        r.meta.settings.alpha_selection.as_str()
    );
    for (i, run) in rows.iter().enumerate() {
        let y = 40.0 + row_h * i as f64;
        let colour = if run.reference { "#999999" } else { "#3b6ea8" };
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", left - 8.0, y + 15.0, run.method);
        let Some(total) = run.total else { continue };
        let _ = writeln!(s, "<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"/>", y + 4.0, x(total) - left, row_h - 10.0);
        if let Some([lo, hi]) = run.total_ci95 {
            let (a, b, ym) = (x(lo), x(hi), y + row_h / 2.0);
            let _ = writeln!(s, "<line x1=\"{a:.1}\" y1=\"{ym}\" x2=\"{b:.1}\" y2=\"{ym}\" stroke=\"black\"/>");
            for e in [a, b] {
                let _ = writeln!(s, "<line x1=\"{e:.1}\" y1=\"{}\" x2=\"{e:.1}\" y2=\"{}\" stroke=\"black\"/>", ym - 5.0, ym + 5.0);
            }
        }
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{}\">{:.2}</text>", x(top(run)) + 6.0, y + 15.0, total);
    }
    let axis_y = 40.0 + row_h * rows.len() as f64 + 5.0;
    let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"black\"/>", left + width);
    let step = if max > 8.0 { 2.0 } else { 1.0 };
    let mut t = 0.0;
    while t <= max {
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t}</text>", x(t), axis_y + 15.0);
        t += step;
    }
    s + "</svg>\n"
}

/// Each person DPO or PPO trained: optimisation seconds of PAS, DPO and PPO, the ratios to
/// PAS, and the person's Totals (a table; a line saying so where none was trained).
pub fn trained_people(s: &mut String, r: &Results) {
    let people = r.optimisation_time.as_ref().map_or(&[][..], |t| t.people.as_slice());
    if people.is_empty() {
        let _ = writeln!(s, "_No person trained by DPO or PPO in this run._");
        return;
    }
    let methods: Vec<Method> = crate::results::PersonTime::METHODS.into_iter().filter(|m| people.iter().any(|p| p.totals.contains_key(m.name()))).collect();
    let mut head: Vec<String> = ["case", "PAS s", "DPO s", "DPO / PAS", "PPO s", "PPO / PAS"].map(str::to_owned).to_vec();
    head.extend(methods.iter().map(|m| format!("Total {m}")));
    let _ = writeln!(s, "| {} |\n|{}", head.join(" | "), "---|".repeat(head.len()));
    let secs = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map_or("–".into(), |(a, b)| format!("{:.2}", a / b.max(f64::MIN_POSITIVE)));
    for p in people {
        let mut row = vec![p.case.to_string(), secs(p.pas_seconds), secs(p.dpo_seconds), ratio(p.dpo_seconds, p.pas_seconds), secs(p.ppo_seconds), ratio(p.ppo_seconds, p.pas_seconds)];
        row.extend(methods.iter().map(|m| p.totals.get(m.name()).map_or("–".into(), |t| format!("{t:.3}"))));
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    if people.len() < 2 {
        return;
    }
    // Means over these people; each ratio over the people who have both methods.
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let both = |f: fn(&crate::results::PersonTime) -> Option<f64>| {
        let pairs: Vec<(f64, f64)> = people.iter().filter_map(|p| f(p).zip(p.pas_seconds)).collect();
        ratio(mean(pairs.iter().map(|x| x.0).collect()), mean(pairs.iter().map(|x| x.1).collect()))
    };
    let mut row = vec![
        format!("mean of {}", people.len()),
        secs(mean(people.iter().filter_map(|p| p.pas_seconds).collect())),
        secs(mean(people.iter().filter_map(|p| p.dpo_seconds).collect())),
        both(|p| p.dpo_seconds),
        secs(mean(people.iter().filter_map(|p| p.ppo_seconds).collect())),
        both(|p| p.ppo_seconds),
    ];
    row.extend(methods.iter().map(|m| mean(people.iter().filter_map(|p| p.totals.get(m.name()).copied()).collect()).map_or("–".into(), |t| format!("{t:.3}"))));
    let _ = writeln!(s, "| {} |", row.join(" | "));
}
