//! Integration tests of the hub through its public surface.

// Fixture builders and harness methods outside `#[test]` functions unwrap too: a panic there is
// a broken fixture, which is exactly what the test should report.
#![allow(clippy::unwrap_used)]

mod api;
mod assess;
mod cases;
mod cli;
mod doctor;
mod grid;
mod helpers;
mod serve;
