//! `serve-bench --soak MINUTES`: many clients against the server for a bounded time, some
//! reading slowly, some leaving mid-stream, some sending bad requests, bursts above the
//! bound on waiting requests. Every accepted request must get its whole answer or an error
//! status: none lost or cut.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

/// What one request came to.
enum Outcome {
    /// 200 with the whole answer (stream: the finish chunk and `[DONE]`), in this many seconds.
    Answered(f64),
    /// The client left mid-stream, as meant.
    Left,
    /// Refused with the status it was meant to get (429 past the bound, 4xx for bad bodies).
    Refused(u16),
    /// Anything else: lost, cut, or the wrong status.
    Failed(String),
}

/// The tally of a soak.
#[derive(Default)]
struct Tally {
    answered: Vec<f64>,
    left: usize,
    refused: BTreeMap<u16, usize>,
    failed: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Answered(s) => self.answered.push(s),
            Outcome::Left => self.left += 1,
            Outcome::Refused(code) => *self.refused.entry(code).or_default() += 1,
            Outcome::Failed(why) => self.failed.push(why),
        }
    }
}

/// Resident memory of this process (server and clients) in MB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(f64::NAN, |kb| kb / 1024.0)
}

fn good_body(i: usize, personas: &[String], stream: bool) -> Value {
    let mut b = json!({"messages": [{"role": "user", "content": format!("Request {i}: tell me something.")}], "max_tokens": 8 + i % 24, "stream": stream});
    if i.is_multiple_of(2) {
        b["persona"] = json!(personas[i % personas.len()]);
    }
    b
}

/// Bad bodies and the status each must get.
fn bad_body(i: usize) -> (String, u16) {
    let m = json!([{"role": "user", "content": "hi"}]);
    match i % 5 {
        0 => ("{\"messages\": [".into(), 400),
        1 => (json!({"messages": m, "persona": "nobody-here"}).to_string(), 404),
        2 => (json!({"messages": m, "temperature": 9}).to_string(), 400),
        3 => (json!({"messages": m, "persona": "bench-00", "alpha": 1e6}).to_string(), 400),
        _ => (json!({"messages": m, "max_tokens": 100_000}).to_string(), 400),
    }
}

/// One request; `read_delay` between stream lines; `leave_after` lines read before leaving.
fn send(url: &str, body: &str, want: u16, read_delay: Duration, leave_after: Option<usize>) -> Outcome {
    let t = Instant::now();
    let r = match ureq::post(&format!("{url}/v1/chat/completions")).send_string(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) if code == want || code == 429 => return Outcome::Refused(code),
        Err(ureq::Error::Status(code, r)) => return Outcome::Failed(format!("status {code}: {}", r.into_string().unwrap_or_default())),
        Err(e) => return Outcome::Failed(format!("transport: {e}")),
    };
    if want != 200 {
        return Outcome::Failed(format!("a bad request was answered {}", r.status()));
    }
    if !r.content_type().starts_with("text/event-stream") {
        let v: Value = serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null);
        return match v["choices"][0]["finish_reason"].as_str() {
            Some(_) => Outcome::Answered(t.elapsed().as_secs_f64()),
            None => Outcome::Failed(format!("a whole answer without its finish reason: {v}")),
        };
    }
    let (mut finish, mut done) = (false, false);
    for (n, line) in std::io::BufReader::new(r.into_reader()).lines().enumerate() {
        if leave_after.is_some_and(|k| n >= k) {
            return Outcome::Left;
        }
        let Ok(line) = line else { return Outcome::Failed("the stream broke".into()) };
        std::thread::sleep(read_delay);
        match line.strip_prefix("data: ") {
            Some("[DONE]") => done = true,
            Some(data) => finish |= serde_json::from_str::<Value>(data).is_ok_and(|v| v["choices"][0]["finish_reason"].is_string()),
            None => {}
        }
    }
    if finish && done { Outcome::Answered(t.elapsed().as_secs_f64()) } else { Outcome::Failed(format!("a stream was cut (finish chunk: {finish}, [DONE]: {done})")) }
}

