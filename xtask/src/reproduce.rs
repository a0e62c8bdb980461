//! `reproduce`: the PAPI benchmark end to end (DESIGN contract), and `report`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use eval::stats::Bootstrap;
use dpo_baseline::ppo::{AdaptiveKl, Baseline};
use dpo_baseline::{DpoConfig, LoraConfig, PpoConfig, Rejected, SystemPrompt};
use eval::{AlphaSelection, Decision, Evaluator, Method, Provenance, RunConfig, Scoring};
use llm_burn::model::lora::Target;
use indicatif::{ProgressBar, ProgressStyle};
use papi_data::reference::RidgeConfig;
use papi_data::{Dataset, Keying};
use pas_core::{PasConfig, Search, Selection};


/// Arguments of `reproduce`.
#[derive(Args)]
pub struct ReproduceArgs {
    /// The PAPI folder (item key, split, records, personality prompts); default: $PAPI_DIR, else
    /// the development data shipped in data/papi.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The records file, when the folder has several.
    #[arg(long)]
    records: Option<PathBuf>,
    /// P² descriptions (default: the folder's `personality-prompts*.json` or the release's
    /// `personality_prompt.json`, if there is one).
    #[arg(long)]
    p2_prompts: Option<PathBuf>,
    #[command(flatten)]
    model: crate::model::ModelArgs,
    /// Run only shard I of N (0-based) of the subjects, into `<out>/shard-I-of-N`; merge the
    /// shards with `cargo xtask merge`. Without it, the shard comes from Slurm's
    /// `SLURM_ARRAY_TASK_ID` (minus `SLURM_ARRAY_TASK_MIN`) and `SLURM_ARRAY_TASK_COUNT`, or
    /// from Kubernetes' `JOB_COMPLETION_INDEX` with `--shard-count` or `SHARD_COUNT`.
    #[arg(long)]
    shard: Option<eval::config::Shard>,
    /// The number of shards, for `JOB_COMPLETION_INDEX` (Kubernetes Indexed Jobs).
    #[arg(long)]
    shard_count: Option<usize>,
    /// How many subjects (the first N of the records file), or `all`. The default (one
    /// subject, the `quick` methods, all 180 test items) takes about 3 minutes on a 2-core
    /// CPU with the default model; `--methods all` about 18.
    #[arg(long, default_value = "1")]
    subjects: String,
    /// Comma-separated methods, `quick` (the default: no-change, few-shot, pas, always-3,
    /// own-mean, ridge) or `all`: no-change, option-bias, few-shot, p2, pas, pas-only,
    /// pas-domain, dpo, ppo, always-3, own-mean, ridge.
    #[arg(long, default_value = "quick")]
    methods: String,
    /// `corrected` (the person's actual answers; default) or `as-released` (official).
    #[arg(long, default_value = "corrected")]
    keying: Keying,
    /// `heldout` (inside the known items; default) or `oracle` (on the test items, official).
    #[arg(long, default_value = "heldout")]
    alpha_selection: AlphaSelection,
    /// `format-aware` (default), `next-token`, or `generate` (official regex; reproduction only).
    #[arg(long, default_value = "format-aware")]
    scoring: Scoring,
    /// How an answer is read from the five option log-probabilities: `held-out` (default: per
    /// person and method, whichever of the three rules below reads that person's held-out
    /// known items best, on the strength search's folds; recorded in each subject's file),
    /// `calibrated` (minus the unsteered plain-prompt ones, then the median; the default of
    /// the tables before 2026-12-07), `median` or `argmax` (the official). It is the strength
    /// search's objective and the headline; the report shows every rule side by side, and
    /// `report --decision` re-reads a finished run.
    #[arg(long, default_value = "held-out")]
    decision: Decision,
    /// Output folder (default: `results/reproduce-<keying>-<alpha selection>`). Re-running with
    /// the same folder resumes: finished subjects are not redone.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Test items per subject, balanced over domains (default: all 180).
    #[arg(long)]
    test_items: Option<usize>,
    /// Held-out known items scored per strength in the search, balanced over domains and
    /// folds, or `all` (every known item: about 4 times the default's search cost).
    #[arg(long, default_value = "30")]
    search_items: String,
    /// Folds over the known items for held-out strength selection (each fold's few-shot
    /// prompt and intervention leave it out; every fold and strength recomputes the prompt).
    #[arg(long, default_value_t = 2)]
    folds: usize,
    /// PAS strengths in nats of mean KL(steered || unsteered) over the five options
    /// (comma-separated; default 0,0.01,0.03,0.1,0.3,1): each person's fold interventions are
    /// measured on a ladder of raw strengths and each target read off their curves; the
    /// final intervention is held to the chosen KL.
    #[arg(long)]
    kl_targets: Option<String>,
    /// Raw PAS strengths instead (alpha x sigma per head, comma-separated; the original's grid
    /// is 0,1,2,4,6,8): replaces the KL unit.
    #[arg(long)]
    alphas: Option<String>,
    /// How the strength is chosen on the folds: `one-se` (the smallest effect within one
    /// standard error of the lowest Total; the default with KL targets) or `best` (the lowest
    /// Total; the default with --alphas).
    #[arg(long)]
    strength_choice: Option<pas_core::StrengthChoice>,
    /// Heads steered (K).
    #[arg(long, default_value_t = 24)]
    top_k: usize,
    /// Where PAS may steer, comma-separated, chosen per person on the folds with the strength:
    /// `all` (every token, the paper's o_proj bias; each strength reruns the prompt),
    /// `answer` (the tokens after the prompt's shared prefix: system prompt and few-shot
    /// answers unsteered, computed once per fold for every strength) or `last` (the last
    /// position only; the default and the cheapest: every strength shares the question's
    /// tokens).
    #[arg(long, default_value = "last")]
    steer_positions: String,
    /// Which layers PAS heads may come from, comma-separated, chosen per person with the
    /// positions: `all` or `inner` (all but the first two and the last).
    #[arg(long, default_value = "all,inner")]
    steer_layers: String,
    /// Items continued from a shared prefix per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    /// Seed of the bootstrap, the probe split, the strength folds and DPO (adapters'
    /// initialisation, held-out split, pair order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// DPO: most passes over the training pairs (early stopping on the held-out pairs).
    #[arg(long, default_value_t = DpoConfig::default().epochs)]
    dpo_epochs: usize,
    /// DPO: AdamW learning rate (constant).
    #[arg(long, default_value_t = DpoConfig::default().optimiser.learning_rate)]
    dpo_lr: f64,
    /// DPO: beta, the strength of the tie to the reference model.
    #[arg(long, default_value_t = DpoConfig::default().beta)]
    dpo_beta: f64,
    /// DPO: items (prompts, each with all its pairs) per optimisation step.
    #[arg(long, default_value_t = DpoConfig::default().batch_size)]
    dpo_batch: usize,
    /// DPO: LoRA rank.
    #[arg(long, default_value_t = LoraConfig::default().rank)]
    dpo_rank: usize,
    /// DPO: LoRA alpha (updates scaled by alpha / rank).
    #[arg(long, default_value_t = LoraConfig::default().alpha)]
    dpo_alpha: f64,
    /// DPO: LoRA dropout.
    #[arg(long, default_value_t = LoraConfig::default().dropout)]
    dpo_dropout: f64,
    /// DPO: adapted projections, comma-separated (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
    #[arg(long, default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")]
    dpo_targets: String,
    /// DPO: the rejected options: `all-others` (default: every other option, one pair each)
    /// or `opposite-extreme` (the extreme on the other side; both for an answer of 3).
    #[arg(long, default_value = "all-others")]
    dpo_rejected: Rejected,
    /// DPO: the preference prompts' system prompt: `plain` (default) or `few-shot`.
    #[arg(long, default_value = "plain")]
    dpo_system: String,
    /// DPO: fraction of the known items held out to choose the epoch.
    #[arg(long, default_value_t = DpoConfig::default().held_out_fraction)]
    dpo_held_out: f64,
    /// DPO and PPO: known items used per subject, balanced over domains (default: all answered).
    #[arg(long)]
    dpo_items: Option<usize>,
    /// PPO: most passes over the training prompts (early stopping on the held-out mean
    /// reward). PPO uses DPO's adapters (`--dpo-rank`, `--dpo-alpha`, `--dpo-dropout`,
    /// `--dpo-targets`), system prompt (`--dpo-system`) and seed.
    #[arg(long, default_value_t = PpoConfig::default().epochs)]
    ppo_epochs: usize,
    /// PPO: AdamW learning rate (constant).
    #[arg(long, default_value_t = PpoConfig::default().optimiser.learning_rate)]
    ppo_lr: f64,
    /// PPO: prompts per rollout batch.
    #[arg(long, default_value_t = PpoConfig::default().batch_size)]
    ppo_batch: usize,
    /// PPO: optimisation passes over each rollout batch (TRL's num_ppo_epochs).
    #[arg(long, default_value_t = PpoConfig::default().num_ppo_epochs)]
    ppo_updates: usize,
    /// PPO: mini-batches per pass (TRL's num_mini_batches).
    #[arg(long, default_value_t = PpoConfig::default().num_mini_batches)]
    ppo_mini_batches: usize,
    /// PPO: the ratio clip (TRL's cliprange).
    #[arg(long, default_value_t = PpoConfig::default().cliprange)]
    ppo_cliprange: f64,
    /// PPO: the KL penalty's coefficient (TRL's kl_coef; the initial one with --ppo-target-kl).
    #[arg(long, default_value_t = PpoConfig::default().kl_coef)]
    ppo_kl_coef: f64,
    /// PPO: adapt the KL coefficient towards this KL (Ziegler et al.'s controller, horizon
    /// 10,000 prompts); default: fixed.
    #[arg(long)]
    ppo_target_kl: Option<f64>,
    /// PPO: the advantage's baseline: `expected` (default: the prompt's expected reward under
    /// the old policy) or `batch-mean`.
    #[arg(long, default_value = "expected")]
    ppo_baseline: String,
    /// PPO: fraction of the known items held out to choose the epoch.
    #[arg(long, default_value_t = PpoConfig::default().held_out_fraction)]
    ppo_held_out: f64,
}

