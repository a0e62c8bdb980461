//! `readme`: re-renders the README's published tables from their result folders, or checks
//! that they are current.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Arguments of `readme`.
#[derive(Args)]
pub struct ReadmeArgs {
    /// The Markdown file whose `<!-- published: FOLDER TABLE -->` blocks are rendered; folders
    /// are read relative to its own folder.
    #[arg(long, default_value = "README.md")]
    file: PathBuf,
    /// Change nothing: fail, naming each block, when a block differs from its folder.
    #[arg(long)]
    check: bool,
}

/// Runs `readme`.
pub fn run(args: &ReadmeArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let root = args.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let blocks = eval::published::blocks(&text, &args.file)?;
    if args.check {
        let stale = eval::published::check(&text, root, &args.file)?;
        if !stale.is_empty() {
            bail!("{}: these published tables differ from their folders (run `cargo xtask readme`):\n  {}", args.file.display(), stale.join("\n  "));
        }
        eprintln!("{}: {} published tables, all current", args.file.display(), blocks.len());
        return Ok(());
    }
    let new = eval::published::refresh(&text, root, &args.file)?;
    if new != text {
        eval::files::write_atomic(&args.file, new.as_bytes())?;
    }
    eprintln!("{}: {} published tables rendered{}", args.file.display(), blocks.len(), if new == text { ", none changed" } else { "" });
    Ok(())
}
