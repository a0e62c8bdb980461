//! The project's command line, run as `cargo xtask <task>`; with no task it lists them.
//!
//! stdout carries machine output (tables, JSON); progress and timings go to stderr.
#![allow(clippy::print_stderr)] // the command line reports progress and timings on stderr

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod deps;
mod papi;

/// Personality alignment for LLMs: project tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", arg_required_else_help = true, version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Summarise a PAPI folder: subjects, answer histogram, domain scores, reference predictors.
    PapiStats(papi::StatsArgs),
    /// Write a seeded synthetic population in the PAPI record layout (CSV, JSON or Parquet).
    PapiSynth(papi::SynthArgs),
    /// Check that papi-data and pas-core do not depend on burn (also run by the tests).
    CheckDeps {
        /// The workspace manifest (default: this workspace's).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::PapiStats(args) => papi::stats(&args),
        Task::PapiSynth(args) => papi::synth(&args),
        Task::CheckDeps { manifest } => {
            let manifest = manifest.unwrap_or_else(deps::workspace_manifest);
            deps::check(&manifest, &deps::BURN_FREE)?;
            eprintln!("ok: {} do not depend on burn", deps::BURN_FREE.join(" and "));
            Ok(())
        }
    }
}
