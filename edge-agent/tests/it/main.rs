//! Integration tests of the edge agent, through its public API only.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod crash;
mod detect;
mod disk_full;
mod events;
mod helpers;
mod pixels;
mod store;
