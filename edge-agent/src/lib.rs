//! The Gridsense edge agent: runs on a community edge box, watches cameras and sensors, raises
//! events with evidence into a durable local store and syncs them to the hub.
//!
//! `main.rs` only parses the command line and calls into this library, so that tests drive the
//! same code in-process. This crate must not depend on the hub: the two meet only through
//! `protocol` on the wire.
#![warn(missing_docs)]

pub mod agent;
pub mod camera;
pub mod checks;
mod clock;
pub mod config;
pub mod detect;
pub mod enroll;
pub mod events;
pub mod fusion;
pub mod metrics;
pub mod recheck;
pub mod sensors;
pub mod status;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod uplink;
