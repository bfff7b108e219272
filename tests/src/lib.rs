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

/// The wall clock now, as a protocol timestamp (what the hub and the agent stamp events with).
///
/// # Panics
/// When the system clock is before 1970.
#[must_use]
pub fn now() -> protocol::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is after 1970")
        .as_millis();
    protocol::Timestamp::from_unix_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}
