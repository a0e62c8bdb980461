//! The HTTP routes: checking a request, handing it to the engine, and answering whole or
//! as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::sse::{Event as Sse, Sse as SseBody};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use llm_burn::{Finish, Generation, Message, PromptEncoder, Sampling, TextStream};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::Instant as Deadline;

use crate::admission::{Admission, Ticket};
use crate::api::{ApiError, ChatMessage, ChatRequest, ChatResponse, Choice, Usage};
use crate::engine::{Engine, Event};
use crate::{Log, Personas, ServerConfig};

/// What every handler shares.
pub(crate) struct App {
    pub engine: Engine,
    pub prompts: PromptEncoder,
    pub personas: Personas,
    pub config: ServerConfig,
    pub log: Log,
    /// The model's context in tokens.
    pub context: usize,
    /// Tokens that end an answer.
    pub stop: Vec<u32>,
    /// Requests answered so far (their ids: `chatcmpl-<n>`).
    pub served: std::sync::atomic::AtomicU64,
    /// The bound on requests in the server, and the drain.
    pub admission: Arc<Admission>,
    /// What `/metrics` reports.
    pub metrics: crate::metrics::Metrics,
}

impl App {
    /// A fresh completion id.
    fn next_id(&self) -> String {
        format!("chatcmpl-{}", self.served.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) fn router(app: App) -> Router {
    let app = Arc::new(app);
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/live", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::not_found("not_found", "no such route (try POST /v1/chat/completions or GET /v1/models)".into()) })
        .layer(from_fn_with_state(app.clone(), count))
        .with_state(app)
}

/// Counts every answered request by route (the known ones; `other` for the rest) and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    const ROUTES: [&str; 6] = ["/v1/chat/completions", "/v1/models", "/v1/stats", "/metrics", "/health", "/health/live"];
    let route = ROUTES.iter().find(|r| **r == req.uri().path()).copied().unwrap_or("other");
    let response = next.run(req).await;
    app.metrics.request(route, response.status().as_u16());
    response
}

/// A checked request, ready for the engine.
struct Prepared {
    generation: Generation,
    persona: Option<String>,
    prompt_tokens: usize,
    stream: bool,
    token_ids: bool,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks a request body and turns it into a generation.
fn prepare(app: &App, body: &[u8]) -> Result<Prepared, ApiError> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not a valid chat completion request: {e}")))?;
    if req.messages.is_empty() {
        return Err(ApiError::bad_request("invalid_messages", "`messages` must hold at least one message".into()));
    }
    if let Some(m) = req.messages.iter().find(|m| !["system", "user", "assistant"].contains(&m.role.as_str())) {
        return Err(ApiError::bad_request("invalid_messages", format!("message role {:?} is not system, user or assistant", m.role)));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("invalid_n", "only n = 1 is supported".into()));
    }
    let max_new = req.max_completion_tokens.or(req.max_tokens).unwrap_or(app.config.default_max_tokens);
    if max_new == 0 || max_new > app.config.max_tokens {
        return Err(ApiError::bad_request("max_tokens_too_large", format!("max_tokens must be from 1 to {}, not {max_new}", app.config.max_tokens)));
    }
    if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(ApiError::invalid_field("invalid_temperature", "temperature", "temperature must be from 0 to 2 (as OpenAI's API)".into()));
    }
    if req.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
        return Err(ApiError::invalid_field("invalid_top_p", "top_p", "top_p must be above 0 and at most 1".into()));
    }
    let sampling = Sampling { temperature: req.temperature.unwrap_or(0.0), top_p: req.top_p.unwrap_or(1.0), seed: req.seed.unwrap_or(0) };
    sampling.validate().map_err(|e| ApiError::bad_request("invalid_sampling", e.to_string()))?;
    if let Some(model) = req.model.as_deref()
        && model != app.config.model_id
        && !model.starts_with("persona:")
    {
        let message = format!("no model `{model}` here: this server has `{}` and its personas as `persona:<name>` (GET /v1/models lists them)", app.config.model_id);
        return Err(ApiError { param: Some("model"), ..ApiError::not_found("model_not_found", message) });
    }
    let persona = req.persona.clone().or_else(|| req.model.as_deref().and_then(|m| m.strip_prefix("persona:")).map(str::to_owned));
    let steering = match &persona {
        Some(name) => Some(app.personas.get(name, req.alpha)?.steering),
        None => None,
    };
    let messages: Vec<Message> = req.messages.iter().map(|m| Message::new(&m.role, &m.content)).collect();
    let prompt = app.prompts.encode_messages(&messages).map_err(|e| ApiError::bad_request("invalid_messages", e.to_string()))?;
    if prompt.len() + max_new > app.context {
        return Err(ApiError::bad_request(
            "context_length_exceeded",
            format!("the prompt's {} tokens and max_tokens {max_new} exceed the model's context of {} tokens", prompt.len(), app.context),
        ));
    }
    let prompt_tokens = prompt.len();
    Ok(Prepared { generation: Generation { prompt, steering, sampling, max_new, stop: if req.ignore_eos { Vec::new() } else { app.stop.clone() } }, persona, prompt_tokens, stream: req.stream, token_ids: req.return_token_ids })
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    let t = Instant::now();
    let refused = |e: ApiError| {
        (app.log)(&format!("POST /v1/chat/completions {} {} {:.3} s", e.status.as_u16(), e.code, t.elapsed().as_secs_f64()));
        e.into_response()
    };
    let ticket = match app.admission.enter() {
        Ok(ticket) => ticket,
        Err(e) => return refused(e),
    };
    let body = match crate::body::read(body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return refused(e),
    };
    let p = match prepare(&app, &body) {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    app.metrics.admitted(p.persona.as_deref(), p.prompt_tokens);
    let (tx, rx) = unbounded_channel();
    app.engine.submit(p.generation.clone(), tx);
    let deadline = app.config.request_timeout.map(|d| Deadline::now() + d);
    let r = Receiving { rx, deadline, t, last: None, _ticket: ticket };
    if p.stream { stream(app, p, r).into_response() } else { whole(app, p, r).await }
}

