//! The `[local_api]` section: where the box page and its JSON API listen, and the technician's
//! admin password.

use confcheck::Problem;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The `[local_api]` section. Absent: no page, no local API (the default, so that several agents
/// on one machine, as in tests, never fight over a port).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalApiConfig {
    /// Address the page and the API listen on. Default `127.0.0.1:8089` (only the box itself;
    /// `0.0.0.0:8089` lets a technician's laptop on the box's LAN in).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File holding the SHA-256 (64 hex digits) of the local admin password
    /// (`printf %s 'the password' | sha256sum`). Signing in with it unlocks the page's actions
    /// (reconnect a camera). Default: none (read-only; no sign-in).
    #[serde(default)]
    pub admin_password_path: Option<PathBuf>,
    /// A sensor without an `offline` rule counts as stale after this much silence (a sensor with
    /// one uses its `expected_interval_secs` × `factor`). Default 900 s.
    #[serde(
        default = "default_sensor_stale",
        rename = "sensor_stale_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub sensor_stale: Duration,
    /// How long a sign-in lasts. Default 8 h.
    #[serde(
        default = "default_session",
        rename = "session_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub session: Duration,
    /// Host names the page answers to besides IP addresses and `localhost` (e.g. the box's own
    /// name on the LAN, `box-12.local`). A request naming another host is refused: a web page
    /// elsewhere cannot reach the box through a name of its own (DNS rebinding). Default none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; more are closed as they arrive. Default 32.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request's head must arrive within this. Default 10 s.
    #[serde(
        default = "default_header_read_timeout",
        rename = "header_read_timeout_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub header_read_timeout: Duration,
}

impl Default for LocalApiConfig {
    fn default() -> Self {
        LocalApiConfig {
            listen: default_listen(),
            admin_password_path: None,
            sensor_stale: default_sensor_stale(),
            session: default_session(),
            allowed_hosts: Vec::new(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
        }
    }
}

impl LocalApiConfig {
    /// Cross-field problems as `local_api.key: problem` lines.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(path) = &self.admin_password_path
            && !path.is_absolute()
        {
            problems.push(Problem::at(
                "local_api.admin_password_path",
                format!("`{}` must be an absolute path", path.display()),
            ));
        }
        if self.sensor_stale.is_zero() {
            problems.push(Problem::at(
                "local_api.sensor_stale_secs",
                "must be at least 1",
            ));
        }
        if self.session.is_zero() {
            problems.push(Problem::at("local_api.session_secs", "must be at least 1"));
        }
        problems
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8089))
}

fn default_sensor_stale() -> Duration {
    Duration::from_secs(900)
}

fn default_session() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_max_connections() -> usize {
    32
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
