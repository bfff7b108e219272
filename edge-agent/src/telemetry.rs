//! Logging set-up and error-chain formatting for the agent's commands (shared with the other binary
//! in `wire::telemetry`).
//!
//! Only `main.rs` calls [`init`]; library code logs through `tracing` macros and never installs a
//! subscriber.

pub use wire::telemetry::{chain, init};
