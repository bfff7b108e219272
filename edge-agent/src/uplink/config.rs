//! `[uplink]` of the agent config. Each default is stated here and in `config/example.toml`.

use confcheck::Problem;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{IdentityPaths, Settings};

/// How the box reaches the hub.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The hub's ingest, `HOST:PORT`. Required.
    pub hub_addr: String,
    /// Further hub processes (`HOST:PORT` each) serving the same hub: when a session cannot be
    /// opened or is lost, the next address is tried (after the reconnect backoff), in the order
    /// `hub_addr`, then these; every address a name resolves to counts as one. Default none.
    #[serde(default)]
    pub hubs: Vec<String>,
    /// The name in the hub's server certificate. Default `gridsense-hub`.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// The hub CA certificate written by `edge-agent enroll`. Default
    /// `/var/lib/edge-agent/tls/ca.pem`.
    #[serde(default = "default_ca_path")]
    pub ca_path: PathBuf,
    /// The box certificate. Default `/var/lib/edge-agent/tls/box.pem`.
    #[serde(default = "default_cert_path")]
    pub cert_path: PathBuf,
    /// The box private key (made on the box, mode 0600). Default
    /// `/var/lib/edge-agent/tls/box.key`.
    #[serde(default = "default_key_path")]
    pub key_path: PathBuf,
    /// Most events in one batch. Default 500.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: u32,
    /// Most encoded bytes in one batch. Default 1048576.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: u64,
    /// Batches sent ahead of the hub's acknowledgement. Default 4.
    #[serde(default = "default_max_batches_in_flight")]
    pub max_batches_in_flight: u32,
    /// How often the store is checked for new events when nothing is pending. Default 100.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How often a health report goes to the hub. Default 15.
    #[serde(default = "default_health_interval_secs")]
    pub health_interval_secs: u64,
    /// Bandwidth budget for evidence uploads. Default 262144 (256 KiB/s).
    #[serde(default = "default_evidence_budget_bytes_per_sec")]
    pub evidence_budget_bytes_per_sec: u64,
    /// Evidence chunk size. Default 65536.
    #[serde(default = "default_evidence_chunk_bytes")]
    pub evidence_chunk_bytes: u32,
    /// First reconnect delay (doubling with jitter). Default 500.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay. Default 30000.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A session silent this long is dropped. Default 20000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Keep-alive interval within a session. Default 5000.
    #[serde(default = "default_keep_alive_interval_ms")]
    pub keep_alive_interval_ms: u64,
    /// Renew the certificate once this share of its lifetime has passed, in percent. Default 66.
    #[serde(default = "default_renew_at_lifetime_percent")]
    pub renew_at_lifetime_percent: u8,
}

