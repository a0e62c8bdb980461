//! Published runs: the tables a document quotes, rendered from a result folder's
//! `results.json` alone, and the marked blocks of a Markdown file (the README) that hold them.
//!
//! A block names its folder and table; [`refresh`] re-renders every block of a text and
//! [`check`] says which blocks differ from what their folders render, so a hand-edited cell or
//! a figure left behind by a newer run shows at once:
//!
//! ```text
//! <!-- published: results/published/smollm2-10 methods -->
//! | method | Total [95% CI] | ...
//! <!-- /published -->
//! ```

use std::fmt::Write as _;
use std::path::Path;

use crate::decision::Decision;
use crate::error::{Error, Result};
use crate::method::Method;
use crate::report::histogram;
use crate::results::{FEW_PEOPLE, Results, Run};

/// The opening of a block: `<!-- published: FOLDER TABLE -->`.
const OPEN: &str = "<!-- published:";
/// The closing line of a block.
const CLOSE: &str = "<!-- /published -->";

/// A table that can be rendered from a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Every method's Total with its interval, answers, the rules and strengths chosen, and
    /// paired differences against few-shot, always-3 and own-mean.
    Methods,
    /// Every model method's Total under each decision rule.
    Rules,
    /// Seconds per subject by phase, and the shared passes.
    Time,
    /// PAS's optimisation time per subject against DPO's and PPO's.
    Optimisation,
    /// What the unsteered model can do at all: its answers against the population's.
    Diagnostic,
    /// The held-out searches of the PAS methods, per grid value: people reaching it, the raw
    /// strength it took, the folds' Total there.
    Strengths,
    /// Each person DPO or PPO trained: PAS's, DPO's and PPO's optimisation seconds, the
    /// ratios, and the person's Totals.
    Trained,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] = [Table::Methods, Table::Rules, Table::Time, Table::Optimisation, Table::Diagnostic, Table::Strengths, Table::Trained];

    /// The name a block uses.
    pub fn name(self) -> &'static str {
        match self {
            Table::Methods => "methods",
            Table::Rules => "rules",
            Table::Time => "time",
            Table::Optimisation => "optimisation",
            Table::Diagnostic => "diagnostic",
            Table::Strengths => "strengths",
            Table::Trained => "trained",
        }
    }

    fn parse(s: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// A Total with its interval over `people` (the point alone below [`FEW_PEOPLE`]).
fn total_cell(v: Option<f64>, ci: Option<[f64; 2]>, people: usize) -> String {
    match (v, ci) {
        (Some(v), Some([lo, hi])) if people >= FEW_PEOPLE => format!("{v:.3} [{lo:.2}, {hi:.2}]"),
        (Some(v), _) => format!("{v:.3}"),
        _ => "–".into(),
    }
}

/// A paired difference with its interval and ✓ (below [`FEW_PEOPLE`] people: the point and
/// how many people, no interval and no ✓).
fn diff_cell(r: &Results, m: Method, baseline: Method) -> String {
    if m == baseline {
        return "–".into();
    }
    r.comparisons.iter().find(|c| c.method == m && c.baseline == baseline).map_or("–".into(), |c| {
        if c.subjects < FEW_PEOPLE {
            return format!("{:+.2} ({} {})", c.difference, c.subjects, if c.subjects == 1 { "person" } else { "people" });
        }
        let mark = if c.ci95[1] < 0.0 { " ✓" } else { "" };
        format!("{:+.2} [{:+.2}, {:+.2}]{mark}", c.difference, c.ci95[0], c.ci95[1])
    })
}

fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    let mut v: Vec<(&String, &usize)> = map.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
}

fn strengths(s: &mut String, r: &Results) {
    let runs: Vec<(&Run, &crate::results::AlphaSummary)> = r.runs.iter().filter_map(|x| x.alpha.as_ref().filter(|a| !a.by_value.is_empty()).map(|a| (x, a))).collect();
    if runs.is_empty() {
        let _ = writeln!(s, "No PAS method searched several settings or in KL in this run.");
        return;
    }
    let _ = writeln!(s, "| method | strength | people reaching it | raw alpha (median over people) | folds' Total (mean; each person's best setting) |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (run, a) in runs {
        let unit = if a.kl_counts.is_empty() { "" } else { " nat" };
        for v in &a.by_value {
            let _ = writeln!(s, "| {} | {}{unit} | {} | {:.3} | {:.3} |", run.method, v.value, v.people, v.alpha, v.objective);
        }
    }
}

