//! The `[ingest]` section: where boxes enroll and deliver events, and the limits that protect the
//! listener. Types and defaults; the hub's `config` composes it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[ingest]`: where boxes enroll and deliver events (QUIC, mutual TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// UDP address to listen on. Default `0.0.0.0:4433`.
    #[serde(default = "default_ingest_listen")]
    pub listen_addr: SocketAddr,
    /// The hub data folder made by `hub init` (CA, registry, ingest log, evidence). Required.
    pub data_dir: PathBuf,
    /// DNS names or addresses in the server certificate; boxes connect with the first.
    /// Default `["gridsense-hub"]`.
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// Lifetime of box certificates (boxes renew at two thirds). Default 2592000 (30 days).
    #[serde(default = "default_certificate_lifetime_secs")]
    pub certificate_lifetime_secs: u64,
    /// How often revocations are picked up from the registry. Default 10.
    #[serde(default = "default_revocation_check_interval_secs")]
    pub revocation_check_interval_secs: u64,
    /// A connection silent this long is closed. Default 30000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Largest frame accepted from a box. Default 4194304.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Above this many handshakes per second, unvalidated addresses get a Retry. Default 1000.
    #[serde(default = "default_handshake_rate_per_sec")]
    pub handshake_rate_per_sec: u32,
    /// Connections not yet authenticated (handshaking or enrolling) above which new ones get a
    /// Retry or are refused; boxes in session are not affected. Default 256.
    #[serde(default = "default_max_pending_handshakes")]
    pub max_pending_handshakes: usize,
    /// The same from one address (a box reconnecting behind a shared NAT address still gets
    /// in; a flood from one address does not fill the hub). Default 32.
    #[serde(default = "default_max_pending_per_address")]
    pub max_pending_per_address: usize,
    /// A QUIC handshake not done within this is dropped, giving its slot back. Default 5000.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Connections without a certificate (they may only enroll) past their handshake at once;
    /// more are closed at once, and they never hold the handshake slots boxes need. Default 16.
    #[serde(default = "default_max_enrolling")]
    pub max_enrolling: usize,
    /// The same from one address. Default 2.
    #[serde(default = "default_max_enrolling_per_address")]
    pub max_enrolling_per_address: usize,
    /// A connection without a certificate must have sent its enrollment within this.
    /// Default 5000.
    #[serde(default = "default_enroll_timeout_ms")]
    pub enroll_timeout_ms: u64,
    /// Events handed on to the cases per round. Default 256.
    #[serde(default = "default_handoff_batch_events")]
    pub handoff_batch_events: usize,
    /// The largest evidence file a box may declare; larger ones are refused, never uploaded.
    /// Default 8388608 (8 MiB).
    #[serde(default = "default_max_evidence_bytes")]
    pub max_evidence_bytes: u64,
    /// Events a box may deliver per second (a burst of a second's worth on top); a faster box
    /// is slowed down, each event held back counted. Default 500.
    #[serde(default = "default_max_events_per_sec")]
    pub max_events_per_sec: u32,
    /// Health reports a box may send per minute; more are dropped and counted. Default 30.
    #[serde(default = "default_max_health_per_min")]
    pub max_health_per_min: u32,
}

impl IngestSection {
    /// The section with every default, for a data folder.
    pub fn new(data_dir: PathBuf) -> IngestSection {
        IngestSection {
            listen_addr: default_ingest_listen(),
            data_dir,
            server_names: default_server_names(),
            certificate_lifetime_secs: default_certificate_lifetime_secs(),
            revocation_check_interval_secs: default_revocation_check_interval_secs(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_frame_bytes: default_max_frame_bytes(),
            handshake_rate_per_sec: default_handshake_rate_per_sec(),
            max_pending_handshakes: default_max_pending_handshakes(),
            max_pending_per_address: default_max_pending_per_address(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            max_enrolling: default_max_enrolling(),
            max_enrolling_per_address: default_max_enrolling_per_address(),
            enroll_timeout_ms: default_enroll_timeout_ms(),
            handoff_batch_events: default_handoff_batch_events(),
            max_evidence_bytes: default_max_evidence_bytes(),
            max_events_per_sec: default_max_events_per_sec(),
            max_health_per_min: default_max_health_per_min(),
        }
    }
}

fn default_ingest_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4433))
}
fn default_server_names() -> Vec<String> {
    vec!["gridsense-hub".to_owned()]
}
fn default_certificate_lifetime_secs() -> u64 {
    30 * 86_400
}
fn default_revocation_check_interval_secs() -> u64 {
    10
}
fn default_idle_timeout_ms() -> u64 {
    30_000
}
fn default_max_frame_bytes() -> u32 {
    protocol::DEFAULT_MAX_FRAME_BYTES
}
fn default_handshake_rate_per_sec() -> u32 {
    1000
}
fn default_max_pending_handshakes() -> usize {
    256
}
fn default_max_pending_per_address() -> usize {
    32
}
fn default_handshake_timeout_ms() -> u64 {
    5000
}
fn default_max_enrolling() -> usize {
    16
}
fn default_max_enrolling_per_address() -> usize {
    2
}
fn default_enroll_timeout_ms() -> u64 {
    5000
}
fn default_handoff_batch_events() -> usize {
    256
}
fn default_max_evidence_bytes() -> u64 {
    8 << 20
}
fn default_max_events_per_sec() -> u32 {
    500
}
fn default_max_health_per_min() -> u32 {
    30
}
