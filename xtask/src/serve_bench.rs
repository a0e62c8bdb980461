//! `serve-bench`: the persona server under load, in this process over real HTTP: tokens/s
//! with 1, 4 and 16 concurrent clients, all unsteered and with 16 distinct personas, time to
//! first token, and a bounded load run of good and bad requests.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use pas_core::{HeadId, Intervention, InterventionMeta, Positions, SteeredHead};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Arguments of `serve-bench`.
#[derive(Args)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    model: crate::model::ModelArgs,
    /// Concurrent clients of each measured row, comma-separated.
    #[arg(long, default_value = "1,4,16")]
    clients: String,
    /// Requests each client makes per row (one after another).
    #[arg(long, default_value_t = 2)]
    requests: usize,
    /// New tokens per request (end-of-turn ignored, so every request does the same work).
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Requests of the load run (a quarter of them bad); 0 skips it.
    #[arg(long, default_value_t = 2000)]
    load_requests: usize,
    /// Instead of the rows: a soak of this many minutes (clients reading slowly, leaving
    /// mid-stream, sending bad requests, bursts above the bound on waiting requests).
    #[arg(long)]
    soak: Option<f64>,
    /// Clients of the soak.
    #[arg(long, default_value_t = 64)]
    soak_clients: usize,
}

/// Writes `n` random personas (PAS's default 24 heads each, strength 4) for the model.
fn write_personas(dir: &Path, model_dir: &Path, config: &llm_burn::ModelConfig, n: usize) -> Result<Vec<String>> {
    let g = config.geometry();
    let id = llm_burn::formats::identity::identity(model_dir, config)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut names = Vec::new();
    for p in 0..n {
        let mut heads: Vec<SteeredHead> = Vec::new();
        while heads.len() < 24 {
            let head = HeadId::new(rng.random_range(0..g.layers), rng.random_range(0..g.heads));
            if heads.iter().any(|h| h.head == head) {
                continue;
            }
            let v: Vec<f32> = (0..g.head_dim).map(|_| rng.random::<f32>() - 0.5).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            heads.push(SteeredHead { head, direction: v.iter().map(|x| x / norm).collect(), sigma: 1.0 });
        }
        let meta = InterventionMeta { model_id: id.model_id.clone(), config_hash: id.config_hash.clone(), method: "bench/random".into(), top_k: 24, seed: p as u64, sigma_ddof: 0, positions: Positions::All, alpha: Some(4.0) };
        let name = format!("bench-{p:02}");
        Intervention::new(g, heads)?.save(dir.join(format!("{name}.safetensors")), &meta)?;
        names.push(name);
    }
    Ok(names)
}

/// One streamed request: (seconds to the first token, seconds in all).
fn streamed(url: &str, persona: Option<&str>, max_tokens: usize) -> Result<(f64, f64)> {
    let mut body = json!({"messages": [{"role": "user", "content": "Tell me about your weekend and what you like to do."}], "max_tokens": max_tokens, "stream": true, "ignore_eos": true});
    if let Some(p) = persona {
        body["persona"] = json!(p);
    }
    let t = Instant::now();
    let r = ureq::post(&format!("{url}/v1/chat/completions")).send_string(&body.to_string())?;
    let mut first = None;
    for line in std::io::BufReader::new(r.into_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data)?;
        if first.is_none() && v["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
            first = Some(t.elapsed().as_secs_f64());
        }
    }
    Ok((first.unwrap_or(f64::NAN), t.elapsed().as_secs_f64()))
}

fn tokens_so_far(url: &str) -> Result<u64> {
    let v: Value = serde_json::from_str(&ureq::get(&format!("{url}/v1/stats")).call()?.into_string()?)?;
    Ok(v["tokens"].as_u64().unwrap_or(0))
}

/// One measured row: (tokens/s, median time to first token).
fn row(url: &str, clients: usize, requests: usize, max_tokens: usize, personas: Option<&[String]>) -> Result<(f64, f64)> {
    let before = tokens_so_far(url)?;
    let t = Instant::now();
    let ttft: Vec<f64> = std::thread::scope(|s| -> Result<Vec<f64>> {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || -> Result<Vec<f64>> {
                    (0..requests).map(|r| streamed(url, personas.map(|p| p[(c + r) % p.len()].as_str()), max_tokens).map(|x| x.0)).collect()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("a client panicked"))??);
        }
        Ok(all)
    })?;
    let seconds = t.elapsed().as_secs_f64();
    let tokens = tokens_so_far(url)? - before;
    let mut sorted = ttft;
    sorted.sort_by(f64::total_cmp);
    Ok((tokens as f64 / seconds, sorted[sorted.len() / 2]))
}

