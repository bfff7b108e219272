//! The hub's configuration file (TOML, one file given by `--config`).
//!
//! Every key is documented with its default; `config/example.toml` is complete and parsed by a
//! unit test. This module parses and validates; it must not open sockets or databases.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use protocol::Crs;
use serde::Deserialize;

use crate::api::TokenEntry;
use crate::cases::Role;
use crate::duties::DepartmentId;
use crate::grid::GridMapping;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Where the HTTP API listens. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub api_listen_addr: SocketAddr,
    /// The SQLite database file (created if missing).
    pub database_path: PathBuf,
    /// The grid (GeoJSON).
    pub grid_path: PathBuf,
    /// The responsibility list (CSV).
    pub duties_path: PathBuf,
    /// The work calendar (TOML).
    pub calendar_path: PathBuf,
    /// Grid import settings.
    #[serde(default)]
    pub grid: GridSection,
    /// Case settings.
    #[serde(default)]
    pub cases: CasesSection,
    /// Webhook delivery settings.
    #[serde(default)]
    pub webhooks: WebhooksSection,
    /// Departments that handle cases.
    #[serde(default)]
    pub departments: Vec<DepartmentConfig>,
    /// API tokens (hashed).
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// The QUIC ingest for edge boxes. Default: absent (no boxes served).
    #[serde(default)]
    pub ingest: Option<IngestSection>,
    /// The operator web console.
    #[serde(default)]
    pub console: ConsoleSection,
    /// Citizens' reports through Open311.
    #[serde(default)]
    pub open311: Open311Section,
    /// Serve the API over HTTPS with this certificate chain (PEM). Needs
    /// `api_tls_key_path`. Default none: plain HTTP (for a reverse proxy in front, or loopback).
    #[serde(default)]
    pub api_tls_cert_path: Option<PathBuf>,
    /// The key of `api_tls_cert_path` (PEM). Default none.
    #[serde(default)]
    pub api_tls_key_path: Option<PathBuf>,
    /// Limits of the API's HTTP server.
    #[serde(default)]
    pub http: HttpSection,
    /// How long evidence files and the ingest log are kept.
    #[serde(default)]
    pub retention: RetentionSection,
}

/// `[http]`: limits of the API's HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Connections served at once; more are closed as they arrive. Default 1024.
    pub max_connections: usize,
    /// A request's head (and a TLS handshake) must arrive within this. Default 10000.
    pub header_read_timeout_ms: u64,
    /// A handler must answer within this (live updates excepted). Default 30000.
    pub request_timeout_ms: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// `[open311]`: who may file citizens' reports, how fast, and what happens to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Open311Section {
    /// The client applications that may POST reports, each with its `api_key` stored as a
    /// SHA-256 hash (`hub token-hash`). Default none: POST is refused.
    pub clients: Vec<Open311Client>,
    /// Reports one client may file per minute (a minute's worth at once). Default 60.
    pub posts_per_min_per_key: u32,
    /// Reports one network address may file per minute. Default 10.
    pub posts_per_min_per_address: u32,
    /// The longest description taken, in characters (the specification's 4000). Default 4000.
    pub max_description_chars: usize,
    /// Citizens' reports wait in `reported` for an operator to accept (register) them, even in
    /// categories the duty list registers by itself. Default true.
    pub moderation: bool,
    /// Categories (codes or keys) whose reports skip moderation. Default none.
    pub unmoderated_categories: Vec<String>,
}

impl Default for Open311Section {
    fn default() -> Self {
        Open311Section {
            clients: Vec::new(),
            posts_per_min_per_key: 60,
            posts_per_min_per_address: 10,
            max_description_chars: 4000,
            moderation: true,
            unmoderated_categories: Vec::new(),
        }
    }
}

/// `[[open311.clients]]`: an application that files reports for citizens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open311Client {
    /// Its name (logs, metrics).
    pub name: String,
    /// SHA-256 (hex) of its `api_key`.
    pub api_key_sha256: String,
}

/// `[console]`: the operator web console served at `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// A map tile URL template (`http://tiles.local/{z}/{x}/{y}.png`) drawn under the grid.
    /// Default none: the console draws the grid alone and needs no tile server.
    pub tile_url: Option<String>,
    /// Attribution shown with the tiles. Default empty.
    pub tile_attribution: String,
}

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

/// `[grid]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridSection {
    /// Coordinate system of the grid file. Default `wgs84`.
    pub crs: Crs,
    /// Within this distance of a cell edge, neighbouring cells are recorded as candidates.
    /// Default 15.
    pub edge_distance_m: f64,
    /// Property names. Defaults: `code`, `name`, `level`, `parent`, `worker`.
    pub properties: GridMapping,
}

impl Default for GridSection {
    fn default() -> Self {
        GridSection {
            crs: Crs::Wgs84,
            edge_distance_m: 15.0,
            properties: GridMapping::default(),
        }
    }
}