/// The strengths a PAS method chose over people: in KL nats where it searched in KL (with
/// where it steered, when that was chosen too), else raw alpha.
fn strengths_cell(a: &crate::results::AlphaSummary) -> String {
    if a.kl_counts.is_empty() {
        return counts(&a.counts);
    }
    let kl: std::collections::BTreeMap<String, usize> = a.kl_counts.iter().map(|(k, n)| (if k == "0" { k.clone() } else { format!("{k} nat") }, *n)).collect();
    let mut cell = counts(&kl);
    if !a.settings.is_empty() {
        cell.push_str(&format!(" ({})", counts(&a.settings)));
    }
    cell
}

/// One line saying what the run is: people, model, weights, protocol, and the folder.
fn caption(r: &Results, folder: &str) -> String {
    let m = &r.meta;
    let st = &m.settings;
    format!(
        "_{} people, `{}` ({} weights), {} keying, `{}` decision rule, strengths chosen `{}`, PAS steering {}, {} test items each; rendered from `{folder}/results.json`._",
        m.cases.len(),
        st.model_id,
        st.dtype,
        st.keying.as_str(),
        st.decision,
        st.alpha_selection.as_str(),
        crate::report::steering_text(&st.pas),
        m.test_items
    )
}

fn methods(s: &mut String, r: &Results) {
    // PAS is a column where DPO or PPO were compared with it.
    let present = |b: Method| if b == Method::Pas { r.comparisons.iter().any(|c| c.baseline == b) } else { r.runs.iter().any(|x| x.method == b) };
    let baselines: Vec<Method> = [Method::FewShot, Method::Pas, Method::Always3, Method::OwnMean].into_iter().filter(|&b| present(b)).collect();
    let rules = r.runs.iter().any(|x| !x.rules_chosen.is_empty());
    let strengths = r.runs.iter().any(|x| x.alpha.is_some());
    let mut head = vec!["method".to_owned(), "Total [95% CI]".into(), "answers".into()];
    if rules {
        head.push("rule chosen".into());
    }
    if strengths {
        head.push("strengths chosen".into());
    }
    head.extend(baselines.iter().map(|b| format!("vs {b}")));
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for run in &r.runs {
        let flag = if run.one_letter.is_some() { " ⚠" } else { "" };
        let mut row = vec![run.label(r.meta.cases.len()), total_cell(run.total, run.total_ci95, run.subjects), format!("{}{flag}", histogram(&run.answers))];
        if rules {
            row.push(counts(&run.rules_chosen));
        }
        if strengths {
            row.push(run.alpha.as_ref().map_or(String::new(), strengths_cell));
        }
        row.extend(baselines.iter().map(|&b| diff_cell(r, run.method, b)));
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
}

fn rules(s: &mut String, r: &Results) {
    // `held-out` is a column only where the run chose rules; elsewhere it would be the median.
    let rules: Vec<Decision> = Decision::ALL.into_iter().filter(|&d| d != Decision::HeldOut || r.meta.settings.decision == Decision::HeldOut).collect();
    let _ = writeln!(s, "| method | {} |", rules.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(rules.len()));
    for run in r.runs.iter().filter(|x| !x.reference) {
        let cells: Vec<String> = rules
            .iter()
            .map(|&d| r.decisions.iter().find(|x| x.method == run.method && x.decision == d).map_or("–".into(), |x| total_cell(x.total, x.total_ci95, run.subjects)))
            .collect();
        let _ = writeln!(s, "| {} | {} |", run.label(r.meta.cases.len()), cells.join(" | "));
    }
}

fn diagnostic(s: &mut String, r: &Results) {
    match &r.diagnostic {
        Some(d) => writeln!(s, "{}", crate::report::diagnostic_text(d)),
        None => writeln!(s, "_No unsteered pass in this run._"),
    }
    .expect("writing to a String");
}

fn time(s: &mut String, r: &Results) {
    let m = &r.meta;
    let _ = writeln!(
        s,
        "Shared by every subject, once per run: the unsteered pass over the known and test items {:.0} s ({} tokens; no-change's row is that pass divided over the people), the contrast prompts' head activations {:.0} s ({} tokens).\n",
        m.plain_seconds, m.plain_tokens, m.collect_seconds, m.collect_tokens
    );
    let _ = writeln!(s, "| method | s / subject | search s | eval s | train s | tokens / subject |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for run in r.runs.iter().filter(|x: &&Run| !x.reference) {
        let p = &run.phases;
        let n = run.subjects.max(1) as f64;
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            run.label(m.cases.len()),
            run.seconds_per_subject,
            p.search / n,
            p.eval / n,
            (p.reference + p.train) / n,
            run.tokens.sum() as f64 / n
        );
    }
}

