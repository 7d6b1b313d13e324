//! Hot path of the Ensemble gateway: SSE framing, rate counters, API-key table.
//!
//! The core modules are plain Rust; the PyO3 binding layer below is compiled only with the
//! `python` feature, so `cargo test` runs without a Python interpreter.

pub mod keys;
pub mod ratelimit;
pub mod sse;

#[cfg(feature = "python")]
mod bindings;