/// `[cases]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CasesSection {
    /// Same-category events within this distance of an open case merge into it. Default 50.
    pub merge_radius_m: f64,
    /// ... and within this time of its latest observation. Default 1800.
    pub merge_window_secs: u64,
    /// Warn this long before a case's escalation time. Default 3600.
    pub warn_before_secs: u64,
    /// How often deadlines are checked. Default 60.
    pub deadline_check_interval_secs: u64,
    /// Case changes buffered for live listeners. Default 1024.
    pub change_buffer_len: usize,
    /// A camera re-check's answer verifies a handled case (no matching object left: passed;
    /// still there: rework). Default true.
    pub verify_by_recheck: bool,
    /// After a department's feedback on a case a camera raised, ask that camera to look again.
    /// Default true.
    pub recheck_on_feedback: bool,
    /// An event observed further ahead of its arrival than this (a box clock running fast) is
    /// given its arrival time; its own time is kept as a flag. Default 86400 (a day).
    pub max_future_secs: u64,
    /// The same for an event observed longer before its arrival than a box holds events while
    /// offline (a box clock reset). Default 2592000 (30 days).
    pub max_past_secs: u64,
    /// An event further than this from the grid area its box was registered in (`hub box add
    /// --grid`) flags its case `outside_box_area`; 0 turns the check off. Default 1000.
    pub box_area_margin_m: f64,
}

impl Default for CasesSection {
    fn default() -> Self {
        CasesSection {
            merge_radius_m: 50.0,
            merge_window_secs: 1800,
            warn_before_secs: 3600,
            deadline_check_interval_secs: 60,
            change_buffer_len: 1024,
            verify_by_recheck: true,
            recheck_on_feedback: true,
            max_future_secs: 86_400,
            max_past_secs: 30 * 86_400,
            box_area_margin_m: 1000.0,
        }
    }
}

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// Attempts per change, the first included, before it is given up on (recorded in the
    /// database's `webhook_failures`); 0 retries until the department accepts, its later
    /// changes waiting in order. Default 0.
    pub max_attempts: u32,
    /// Wait before the first retry, doubling after each. Default 500.
    pub first_retry_ms: u64,
    /// The longest wait between retries. Default 60000.
    pub max_retry_ms: u64,
    /// Per-attempt timeout. Default 5000.
    pub timeout_ms: u64,
    /// How often each delivery worker looks at the change outbox without being woken (changes
    /// made by another hub process). Default 1000.
    pub poll_interval_ms: u64,
    /// A CA certificate (PEM) trusted for `https://` webhooks besides the system's roots, e.g.
    /// the city's own. Default none.
    pub ca_path: Option<PathBuf>,
    /// How long recorded case changes are kept once every webhook is done with them.
    /// Default 2592000 (30 days).
    pub changes_retention_secs: u64,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        WebhooksSection {
            max_attempts: 0,
            first_retry_ms: 500,
            max_retry_ms: 60_000,
            timeout_ms: 5000,
            poll_interval_ms: 1000,
            ca_path: None,
            changes_retention_secs: 30 * 86_400,
        }
    }
}

/// `[retention]`: what the hub deletes after how long, counted in metrics
/// (`hub_ingest_evidence_expired_*`, `hub_ingest_log_pruned_*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Evidence files of a case closed or rejected more than this many days ago are deleted
    /// (the case and its events stay; the API answers 410 for the pictures). 0 keeps them
    /// forever. Default 0.
    pub evidence_days: u32,
    /// Bodies of delivered events in the ingest log (`ingest.db`) older than this many days are
    /// dropped: the cases hold the events; the log keeps each event's id and sequence number
    /// (duplicates and cloned stores are still recognised). 0 keeps them. Default 30.
    pub ingest_log_days: u32,
    /// How often the retention sweep runs. Default 3600.
    pub sweep_interval_secs: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            evidence_days: 0,
            ingest_log_days: 30,
            sweep_interval_secs: 3600,
        }
    }
}

/// `[[departments]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentConfig {
    /// The id used in the responsibility list and tokens.
    pub id: DepartmentId,
    /// Display name.
    pub name: String,
    /// `http://…` or `https://…` to POST case changes to. Default none.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// File holding the key of the webhook signature (Standard Webhooks): `whsec_<base64>`, or
    /// the key's bytes. Required with `webhook_url`.
    #[serde(default)]
    pub webhook_secret_path: Option<PathBuf>,
}

