//! The fixture every server test shares: the tiny random model, three personas, a server
//! on 127.0.0.1, and a real HTTP client (ureq).

use std::io::BufRead;
use std::path::Path;

use llm_burn::{CpuBackend, Generation, Decoder, Message, PromptEncoder, Sampling, TextStream};
use pas_core::{HeadId, Intervention, InterventionMeta, Positions, SteeredHead};
use serde_json::{Value, json};
use serve::{Personas, ServerConfig};

/// A running server and what a test needs to check it.
pub struct Fixture {
    pub _model_dir: tempfile::TempDir,
    pub personas_dir: tempfile::TempDir,
    pub model: Decoder<CpuBackend>,
    pub prompts: PromptEncoder,
    pub url: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub running: serve::Running,
}

/// A persona: two heads steered at strength `alpha`, saved for the model in `dir`.
pub fn write_persona(dir: &Path, name: &str, model_dir: &Path, model: &Decoder<CpuBackend>, seed: u32, alpha: f64, positions: Positions) {
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
    let id = llm_burn::formats::identity::identity(model_dir, model.config()).unwrap();
    let meta = InterventionMeta { model_id: id.model_id, config_hash: id.config_hash, method: "pas-only/mass-mean".into(), top_k: 2, seed: 0, sigma_ddof: 0, positions, alpha: Some(alpha) };
    iv.save(dir.join(format!("{name}.safetensors")), &meta).unwrap();
}

/// A server of the tiny model with three personas, batching `max_batch` requests.
pub fn start(max_batch: usize) -> Fixture {
    start_with(ServerConfig { model_id: "tiny".into(), max_tokens: 64, default_max_tokens: 24, max_batch, ..Default::default() })
}

/// A server of the tiny model with three personas and `config`.
pub fn start_with(config: ServerConfig) -> Fixture {
    let model_dir = tempfile::tempdir().unwrap();
    llm_burn::tiny::write_model(model_dir.path(), 5).unwrap();
    let load = || Decoder::<CpuBackend>::load(model_dir.path(), &Default::default()).unwrap();
    let model = load();
    let personas_dir = tempfile::tempdir().unwrap();
    for (k, (name, alpha, pos)) in [("alice", 4.0, Positions::All), ("bob", -6.0, Positions::Last), ("carol", 8.0, Positions::All)].into_iter().enumerate() {
        write_persona(personas_dir.path(), name, model_dir.path(), &model, k as u32 + 1, alpha, pos);
    }
    let identity = llm_burn::formats::identity::identity(model_dir.path(), model.config()).unwrap();
    let personas = Personas::new(personas_dir.path().to_owned(), identity);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    let running = serve::spawn("127.0.0.1:0", load(), PromptEncoder::from_dir(model_dir.path()).unwrap(), personas, config, move |l| sink.lock().unwrap().push(l.to_owned())).unwrap();
    let prompts = PromptEncoder::from_dir(model_dir.path()).unwrap();
    Fixture { url: format!("http://{}", running.addr), _model_dir: model_dir, personas_dir, model, prompts, log, running }
}

/// A response's JSON body (null if it has none).
pub fn json_of(r: ureq::Response) -> Value {
    serde_json::from_str(&r.into_string().unwrap()).unwrap_or(Value::Null)
}

/// POSTs a JSON body; (status, body).
pub fn post(url: &str, body: &str) -> (u16, Value) {
    match ureq::post(&format!("{url}/v1/chat/completions")).set("content-type", "application/json").send_string(body) {
        Ok(r) => (r.status(), json_of(r)),
        Err(ureq::Error::Status(code, r)) => (code, json_of(r)),
        Err(e) => panic!("transport error: {e}"),
    }
}

pub fn request(user: &str, persona: Option<&str>, max_tokens: usize) -> Value {
    let mut r = json!({"model": "tiny", "messages": [{"role": "user", "content": user}], "max_tokens": max_tokens});
    if let Some(p) = persona {
        r["persona"] = json!(p);
    }
    r
}

/// What the model alone generates for a request: (text, tokens, finish).
pub fn expected(f: &Fixture, user: &str, persona: Option<&str>, max_tokens: usize) -> (String, Vec<u32>, String) {
    let steering = persona.map(|p| {
        let id = llm_burn::formats::identity::identity(f._model_dir.path(), f.model.config()).unwrap();
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

/// Reads an SSE answer: (concatenated content, finish reason, saw [DONE]).
pub fn read_stream(url: &str, body: &Value) -> (String, String, bool) {
    let r = ureq::post(&format!("{url}/v1/chat/completions")).send_string(&body.to_string()).unwrap();
    assert!(r.content_type().starts_with("text/event-stream"), "{}", r.content_type());
    read_events(std::io::BufReader::new(r.into_reader()).lines())
}

/// Reads server-sent events to their end: (concatenated content, finish reason, saw [DONE]).
pub fn read_events(lines: impl Iterator<Item = std::io::Result<String>>) -> (String, String, bool) {
    let (mut text, mut finish, mut done) = (String::new(), String::new(), false);
    for line in lines {
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
