//! What the box (`edge-agent`) and the hub share at run time, beside the I/O-free `protocol`:
//!
//! - [`frame`]: protocol frames read from and written to quinn streams;
//! - [`pump`]: the control stream's reader and writer tasks (a stream half's reads and writes
//!   are not cancel safe, so each lives in a task of its own behind a bounded channel);
//! - [`clock`]: the wall clock as a wire timestamp, injectable for tests;
//! - [`telemetry`]: logging set-up and one-line error chains;
//! - [`systemd`]: `Type=notify` readiness and a watchdog that pets only while a probe answers.
//!
//! This crate must not know what a box or a hub does with a message: no store, no cases, no
//! config. `protocol` stays I/O-free; what needs quinn or tokio and is the same on both sides
//! lives here.

pub mod clock;
pub mod frame;
pub mod pump;
pub mod systemd;
pub mod telemetry;
