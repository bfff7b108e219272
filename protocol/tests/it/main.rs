//! Integration tests of the protocol crate's public API: round trips, hostile bytes, fixtures.

mod fixtures;
mod helpers;
mod roundtrip;
