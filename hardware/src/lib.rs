//! Knowledge of devices as data and pure code: board profiles, camera source specs rendered to
//! GStreamer pipeline descriptions, sensor payload profiles, host probes, and (in `sim` only)
//! simulators for demos and tests.
//!
//! - [`board`]: board profiles (decoders, execution provider);
//! - [`camera`]: camera source specs rendered to GStreamer pipeline descriptions;
//! - [`sensor`]: MQTT payload profiles (zigbee2mqtt, Tasmota, generic JSON) that turn a message
//!   into readings;
//! - [`sim`]: virtual devices and scenarios for demos and tests.
//!
//! This crate must not run inference, open databases or know anything of the hub; outside `sim`
//! it does no I/O at all.
#![warn(missing_docs)]

pub mod board;
pub mod camera;
pub mod sensor;
pub mod sim;