/// Arguments of `merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// The shards' output folders (every shard of the run, each once), or the run's folder
    /// holding its `shard-I-of-N` folders.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Where the merged run is written (default: the run's folder, when one is given).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `merge`.
pub fn merge(args: &MergeArgs) -> Result<()> {
    let shards = eval::merge::shard_folders(&args.shards)?;
    let out = match (&args.out, args.shards.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [run]) if shards.first() != Some(run) => run.clone(),
        _ => bail!("merge: name the merged run's folder with --out (or give the run's folder alone)"),
    };
    let results = eval::merge::merge(&shards, &out)?;
    eprintln!("merged {} shards ({} subjects) into {}", shards.len(), results.meta.cases.len(), out.display());
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", eval::report::render_markdown(&results))?;
    Ok(())
}

/// Arguments of `report`.
#[derive(Args)]
pub struct ReportArgs {
    /// A `reproduce` output folder holding `results.json` (and `samples.jsonl.gz`).
    #[arg(long)]
    out: PathBuf,
    /// Re-decide the run under this rule (`argmax`, `median` or `calibrated`) from its
    /// `samples.jsonl.gz`, without a model: writes `report-<rule>.md` and `results-<rule>.json`
    /// beside the run's own files. Without it, `report.md` is re-rendered from `results.json`.
    #[arg(long)]
    decision: Option<Decision>,
}

