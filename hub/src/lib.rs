//! The Gridsense hub: accepts events from enrolled boxes, matches them to grid cells, routes them
//! by the responsibility list and runs each case around the closed loop.
//!
//! `main.rs` only parses the command line and calls into this library, so that tests drive the
//! same code in-process. This crate depends on `protocol` only: it learns about boxes, cameras and
//! models from messages, never from edge-side crates.
//!
//! Modules are layered, lowest first (checked by `tests/tests/module_layers.rs`): leaves
//! (`clock`, `telemetry`, `random`, `rate`, `web`, `grid`, `storage`), `duties`, `cases` (with its
//! database, `cases::db`), `registry`/`assess`/`systemd`, `ingest`, `api`/`retention`, `config`
//! (composes the sections, each defined next to the code that uses it), and `serve`, `checks`,
//! `commands` on top.
#![warn(missing_docs)]

pub mod api;
pub mod assess;
pub mod backup;
pub mod cases;
pub mod checks;
pub mod clock;
pub mod commands;
pub mod config;
pub mod doctor;
pub mod duties;
pub mod grid;
pub mod ingest;
pub mod migrate;
pub mod random;
mod rate;
pub mod registry;
pub mod retention;
pub mod serve;
pub mod sink;
pub mod storage;
pub mod systemd;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod web;

/// The case database, kept at its old path for tools and tests (it lives with the cases).
pub use cases::db;
