//! What a run writes: per-subject results, `results.json` (the DESIGN contract), and
//! `report.md` and `totals.svg` rendered from `results.json` alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use papi_data::{Domain, PerDomain};
use pas_core::{Fallback, PasConfig, SearchResult};
use serde::{Deserialize, Serialize};

use dpo_baseline::{DpoConfig, TrainReport};

use crate::score::ScorePath;
use crate::stats::Interval;

/// Seconds or tokens per phase of a method.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Phases<T> {
    /// Activation collection (shared by all subjects; PAS methods only).
    pub collect: T,
    /// Probe fits (PAS methods only).
    pub probes: T,
    /// Strength search (PAS methods only).
    pub search: T,
    /// Evaluation of the test items.
    pub eval: T,
    /// Reference log-probabilities of the preference prompts (DPO only).
    #[serde(default)]
    pub reference: T,
    /// Optimisation steps and held-out checks (DPO only).
    #[serde(default)]
    pub train: T,
}

impl<T: Copy> Phases<T> {
    /// Each phase through `f`.
    pub fn map<U>(&self, f: impl Fn(T) -> U) -> Phases<U> {
        Phases {
            collect: f(self.collect),
            probes: f(self.probes),
            search: f(self.search),
            eval: f(self.eval),
            reference: f(self.reference),
            train: f(self.train),
        }
    }
}

impl<T: Copy + std::ops::Add<Output = T>> Phases<T> {
    /// The sum of the phases.
    pub fn sum(&self) -> T {
        self.collect + self.probes + self.search + self.eval + self.reference + self.train
    }

    /// Phase-wise sum.
    pub fn plus(&self, o: &Self) -> Self {
        Phases {
            collect: self.collect + o.collect,
            probes: self.probes + o.probes,
            search: self.search + o.search,
            eval: self.eval + o.eval,
            reference: self.reference + o.reference,
            train: self.train + o.train,
        }
    }
}

/// One item of one subject under one method (a line of `samples.jsonl`, with the subject
/// and method added).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Item number (1..=300).
    pub item: u16,
    /// Domain letter.
    pub domain: char,
    /// Log-probabilities of options A..E where the answer was read (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<[f32; 5]>,
    /// The chosen option letter (LLM methods; none when generation did not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<char>,
    /// The predicted answer, 1..=5.
    pub answer: Option<u8>,
    /// The person's answer under the run's keying (0: missing, scored as-released only).
    pub target: Option<u8>,
    /// |answer - target| where both exist.
    pub error: Option<u8>,
    /// How the answer was read (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<ScorePath>,
    /// The generated text (generate scoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Hash of the rendered prompt (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hash: Option<String>,
}

/// What PAS did for one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasRecord {
    /// The strength used on the test items.
    pub alpha: f64,
    /// The search: every strength tried and its objective (held-out or oracle Total).
    pub search: Option<SearchResult>,
    /// Heads steered.
    pub heads: usize,
    /// Layers with a steered head, ascending.
    pub layers: Vec<u32>,
    /// Mean sigma of the steered heads.
    pub mean_sigma: f64,
    /// Labelled contrast pairs (items answered other than 3 or missing).
    pub pairs: usize,
    /// Why there is no intervention, if there is none.
    pub fallback: Option<Fallback>,
}

/// One subject under one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectResult {
    /// Subject id.
    pub case: i64,
    /// Method name.
    pub method: String,
    /// MAE per domain over the test items.
    pub mae: PerDomain<Option<f64>>,
    /// Sum of the five domain MAEs.
    pub total: Option<f64>,
    /// Per item.
    pub items: Vec<ItemRecord>,
    /// PAS details (pas, pas-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pas: Option<PasRecord>,
    /// DPO training details (dpo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<TrainReport>,
    /// Seconds per phase spent on this subject (shared work not included).
    pub seconds: Phases<f64>,
    /// Tokens run per phase for this subject (shared work not included).
    pub tokens: Phases<u64>,
}

/// The strengths chosen over subjects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlphaSummary {
    /// Mean chosen strength.
    pub mean: f64,
    /// How often each strength was chosen.
    pub counts: BTreeMap<String, usize>,
    /// Subjects that got no intervention (too few pairs, one class, ...).
    pub fallbacks: usize,
}

/// One method's aggregate (an entry of `results.json`'s `runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Method name.
    pub method: String,
    /// Whether it is a reference predictor (no model).
    pub reference: bool,
    /// Keying of prompts and targets.
    pub keying: String,
    /// How the strength was selected (`heldout` or `oracle`).
    pub alpha_selection: String,
    /// How answers were read (LLM methods).
    pub scoring: Option<String>,
    /// Subjects aggregated.
    pub subjects: usize,
    /// Mean over subjects of each domain's MAE.
    pub per_domain: BTreeMap<String, f64>,
    /// 95% bootstrap interval of each domain's mean.
    pub per_domain_ci95: BTreeMap<String, [f64; 2]>,
    /// Sum of the five domain means (lower is better); null when a domain has no value.
    pub total: Option<f64>,
    /// 95% bootstrap interval of the Total over subjects.
    pub total_ci95: Option<[f64; 2]>,
    /// Wall time of the method: its share of shared work plus every subject's.
    pub seconds: f64,
    /// `seconds` divided by the subjects.
    pub seconds_per_subject: f64,
    /// Seconds per phase (activation collection counted once).
    pub phases: Phases<f64>,
    /// Tokens run per phase.
    pub tokens: Phases<u64>,
    /// Chosen strengths (PAS methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<AlphaSummary>,
    /// Share of items whose letter was found within the format-aware lookahead, or parsed
    /// from the generation (LLM methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter_found: Option<f64>,
}

