//! Integration tests of the hub through its public surface.

mod cli;
mod grid;
mod helpers;
