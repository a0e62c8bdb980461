//! `papi-stats` and `papi-synth`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use papi_data::reference::RidgeConfig;
use papi_data::stats::summarize;
use papi_data::synthetic::{SyntheticConfig, generate};
use papi_data::{Dataset, Domain, Inventory, Keying, Protocol};

/// The PAPI folder: `--data`, else `PAPI_DIR`, else the embedded development data (said on stderr).
pub fn data_dir(data: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = data.or_else(|| std::env::var_os(papi_data::dataset::PAPI_DIR_ENV).map(PathBuf::from)) {
        return Ok(d);
    }
    let embedded = embedded_data_dir();
    anyhow::ensure!(
        embedded.join("mpi_300_split.json").is_file(),
        "no PAPI folder: pass --data DIR or set PAPI_DIR (the embedded data is missing from {})",
        embedded.display()
    );
    eprintln!("using the embedded development data in {} (200 people of the PAPI test set); pass --data DIR or set PAPI_DIR for other data", embedded.display());
    Ok(embedded)
}

/// The development data shipped in the repository's `data/papi`.
pub fn embedded_data_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/papi");
    dir.canonicalize().unwrap_or(dir)
}

/// Arguments of `papi-stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// The PAPI folder (item key, split, records); default: $PAPI_DIR, else the embedded data/papi.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The records file, when the folder has several (or to use one elsewhere).
    #[arg(long)]
    records: Option<PathBuf>,
    /// How stored values map to answers: `corrected` (default) or `as-released` (official).
    #[arg(long, default_value = "corrected")]
    keying: Keying,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// The ridge predictor's penalty.
    #[arg(long, default_value_t = RidgeConfig::default().lambda)]
    ridge_lambda: f64,
    /// Folds over subjects for the ridge predictor.
    #[arg(long, default_value_t = RidgeConfig::default().folds)]
    ridge_folds: usize,
    /// Seed of the ridge predictor's subject folds.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip the reference predictors (a quick look at a very large records file).
    #[arg(long)]
    skip_references: bool,
}

/// Runs `papi-stats`.
pub fn stats(args: &StatsArgs) -> Result<()> {
    let dir = data_dir(args.data.clone())?;
    let start = Instant::now();
    let data = Dataset::load(&dir, args.records.as_deref()).with_context(|| format!("loading {}", dir.display()))?;
    eprintln!("loaded {} subjects from {} in {:.2} s", data.subjects.len(), data.records_path.display(), start.elapsed().as_secs_f64());
    let protocol = Protocol::for_keying(args.keying);
    let ridge = RidgeConfig { lambda: args.ridge_lambda, folds: args.ridge_folds, seed: args.seed };
    let start = Instant::now();
    let summary = summarize(&data, protocol, (!args.skip_references).then_some(&ridge))?;
    eprintln!("computed the summary in {:.2} s", start.elapsed().as_secs_f64());
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "records   {}", summary.records)?;
    writeln!(out, "subjects  {}   items {}   split {} known / {} test", summary.subjects, summary.items, summary.split.0, summary.split.1)?;
    let missing = match protocol.missing {
        papi_data::MissingAnswers::Exclude => "missing answers excluded",
        papi_data::MissingAnswers::ScoreAsZero => "missing answers scored as 0, as the official code does",
    };
    writeln!(out, "keying    {} ({missing})", args.keying.as_str())?;
    writeln!(out)?;
    writeln!(out, "Answer histogram (stored values, all subjects x items)")?;
    let cells: u64 = summary.histogram.iter().sum();
    for (v, n) in summary.histogram.iter().enumerate() {
        let label = if v == 0 { "0 (missing)".to_owned() } else { v.to_string() };
        writeln!(out, "  {label:<12} {n:>9}  {:>6.2}%", 100.0 * *n as f64 / cells.max(1) as f64)?;
    }
    writeln!(out)?;
    writeln!(out, "Domain scores (trait direction, all items): mean and SD over subjects")?;
    for d in Domain::ALL {
        match summary.domain_scores[d] {
            Some(m) => writeln!(out, "  {d} {:<18} {:.3} ± {:.3}", d.name(), m.mean, m.sd)?,
            None => writeln!(out, "  {d} {:<18} -", d.name())?,
        }
    }
    writeln!(out)?;
    writeln!(out, "Reference predictors on the {} test items: MAE per domain and Total (lower is better)", summary.split.1)?;
    writeln!(out, "| method   |   A   |   C   |   E   |   N   |   O   | Total |")?;
    writeln!(out, "|----------|-------|-------|-------|-------|-------|-------|")?;
    let f = |v: Option<f64>| v.map_or_else(|| "  -  ".to_owned(), |v| format!("{v:.3}"));
    for r in &summary.references {
        let a = &r.aggregate;
        write!(out, "| {:<8} |", r.method)?;
        for d in Domain::ALL {
            write!(out, " {} |", f(a.per_domain[d]))?;
        }
        writeln!(out, " {} |", f(a.total))?;
    }
    Ok(())
}

/// Arguments of `papi-synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Number of subjects (the full PAPI release has 307,313).
    #[arg(long, default_value_t = 200)]
    subjects: usize,
    /// Seed of the population.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of missing answers.
    #[arg(long, default_value_t = 0.001)]
    missing_rate: f64,
    /// Item key to generate answers for (default: the synthetic 300-item key).
    #[arg(long)]
    item_key: Option<PathBuf>,
    /// Output file: `.csv`, `.json` or `.parquet`.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `papi-synth`.
pub fn synth(args: &SynthArgs) -> Result<()> {
    let inventory = match &args.item_key {
        Some(p) => Inventory::load(p)?,
        None => Inventory::synthetic(),
    };
    let start = Instant::now();
    let config = SyntheticConfig { subjects: args.subjects, seed: args.seed, missing_rate: args.missing_rate, first_case: 1 };
    let subjects = generate(&inventory, &config);
    papi_data::write_records(&args.out, &subjects)?;
    eprintln!("wrote {} subjects to {} in {:.1} s", subjects.len(), args.out.display(), start.elapsed().as_secs_f64());
    Ok(())
}