/// The code's git revision, `-dirty` when the tree has changes.
fn git_revision() -> String {
    let run = |args: &[&str]| std::process::Command::new("git").args(args).output().ok().filter(|o| o.status.success());
    let Some(head) = run(&["rev-parse", "--short=12", "HEAD"]) else { return "unknown".into() };
    let mut rev = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    if run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty()) {
        rev.push_str("-dirty");
    }
    rev
}

fn find_p2(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| (f.starts_with("personality-prompts") || f.starts_with("personality_prompt")) && f.ends_with(".json")))
        .collect();
    found.sort();
    (found.len() == 1).then(|| found.remove(0))
}

fn numbers(flag: &str, s: &str) -> Result<Vec<f64>> {
    s.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<Vec<_>, _>>().with_context(|| format!("{flag} `{s}`"))
}

/// The PAS search the flags ask for: the settings searched (layers × positions), the unit
/// (KL targets, or raw `--alphas`) and the choice rule.
fn pas_config(args: &ReproduceArgs) -> Result<PasConfig> {
    let positions: Vec<pas_core::Positions> = list(&args.steer_positions, "--steer-positions")?;
    let windows: Vec<pas_core::LayerWindow> = list(&args.steer_layers, "--steer-layers")?;
    let settings: Vec<pas_core::Setting> = windows.iter().flat_map(|&window| positions.iter().map(move |&positions| pas_core::Setting { window, positions })).collect();
    let mut pas = match (&args.alphas, &args.kl_targets) {
        (Some(_), Some(_)) => bail!("--alphas (raw strengths) and --kl-targets (KL nats) are two units of one grid: give one"),
        (Some(a), None) => PasConfig { search: Search::Grid { alphas: numbers("--alphas", a)? }, settings: settings.clone(), ..PasConfig::heldout() },
        (None, k) => {
            let mut pas = PasConfig::calibrated(settings.clone());
            if let Some(k) = k {
                pas.search = Search::Grid { alphas: numbers("--kl-targets", k)? };
            }
            pas
        }
    };
    (pas.window, pas.positions) = (settings[0].window, settings[0].positions);
    if settings.len() == 1 {
        pas.settings.clear();
    }
    if let Some(c) = args.strength_choice {
        pas.choice = c;
    }
    pas.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pas)
}

