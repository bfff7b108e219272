//! The `[store]` section: where events and evidence live and how much room they may take. Types,
//! defaults and the section's own checks; the agent's `config` composes it.

use confcheck::Problem;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use confcheck::units;

/// The smallest quota accepted: room for a few evidence snapshots.
pub const MIN_QUOTA_BYTES: u64 = 1024 * 1024;

/// The `[store]` section: where events and evidence live and how much room they may take.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Folder holding `events.db` and `evidence/`. Default `/var/lib/edge-agent`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Hard limit on the store's accounted bytes (event records plus evidence files). When a
    /// commit would exceed it, the store evicts in its declared order. Default 2 GiB.
    #[serde(default = "default_quota_bytes")]
    pub quota_bytes: u64,
    /// How long events the hub has acknowledged are kept on the box. Default 7 days.
    #[serde(
        default = "default_retention",
        rename = "retention_secs",
        deserialize_with = "units::secs"
    )]
    pub retention: Duration,
    /// Submissions that may wait for the writer thread before `submit` blocks (backpressure).
    /// Default 4096.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: NonZeroU32,
    /// Most submissions committed in one transaction (group commit). Default 1024.
    #[serde(default = "default_max_batch")]
    pub max_batch: NonZeroU32,
    /// How long a connection waits on a lock before failing. Default 5 s.
    #[serde(
        default = "default_busy_timeout",
        rename = "busy_timeout_secs",
        deserialize_with = "units::secs"
    )]
    pub busy_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: default_data_dir(),
            quota_bytes: default_quota_bytes(),
            retention: default_retention(),
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            busy_timeout: default_busy_timeout(),
        }
    }
}

impl StoreConfig {
    /// The section's problems, as `store.key: problem` lines.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let store = self;
        if store.data_dir.as_os_str().is_empty() {
            problems.push(Problem::at("store.data_dir", "must not be empty"));
        } else if store.data_dir.is_relative() {
            problems.push(Problem::at(
                "store.data_dir",
                format!("`{}` must be an absolute path", store.data_dir.display()),
            ));
        }
        if store.quota_bytes < MIN_QUOTA_BYTES {
            problems.push(Problem::at(
                "store.quota_bytes",
                format!(
                    "{} is below the minimum of {MIN_QUOTA_BYTES}",
                    store.quota_bytes
                ),
            ));
        }
        if store.max_batch.get() > store.queue_capacity.get() {
            problems.push(Problem::at(
                "store.max_batch",
                format!(
                    "{} is larger than store.queue_capacity ({})",
                    store.max_batch, store.queue_capacity
                ),
            ));
        }
        problems
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/edge-agent")
}

fn default_quota_bytes() -> u64 {
    2 * 1024 * 1024 * 1024
}

fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_queue_capacity() -> NonZeroU32 {
    NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN)
}

fn default_max_batch() -> NonZeroU32 {
    NonZeroU32::new(1024).unwrap_or(NonZeroU32::MIN)
}

fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}
