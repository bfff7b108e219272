//! Knowledge of devices as data and pure code: board profiles, camera source specs rendered to
//! GStreamer pipeline descriptions, sensor payload profiles, host probes, and (in `sim` only)
//! simulators for demos and tests.
//!
//! This crate must not run inference, open databases or know anything of the hub.
#![warn(missing_docs)]
