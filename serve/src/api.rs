//! The OpenAI-compatible request and response bodies, and errors as HTTP statuses with
//! OpenAI's error body (`{"error": {"message", "type", "code"}}`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 1;

/// A refused or failed request: its status, a stable code, the field it is about (if any),
/// and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A machine-readable code, e.g. `persona_not_found`.
    pub code: &'static str,
    /// The request field at fault (OpenAI's `param`), e.g. `temperature`.
    pub param: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        ApiError { status, code, param: None, message }
    }

    /// 400: the request is wrong.
    pub fn bad_request(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 about one field: the code is `invalid_<field>`.
    pub fn invalid_field(code: &'static str, field: &'static str, message: String) -> Self {
        ApiError { param: Some(field), ..Self::bad_request(code, message) }
    }

    /// 404: what it names does not exist.
    pub fn not_found(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409: what it names exists but cannot serve this model.
    pub fn conflict(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413: the body is larger than the server takes.
    pub fn too_large(message: String) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", message)
    }

    /// 429: too many requests in the server; retry later.
    pub fn rate_limited(message: String) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", message)
    }

    /// 503: the server is not taking requests (shutting down).
    pub fn unavailable(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 504: the request ran past the server's deadline.
    pub fn timed_out(message: String) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "request_timeout", message)
    }

    /// 500: the server failed.
    pub fn internal(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// The JSON body (OpenAI's: `message`, `type`, `param`, `code`).
    pub fn body(&self) -> serde_json::Value {
        let kind = match self.status {
            StatusCode::TOO_MANY_REQUESTS => "requests",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        serde_json::json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, RETRY_AFTER_S.into());
        }
        r
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// `POST /v1/chat/completions`: OpenAI's fields this server uses, plus `persona` and
/// `alpha`. Unknown fields are ignored, as OpenAI clients send many.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The model's name (optional; the served model is the only one).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The persona (a file stem in the personas folder); none = the unsteered model.
    #[serde(default)]
    pub persona: Option<String>,
    /// Overrides the persona file's strength; at most [`crate::MAX_ALPHA`] either way.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// New tokens at most (default: the server's default).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// 0 (the default here) = greedy.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass (default 1).
    #[serde(default)]
    pub top_p: Option<f32>,
    /// The sampling seed (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Keep generating past end-of-turn tokens until `max_tokens` (as vLLM's `ignore_eos`;
    /// for benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Also return the generated token ids (`choices[0].token_ids`), as vLLM does.
    #[serde(default)]
    pub return_token_ids: bool,
    /// Completions asked for: only 1 is supported.
    #[serde(default)]
    pub n: Option<usize>,
}

/// Token counts of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

/// A non-streamed answer (`object: chat.completion`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// `chatcmpl-<n>`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// The persona used, if any.
    pub persona: Option<String>,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
}

/// The one choice of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// 0.
    pub index: usize,
    /// The assistant's message.
    pub message: ChatMessage,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// The generated token ids, when asked for (`return_token_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}
