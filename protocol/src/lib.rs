//! The shared vocabulary of Gridsense: what a box and the hub say to each other.
//!
//! - [`message`]: every message on the wire ([`Message`]) and the [`Event`] it carries;
//! - [`codec`]: MessagePack (named fields) in u32-length-prefixed frames with a maximum size;
//! - [`version`]: the protocol version, the ALPN name and the rule each side applies to a peer
//!   that speaks an older or newer version;
//! - [`ids`]: identifier newtypes, so that a bare `String` or `u64` never crosses a crate
//!   boundary as an id;
//! - [`catalog`]: the event category catalog (GB/T 30428.2 style), embedded as data.
//!
//! This crate must not do I/O, read clocks, spawn tasks or depend on any other workspace crate:
//! it turns values into bytes and bytes back into values, and nothing else. Sockets, QUIC streams
//! and files belong to `edge-agent` and `hub`.
#![warn(missing_docs)]

pub mod catalog;
pub mod codec;
pub mod ids;
pub mod message;
pub mod time;
pub mod version;

pub use catalog::{Catalog, CatalogError, Category, MajorClass};
pub use codec::{Codec, DEFAULT_MAX_FRAME_BYTES, DecodeError, EncodeError, FRAME_HEADER_BYTES};
pub use ids::{
    BoxId, CameraId, CategoryCode, CommandId, Digest, EventId, GridCode, IdError, SensorId, Seq,
    SourceId,
};
pub use message::*;
pub use time::Timestamp;
pub use version::{ALPN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, VersionMismatch, VersionRange};