/// One client's loop until `end`: a mix of every kind of client.
fn client(url: &str, c: usize, end: Instant, personas: &[String], tally: &Mutex<Tally>) {
    let mut i = c;
    while Instant::now() < end {
        let o = match i % 10 {
            0..=4 => send(url, &good_body(i, personas, false).to_string(), 200, Duration::ZERO, None),
            5 => send(url, &good_body(i, personas, true).to_string(), 200, Duration::ZERO, None),
            6 => send(url, &good_body(i, personas, true).to_string(), 200, Duration::from_millis(30), None),
            7 => send(url, &good_body(i, personas, true).to_string(), 200, Duration::ZERO, Some(3)),
            8 => {
                let (b, want) = bad_body(i / 10);
                send(url, &b, want, Duration::ZERO, None)
            }
            _ => {
                // A burst: 48 requests at once, above the bound with the other clients.
                let outcomes: Vec<Outcome> = std::thread::scope(|s| {
                    let hs: Vec<_> = (0..48).map(|k| s.spawn(move || send(url, &good_body(i + k, personas, false).to_string(), 200, Duration::ZERO, None))).collect();
                    hs.into_iter().map(|h| h.join().unwrap_or(Outcome::Failed("a burst client panicked".into()))).collect()
                });
                let refused = outcomes.iter().any(|o| matches!(o, Outcome::Refused(429)));
                outcomes.into_iter().for_each(|o| tally.lock().expect("tally").add(o));
                if refused {
                    std::thread::sleep(Duration::from_secs(serve::api::RETRY_AFTER_S));
                }
                i += 64;
                continue;
            }
        };
        // A refused client waits as told (Retry-After: 1 s).
        let wait = matches!(o, Outcome::Refused(429));
        tally.lock().expect("tally").add(o);
        if wait {
            std::thread::sleep(Duration::from_secs(serve::api::RETRY_AFTER_S));
        }
        i += 64;
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() { f64::NAN } else { sorted[((sorted.len() - 1) as f64 * q).round() as usize] }
}

/// Runs the soak against the server at `url` for `minutes` with `clients` clients.
pub fn soak(url: &str, minutes: f64, clients: usize, personas: &[String]) -> Result<()> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(minutes * 60.0);
    let tally = Mutex::new(Tally::default());
    let rss_start = rss_mb();
    let mut samples = Vec::new();
    std::thread::scope(|s| {
        for c in 0..clients {
            let tally = &tally;
            s.spawn(move || client(url, c, end, personas, tally));
        }
        while Instant::now() < end {
            std::thread::sleep(Duration::from_secs(10).min(end.saturating_duration_since(Instant::now())));
            samples.push((start.elapsed().as_secs_f64(), rss_mb()));
        }
    });
    let t = tally.into_inner().expect("tally");
    let mut lat = t.answered.clone();
    lat.sort_by(f64::total_cmp);
    let refused: Vec<String> = t.refused.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    // Settled: the first sample after a fifth of the run.
    let settled = samples.iter().find(|(s, _)| *s >= minutes * 12.0).map_or(f64::NAN, |x| x.1);
    let last = samples.last().map_or(f64::NAN, |x| x.1);
    let rss_end = rss_mb();
    println!("soak: {clients} clients for {minutes} min on {url}");
    println!("| accepted and answered | left mid-stream (meant) | refused, by status | failed | latency p50 / p90 / p99 | resident MB: start / settled (a fifth in) / last under load / after |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {:.3} / {:.3} / {:.3} s | {rss_start:.0} / {settled:.0} / {last:.0} ({:+.1}% since settled) / {rss_end:.0} |",
        t.answered.len(),
        t.left,
        refused.join(", "),
        t.failed.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        100.0 * (last / settled - 1.0)
    );
    println!("resident MB every 10 s: {}", samples.iter().map(|(_, m)| format!("{m:.0}")).collect::<Vec<_>>().join(" "));
    if !t.failed.is_empty() {
        bail!("{} requests failed, e.g. {:?}", t.failed.len(), &t.failed[..t.failed.len().min(5)]);
    }
    let up = ureq::get(&format!("{url}/health")).call().is_ok_and(|r| r.status() == 200);
    if !up {
        bail!("the server does not answer /health after the soak");
    }
    Ok(())
}
