//! serve: an OpenAI-compatible HTTP server of one model and its personas.
//!
//! - `POST /v1/chat/completions`: OpenAI's chat completions, whole or streamed as server-sent
//!   events (`"stream": true`), with `"persona": "<name>"` (a `<name>.safetensors` file in the
//!   personas folder, as `cargo xtask align` or `reproduce` write them) or `"model":
//!   "persona:<name>"`; no persona = the unsteered model. Greedy unless `temperature` > 0.
//! - `GET /v1/models`: the model and the personas in the folder now.
//! - `GET /v1/stats`: the engine's counters (steps, tokens, the largest batch so far).
//!
//! One engine thread owns the model and batches continuously ([`llm_burn::Batcher`]):
//! requests join and leave the running batch between steps, each row with its own steering.
//! Personas are loaded on first use (again when their file changes), so files added while
//! the server runs are found. Bad requests get a 4xx status and OpenAI's error body.
//!
//! # Example
//!
//! ```no_run
//! use serve::{Personas, ServerConfig};
//! use llm_burn::{CpuBackend, Llama, PromptEncoder};
//!
//! let dir = std::path::Path::new(".cache/models/SmolLM2-135M-Instruct");
//! let model = Llama::<CpuBackend>::load(dir, &Default::default())?;
//! let identity = llm_burn::identity::identity(dir, model.config())?;
//! let personas = Personas::new("personas".into(), identity);
//! let prompts = PromptEncoder::from_dir(dir)?;
//! let config = ServerConfig { model_id: "SmolLM2-135M-Instruct".into(), ..Default::default() };
//! let server = serve::spawn("127.0.0.1:8080", model, prompts, personas, config, |line| eprintln!("{line}"))?;
//! println!("listening on {}", server.addr);
//! server.thread.join().ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod api;
pub mod engine;
pub mod personas;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use llm_burn::{Llama, PromptEncoder};

pub use api::ApiError;
pub use engine::{Engine, Event};
pub use personas::{Personas, valid_name};

/// Limits and defaults of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model's name in responses and `/v1/models`.
    pub model_id: String,
    /// Most new tokens a request may ask for.
    pub max_tokens: usize,
    /// New tokens when a request does not say.
    pub default_max_tokens: usize,
    /// Most requests running in one batch (others wait).
    pub max_batch: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { model_id: "model".into(), max_tokens: 1024, default_max_tokens: 256, max_batch: 32 }
    }
}

/// What a log line goes to (one line per request).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// A running server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The thread running it (it runs until the process ends).
    pub thread: std::thread::JoinHandle<std::io::Result<()>>,
}

/// The router of a server of `model` (starts the engine thread).
pub fn router<B: Backend>(model: Llama<B>, prompts: PromptEncoder, personas: Personas, config: ServerConfig, log: Log) -> axum::Router
where
    Llama<B>: Send + 'static,
{
    let context = model.config().context;
    let stop = prompts.stop_ids(&model.config().eos);
    let engine = Engine::start(model, config.max_batch);
    routes::router(routes::App { engine, prompts, personas, config, log, context, stop, served: Default::default() })
}

/// Binds `addr` and serves on a thread of its own (a tokio runtime with two workers);
/// returns once it listens.
pub fn spawn<B: Backend>(addr: &str, model: Llama<B>, prompts: PromptEncoder, personas: Personas, config: ServerConfig, log: impl Fn(&str) + Send + Sync + 'static) -> std::io::Result<Running>
where
    Llama<B>: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let addr = listener.local_addr()?;
    let app = router(model, prompts, personas, config, Arc::new(log));
    let thread = std::thread::Builder::new().name("http".into()).spawn(move || runtime.block_on(async move { axum::serve(listener, app).await }))?;
    Ok(Running { addr, thread })
}
