//! Deserializers for unit-suffixed config keys: whole seconds (`_secs`) and milliseconds (`_ms`)
//! into `Duration`, shared by every section of both binaries' configuration (used with
//! `#[serde(deserialize_with = "confcheck::units::secs")]`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `_secs` keys.
///
/// # Errors
/// When the value is not a non-negative integer.
pub fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

/// Optional `_secs` keys.
///
/// # Errors
/// When the value is not a non-negative integer.
pub fn opt_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(|s| s.map(Duration::from_secs))
}

/// `_ms` keys.
///
/// # Errors
/// When the value is not a non-negative integer.
pub fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}