/// A comma-separated list of distinct values, at least one.
fn list<T: std::str::FromStr<Err = String> + PartialEq>(s: &str, flag: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v: T = part.parse().map_err(|e: String| anyhow::anyhow!("{flag}: {e}"))?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.is_empty() {
        bail!("{flag}: give at least one value");
    }
    Ok(out)
}

/// Runs `reproduce`.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    let dir = crate::papi::data_dir(args.data.clone())?;
    let data = Dataset::load(&dir, args.records.as_deref()).with_context(|| format!("loading {}", dir.display()))?;
    let methods = Method::parse_list(&args.methods).map_err(anyhow::Error::msg)?;
    let subjects = match args.subjects.as_str() {
        "all" => None,
        n => Some(n.parse::<usize>().with_context(|| format!("--subjects must be a number or `all`, got `{n}`"))?),
    };
    let search_items = match args.search_items.as_str() {
        "all" => None,
        n => Some(n.parse::<usize>().with_context(|| format!("--search-items must be a number or `all`, got `{n}`"))?),
    };
    let p2_path = args.p2_prompts.clone().or_else(|| find_p2(&dir));
    let p2 = match (&p2_path, methods.contains(&Method::P2)) {
        (Some(p), true) => Some(eval::run::load_p2(p)?),
        (None, true) => bail!("method p2 needs the personality prompts: pass --p2-prompts FILE (none found in {})", dir.display()),
        _ => None,
    };
    let mut pas = pas_config(args)?;
    pas.top_k = args.top_k;
    pas.seed = 42 + args.seed;
    pas.selection = Selection::HeldOut { folds: args.folds, seed: args.seed };
    let shard = match args.shard {
        Some(s) => Some(s),
        None => eval::config::Shard::from_env(|k| std::env::var(k).ok(), args.shard_count).map_err(anyhow::Error::msg)?,
    };
    let dpo_system = match args.dpo_system.as_str() {
        "plain" => SystemPrompt::Plain,
        "few-shot" => SystemPrompt::FewShot,
        other => bail!("--dpo-system must be `plain` or `few-shot`, got `{other}`"),
    };
    let dpo_lora = LoraConfig {
        rank: args.dpo_rank,
        alpha: args.dpo_alpha,
        dropout: args.dpo_dropout,
        targets: args.dpo_targets.split(',').map(Target::parse).collect::<Result<_, _>>()?,
    };
    let config = RunConfig {
        shard,
        methods,
        keying: args.keying,
        alpha_selection: args.alpha_selection,
        scoring: args.scoring,
        decision: args.decision,
        pas,
        subjects,
        test_items: args.test_items,
        search_items,
        batch: args.batch,
        bootstrap: Bootstrap { resamples: args.bootstrap, seed: args.seed },
        ridge: RidgeConfig { seed: args.seed, ..Default::default() },
        dpo: DpoConfig {
            beta: args.dpo_beta,
            optimiser: dpo_baseline::OptimiserConfig { learning_rate: args.dpo_lr, ..Default::default() },
            epochs: args.dpo_epochs,
            batch_size: args.dpo_batch,
            held_out_fraction: args.dpo_held_out,
            rejected: args.dpo_rejected,
            system: dpo_system,
            lora: dpo_lora.clone(),
            seed: args.seed,
            ..Default::default()
        },
        dpo_items: args.dpo_items,
        ppo: PpoConfig {
            optimiser: dpo_baseline::OptimiserConfig { learning_rate: args.ppo_lr, ..Default::default() },
            epochs: args.ppo_epochs,
            batch_size: args.ppo_batch,
            num_ppo_epochs: args.ppo_updates,
            num_mini_batches: args.ppo_mini_batches,
            cliprange: args.ppo_cliprange,
            kl_coef: args.ppo_kl_coef,
            adaptive_kl: args.ppo_target_kl.map(|target_kl| AdaptiveKl { target_kl, horizon: 10_000.0 }),
            baseline: match args.ppo_baseline.as_str() {
                "expected" => Baseline::Expected,
                "batch-mean" => Baseline::BatchMean,
                other => bail!("--ppo-baseline must be `expected` or `batch-mean`, got `{other}`"),
            },
            held_out_fraction: args.ppo_held_out,
            system: dpo_system,
            lora: dpo_lora,
            seed: args.seed,
            ..Default::default()
        },
    };
    let (model_dir, prompts, model) = args.model.load()?;
    let model_id = model_dir.file_name().map_or("model".into(), |f| f.to_string_lossy().into_owned());
    let device = if cfg!(feature = "cuda") { "cuda (burn)".to_owned() } else { format!("cpu (burn flex, {} threads)", std::thread::available_parallelism().map_or(1, |n| n.get())) };
    let mut out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("results/reproduce-{}-{}", args.keying.as_str(), args.alpha_selection.as_str())));
    if let Some(s) = shard {
        out = out.join(format!("shard-{}-of-{}", s.index, s.count));
        eprintln!("shard {s}: writing {}", out.display());
    }
    let provenance = Provenance { git_revision: git_revision(), device, model_id, model_dir };
    let evaluator = Evaluator::new(&model, &prompts, &data, p2, config, provenance, &out)?;
    // A bar on a terminal; in a batch job's log (stderr not a terminal), a line per subject.
    let evaluator = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} subject·methods, ETA {eta} · {msg}")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        evaluator.with_progress(bar)
    } else {
        evaluator
            .on_done(|d| {
                eprintln!("{}/{} case {} {} {:.1} s, ETA {:.0} s", d.done, d.total, d.case, d.method, d.seconds, d.eta_seconds);
            })
            .on_phase(phase_lines(Duration::from_secs(30)))
    };
    let results = evaluator.run()?;
    eprintln!("wrote {}/results.json, report.md, totals.svg, samples.jsonl.gz", out.display());
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", eval::report::render_markdown(&results))?;
    Ok(())
}

