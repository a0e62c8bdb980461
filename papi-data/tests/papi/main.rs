//! papi-data integration tests: one binary (see the workspace README, "Build").
#![allow(clippy::print_stderr)] // tests say on stderr when they skip for lack of data

mod common;
mod dev_data;
mod properties;
mod release;
mod validation;
mod workflow;
