//! The server under real traffic: the bound on waiting requests, deadlines, body size,
//! graceful shutdown on SIGTERM, metrics, health, and the persona cache.

use std::io::BufRead;
use std::time::{Duration, Instant};

use pas_core::Positions;
use serde_json::{Value, json};
use serve::ServerConfig;

use crate::common::*;

/// A server whose requests may be long (up to 2,000 tokens), with `config`'s other limits.
fn long_server(config: ServerConfig) -> Fixture {
    start_with(ServerConfig { model_id: "tiny".into(), max_tokens: 2000, default_max_tokens: 24, ..config })
}

/// A request that generates `n` tokens whatever the model says.
fn long_request(n: usize) -> Value {
    let mut r = request("Count for me.", None, n);
    r["ignore_eos"] = json!(true);
    r
}

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}

#[test]
fn a_burst_past_the_bound_gets_429s_and_the_rest_are_answered() {
    let f = long_server(ServerConfig { max_batch: 2, max_waiting: 2, ..Default::default() });
    let body = long_request(1500).to_string();
    let got: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                s.spawn(|| match ureq::post(&format!("{}/v1/chat/completions", f.url)).send_string(&body) {
                    Ok(r) => (r.status(), None, json_of(r)),
                    Err(ureq::Error::Status(code, r)) => (code, r.header("retry-after").map(str::to_owned), json_of(r)),
                    Err(e) => panic!("transport error: {e}"),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = got.iter().filter(|g| g.0 == 200).count();
    let refused: Vec<_> = got.iter().filter(|g| g.0 == 429).collect();
    assert_eq!(ok + refused.len(), 12, "only 200 and 429: {:?}", got.iter().map(|g| g.0).collect::<Vec<_>>());
    assert!((1..=4).contains(&ok) && !refused.is_empty(), "{ok} answered, {} refused", refused.len());
    for (_, retry, body) in refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    }
    for (_, _, body) in got.iter().filter(|g| g.0 == 200) {
        assert_eq!(body["usage"]["completion_tokens"], 1500, "answered in full");
    }
    // The places came back: the server takes requests again.
    assert_eq!(post(&f.url, &request("again", None, 5).to_string()).0, 200);
}

#[test]
fn a_request_past_its_deadline_is_ended_and_its_row_freed() {
    let f = long_server(ServerConfig { request_timeout: Some(Duration::from_millis(20)), ..Default::default() });
    let (status, body) = post(&f.url, &long_request(2000 - 40).to_string());
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("request_timeout")), "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats: Value = serde_json::from_str(&get(&format!("{}/v1/stats", f.url)).1).unwrap();
        if stats["running"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the row was not freed: {stats}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(post(&f.url, &request("quick", None, 5).to_string()).0, 200);
}

#[test]
fn a_ten_megabyte_body_gets_413_with_an_error_body() {
    let f = start(2);
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(10 << 20)}]}).to_string();
    let (status, body) = post(&f.url, &big);
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("request_too_large")), "{body:.200}");
    assert_eq!(post(&f.url, &request("small", None, 5).to_string()).0, 200);
}

/// One series' value in `/metrics` text (0 if absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[test]
fn metrics_count_what_was_sent_and_health_answers() {
    let f = start(4);
    let mut tokens = 0;
    for persona in [None, Some("alice"), Some("alice")] {
        let (status, body) = post(&f.url, &request("Hello", persona, 6).to_string());
        assert_eq!(status, 200);
        tokens += body["usage"]["completion_tokens"].as_u64().unwrap();
    }
    assert_eq!(post(&f.url, &json!({"messages": []}).to_string()).0, 400);
    assert_eq!(get(&format!("{}/health", f.url)).0, 200);
    let (status, text) = get(&format!("{}/metrics", f.url));
    assert_eq!(status, 200);
    let chat = r#"serve_http_requests_total{route="/v1/chat/completions",status=""#;
    assert_eq!(series(&text, &format!("{chat}200\"}}")), 3.0, "{text}");
    assert_eq!(series(&text, &format!("{chat}400\"}}")), 1.0, "{text}");
    assert_eq!(series(&text, r#"serve_http_requests_total{route="/health",status="200"}"#), 1.0, "{text}");
    assert_eq!(series(&text, r#"serve_persona_requests_total{persona="alice"}"#), 2.0);
    assert_eq!(series(&text, r#"serve_persona_requests_total{persona="-"}"#), 1.0);
    assert_eq!(series(&text, "serve_completion_tokens_total") as u64, tokens);
    assert_eq!(series(&text, "serve_time_to_first_token_seconds_count"), 3.0);
    assert_eq!(series(&text, "serve_inter_token_latency_seconds_count") as u64, tokens - 3);
    assert!(series(&text, "serve_prompt_tokens_total") > 0.0);
    assert!(text.contains("serve_running_rows ") && text.contains("serve_waiting_requests "), "{text}");
}

#[test]
fn sigterm_with_a_stream_in_flight_lets_it_finish_and_refuses_new_requests() {
    let f = long_server(ServerConfig { handle_signals: true, shutdown_grace: Duration::from_secs(30), ..Default::default() });
    let mut body = long_request(1800);
    body["stream"] = json!(true);
    let r = ureq::post(&format!("{}/v1/chat/completions", f.url)).send_string(&body.to_string()).unwrap();
    let mut lines = std::io::BufReader::new(r.into_reader()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("data: "), "the first chunk came");
    let kill = std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status().unwrap();
    assert!(kill.success());
    // New requests are refused while the stream finishes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{}/health", f.url)).0 != 503 {
        assert!(Instant::now() < deadline, "the server did not start draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, refused) = post(&f.url, &request("late", None, 5).to_string());
    assert_eq!((status, refused["error"]["code"].as_str()), (503, Some("shutting_down")), "{refused}");
    let (text, finish, done) = read_events(lines);
    assert_eq!(finish, "length", "the stream ends with its finish chunk");
    assert!(done, "and with [DONE]");
    assert!(!text.is_empty());
    let Fixture { running, log, .. } = f;
    running.thread.join().unwrap().unwrap();
    let log = log.lock().unwrap();
    assert!(log.iter().any(|l| l.starts_with("SIGTERM: refusing new requests, 1 in flight")), "{log:?}");
    assert!(log.iter().any(|l| l == "every request answered; stopping"), "{log:?}");
}

#[test]
fn the_persona_cache_is_bounded_and_strength_zero_is_marked() {
    let f = start(2);
    write_persona(f.personas_dir.path(), "zero", f._model_dir.path(), &f.model, 4, 0.0, Positions::All);
    let identity = llm_burn::formats::identity::identity(f._model_dir.path(), f.model.config()).unwrap();
    let personas = serve::Personas::new(f.personas_dir.path().to_owned(), identity).max_loaded(2);
    for name in ["alice", "bob", "carol", "alice"] {
        personas.get(name, None).unwrap();
        assert!(personas.loaded_count() <= 2);
    }
    assert_eq!(personas.loaded_count(), 2);
    let models: Value = serde_json::from_str(&get(&format!("{}/v1/models", f.url)).1).unwrap();
    let zero = models["data"].as_array().unwrap().iter().find(|m| m["persona"] == "zero").unwrap();
    assert_eq!((zero["alpha"].as_f64(), zero["steered"].as_bool()), (Some(0.0), Some(false)), "{zero}");
    assert!(zero["note"].as_str().unwrap().contains("plain model"));
    let alice = models["data"].as_array().unwrap().iter().find(|m| m["persona"] == "alice").unwrap();
    assert_eq!(alice["steered"], true);
}