/// Runs `report`: re-renders `report.md` and `totals.svg` from `results.json`, or re-decides
/// the run under another rule.
pub fn report(args: &ReportArgs) -> Result<()> {
    let results = match args.decision {
        Some(rule) => {
            let r = eval::run::write_redecided(&args.out, rule)?;
            eprintln!("wrote {}/report-{rule}.md and results-{rule}.json", args.out.display());
            r
        }
        None => eval::run::rerender(&args.out)?,
    };
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", eval::report::render_markdown(&results))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use eval::Method;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::ReproduceArgs,
    }

    #[test]
    fn the_default_run_is_the_quick_one_and_all_is_one_flag_away() {
        let quick = Cli::parse_from(["reproduce"]).args;
        let methods = Method::parse_list(&quick.methods).unwrap();
        assert_eq!(methods, Method::QUICK.to_vec());
        assert!(!methods.contains(&Method::Dpo) && !methods.contains(&Method::Ppo));
        let full = Cli::parse_from(["reproduce", "--methods", "all"]).args;
        assert_eq!(Method::parse_list(&full.methods).unwrap(), Method::ALL.to_vec());
    }
}

/// Progress lines of the shared phases for a log: the start, then at most one line per
/// `every`, and the end.
fn phase_lines(every: Duration) -> impl Fn(&eval::run::Phase) {
    let last = std::cell::Cell::new(None::<std::time::Instant>);
    move |p| {
        let now = std::time::Instant::now();
        let (start, end) = (p.done == 0, p.done == p.total);
        if !(start || end || last.get().is_none_or(|t| now - t >= every)) {
            return;
        }
        last.set(Some(now));
        match (start, p.eta_seconds) {
            (true, _) => eprintln!("{}: {} prompts ...", p.name, p.total),
            (false, Some(eta)) if !end => eprintln!("{}: {}/{} in {:.0} s, ETA {eta:.0} s", p.name, p.done, p.total, p.seconds),
            _ => eprintln!("{}: {} prompts in {:.1} s", p.name, p.total, p.seconds),
        }
    }
}