fn optimisation(s: &mut String, r: &Results) {
    let Some(t) = &r.optimisation_time else {
        let _ = writeln!(s, "_No PAS against DPO or PPO in this run._");
        return;
    };
    let _ = writeln!(s, "| method | optimisation s / subject | / PAS |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(s, "| {} | {:.1} | 1.00 |", t.pas_method, t.pas_seconds);
    for (method, secs, ratio) in [(Method::Dpo, t.dpo_seconds, t.ratio), (Method::Ppo, t.ppo_seconds, t.ppo_ratio)] {
        if let (Some(secs), Some(ratio)) = (secs, ratio) {
            let name = r.runs.iter().find(|x| x.method == method).map_or(method.to_string(), |x| x.label(t.subjects));
            let _ = writeln!(s, "| {name} | {secs:.1} | **{ratio:.2}** |");
        }
    }
}

/// Renders `table` of the run in `folder` (as the block names it, for the caption).
pub fn render(r: &Results, table: Table, folder: &str) -> String {
    let mut s = caption(r, folder) + "\n\n";
    match table {
        Table::Methods => methods(&mut s, r),
        Table::Rules => rules(&mut s, r),
        Table::Time => time(&mut s, r),
        Table::Optimisation => optimisation(&mut s, r),
        Table::Diagnostic => diagnostic(&mut s, r),
        Table::Strengths => strengths(&mut s, r),
        Table::Trained => crate::report::trained_people(&mut s, r),
    }
    s
}

/// A marked block of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The result folder, as written in the marker (relative to the document's root).
    pub folder: String,
    /// The table.
    pub table: Table,
    /// Line (1-based) of the opening marker.
    pub line: usize,
    /// What the document holds between the markers.
    pub content: String,
}

/// The marked blocks of `text` (`doc` names the document in errors).
pub fn blocks(text: &str, doc: &Path) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(OPEN) else { continue };
        let words: Vec<&str> = rest.trim_end_matches("-->").split_whitespace().collect();
        let [folder, table] = words[..] else {
            return Err(Error::file(doc, format!("line {}: a published block opens as `{OPEN} FOLDER TABLE -->`", i + 1)));
        };
        let table = Table::parse(table).ok_or_else(|| {
            Error::file(doc, format!("line {}: unknown table `{table}` (expected {})", i + 1, Table::ALL.map(Table::name).join(", ")))
        })?;
        let mut content = String::new();
        loop {
            match lines.next() {
                Some((_, l)) if l.trim() == CLOSE => break,
                Some((_, l)) => {
                    content.push_str(l);
                    content.push('\n');
                }
                None => return Err(Error::file(doc, format!("line {}: the block is not closed by `{CLOSE}`", i + 1))),
            }
        }
        out.push(Block { folder: folder.to_owned(), table, line: i + 1, content });
    }
    Ok(out)
}

fn load(root: &Path, folder: &str) -> Result<Results> {
    crate::files::read_json(&root.join(folder).join("results.json"))
}

/// `text` with every block re-rendered from its folder under `root`.
pub fn refresh(text: &str, root: &Path, doc: &Path) -> Result<String> {
    let rendered: Vec<String> = blocks(text, doc)?.iter().map(|b| Ok(render(&load(root, &b.folder)?, b.table, &b.folder))).collect::<Result<_>>()?;
    let mut out = String::new();
    let mut next = rendered.into_iter();
    let mut inside = false;
    for line in text.lines() {
        if inside {
            if line.trim() == CLOSE {
                out.push_str(&next.next().expect("one rendering per block"));
                out.push_str(line);
                out.push('\n');
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
        inside = line.trim().starts_with(OPEN);
    }
    Ok(out)
}

/// The blocks of `text` that differ from what their folders render, each as
/// `LINE: FOLDER TABLE`; empty when the document is current.
pub fn check(text: &str, root: &Path, doc: &Path) -> Result<Vec<String>> {
    let mut stale = Vec::new();
    for b in blocks(text, doc)? {
        if render(&load(root, &b.folder)?, b.table, &b.folder) != b.content {
            stale.push(format!("line {}: {} {}", b.line, b.folder, b.table.name()));
        }
    }
    Ok(stale)
}