/// A configuration that failed validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not valid TOML of the expected shape.
    #[error("configuration is not valid")]
    Syntax(#[source] toml::de::Error),
    /// Cross-field problems, as `key.path: problem` lines.
    #[error("configuration is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl HubConfig {
    /// Parses and validates a configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming every problem.
    pub fn from_toml_str(text: &str) -> Result<HubConfig, ConfigError> {
        let cfg: HubConfig = toml::from_str(text).map_err(ConfigError::Syntax)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The set of department ids.
    pub fn department_ids(&self) -> HashSet<DepartmentId> {
        self.departments.iter().map(|d| d.id.clone()).collect()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let ids = self.department_ids();
        if ids.len() != self.departments.len() {
            problems.push("departments: an id is used twice".to_owned());
        }
        for (i, d) in self.departments.iter().enumerate() {
            match (&d.webhook_url, &d.webhook_secret_path) {
                (Some(url), Some(_))
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    problems.push(format!(
                        "departments[{i}].webhook_url: must be http:// or https://"
                    ));
                }
                (Some(_), None) => problems.push(format!(
                    "departments[{i}].webhook_secret_path: required with webhook_url"
                )),
                _ => {}
            }
        }
        if self.api_tls_cert_path.is_some() != self.api_tls_key_path.is_some() {
            problems.push(
                "api_tls_cert_path / api_tls_key_path: give both for HTTPS, or neither".into(),
            );
        }
        for (i, c) in self.open311.clients.iter().enumerate() {
            let h = &c.api_key_sha256;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!(
                    "open311.clients[{i}].api_key_sha256: expected 64 hex digits"
                ));
            }
        }
        for (i, name) in self.open311.unmoderated_categories.iter().enumerate() {
            if protocol::Catalog::embedded().resolve(name).is_none() {
                problems.push(format!(
                    "open311.unmoderated_categories[{i}]: unknown category `{name}`"
                ));
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token_sha256.len() != 64 || !t.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                problems.push(format!("tokens[{i}].token_sha256: expected 64 hex digits"));
            }
            if t.actor.role == Role::System {
                problems.push(format!("tokens[{i}].role: `system` is the hub's own"));
            }
            if t.actor.role == Role::Department
                && !ids.iter().any(|d| d.as_str() == t.actor.subject)
            {
                problems.push(format!(
                    "tokens[{i}].subject: unknown department `{}`",
                    t.actor.subject
                ));
            }
        }
        if let Some(ingest) = &self.ingest {
            if ingest.server_names.is_empty() {
                problems.push("ingest.server_names: name at least one".into());
            }
            if ingest.revocation_check_interval_secs == 0
                || ingest.revocation_check_interval_secs > 60
            {
                problems.push(
                    "ingest.revocation_check_interval_secs: must be 1 to 60 (revocation within 60 s)"
                        .into(),
                );
            }
            if ingest.certificate_lifetime_secs < 3600 {
                problems.push("ingest.certificate_lifetime_secs: at least 3600".into());
            }
            if ingest.handshake_rate_per_sec == 0 || ingest.max_pending_handshakes == 0 {
                problems.push(
                    "ingest.handshake_rate_per_sec / max_pending_handshakes: must be at least 1"
                        .into(),
                );
            }
        }
        if self.cases.merge_radius_m < 0.0 || self.grid.edge_distance_m < 0.0 {
            problems
                .push("cases.merge_radius_m / grid.edge_distance_m: must not be negative".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let cfg = HubConfig::from_toml_str(include_str!("../config/example.toml")).unwrap();
        assert_eq!(cfg.departments.len(), 5);
        assert_eq!(cfg.tokens.len(), 3);
        assert_eq!(cfg.cases.merge_radius_m, 50.0);
        let ingest = cfg.ingest.expect("the example has [ingest]");
        let defaults = IngestSection::new(ingest.data_dir.clone());
        assert_eq!(ingest.listen_addr, defaults.listen_addr);
        assert_eq!(ingest.server_names, defaults.server_names);
        assert_eq!(
            ingest.certificate_lifetime_secs,
            defaults.certificate_lifetime_secs
        );
        assert_eq!(
            ingest.revocation_check_interval_secs,
            defaults.revocation_check_interval_secs
        );
        assert_eq!(ingest.idle_timeout_ms, defaults.idle_timeout_ms);
        assert_eq!(ingest.max_frame_bytes, defaults.max_frame_bytes);
        assert_eq!(
            ingest.handshake_rate_per_sec,
            defaults.handshake_rate_per_sec
        );
        assert_eq!(
            ingest.max_pending_handshakes,
            defaults.max_pending_handshakes
        );
        assert_eq!(ingest.handoff_batch_events, defaults.handoff_batch_events);
    }

    #[test]
    fn unknown_keys_and_bad_tokens_are_refused() {
        let base = "database_path = \"a\"\ngrid_path = \"b\"\nduties_path = \"c\"\ncalendar_path = \"d\"\n";
        assert!(matches!(
            HubConfig::from_toml_str(&format!("{base}colour = 1\n")),
            Err(ConfigError::Syntax(_))
        ));
        let bad = format!(
            "{base}[[tokens]]\nname = \"x\"\ntoken_sha256 = \"12\"\nrole = \"department\"\nsubject = \"nobody\"\n"
        );
        let Err(ConfigError::Invalid(p)) = HubConfig::from_toml_str(&bad) else {
            panic!("expected invalid")
        };
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