/// A method compared with another on the same subjects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The method.
    pub method: String,
    /// What it is compared with.
    pub baseline: String,
    /// Subjects with a Total under both.
    pub subjects: usize,
    /// Mean over subjects of (method Total - baseline Total); negative: the method is better.
    pub difference: f64,
    /// Its 95% bootstrap interval.
    pub ci95: [f64; 2],
}

/// The optimisation time of PAS and of DPO per subject, side by side (the paper claims
/// PAS needs a fifth of DPO's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimisationTime {
    /// The PAS method measured (`pas`, else `pas-only`).
    pub pas_method: String,
    /// PAS per subject: activation collection divided over the subjects, probe fits and
    /// the strength search (not the final evaluation).
    pub pas_seconds: f64,
    /// DPO per subject: reference log-probabilities and training (not the evaluation).
    pub dpo_seconds: f64,
    /// `dpo_seconds / pas_seconds`.
    pub ratio: f64,
    /// Subjects averaged over.
    pub subjects: usize,
}

/// A requested method that produced no row, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotRun {
    /// Method name.
    pub method: String,
    /// Why.
    pub reason: String,
}

/// Everything about how a run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The tool and its version.
    pub tool: String,
    /// Git revision of the code (with `-dirty` when the tree had changes).
    pub git_revision: String,
    /// Model id.
    pub model_id: String,
    /// Hash of the model's `config.json` and weights' size.
    pub model_hash: String,
    /// Hash of the chat template.
    pub chat_template_hash: String,
    /// Where it ran, e.g. `cpu (flex)`.
    pub device: String,
    /// The records file.
    pub records: String,
    /// Keying (`corrected` or `as-released`).
    pub keying: String,
    /// How missing answers count.
    pub missing_answers: String,
    /// `heldout` or `oracle`.
    pub alpha_selection: String,
    /// How answers were read.
    pub scoring: String,
    /// The PAS settings.
    pub pas: PasConfig,
    /// Test items per subject.
    pub test_items: usize,
    /// Held-out items scored per subject and strength in the search (all known items when none).
    pub search_items: Option<usize>,
    /// Items continued from a shared prefix per forward pass.
    pub batch: usize,
    /// Subjects' case ids, in order.
    pub cases: Vec<i64>,
    /// Bootstrap resamples and seed.
    pub bootstrap: crate::stats::Bootstrap,
    /// Ridge reference settings.
    pub ridge: papi_data::reference::RidgeConfig,
    /// Shared work: activation collection seconds and tokens (once per run).
    pub collect_seconds: f64,
    /// Tokens of the activation collection.
    pub collect_tokens: u64,
    /// DPO settings (when dpo ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<DpoConfig>,
    /// Known items per subject used by DPO (training and held-out; all when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo_items: Option<usize>,
}

/// The content of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// How the run was made.
    pub meta: Meta,
    /// One row per method, reference predictors included.
    pub runs: Vec<Run>,
    /// Every method against few-shot, paired by subject.
    pub comparisons: Vec<Comparison>,
    /// Requested methods without a row.
    pub not_run: Vec<NotRun>,
    /// PAS's optimisation time against DPO's (when both ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimisation_time: Option<OptimisationTime>,
}

/// A domain map keyed by letter.
pub fn by_letter<T: Clone>(v: &PerDomain<Option<T>>) -> BTreeMap<String, T> {
    v.iter().filter_map(|(d, x)| x.clone().map(|x| (d.letter().to_string(), x))).collect()
}

/// An interval as `[lo, hi]`.
pub(crate) fn ci_pair(i: Interval) -> [f64; 2] {
    [i.lo, i.hi]
}

fn cell(v: Option<f64>, ci: Option<[f64; 2]>) -> String {
    match (v, ci) {
        (Some(v), Some([lo, hi])) => format!("{v:.3} [{lo:.2}, {hi:.2}]"),
        (Some(v), _) => format!("{v:.3}"),
        _ => "–".into(),
    }
}

