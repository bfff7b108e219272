//! The Gridsense edge agent: runs on a community edge box, watches cameras and sensors, raises
//! events with evidence into a durable local store and syncs them to the hub.
//!
//! `main.rs` only parses the command line and calls into this library, so that tests drive the
//! same code in-process. This crate must not depend on the hub: the two meet only through
//! `protocol` on the wire.
//!
//! Modules are layered, lowest first (checked by `tests/tests/module_layers.rs`): leaves
//! (`clock`, `telemetry`, `detect`), `store`, `uplink`, `events`, the sources (`camera`,
//! `sensors`), what reads them (`fusion`, `recheck`, `status`), `metrics`, `config` (composes
//! each stage's own section), and the wiring (`agent`, `checks`). A stage is built from its own
//! section and the facts it needs, never from the whole config. The pure vision core (tracker,
//! zones, rules) is the `vision` crate.
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
pub mod probes;
pub mod recheck;
pub mod sensors;
pub mod status;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod uplink;