impl UplinkConfig {
    /// A config with every default for a hub address and a TLS folder (tests, tools).
    pub fn new(hub_addr: impl Into<String>, tls_dir: &std::path::Path) -> UplinkConfig {
        let IdentityPaths {
            ca_path,
            cert_path,
            key_path,
        } = IdentityPaths::in_dir(tls_dir);
        UplinkConfig {
            hub_addr: hub_addr.into(),
            hubs: Vec::new(),
            server_name: default_server_name(),
            ca_path,
            cert_path,
            key_path,
            batch_max_events: default_batch_max_events(),
            batch_max_bytes: default_batch_max_bytes(),
            max_batches_in_flight: default_max_batches_in_flight(),
            poll_interval_ms: default_poll_interval_ms(),
            health_interval_secs: default_health_interval_secs(),
            evidence_budget_bytes_per_sec: default_evidence_budget_bytes_per_sec(),
            evidence_chunk_bytes: default_evidence_chunk_bytes(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            keep_alive_interval_ms: default_keep_alive_interval_ms(),
            renew_at_lifetime_percent: default_renew_at_lifetime_percent(),
        }
    }

    /// Every hub address, `hub_addr` first, each once.
    pub fn hub_addrs(&self) -> Vec<String> {
        let mut all = vec![self.hub_addr.clone()];
        for h in &self.hubs {
            if !all.contains(h) {
                all.push(h.clone());
            }
        }
        all
    }

    /// The identity files.
    pub fn identity(&self) -> IdentityPaths {
        IdentityPaths {
            ca_path: self.ca_path.clone(),
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
        }
    }

    /// Cross-field problems as `uplink.key: problem` lines.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if !self.hub_addr.contains(':') {
            p.push(Problem::at("uplink.hub_addr", "expected HOST:PORT"));
        }
        for (i, h) in self.hubs.iter().enumerate() {
            if !h.contains(':') {
                p.push(Problem::at(
                    format!("uplink.hubs[{i}]"),
                    format!("`{h}`: expected HOST:PORT"),
                ));
            }
        }
        if self.batch_max_events == 0 || self.max_batches_in_flight == 0 {
            p.push(Problem::at(
                "uplink.batch_max_events / max_batches_in_flight",
                "must be at least 1",
            ));
        }
        if self.batch_max_bytes > u64::from(protocol::DEFAULT_MAX_FRAME_BYTES) / 2 {
            p.push(Problem::at(
                "uplink.batch_max_bytes",
                format!(
                    "at most {} (half the hub's default frame limit)",
                    protocol::DEFAULT_MAX_FRAME_BYTES / 2
                ),
            ));
        }
        if self.keep_alive_interval_ms >= self.idle_timeout_ms {
            p.push(Problem::at(
                "uplink.keep_alive_interval_ms",
                "must be below idle_timeout_ms",
            ));
        }
        if !(10..=95).contains(&self.renew_at_lifetime_percent) {
            p.push(Problem::at(
                "uplink.renew_at_lifetime_percent",
                "must be 10 to 95",
            ));
        }
        if self.evidence_chunk_bytes == 0 || self.evidence_chunk_bytes > 1024 * 1024 {
            p.push(Problem::at(
                "uplink.evidence_chunk_bytes",
                "must be 1 to 1048576",
            ));
        }
        p
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            hub_addrs: self.hub_addrs(),
            server_name: self.server_name.clone(),
            identity: self.identity(),
            batch_max_events: self.batch_max_events.max(1) as usize,
            batch_max_bytes: self.batch_max_bytes.max(1024) as usize,
            max_batches_in_flight: self.max_batches_in_flight.max(1) as usize,
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(1)),
            health_interval: Duration::from_secs(self.health_interval_secs.max(1)),
            evidence_budget_bytes_per_sec: self.evidence_budget_bytes_per_sec.max(1),
            evidence_chunk_bytes: self.evidence_chunk_bytes.clamp(1, 1024 * 1024) as usize,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms.max(1)),
            backoff_max: Duration::from_millis(self.backoff_max_ms.max(1)),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(100)),
            keep_alive_interval: Duration::from_millis(self.keep_alive_interval_ms.max(50)),
            renew_at_fraction: f64::from(self.renew_at_lifetime_percent.clamp(10, 95)) / 100.0,
            max_frame_bytes: protocol::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

fn default_server_name() -> String {
    "gridsense-hub".into()
}
fn default_ca_path() -> PathBuf {
    "/var/lib/edge-agent/tls/ca.pem".into()
}
fn default_cert_path() -> PathBuf {
    "/var/lib/edge-agent/tls/box.pem".into()
}
fn default_key_path() -> PathBuf {
    "/var/lib/edge-agent/tls/box.key".into()
}
fn default_batch_max_events() -> u32 {
    500
}
fn default_batch_max_bytes() -> u64 {
    1024 * 1024
}
fn default_max_batches_in_flight() -> u32 {
    4
}
fn default_poll_interval_ms() -> u64 {
    100
}
fn default_health_interval_secs() -> u64 {
    15
}
fn default_evidence_budget_bytes_per_sec() -> u64 {
    256 * 1024
}
fn default_evidence_chunk_bytes() -> u32 {
    64 * 1024
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    20_000
}
fn default_keep_alive_interval_ms() -> u64 {
    5_000
}
fn default_renew_at_lifetime_percent() -> u8 {
    66
}
