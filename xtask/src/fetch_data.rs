//! `fetch-data`: the official PAPI release (test set, split, item key, P² prompts, item texts),
//! each file checked against its pinned SHA-256 and written atomically; instant when present.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use papi_data::release::{DEFAULT_BASE, RELEASE, fetch};

/// Arguments of `fetch-data`.
#[derive(Args)]
pub struct FetchDataArgs {
    /// Where the files go (default: .cache/papi-release); use it with --data or PAPI_DIR.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where they are served (default: the paper's repository at the pinned commit).
    #[arg(long, default_value = DEFAULT_BASE)]
    url: String,
}

/// Runs `fetch-data`; prints the folder.
pub fn run(args: &FetchDataArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(".cache/papi-release"));
    let fetched = fetch(&args.url, &out, &RELEASE, |name| eprintln!("fetching {name} ...")).with_context(|| format!("fetching the PAPI release into {}", out.display()))?;
    let new = fetched.iter().filter(|f| f.downloaded).count();
    eprintln!("{} files checked against their SHA-256 ({new} downloaded now)", fetched.len());
    println!("{}", out.display());
    Ok(())
}
