//! Installer and technician tools: `check-config`, `doctor`, `test-camera` and `test-sensor`.
//!
//! - [`camera`]: `test-camera`, one camera tried alone with the detector;
//! - [`config`]: every problem of a config file at once, or the validated config redacted;
//! - [`doctor`]: is the box healthy (config, clock, ONNX Runtime and model, cameras, broker,
//!   hub, disk), as a table with what to do;
//! - [`sensor`]: `test-sensor`, a topic's messages decoded live by a payload profile;
//!
//! Collecting every problem of a TOML file and redaction live in the `confcheck` crate, shared
//! with the hub's `check-config`.
//!
//! These tools look at the box and report; they never change the store, the config or the
//! enrollment, and they never run the agent's stages.

pub mod camera;
pub mod config;
pub mod doctor;
pub mod sensor;

pub use confcheck::Problem;