/// A request's side of the engine: its events, its deadline, token timing for the metrics,
/// and its place in the server (given back when this is dropped).
struct Receiving {
    rx: UnboundedReceiver<Event>,
    deadline: Option<Deadline>,
    t: Instant,
    last: Option<Instant>,
    _ticket: Ticket,
}

/// Why a request hears no more events.
enum Ended {
    /// Its deadline passed.
    TimedOut,
    /// The engine dropped its channel.
    EngineGone,
}

impl Receiving {
    /// The next event, or why there is none.
    async fn next(&mut self, app: &App) -> Result<Event, Ended> {
        let ev = match self.deadline {
            // `timeout_at` polls the receiver first: while the engine keeps the channel full it
            // would never see the deadline, so check it before every event.
            Some(d) if Deadline::now() >= d => return Err(Ended::TimedOut),
            Some(d) => tokio::time::timeout_at(d, self.rx.recv()).await.map_err(|_| Ended::TimedOut)?,
            None => self.rx.recv().await,
        };
        let ev = ev.ok_or(Ended::EngineGone)?;
        if let Event::Token(_) = ev {
            let now = Instant::now();
            app.metrics.token(self.last.is_none(), now.duration_since(self.last.unwrap_or(self.t)).as_secs_f64());
            self.last = Some(now);
        }
        Ok(ev)
    }
}

/// What a request that ran out of time is told.
fn timeout_error(app: &App) -> ApiError {
    let s = app.config.request_timeout.map_or(0.0, |d| d.as_secs_f64());
    ApiError::timed_out(format!("the request was not answered within the server's limit of {s} s; its generation was stopped"))
}

/// The log line of a finished request.
fn log_done(app: &App, p: &Prepared, status: u16, completion: usize, finish: &str, t: Instant) {
    (app.log)(&format!(
        "POST /v1/chat/completions {status} persona={} stream={} prompt={} completion={completion} finish={finish} {:.3} s",
        p.persona.as_deref().unwrap_or("-"),
        p.stream,
        p.prompt_tokens,
        t.elapsed().as_secs_f64()
    ));
}

async fn whole(app: Arc<App>, p: Prepared, mut r: Receiving) -> Response {
    let t = r.t;
    let mut text = TextStream::default();
    let finish = loop {
        match r.next(&app).await {
            Ok(Event::Token(id)) => {
                if let Err(e) = text.push(&app.prompts, id) {
                    break Err(ApiError::internal(e.to_string()));
                }
            }
            Ok(Event::Done(f)) => break Ok(f),
            Ok(Event::Failed(m)) => break Err(ApiError::internal(m)),
            Err(Ended::TimedOut) => break Err(timeout_error(&app)),
            Err(Ended::EngineGone) => break Err(ApiError::internal("the engine stopped".into())),
        }
    };
    let completion = text.ids().len();
    let f = match finish {
        Ok(f) => f,
        Err(e) => {
            log_done(&app, &p, e.status.as_u16(), completion, "error", t);
            return e.into_response();
        }
    };
    let content = match text.text(&app.prompts) {
        Ok(c) => c,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    log_done(&app, &p, 200, completion, f.as_str(), t);
    axum::Json(ChatResponse {
        id: app.next_id(),
        object: "chat.completion".into(),
        created: now(),
        model: app.config.model_id.clone(),
        persona: p.persona.clone(),
        choices: vec![Choice { index: 0, message: ChatMessage { role: "assistant".into(), content }, finish_reason: f.as_str().into(), token_ids: p.token_ids.then(|| text.ids().to_vec()) }],
        usage: Usage { prompt_tokens: p.prompt_tokens, completion_tokens: completion, total_tokens: p.prompt_tokens + completion },
    })
    .into_response()
}

/// One `chat.completion.chunk` event.
fn chunk(app: &App, id: &str, delta: serde_json::Value, finish: Option<Finish>) -> Sse {
    let body = serde_json::json!({
        "id": id, "object": "chat.completion.chunk", "created": now(), "model": app.config.model_id,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish.map(Finish::as_str)}],
    });
    Sse::default().data(body.to_string())
}

