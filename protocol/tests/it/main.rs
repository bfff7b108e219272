//! Integration tests of the protocol crate's public API: round trips, hostile bytes, fixtures.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod fixtures;
mod helpers;
mod roundtrip;
