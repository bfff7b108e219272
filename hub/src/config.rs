//! The hub's configuration file (TOML, one file given by `--config`).
//!
//! Every key is documented with its default; `config/example.toml` is complete and parsed by a
//! unit test. This module parses and validates; it must not open sockets or databases.

use confcheck::Problem;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use protocol::Crs;
use serde::Deserialize;

pub use crate::api::open311::{Open311Client, Open311Section};
pub use crate::api::{ConsoleSection, TokenEntry};
use crate::cases::Role;
use crate::duties::DepartmentId;
use crate::grid::GridMapping;
pub use crate::ingest::IngestSection;
pub use crate::retention::RetentionSection;
use crate::storage::{DatabaseUrl, PoolSettings};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Where the HTTP API listens. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub api_listen_addr: SocketAddr,
    /// The SQLite database file (created if missing). Give this or `[database] url`.
    #[serde(default)]
    pub database_path: Option<PathBuf>,
    /// Where cases, events and their history are kept: a SQLite file or a PostgreSQL server
    /// that several hub processes share.
    #[serde(default)]
    pub database: DatabaseSection,
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

/// `[database]`: the database of cases, events, their history and the change outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `sqlite:///var/lib/hub/hub.db` or `postgres://user:password@host:5432/database`.
    /// Default none: `database_path` names the SQLite file.
    pub url: Option<String>,
    /// PostgreSQL connections this process keeps at most. Default 8.
    pub pool_size: u32,
    /// How long to wait for a PostgreSQL connection, and for the server at startup. Default
    /// 10000.
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            url: None,
            pool_size: 8,
            connect_timeout_ms: 10_000,
        }
    }
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
    /// Cross-field problems, each at its key path.
    #[error("configuration is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
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

    /// The case database: `[database] url`, else `database_path` (validation makes sure one
    /// of them is given and readable; an unreadable one is taken as the SQLite path it names).
    pub fn database_url(&self) -> DatabaseUrl {
        match (&self.database.url, &self.database_path) {
            (Some(url), _) => {
                DatabaseUrl::parse(url).unwrap_or_else(|_| DatabaseUrl::Sqlite(PathBuf::from(url)))
            }
            (None, Some(path)) => DatabaseUrl::Sqlite(path.clone()),
            (None, None) => DatabaseUrl::Sqlite(PathBuf::from("hub.db")),
        }
    }

    /// The case database's SQLite file, when it is one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self.database_url() {
            DatabaseUrl::Sqlite(path) => Some(path),
            DatabaseUrl::Postgres(_) => None,
        }
    }

    /// Where this hub keeps its boxes: its `[ingest] data_dir` and, on PostgreSQL, the
    /// database (which then holds the registry). `None` without `[ingest]` (a hub that serves
    /// no boxes has no registry).
    pub fn hub_data(&self) -> Option<crate::registry::HubData> {
        let dir = self.ingest.as_ref()?.data_dir.clone();
        let database = match self.database_url() {
            url @ DatabaseUrl::Postgres(_) => Some(url),
            DatabaseUrl::Sqlite(_) => None,
        };
        Some(crate::registry::HubData { dir, database })
    }

    /// The PostgreSQL pool settings.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            size: self.database.pool_size,
            connect_timeout: std::time::Duration::from_millis(self.database.connect_timeout_ms),
        }
    }

    /// The set of department ids.
    pub fn department_ids(&self) -> HashSet<DepartmentId> {
        self.departments.iter().map(|d| d.id.clone()).collect()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        match (&self.database.url, &self.database_path) {
            (Some(_), Some(_)) => problems.push(Problem::at(
                "database_path",
                "give either database_path or [database] url, not both",
            )),
            (None, None) => problems.push(Problem::at(
                "database_path",
                "missing: give database_path (a SQLite file) or [database] url",
            )),
            (Some(url), None) => {
                if let Err(e) = DatabaseUrl::parse(url) {
                    problems.push(Problem::at("database.url", e));
                }
            }
            (None, Some(_)) => {}
        }
        if !(1..=1000).contains(&self.database.pool_size) {
            problems.push(Problem::at(
                "database.pool_size",
                format!("{} is outside 1..=1000", self.database.pool_size),
            ));
        }
        if self.database.connect_timeout_ms == 0 {
            problems.push(Problem::at(
                "database.connect_timeout_ms",
                "must be at least 1",
            ));
        }
        let ids = self.department_ids();
        if ids.len() != self.departments.len() {
            problems.push(Problem::at("departments", "an id is used twice"));
        }
        for (i, d) in self.departments.iter().enumerate() {
            match (&d.webhook_url, &d.webhook_secret_path) {
                (Some(url), Some(_))
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    problems.push(Problem::at(
                        format!("departments[{i}].webhook_url"),
                        "must be http:// or https://",
                    ));
                }
                (Some(_), None) => problems.push(Problem::at(
                    format!("departments[{i}].webhook_secret_path"),
                    "required with webhook_url",
                )),
                _ => {}
            }
        }
        if self.api_tls_cert_path.is_some() != self.api_tls_key_path.is_some() {
            problems.push(Problem::at(
                "api_tls_cert_path / api_tls_key_path",
                "give both for HTTPS, or neither",
            ));
        }
        for (i, c) in self.open311.clients.iter().enumerate() {
            let h = &c.api_key_sha256;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(Problem::at(
                    format!("open311.clients[{i}].api_key_sha256"),
                    "expected 64 hex digits",
                ));
            }
        }
        for (i, name) in self.open311.unmoderated_categories.iter().enumerate() {
            if protocol::Catalog::embedded().resolve(name).is_none() {
                problems.push(Problem::at(
                    format!("open311.unmoderated_categories[{i}]"),
                    format!("unknown category `{name}`"),
                ));
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token_sha256.len() != 64 || !t.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                problems.push(Problem::at(
                    format!("tokens[{i}].token_sha256"),
                    "expected 64 hex digits",
                ));
            }
            if t.actor.role == Role::System {
                problems.push(Problem::at(
                    format!("tokens[{i}].role"),
                    "`system` is the hub's own",
                ));
            }
            if t.actor.role == Role::Department
                && !ids.iter().any(|d| d.as_str() == t.actor.subject)
            {
                problems.push(Problem::at(
                    format!("tokens[{i}].subject"),
                    format!("unknown department `{}`", t.actor.subject),
                ));
            }
        }
        if let Some(ingest) = &self.ingest {
            if ingest.server_names.is_empty() {
                problems.push(Problem::at("ingest.server_names", "name at least one"));
            }
            if ingest.revocation_check_interval_secs == 0
                || ingest.revocation_check_interval_secs > 60
            {
                problems.push(Problem::at(
                    "ingest.revocation_check_interval_secs",
                    "must be 1 to 60 (revocation within 60 s)",
                ));
            }
            if ingest.certificate_lifetime_secs < 3600 {
                problems.push(Problem::at(
                    "ingest.certificate_lifetime_secs",
                    "at least 3600",
                ));
            }
            if ingest.handshake_rate_per_sec == 0 || ingest.max_pending_handshakes == 0 {
                problems.push(Problem::at(
                    "ingest.handshake_rate_per_sec / max_pending_handshakes",
                    "must be at least 1",
                ));
            }
        }
        // Timer periods: a tokio interval adds its period to an `Instant`, and a period a clock
        // cannot add panics the task that runs it.
        for (key, secs) in [
            (
                "cases.deadline_check_interval_secs",
                self.cases.deadline_check_interval_secs,
            ),
            (
                "retention.sweep_interval_secs",
                self.retention.sweep_interval_secs,
            ),
        ] {
            if !(1..=MAX_TIMER_PERIOD_SECS).contains(&secs) {
                problems.push(Problem::at(
                    key,
                    format!("{secs} is outside 1..={MAX_TIMER_PERIOD_SECS} (a year)"),
                ));
            }
        }
        if self.cases.merge_radius_m < 0.0 || self.grid.edge_distance_m < 0.0 {
            problems.push(Problem::at(
                "cases.merge_radius_m / grid.edge_distance_m",
                "must not be negative",
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// The longest period of the hub's timers (deadline checks, retention sweeps): a year.
const MAX_TIMER_PERIOD_SECS: u64 = 365 * 86_400;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_a_sqlite_path_or_one_url_not_both() {
        let files = "grid_path = \"b\"\nduties_path = \"c\"\ncalendar_path = \"d\"\n";
        let keys = |text: &str| match HubConfig::from_toml_str(text) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => {
                problems.into_iter().map(|p| p.key).collect::<Vec<_>>()
            }
            Err(e) => panic!("{e}"),
        };
        let pg = format!("{files}[database]\nurl = \"postgres://hub:pw@db:5432/gridsense\"\n");
        let cfg = HubConfig::from_toml_str(&pg).unwrap();
        assert_eq!(
            cfg.database_url().kind(),
            crate::storage::EngineKind::Postgres
        );
        assert_eq!(cfg.sqlite_path(), None);
        let sqlite = format!("{files}[database]\nurl = \"sqlite:///var/lib/hub/hub.db\"\n");
        assert_eq!(
            HubConfig::from_toml_str(&sqlite).unwrap().sqlite_path(),
            Some(PathBuf::from("/var/lib/hub/hub.db"))
        );
        assert_eq!(keys(files), ["database_path"], "neither");
        assert_eq!(
            keys(&format!("database_path = \"a\"\n{pg}")),
            ["database_path"],
            "both"
        );
        assert_eq!(
            keys(&format!("{files}[database]\nurl = \"mysql://db/x\"\n")),
            ["database.url"]
        );
        assert_eq!(
            keys(&format!(
                "{files}[database]\nurl = \"sqlite:///a\"\npool_size = 0\n"
            )),
            ["database.pool_size"]
        );
    }

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

    /// A timer period beyond what a clock can add (`u64::MAX` seconds) panicked the task that
    /// runs it (tokio's interval adds it to an `Instant`), silently ending retention or the
    /// deadline checks; such periods are refused with their key instead.
    #[test]
    fn timer_periods_beyond_a_year_are_refused_naming_the_key() {
        let base = "database_path = \"a\"\ngrid_path = \"b\"\nduties_path = \"c\"\ncalendar_path = \"d\"\n";
        let text = format!(
            "{base}[retention]\nsweep_interval_secs = 18446744073709551615\n[cases]\ndeadline_check_interval_secs = 40000000\n"
        );
        let Err(ConfigError::Invalid(p)) = HubConfig::from_toml_str(&text) else {
            panic!("expected invalid")
        };
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].key == "cases.deadline_check_interval_secs", "{p:?}");
        assert!(p[1].key == "retention.sweep_interval_secs", "{p:?}");
    }
}
