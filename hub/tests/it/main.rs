//! Integration tests of the hub through its public surface.

mod cases;
mod cli;
mod grid;
mod helpers;
