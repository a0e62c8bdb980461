//! The server over real HTTP on 127.0.0.1 with a real client (ureq), on the tiny random
//! model: batching laws, streaming, personas, and every refusal with its status and body.

use std::io::BufRead;
use std::path::Path;

use llm_burn::{CpuBackend, Generation, Llama, Message, PromptEncoder, Sampling, TextStream};
use pas_core::{HeadId, Intervention, InterventionMeta, Positions, SteeredHead};
use serde_json::{Value, json};
use serve::{Personas, ServerConfig};

struct Fixture {
    _model_dir: tempfile::TempDir,
    personas_dir: tempfile::TempDir,
    model: Llama<CpuBackend>,
    prompts: PromptEncoder,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A persona: two heads steered at strength `alpha`, saved for the model in `dir`.
fn write_persona(dir: &Path, name: &str, model_dir: &Path, model: &Llama<CpuBackend>, seed: u32, alpha: f64, positions: Positions) {
    let g = model.config().geometry();
    let dir_of = |k: u32| -> Vec<f32> {
        let v: Vec<f32> = (0..4).map(|i| ((seed * 7 + k * 3 + i) % 5) as f32 - 1.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    };
    let iv = Intervention::new(
        g,
        vec![
            SteeredHead { head: HeadId::new(0, seed % 4), direction: dir_of(1), sigma: 2.0 },
            SteeredHead { head: HeadId::new(1, (seed + 1) % 4), direction: dir_of(2), sigma: 3.0 },
        ],
    )
    .unwrap();
    let id = llm_burn::identity::identity(model_dir, model.config()).unwrap();
    let meta = InterventionMeta { model_id: id.model_id, config_hash: id.config_hash, method: "pas-only/mass-mean".into(), top_k: 2, seed: 0, sigma_ddof: 0, positions, alpha: Some(alpha) };
    iv.save(dir.join(format!("{name}.safetensors")), &meta).unwrap();
}

fn start(max_batch: usize) -> Fixture {
    let model_dir = tempfile::tempdir().unwrap();
    llm_burn::tiny::write_model(model_dir.path(), 5).unwrap();
    let load = || Llama::<CpuBackend>::load(model_dir.path(), &Default::default()).unwrap();
    let model = load();
    let personas_dir = tempfile::tempdir().unwrap();
    for (k, (name, alpha, pos)) in [("alice", 4.0, Positions::All), ("bob", -6.0, Positions::Last), ("carol", 8.0, Positions::All)].into_iter().enumerate() {
        write_persona(personas_dir.path(), name, model_dir.path(), &model, k as u32 + 1, alpha, pos);
    }
    let identity = llm_burn::identity::identity(model_dir.path(), model.config()).unwrap();
    let personas = Personas::new(personas_dir.path().to_owned(), identity);
    let config = ServerConfig { model_id: "tiny".into(), max_tokens: 64, default_max_tokens: 24, max_batch };
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    let running = serve::spawn("127.0.0.1:0", load(), PromptEncoder::from_dir(model_dir.path()).unwrap(), personas, config, move |l| sink.lock().unwrap().push(l.to_owned())).unwrap();
    let prompts = PromptEncoder::from_dir(model_dir.path()).unwrap();
    Fixture { url: format!("http://{}", running.addr), _model_dir: model_dir, personas_dir, model, prompts, log }
}

/// A response's JSON body (null if it has none).
fn json_of(r: ureq::Response) -> Value {
    serde_json::from_str(&r.into_string().unwrap()).unwrap_or(Value::Null)
}

/// POSTs a JSON body; (status, body).
fn post(url: &str, body: &str) -> (u16, Value) {
    match ureq::post(&format!("{url}/v1/chat/completions")).set("content-type", "application/json").send_string(body) {
        Ok(r) => (r.status(), json_of(r)),
        Err(ureq::Error::Status(code, r)) => (code, json_of(r)),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn request(user: &str, persona: Option<&str>, max_tokens: usize) -> Value {
    let mut r = json!({"model": "tiny", "messages": [{"role": "user", "content": user}], "max_tokens": max_tokens});
    if let Some(p) = persona {
        r["persona"] = json!(p);
    }
    r
}

/// What the model alone generates for a request: (text, tokens, finish).
fn expected(f: &Fixture, user: &str, persona: Option<&str>, max_tokens: usize) -> (String, Vec<u32>, String) {
    let steering = persona.map(|p| {
        let id = llm_burn::identity::identity(f._model_dir.path(), f.model.config()).unwrap();
        let (iv, meta) = Intervention::load_for(f.personas_dir.path().join(format!("{p}.safetensors")), &id).unwrap();
        std::sync::Arc::new(iv.at(meta.alpha.unwrap() as f32, meta.positions))
    });
    let prompt = f.prompts.encode_messages(&[Message::new("user", user)]).unwrap();
    let stop = f.prompts.stop_ids(&f.model.config().eos);
    let mut text = TextStream::default();
    let finish = f
        .model
        .generate(Generation { prompt, steering, sampling: Sampling::default(), max_new: max_tokens, stop }, |t| {
            text.push(&f.prompts, t).unwrap();
            true
        })
        .unwrap()
        .unwrap();
    (text.text(&f.prompts).unwrap(), text.ids().to_vec(), finish.as_str().to_owned())
}

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

/// Reads an SSE answer: (concatenated content, finish reason, saw [DONE]).
fn read_stream(url: &str, body: &Value) -> (String, String, bool) {
    let r = ureq::post(&format!("{url}/v1/chat/completions")).send_string(&body.to_string()).unwrap();
    assert!(r.content_type().starts_with("text/event-stream"), "{}", r.content_type());
    let (mut text, mut finish, mut done) = (String::new(), String::new(), false);
    for line in std::io::BufReader::new(r.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if let Some(fr) = v["choices"][0]["finish_reason"].as_str() {
            finish = fr.to_owned();
        }
    }
    (text, finish, done)
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
    let other_model = Llama::<CpuBackend>::load(other.path(), &Default::default()).unwrap();
    write_persona(f.personas_dir.path(), "stranger", other.path(), &other_model, 1, 1.0, Positions::All);
    let long = "x".repeat(f.model.config().context + 10);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_json"),
        (json!({"messages": "hello"}).to_string(), 400, "invalid_json"),
        (json!({"messages": []}).to_string(), 400, "invalid_messages"),
        (json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(), 400, "invalid_messages"),
        (request("hi", Some("nobody"), 5).to_string(), 404, "persona_not_found"),
        (request("hi", Some("../../etc/passwd"), 5).to_string(), 400, "invalid_persona_name"),
        (request("hi", Some(".hidden"), 5).to_string(), 400, "invalid_persona_name"),
        (request("hi", Some("stranger"), 5).to_string(), 409, "persona_model_mismatch"),
        (request(&long, None, 5).to_string(), 400, "context_length_exceeded"),
        (request("hi", None, 65).to_string(), 400, "max_tokens_too_large"),
        (request("hi", None, 0).to_string(), 400, "max_tokens_too_large"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}).to_string(), 400, "invalid_sampling"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}).to_string(), 400, "invalid_sampling"),
        (json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}).to_string(), 400, "invalid_n"),
    ];
    for (body, status, code) in &cases {
        let (got, err) = post(&f.url, body);
        assert_eq!((got, err["error"]["code"].as_str().unwrap_or("")), (*status, *code), "{body:.80}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(err["error"]["type"], "invalid_request_error");
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
