//! The agent's configuration: one TOML file (`--config`, default `/etc/edge-agent/edge-agent.toml`).
//!
//! Parsing does the type checks (unknown keys are refused, durations are whole seconds in `_secs`
//! keys, sizes are bytes in `_bytes` keys); [`Config::validate`] then applies the cross-field rules
//! and reports every problem at once as `key.path: problem` lines. Each default is stated on its
//! field and in `edge-agent/config/example.toml`, which a unit test parses.
//!
//! This module reads no environment variable and opens no file other than the one it is given; it
//! does not create the data folder (the store does, at start-up).

use confcheck::Problem;
use std::fmt;
use std::path::{Path, PathBuf};

use hardware::board::Board;
use protocol::{Crs, GridCode, Location};
use serde::Deserialize;

use crate::sensors::{MqttConfig, SensorConfig, SensorsConfig};

use crate::camera::config::{CameraConfig, DetectorConfig};

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the box stands; stamped on events the box raises about itself (e.g. data loss).
    pub site: SiteConfig,
    /// The durable event store.
    #[serde(default)]
    pub store: StoreConfig,
    /// The event builder: cooldown and evidence.
    #[serde(default)]
    pub events: EventsConfig,
    /// The kind of box (`generic-x86`, `intel-vaapi`, `jetson`, `rk3588`): picks the video
    /// decoder and the inference execution provider. Default `generic-x86`.
    #[serde(default)]
    pub board: Board,
    /// The detector shared by every camera.
    #[serde(default)]
    pub detector: DetectorConfig,
    /// Cameras with their zones and rules. Default: none.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// The box's MQTT broker (`[mqtt]`), for sensors.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Sensors on the broker (`[[sensors]]`) and their rules.
    #[serde(default)]
    pub sensors: Vec<SensorConfig>,
    /// The uplink to the hub (QUIC, mutual TLS). Default: absent (events stay on the box).
    #[serde(default)]
    pub uplink: Option<crate::uplink::UplinkConfig>,
    /// The box page and its JSON API (`[local_api]`). Default: absent (no page).
    #[serde(default)]
    pub local_api: Option<crate::status::LocalApiConfig>,
    /// Prometheus `/metrics` (`[metrics]`). Default: absent (no listener).
    #[serde(default)]
    pub metrics: Option<crate::metrics::MetricsConfig>,
}

/// The box's location.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Latitude in degrees. Required.
    pub lat: f64,
    /// Longitude in degrees. Required.
    pub lon: f64,
    /// Coordinate system of `lat`/`lon`: `wgs84` (default), `gcj02` or `bd09`.
    #[serde(default)]
    pub crs: Crs,
    /// The grid code (6, 9, 12 or 14 digits) stamped on events of this box. Default: none (the hub
    /// matches the location).
    #[serde(default)]
    pub grid: Option<GridCode>,
}

impl SiteConfig {
    /// The site as a wire [`Location`].
    pub fn location(&self) -> Location {
        Location {
            lat: self.lat,
            lon: self.lon,
            crs: self.crs,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML of the expected shape (unknown key, wrong type, ...).
    #[error("config `{origin}` does not parse")]
    Parse {
        /// The file name, or what the text came from.
        origin: String,
        /// Why, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// Cross-field rules failed: one line per problem, `key.path: problem`.
    #[error("config `{origin}` is invalid:\n{}", Lines(.problems))]
    Invalid {
        /// The file name, or what the text came from.
        origin: String,
        /// Each problem at its key path.
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            source: Box::new(e),
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }

    /// The `[mqtt]` and `[[sensors]]` sections together, as the sensors stage takes them.
    pub fn sensors_config(&self) -> SensorsConfig {
        SensorsConfig {
            mqtt: self.mqtt.clone(),
            sensors: self.sensors.clone(),
        }
    }

    /// Every cross-field problem, each at its key path (empty when the config is usable).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = self.sensors_config().problems();
        if let Some(uplink) = &self.uplink {
            problems.extend(uplink.problems());
        }
        if let Some(local_api) = &self.local_api {
            problems.extend(local_api.problems());
        }
        let site = self.site.location();
        if !site.is_valid() {
            problems.push(Problem::at(
                "site.lat/site.lon",
                format!(
                    "({}, {}) is not a point on earth",
                    self.site.lat, self.site.lon
                ),
            ));
        }
        problems.extend(self.store.problems());
        problems.extend(self.events.problems());
        problems.extend(crate::camera::config::problems(&self.cameras));
        for (i, sensor) in self.sensors.iter().enumerate() {
            if let Some(cam) = &sensor.camera
                && !self.cameras.iter().any(|c| &c.id == cam)
            {
                problems.push(Problem::at(
                    format!("sensors[{i}].camera"),
                    format!("`{cam}` is not the id of any [[cameras]] entry"),
                ));
            }
        }
        problems
    }
}

struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {line}")?;
        }
        Ok(())
    }
}

