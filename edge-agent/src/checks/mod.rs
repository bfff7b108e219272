//! Installer and technician tools: `check-config`, `doctor`, `test-camera` and `test-sensor`.
//!
//! - [`config`]: every problem of a config file at once, or the validated config redacted;
//! - `toml_problems`: collecting all type and key problems of a TOML file, and redaction.
//!
//! These tools look at the box and report; they never change the store, the config or the
//! enrollment, and they never run the agent's stages.

pub mod config;
mod toml_problems;

pub use toml_problems::Problem;
