//! Batching laws, streaming, personas, and every refusal with its status and body.

use llm_burn::{CpuBackend, Decoder};
use pas_core::Positions;
use serde_json::{Value, json};

use crate::common::*;

#[test]
fn each_row_of_a_mixed_concurrent_batch_answers_as_it_would_alone() {
    let f = start(16);
    let cases: Vec<(String, Option<&str>, usize)> = (0..12)
        .map(|i| (format!("Question {i}: how are you?"), [None, Some("alice"), Some("bob"), Some("carol")][i % 4], 20 + i % 5))
        .collect();
    let want: Vec<(String, Vec<u32>, String)> = cases.iter().map(|(u, p, n)| expected(&f, u, *p, *n)).collect();
    // Steering changes the answer (else the law would prove little).
    assert_ne!(expected(&f, &cases[1].0, None, cases[1].2).1, want[1].1, "alice's steering should change her answer");
    let got: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases.iter().map(|(u, p, n)| s.spawn(|| {
            let mut r = request(u, *p, *n);
            r["return_token_ids"] = json!(true);
            post(&f.url, &r.to_string())
        })).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, ((status, body), (text, tokens, finish))) in got.iter().zip(&want).enumerate() {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"].as_str().unwrap(), text, "request {i} ({:?})", cases[i].1);
        let ids: Vec<u32> = serde_json::from_value(body["choices"][0]["token_ids"].clone()).unwrap();
        assert_eq!(&ids, tokens, "request {i} ({:?})", cases[i].1);
        assert_eq!(body["usage"]["completion_tokens"].as_u64().unwrap() as usize, tokens.len());
        assert_eq!(body["choices"][0]["finish_reason"].as_str().unwrap(), finish);
        assert_eq!(body["persona"].as_str(), cases[i].1);
    }
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|(_, b)| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), cases.len(), "completion ids are unique");
    let stats: Value = ureq::get(&format!("{}/v1/stats", f.url)).call().unwrap().into_string().map(|t| serde_json::from_str(&t).unwrap()).unwrap();
    assert!(stats["max_rows"].as_u64().unwrap() > 1, "requests should have shared a batch: {stats}");
    // One log line per request.
    let log = f.log.lock().unwrap();
    assert_eq!(log.iter().filter(|l| l.starts_with("POST /v1/chat/completions 200")).count(), cases.len(), "{log:?}");
}

#[test]
fn streaming_and_whole_answers_agree_and_personas_added_later_are_found() {
    let f = start(8);
    for persona in [None, Some("bob"), Some("carol")] {
        let mut body = request("Tell me about yourself.", persona, 30);
        let (status, whole) = post(&f.url, &body.to_string());
        assert_eq!(status, 200);
        body["stream"] = json!(true);
        let (text, finish, done) = read_stream(&f.url, &body);
        assert!(done, "the stream ends with [DONE]");
        assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
        assert_eq!(finish, whole["choices"][0]["finish_reason"].as_str().unwrap());
    }
    // A persona added while the server runs; `model: "persona:<name>"` selects it too.
    write_persona(f.personas_dir.path(), "dave", f._model_dir.path(), &f.model, 9, 5.0, Positions::All);
    let models: Value = ureq::get(&format!("{}/v1/models", f.url)).call().unwrap().into_string().map(|t| serde_json::from_str(&t).unwrap()).unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tiny", "persona:alice", "persona:bob", "persona:carol", "persona:dave"]);
    let (status, by_model) = post(&f.url, &json!({"model": "persona:dave", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12}).to_string());
    assert_eq!(status, 200, "{by_model}");
    assert_eq!(by_model["choices"][0]["message"]["content"].as_str().unwrap(), expected(&f, "Hi", Some("dave"), 12).0);
}

#[test]
fn bad_requests_get_their_status_and_error_body_and_the_server_stays_up() {
    let f = start(4);
    // A persona made for another model (same shape, other weights).
    let other = tempfile::tempdir().unwrap();
    llm_burn::tiny::write_model(other.path(), 6).unwrap();
    let other_model = Decoder::<CpuBackend>::load(other.path(), &Default::default()).unwrap();
    write_persona(f.personas_dir.path(), "stranger", other.path(), &other_model, 1, 1.0, Positions::All);
    let long = "x".repeat(f.model.config().context + 10);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_json"),
        (json!({"messages": "hello"}).to_string(), 400, "invalid_json"),
        (json!({"messages": []}).to_string(), 400, "invalid_messages"),
        (json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(), 400, "invalid_messages"),
        (request("hi", Some("nobody"), 5).to_string(), 404, "persona_not_found"),
        (json!({"model": "persona:nobody", "messages": [{"role": "user", "content": "hi"}]}).to_string(), 404, "persona_not_found"),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string(), 404, "model_not_found"),
        (request("hi", Some("../../etc/passwd"), 5).to_string(), 400, "invalid_persona_name"),
        (request("hi", Some(".hidden"), 5).to_string(), 400, "invalid_persona_name"),
        (request("hi", Some("stranger"), 5).to_string(), 409, "persona_model_mismatch"),
        (request(&long, None, 5).to_string(), 400, "context_length_exceeded"),
        (request("hi", None, 65).to_string(), 400, "max_tokens_too_large"),
        (request("hi", None, 0).to_string(), 400, "max_tokens_too_large"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}).to_string(), 400, "invalid_temperature"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1e9}).to_string(), 400, "invalid_temperature"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}).to_string(), 400, "invalid_top_p"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}).to_string(), 400, "invalid_top_p"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "persona": "alice", "alpha": 1e6}).to_string(), 400, "invalid_alpha"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}).to_string(), 400, "invalid_n"),
    ];
    for (body, status, code) in &cases {
        let (got, err) = post(&f.url, body);
        assert_eq!((got, err["error"]["code"].as_str().unwrap_or("")), (*status, *code), "{body:.80}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(err["error"]["type"], "invalid_request_error");
        if let Some(field) = code.strip_prefix("invalid_").filter(|f| ["temperature", "top_p", "alpha"].contains(f)) {
            assert_eq!(err["error"]["param"], field, "the error names the field: {err}");
        }
        if *code == "model_not_found" {
            assert_eq!(err["error"]["param"], "model", "{err}");
        }
    }
    // Unknown route: 404 with the same error body.
    match ureq::get(&format!("{}/v2/nothing", f.url)).call() {
        Err(ureq::Error::Status(404, r)) => assert_eq!(json_of(r)["error"]["code"], "not_found"),
        other => panic!("expected 404, got {other:?}"),
    }
    // Still up and answering.
    let (status, _) = post(&f.url, &request("still there?", None, 5).to_string());
    assert_eq!(status, 200);
    let log = f.log.lock().unwrap();
    assert_eq!(log.iter().filter(|l| l.contains(" 400 ") || l.contains(" 404 ") || l.contains(" 409 ")).count(), cases.len());
}
