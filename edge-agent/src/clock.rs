//! The box's wall clock as a wire timestamp (`wire::clock`): the one place the agent reads it.
//! Pure cores take `now` as an argument instead; only the thin run loops call this, and the
//! uplink reads a [`Clock`] that tests replace.

pub use wire::clock::Clock;
pub(crate) use wire::clock::now;
