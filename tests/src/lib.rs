//! Harness for Gridsense's end-to-end tests: helpers that run real processes and components.
//!
//! Production code never depends on this crate.
#![warn(missing_docs)]

pub mod binaries;
pub mod browser;
pub mod fault_proxy;
pub mod media;
pub mod mosquitto;
pub mod workspace;

pub use binaries::binary;
