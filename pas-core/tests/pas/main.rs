//! pas-core integration tests: one binary.

mod algebra;
mod calibrate;
mod common;
mod fitting;
mod probes;
mod search;
mod toy_model;
