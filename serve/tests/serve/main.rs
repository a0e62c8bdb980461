//! The server over real HTTP on 127.0.0.1 with real clients (ureq, and the `openai` Python
//! SDK where its venv is present), on the tiny random model.
#![allow(clippy::print_stderr)] // the SDK test says on stderr when it skips for lack of its venv

mod common;
mod http;
mod openai_sdk;
mod traffic;