// Sections deserialize `_secs`/`_ms` keys with `confcheck::units` (shared with `vision`).
pub use crate::events::config::{EventsConfig, EvidenceConfig};
pub use crate::store::config::{MIN_QUOTA_BYTES, StoreConfig};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const EXAMPLE: &str = include_str!("../config/example.toml");

    #[test]
    fn example_config_parses_and_validates() {
        let config = Config::from_toml_str(EXAMPLE, "example.toml").unwrap();
        assert_eq!(config.store.quota_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(config.store.retention, Duration::from_secs(604_800));
        assert_eq!(config.events.cooldown, Duration::from_secs(300));
        assert_eq!(
            config.site.grid.as_ref().map(GridCode::as_str),
            Some("11010100100101")
        );
        assert_eq!(config.events.evidence.unblurred_categories.len(), 1);
    }

    #[test]
    fn example_config_states_every_default() {
        // The example spells out each default, so parsing it must equal the built-in defaults.
        let config = Config::from_toml_str(EXAMPLE, "example.toml").unwrap();
        let mut store = config.store.clone();
        store.data_dir = StoreConfig::default().data_dir;
        assert_eq!(store, StoreConfig::default());
        assert_eq!(config.events.cooldown, EventsConfig::default().cooldown);
        let mut ev = config.events.evidence.clone();
        ev.unblurred_categories.clear();
        assert_eq!(ev, EvidenceConfig::default());
        assert_eq!(
            config.local_api,
            Some(crate::status::LocalApiConfig::default())
        );
    }

    #[test]
    fn local_api_problems_name_their_keys() {
        let text = r#"
            [site]
            lat = 1.0
            lon = 2.0
            [local_api]
            admin_password_path = "relative/pw"
            sensor_stale_secs = 0
        "#;
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_toml_str(text, "t") else {
            panic!("expected an invalid config");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "local_api.admin_password_path",
                "local_api.sensor_stale_secs"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "[site]\nlat = 1.0\nlon = 2.0\n[store]\nquota = 5\n";
        assert!(matches!(
            Config::from_toml_str(text, "t"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn validate_reports_every_problem_with_its_key_path() {
        let text = r#"
            [site]
            lat = 91.0
            lon = 2.0
            [store]
            data_dir = "relative/dir"
            quota_bytes = 10
            queue_capacity = 4
            max_batch = 8
            [events.evidence]
            jpeg_quality = 0
            blur_radius_px = 0
            unblurred_categories = ["emergency.person_fallen", "0508", "9999"]
        "#;
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_toml_str(text, "t") else {
            panic!("expected an invalid config");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "site.lat/site.lon",
                "store.data_dir",
                "store.quota_bytes",
                "store.max_batch",
                "events.evidence.jpeg_quality",
                "events.evidence.blur_radius_px",
                "events.evidence.unblurred_categories[1]",
                "events.evidence.unblurred_categories[2]",
            ]
        );
    }
}