/// Renders `report.md` from the results alone.
pub fn render_markdown(r: &Results) -> String {
    let m = &r.meta;
    let mut s = String::new();
    let oracle = m.alpha_selection == "oracle";
    let _ = writeln!(
        s,
        "# PAPI benchmark: {} subjects, {} keying{}\n",
        m.cases.len(),
        m.keying,
        if oracle { ", ORACLE strength selection (alpha chosen on the test items)" } else { "" }
    );
    let _ = writeln!(
        s,
        "Model `{}` ({}), scoring `{}`, strength selection `{}`, PAS steering at `{}` positions, missing answers {}; {} test items per subject; records `{}`; code `{}`; chat template `{}`.\n",
        m.model_id, m.device, m.scoring, m.alpha_selection, m.pas.positions.as_str(), m.missing_answers, m.test_items, m.records, m.git_revision, m.chat_template_hash
    );
    let _ = writeln!(s, "Mean absolute error per domain (lower is better) and Total (their sum), each with a 95% bootstrap interval over subjects.\n");
    let header = |s: &mut String| {
        let _ = writeln!(s, "| method | A | C | E | N | O | Total |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    };
    let row = |s: &mut String, run: &Run| {
        let mut line = format!("| {} |", run.method);
        for d in Domain::ALL {
            let k = d.letter().to_string();
            line += &format!(" {} |", cell(run.per_domain.get(&k).copied(), run.per_domain_ci95.get(&k).copied()));
        }
        line += &format!(" **{}** |", cell(run.total, run.total_ci95));
        let _ = writeln!(s, "{line}");
    };
    let _ = writeln!(s, "## Methods\n");
    header(&mut s);
    for run in r.runs.iter().filter(|r| !r.reference) {
        row(&mut s, run);
    }
    for n in &r.not_run {
        let _ = writeln!(s, "| {} | not run: {} | | | | | |", n.method, n.reason);
    }
    let _ = writeln!(s, "\n## Reference predictors (same subjects and items)\n");
    if r.runs.iter().any(|r| r.reference) {
        header(&mut s);
        for run in r.runs.iter().filter(|r| r.reference) {
            row(&mut s, run);
        }
    } else {
        let _ = writeln!(s, "None requested (add `always-3,own-mean,ridge` to `--methods`).");
    }
    if !r.comparisons.is_empty() {
        let _ = writeln!(s, "\n## Paired differences in Total against {} (negative: better)\n", r.comparisons[0].baseline);
        let _ = writeln!(s, "| method | subjects | difference | 95% interval |");
        let _ = writeln!(s, "|---|---|---|---|");
        for c in &r.comparisons {
            let _ = writeln!(s, "| {} | {} | {:+.3} | [{:+.3}, {:+.3}] |", c.method, c.subjects, c.difference, c.ci95[0], c.ci95[1]);
        }
    }
    let _ = writeln!(s, "\n## Time\n");
    let _ = writeln!(
        s,
        "Activation collection (shared by all subjects and by both PAS methods): {:.1} s, {} tokens.\n",
        m.collect_seconds, m.collect_tokens
    );
    let _ = writeln!(s, "| method | s / subject | collect s | probes s | search s | reference s | train s | eval s | tokens | letter found |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for run in r.runs.iter().filter(|r| !r.reference) {
        let p = &run.phases;
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            run.method,
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
        let _ = writeln!(s, "\n## Optimisation time: PAS against DPO\n");
        let _ = writeln!(
            s,
            "Per subject, from the person's known answers to a ready model (evaluation excluded), over {} subject(s): `{}` {:.1} s with steering at `{}` positions (activation collection divided over the subjects, probes, strength search); `dpo` {:.1} s (reference log-probabilities, training, held-out checks). **DPO / PAS = {:.2}**.",
            t.subjects, t.pas_method, t.pas_seconds, m.pas.positions.as_str(), t.dpo_seconds, t.ratio
        );
        if let Some(d) = &m.dpo {
            let _ = writeln!(
                s,
                "\nDPO settings: beta {}, learning rate {}, up to {} epochs (patience {}), {} items per step, LoRA rank {} alpha {} on {}, rejected `{}`, system prompt `{}`, {} held out{}.",
                d.beta,
                d.learning_rate,
                d.epochs,
                d.patience,
                d.batch_size,
                d.lora.rank,
                d.lora.alpha,
                d.lora.targets.iter().map(|t| t.short_name()).collect::<Vec<_>>().join(", "),
                serde_json::to_value(d.rejected).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                serde_json::to_value(d.system).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                d.held_out_fraction,
                m.dpo_items.map_or(String::new(), |n| format!(", {n} known items per subject"))
            );
        }
    }
    let alphas: Vec<&Run> = r.runs.iter().filter(|r| r.alpha.is_some()).collect();
    if !alphas.is_empty() {
        let _ = writeln!(s, "\n## Chosen strengths\n");
        for run in alphas {
            let a = run.alpha.as_ref().expect("filtered");
            let counts: Vec<String> = a.counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "- `{}`: mean alpha {:.2}; {}; {} subject(s) without an intervention.", run.method, a.mean, counts.join(", "), a.fallbacks);
        }
    }
    let _ = writeln!(s, "\n![Totals with 95% intervals](totals.svg)");
    s
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
        r.meta.keying,
        r.meta.alpha_selection
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
