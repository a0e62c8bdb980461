//! serve: an OpenAI-compatible HTTP server of one model and its personas.
//!
//! - `POST /v1/chat/completions`: OpenAI's chat completions, whole or streamed as server-sent
//!   events (`"stream": true`), with `"persona": "<name>"` (a `<name>.safetensors` file in the
//!   personas folder, as `cargo xtask align` or `reproduce` write them) or `"model":
//!   "persona:<name>"`; no persona = the unsteered model. Greedy unless `temperature` > 0.
//! - `GET /v1/models`: the model and the personas in the folder now.
//! - `GET /v1/stats`: the engine's counters (steps, tokens, the largest batch so far).
//! - `GET /metrics`: Prometheus' text format (requests by route and status, rows running and
//!   waiting, tokens in and out, time to first token, inter-token latency, requests per
//!   persona); `GET /health` (readiness: 503 while shutting down) and `GET /health/live`.
//!
//! Under load: at most `max_batch + max_waiting` requests are in the server, past it 429
//! with `Retry-After`; a request past `request_timeout` is ended (504, or an error event) and
//! its row freed; bodies over `max_body_bytes` get 413. [`Running::shutdown`] (and SIGTERM or
//! SIGINT when `handle_signals`) drains: new requests get 503, those in flight finish within
//! `shutdown_grace`, then the server thread returns.
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
//! use llm_burn::{CpuBackend, Decoder, PromptEncoder};
//!
//! let dir = std::path::Path::new(".cache/models/SmolLM2-135M-Instruct");
//! let model = Decoder::<CpuBackend>::load(dir, &Default::default())?;
//! let identity = llm_burn::formats::identity::identity(dir, model.config())?;
//! let personas = Personas::new("personas".into(), identity);
//! let prompts = PromptEncoder::from_dir(dir)?;
//! let config = ServerConfig { model_id: "SmolLM2-135M-Instruct".into(), ..Default::default() };
//! let server = serve::spawn("127.0.0.1:8080", model, prompts, personas, config, |line| eprintln!("{line}"))?;
//! println!("listening on {}", server.addr);
//! server.thread.join().ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod admission;
pub mod api;
pub mod body;
pub mod engine;
pub mod metrics;
pub mod personas;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use llm_burn::{Decoder, PromptEncoder};
use tokio::sync::Notify;

pub use api::ApiError;
pub use engine::{Engine, Event};
pub use personas::{Personas, valid_name};

/// The largest persona strength a request may ask for, either way (PAS searches 0..8).
pub const MAX_ALPHA: f64 = 64.0;

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
    /// Most requests waiting for a row; past it, 429.
    pub max_waiting: usize,
    /// A request still unanswered after this is ended with an error and its row freed.
    pub request_timeout: Option<Duration>,
    /// How long a shutdown waits for the requests in flight.
    pub shutdown_grace: Duration,
    /// Largest request body in bytes; past it, 413.
    pub max_body_bytes: usize,
    /// Whether SIGTERM and SIGINT start a graceful shutdown (the command line sets it).
    pub handle_signals: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_id: "model".into(),
            max_tokens: 1024,
            default_max_tokens: 256,
            max_batch: 32,
            max_waiting: 256,
            request_timeout: Some(Duration::from_secs(600)),
            shutdown_grace: Duration::from_secs(30),
            max_body_bytes: 1 << 20,
            handle_signals: false,
        }
    }
}

/// What a log line goes to (one line per request).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// A running server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The thread running it: it returns after a shutdown.
    pub thread: std::thread::JoinHandle<std::io::Result<()>>,
    stop: Arc<Notify>,
}

impl Running {
    /// Starts a graceful shutdown (as SIGTERM does): new requests get 503, those in flight
    /// finish within the grace, then [`Running::thread`] returns.
    pub fn shutdown(&self) {
        self.stop.notify_one();
    }
}

/// The router of a server of `model` (starts the engine thread).
pub fn router<B: Backend>(model: Decoder<B>, prompts: PromptEncoder, personas: Personas, config: ServerConfig, log: Log) -> axum::Router
where
    Decoder<B>: Send + 'static,
{
    let admission = admission::Admission::new(config.max_batch, config.max_waiting);
    router_with(model, prompts, personas, config, log, admission)
}

fn router_with<B: Backend>(model: Decoder<B>, prompts: PromptEncoder, personas: Personas, config: ServerConfig, log: Log, admission: Arc<admission::Admission>) -> axum::Router
where
    Decoder<B>: Send + 'static,
{
    let context = model.config().context;
    let stop = prompts.stop_ids(&model.config().eos);
    let engine = Engine::start(model, config.max_batch);
    routes::router(routes::App { engine, prompts, personas, config, log, context, stop, served: Default::default(), admission, metrics: Default::default() })
}

/// Binds `addr` and serves on a thread of its own (a tokio runtime with two workers);
/// returns once it listens.
pub fn spawn<B: Backend>(addr: &str, model: Decoder<B>, prompts: PromptEncoder, personas: Personas, config: ServerConfig, log: impl Fn(&str) + Send + Sync + 'static) -> std::io::Result<Running>
where
    Decoder<B>: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let addr = listener.local_addr()?;
    let log: Log = Arc::new(log);
    let admission = admission::Admission::new(config.max_batch, config.max_waiting);
    let (grace, signals) = (config.shutdown_grace, config.handle_signals);
    let app = router_with(model, prompts, personas, config, log.clone(), admission.clone());
    let stop = Arc::new(Notify::new());
    let trigger = stop.clone();
    let thread = std::thread::Builder::new().name("http".into()).spawn(move || {
        runtime.block_on(async move {
            let begun = Arc::new(Notify::new());
            let drained = drain(admission, trigger, signals, grace, log, begun.clone());
            let server = axum::serve(listener, app).with_graceful_shutdown(drained);
            // Connections still open after the grace (and a moment to write the last bytes)
            // are dropped.
            let hard_stop = async move {
                begun.notified().await;
                tokio::time::sleep(grace + Duration::from_secs(2)).await;
            };
            tokio::select! {
                r = server => r,
                () = hard_stop => Ok(()),
            }
        })
    })?;
    Ok(Running { addr, thread, stop })
}

/// Waits for a shutdown (the handle, or a signal), then drains: refuses new requests and
/// waits up to `grace` for those in the server.
async fn drain(admission: Arc<admission::Admission>, trigger: Arc<Notify>, signals: bool, grace: Duration, log: Log, begun: Arc<Notify>) {
    let why = tokio::select! {
        () = trigger.notified() => "shutdown asked for",
        s = signal(signals) => s,
    };
    admission.drain();
    begun.notify_one();
    log(&format!("{why}: refusing new requests, {} in flight, grace {} s", admission.active(), grace.as_secs_f64()));
    let deadline = Instant::now() + grace;
    while admission.active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match admission.active() {
        0 => log("every request answered; stopping"),
        n => log(&format!("grace over with {n} requests in flight; stopping")),
    }
}

/// Resolves on SIGTERM or SIGINT (never when `enabled` is false).
async fn signal(enabled: bool) -> &'static str {
    if !enabled {
        return std::future::pending().await;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