/// The answer as server-sent events: a role chunk, a chunk per piece of text, a chunk with
/// the finish reason, then `[DONE]` (or an error object if the engine failed).
fn stream(app: Arc<App>, p: Prepared, r: Receiving) -> SseBody<impl Stream<Item = Result<Sse, Infallible>>> {
    let id = app.next_id();
    let first = chunk(&app, &id, serde_json::json!({"role": "assistant", "content": ""}), None);
    struct S {
        app: Arc<App>,
        p: Prepared,
        r: Receiving,
        text: TextStream,
        id: String,
        done: bool,
    }
    let state = S { app, p, r, text: TextStream::default(), id, done: false };
    let rest = futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let ev = match s.r.next(&s.app).await {
                Ok(Event::Token(tok)) => match s.text.push(&s.app.prompts, tok) {
                    Ok(piece) if piece.is_empty() => continue,
                    Ok(piece) => chunk(&s.app, &s.id, serde_json::json!({"content": piece}), None),
                    Err(e) => failed(&mut s.done, ApiError::internal(e.to_string())),
                },
                Ok(Event::Done(f)) => {
                    log_done(&s.app, &s.p, 200, s.text.ids().len(), f.as_str(), s.r.t);
                    s.done = true;
                    let mut last = Vec::new();
                    if let Ok(rest) = s.text.flush(&s.app.prompts)
                        && !rest.is_empty()
                    {
                        last.push(chunk(&s.app, &s.id, serde_json::json!({"content": rest}), None));
                    }
                    last.push(chunk(&s.app, &s.id, serde_json::json!({}), Some(f)));
                    last.push(Sse::default().data("[DONE]"));
                    return Some((last, s));
                }
                Ok(Event::Failed(m)) => {
                    log_done(&s.app, &s.p, 500, s.text.ids().len(), "error", s.r.t);
                    failed(&mut s.done, ApiError::internal(m))
                }
                Err(Ended::TimedOut) => {
                    log_done(&s.app, &s.p, 504, s.text.ids().len(), "timeout", s.r.t);
                    failed(&mut s.done, timeout_error(&s.app))
                }
                Err(Ended::EngineGone) => failed(&mut s.done, ApiError::internal("the engine stopped".into())),
            };
            return Some((vec![ev], s));
        }
    });
    use futures_util::StreamExt;
    let events = futures_util::stream::iter([vec![first]]).chain(rest).flat_map(|v| futures_util::stream::iter(v.into_iter().map(Ok)));
    SseBody::new(events)
}

/// An error event ending a stream.
fn failed(done: &mut bool, error: ApiError) -> Sse {
    *done = true;
    Sse::default().data(error.body().to_string())
}

async fn models(State(app): State<Arc<App>>) -> Response {
    let mut data = vec![serde_json::json!({"id": app.config.model_id, "object": "model", "created": 0, "owned_by": "llm-burn"})];
    for name in app.personas.names() {
        let alpha = app.personas.file_alpha(&name);
        let mut entry = serde_json::json!({"id": format!("persona:{name}"), "object": "model", "created": 0, "owned_by": "persona", "parent": app.config.model_id, "persona": name, "alpha": alpha, "steered": alpha.is_some_and(|a| a != 0.0)});
        if alpha == Some(0.0) {
            entry["note"] = "strength 0: steering did not help on this person's held-out answers, so this persona answers as the plain model".into();
        }
        data.push(entry);
    }
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// The requests admitted and not yet running.
fn waiting(app: &App) -> usize {
    app.admission.active().saturating_sub(app.engine.stats.running.load(Ordering::Relaxed))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(app.engine.stats.running.load(Ordering::Relaxed), waiting(&app));
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.admission.is_draining() {
        return ApiError::unavailable("shutting_down", "the server is shutting down".into()).into_response();
    }
    axum::Json(serde_json::json!({"status": "ok", "active": app.admission.active()})).into_response()
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    let s = &app.engine.stats;
    axum::Json(serde_json::json!({
        "steps": s.steps.load(Ordering::Relaxed),
        "tokens": s.tokens.load(Ordering::Relaxed),
        "max_rows": s.max_rows.load(Ordering::Relaxed),
        "running": s.running.load(Ordering::Relaxed),
    }))
    .into_response()
}
