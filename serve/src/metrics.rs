//! `/metrics`: the server's counters in Prometheus' text format (OpenMetrics), kept with the
//! Prometheus project's own client.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one series: `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;

/// Everything `/metrics` reports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    persona_requests: Family<Labels, Counter>,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    running: Gauge,
    waiting: Gauge,
    first_token: Histogram,
    inter_token: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("serve");
        let requests = Family::<Labels, Counter>::default();
        let persona_requests = Family::<Labels, Counter>::default();
        let (prompt_tokens, completion_tokens) = (Counter::default(), Counter::default());
        let (running, waiting) = (Gauge::default(), Gauge::default());
        let first_token = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let inter_token = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("http_requests", "HTTP requests answered, by route and status", requests.clone());
        registry.register("persona_requests", "Chat completions admitted, by persona (`-`: none)", persona_requests.clone());
        registry.register("prompt_tokens", "Prompt tokens of admitted chat completions", prompt_tokens.clone());
        registry.register("completion_tokens", "Tokens generated", completion_tokens.clone());
        registry.register("running_rows", "Requests running in the batch", running.clone());
        registry.register("waiting_requests", "Requests admitted and waiting for a row", waiting.clone());
        registry.register("time_to_first_token_seconds", "From a request's arrival to its first token", first_token.clone());
        registry.register("inter_token_latency_seconds", "Between consecutive tokens of one request", inter_token.clone());
        Metrics { registry, requests, persona_requests, prompt_tokens, completion_tokens, running, waiting, first_token, inter_token }
    }
}

impl Metrics {
    /// One answered request.
    pub fn request(&self, route: &str, status: u16) {
        self.requests.get_or_create(&vec![("route", route.to_owned()), ("status", status.to_string())]).inc();
    }

    /// One admitted chat completion with `prompt` tokens, for `persona`.
    pub fn admitted(&self, persona: Option<&str>, prompt: usize) {
        self.persona_requests.get_or_create(&vec![("persona", persona.unwrap_or("-").to_owned())]).inc();
        self.prompt_tokens.inc_by(prompt as u64);
    }

    /// One generated token, `since` seconds after the request's arrival (first token) or
    /// after its previous token.
    pub fn token(&self, first: bool, since: f64) {
        self.completion_tokens.inc();
        if first { &self.first_token } else { &self.inter_token }.observe(since);
    }

    /// The text of `/metrics`, with the rows running and waiting as of now.
    pub fn render(&self, running: usize, waiting: usize) -> String {
        self.running.set(running as i64);
        self.waiting.set(waiting as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
