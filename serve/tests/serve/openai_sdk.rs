//! The official `openai` Python SDK as the client. Its venv is `.cache/openai-venv` (`.ci/run`
//! makes it: `python3 -m venv .cache/openai-venv && .cache/openai-venv/bin/pip install
//! openai==3.60.0`), or the Python in `OPENAI_PYTHON`. Without it the test says it skipped,
//! unless `REQUIRE_OPENAI_SDK=1` (set by CI), where it fails.

use std::path::{Path, PathBuf};

use serde_json::Value;
use serve::ServerConfig;

use crate::common::*;

/// The Python with the `openai` package, if there is one.
fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = std::env::var_os("OPENAI_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".cache/openai-venv/bin/python"));
    if p.exists() {
        return Some(p);
    }
    assert!(std::env::var_os("REQUIRE_OPENAI_SDK").is_none(), "REQUIRE_OPENAI_SDK is set but {} does not exist", p.display());
    eprintln!("skipped: the openai SDK test needs {} (python3 -m venv .cache/openai-venv && .cache/openai-venv/bin/pip install openai==3.60.0)", p.display());
    None
}

#[test]
fn the_openai_sdk_gets_answers_streams_and_its_own_exception_types() {
    let Some(python) = python() else { return };
    let f = start_with(ServerConfig { model_id: "tiny".into(), max_tokens: 2000, default_max_tokens: 24, max_batch: 1, max_waiting: 0, ..Default::default() });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_client.py");
    let out = std::process::Command::new(python).arg(script).arg(&f.url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (text, _, finish) = expected(&f, "Hi", Some("alice"), 12);
    assert_eq!(got["whole"], text.as_str(), "{got}");
    assert_eq!(got["stream"], text.as_str(), "{got}");
    assert_eq!((got["whole_finish"].as_str(), got["stream_finish"].as_str()), (Some(finish.as_str()), Some(finish.as_str())));
    assert_eq!(got["bad_temperature"], serde_json::json!(["BadRequestError", 400, "invalid_temperature"]));
    assert_eq!(got["no_persona"], serde_json::json!(["NotFoundError", 404, "persona_not_found"]));
    assert_eq!(got["full"], serde_json::json!(["RateLimitError", 429, "rate_limit_exceeded"]));
}
