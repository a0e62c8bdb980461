//! `gpu-check`: the one GPU acceptance command. Needs nothing from the network (its models
//! are seeded random ones written here) and prints one JSON summary: CUDA against the CPU on
//! the tiny model and on a 2-layer Llama-3-8B-shaped model, and the full-depth 8B-shaped
//! model's load time, GPU memory, prefill and scoring speed, and the per-subject PAS time they
//! imply. Without a GPU it says so in one line and exits with status [`NO_GPU`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Exit status when there is no GPU to check (distinct from errors, which exit with 1).
pub const NO_GPU: i32 = 3;

/// Arguments of `gpu-check`.
#[derive(Args)]
pub struct GpuCheckArgs {
    /// Where the random models are written (kept for reruns; default: .cache/gpu-check).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Layers of the full-size model (Llama-3-8B has 32).
    #[arg(long, default_value_t = 32)]
    full_layers: usize,
    /// Skip the full-size measurements (agreement checks only).
    #[arg(long)]
    skip_full: bool,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `gpu-check`.
#[cfg(not(feature = "cuda"))]
pub fn run(_args: &GpuCheckArgs) -> Result<()> {
    eprintln!("gpu-check: no GPU backend in this build; build with `cargo build --release -p xtask --features cuda` and run it on a machine with an NVIDIA GPU");
    std::process::exit(NO_GPU)
}

/// Runs `gpu-check`.
#[cfg(feature = "cuda")]
pub fn run(args: &GpuCheckArgs) -> Result<()> {
    cuda::run(args)
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::path::Path;
    use std::time::Instant;

    use anyhow::{Context, Result};
    use eval::device_check::{BF16_TOLERANCE, F32_TOLERANCE, agreement, throughput};
    use llm_burn::Dtype;
    use llm_burn::random::{Shape, write_model};
    use llm_burn::{CpuBackend, CudaBackend};
    use serde_json::json;

    use super::{GpuCheckArgs, NO_GPU};

    /// The CUDA device, if one can be used: cudarc panics when the CUDA library cannot be
    /// loaded; that panic becomes a one-line message (the default hook is silenced meanwhile).
    fn device<B: burn::tensor::backend::Backend>() -> std::result::Result<B::Device, String> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let probe = std::panic::catch_unwind(|| {
            let d = B::Device::default();
            burn::tensor::Tensor::<B, 1>::zeros([4], &d).into_data();
            d
        });
        std::panic::set_hook(hook);
        probe.map_err(|p| p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned())).unwrap_or_else(|| "unknown error".into()))
    }

    /// GPU memory in use (MiB) from `nvidia-smi`, if it is there.
    fn memory_used() -> Option<u64> {
        let out = std::process::Command::new("nvidia-smi").args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse().ok()
    }

    fn ensure_model(dir: &Path, shape: &Shape) -> Result<f64> {
        let t = Instant::now();
        if !dir.join("model.safetensors.index.json").is_file() {
            write_model(dir, shape, 0).with_context(|| format!("writing {}", dir.display()))?;
        }
        Ok(t.elapsed().as_secs_f64())
    }

    pub fn run(args: &GpuCheckArgs) -> Result<()> {
        let gpu = match device::<CudaBackend>() {
            Ok(d) => d,
            Err(why) => {
                let why = if why.contains("dynamically load") { format!("the CUDA library could not be loaded ({why})") } else { why };
                eprintln!("gpu-check: no usable GPU: {}", why.lines().next().unwrap_or_default());
                std::process::exit(NO_GPU);
            }
        };
        let cpu = Default::default();
        let root = args.models.clone().unwrap_or_else(|| PathBuf::from(".cache/gpu-check"));
        let tiny = root.join("tiny");
        std::fs::create_dir_all(&tiny)?;
        llm_burn::tiny::write_model(&tiny, 11)?;
        let two = root.join("llama-3-8b-2-layers");
        ensure_model(&two, &Shape::llama_3_8b().with_layers(2))?;
        eprintln!("gpu-check: comparing CUDA with the CPU (tiny, then 2-layer Llama-3-8B shapes)");
        let mut ok = true;
        let mut agree = serde_json::Map::new();
        for (name, dir) in [("tiny", &tiny), ("llama-3-8b-2-layers", &two)] {
            let f32 = agreement::<CpuBackend, CudaBackend>(dir, &cpu, &gpu, Dtype::F32, F32_TOLERANCE)?;
            let bf16 = agreement::<CpuBackend, CudaBackend>(dir, &cpu, &gpu, Dtype::Bf16, BF16_TOLERANCE)?;
            ok &= f32.iter().chain(&bf16).all(|c| c.ok);
            agree.insert(name.into(), json!({"f32": f32, "bf16": bf16}));
        }
        let full = if args.skip_full {
            json!("skipped (--skip-full)")
        } else {
            let dir = root.join(format!("llama-3-8b-{}-layers", args.full_layers));
            eprintln!("gpu-check: writing or reusing {}", dir.display());
            let write_seconds = ensure_model(&dir, &Shape::llama_3_8b().with_layers(args.full_layers))?;
            let before = memory_used();
            let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = {
                let (peak, done) = (peak.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Some(m) = memory_used() {
                            peak.fetch_max(m, std::sync::atomic::Ordering::Relaxed);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                })
            };
            eprintln!("gpu-check: measuring the full-size model (bf16 weights)");
            let t = throughput::<CudaBackend>(&dir, &gpu, Dtype::Bf16, &[256, 2048], 2000, 180, 16);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = sampler.join();
            let t = t?;
            json!({"layers": args.full_layers, "dtype": "bf16", "write_seconds": write_seconds, "throughput": t,
                   "gpu_memory_mib_before": before, "gpu_memory_mib_peak": peak.load(std::sync::atomic::Ordering::Relaxed),
                   "goal_pas_seconds_per_subject": 20.0, "meets_goal": t.projected_pas_seconds_per_subject <= 20.0})
        };
        let summary = json!({"device": format!("{gpu:?}"), "agreement_ok": ok, "agreement": agree, "full_size": full});
        let text = serde_json::to_string_pretty(&summary)?;
        if let Some(p) = &args.out {
            std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
        }
        println!("{text}");
        if !ok {
            anyhow::bail!("CUDA and the CPU disagree beyond the tolerance (see agreement above)");
        }
        Ok(())
    }

    use std::path::PathBuf;
}