/// The load run: `n` requests from 16 clients, every fourth one bad; (good answered, bad
/// refused with 4xx, anything else).
fn load(url: &str, n: usize, personas: &[String]) -> (usize, usize, Vec<String>) {
    let bad_bodies = [
        "{\"messages\": [".to_owned(),
        json!({"messages": [{"role": "user", "content": "hi"}], "persona": "nobody-here"}).to_string(),
        json!({"messages": [{"role": "user", "content": "hi"}], "persona": "../../etc/passwd"}).to_string(),
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}).to_string(),
    ];
    let results: Vec<(usize, usize, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|c| {
                let bad_bodies = &bad_bodies;
                s.spawn(move || {
                    let (mut good, mut refused, mut wrong) = (0, 0, Vec::new());
                    for i in (c..n).step_by(16) {
                        let bad = i % 4 == 3;
                        let body = if bad {
                            bad_bodies[(i / 4) % bad_bodies.len()].clone()
                        } else {
                            let mut b = json!({"messages": [{"role": "user", "content": format!("Request {i}: say something.")}], "max_tokens": 4});
                            if i % 2 == 0 {
                                b["persona"] = json!(personas[i % personas.len()]);
                            }
                            b.to_string()
                        };
                        match ureq::post(&format!("{url}/v1/chat/completions")).send_string(&body) {
                            Ok(r) if !bad && r.status() == 200 => good += 1,
                            Err(ureq::Error::Status(code, _)) if bad && (400..500).contains(&code) => refused += 1,
                            Ok(r) => wrong.push(format!("request {i}: status {}", r.status())),
                            Err(e) => wrong.push(format!("request {i}: {e}")),
                        }
                    }
                    (good, refused, wrong)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or((0, 0, vec!["a client panicked".into()]))).collect()
    });
    results.into_iter().fold((0, 0, Vec::new()), |(g, r, mut w), (g2, r2, w2)| {
        w.extend(w2);
        (g + g2, r + r2, w)
    })
}

/// Runs `serve-bench`.
pub fn run(args: &ServeBenchArgs) -> Result<()> {
    let clients: Vec<usize> = args.clients.split(',').map(|c| c.trim().parse()).collect::<Result<_, _>>()?;
    let dir = tempfile_dir()?;
    let model_dir = args.model.dir()?;
    let config = llm_burn::ModelConfig::load(&model_dir.join("config.json"))?;
    let names = write_personas(&dir, &model_dir, &config, 16)?;
    let server = serve::ServerConfig { model_id: String::new(), max_tokens: 256, default_max_tokens: 64, max_batch: 32, max_waiting: 32, ..Default::default() };
    let (running, model_id) = crate::personas::start_server(&args.model, &dir, serve::personas::DEFAULT_MAX_LOADED, "127.0.0.1:0", server, |_| {})?;
    let url = format!("http://{}", running.addr);
    eprintln!("{model_id} on {url}; {} requests per client, {} tokens each", args.requests, args.max_tokens);
    // Warm up (allocator, caches).
    streamed(&url, None, 8)?;
    if let Some(minutes) = args.soak {
        crate::soak::soak(&url, minutes, args.soak_clients, &names)?;
        std::fs::remove_dir_all(&dir).ok();
        return Ok(());
    }
    println!("| clients | unsteered tokens/s | 16 personas tokens/s | personas / unsteered | first token, unsteered (median) | first token, personas (median) |");
    println!("|---|---|---|---|---|---|");
    for &c in &clients {
        let (plain, plain_ttft) = row(&url, c, args.requests, args.max_tokens, None)?;
        let (steered, steered_ttft) = row(&url, c, args.requests, args.max_tokens, Some(&names))?;
        println!("| {c} | {plain:.1} | {steered:.1} | {:.1}% | {:.3} s | {:.3} s |", 100.0 * steered / plain, plain_ttft, steered_ttft);
    }
    if args.load_requests > 0 {
        let t = Instant::now();
        let (good, refused, wrong) = load(&url, args.load_requests, &names);
        let up = ureq::get(&format!("{url}/v1/models")).call().map(|r| r.status() == 200).unwrap_or(false);
        println!(
            "\nload run: {} requests from 16 clients in {:.1} s: {good} good answered (200), {refused} bad refused (4xx), {} other; server up after: {up}",
            args.load_requests,
            t.elapsed().as_secs_f64(),
            wrong.len()
        );
        if !wrong.is_empty() || !up {
            bail!("the load run failed: {:?}", &wrong[..wrong.len().min(10)]);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("serve-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
