//! Harness for Gridsense's end-to-end tests: helpers that run real processes and components.
//!
//! Production code never depends on this crate.
#![warn(missing_docs)]

pub mod binaries;
pub mod browser;
pub mod fault_proxy;
pub mod http;
pub mod layers;
pub mod media;
pub mod mosquitto;
pub mod postgres;
pub mod process;
pub mod workspace;

pub use binaries::binary;
pub use mosquitto::free_port;

/// Copies the folder `from` into `to` (created), recursively: a test's copy of a data folder or a
/// source tree to change.
///
/// # Errors
/// When a folder cannot be read or a file copied.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The value of the sample `name` (with its labels, if any, as written) in a Prometheus text
/// exposition: `metric_value(text, "hub_ingest_conflicts_total")`.
#[must_use]
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The wall clock now, as a protocol timestamp (what the hub and the agent stamp events with).
///
/// # Panics
/// When the system clock is before 1970.
#[must_use]
pub fn now() -> protocol::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is after 1970")
        .as_millis();
    protocol::Timestamp::from_unix_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// How long a test waits for what takes well under a second on an idle machine (a frame, an
/// event, a subscription): long enough for a machine running every test at once.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The test site: a point in Suzhou's Gusu district, where the demo city's grid lies.
pub const SITE: protocol::Location = protocol::Location {
    lat: 31.2989,
    lon: 120.5853,
    crs: protocol::Crs::Wgs84,
};

/// The `[site]` section of a box config at [`SITE`].
pub fn site_toml() -> String {
    format!("[site]\nlat = {}\nlon = {}\n", SITE.lat, SITE.lon)
}

/// How often [`wait_for`], [`wait_until`] and [`wait_blocking`] look again.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs `check` until it returns `Some` (looking again every 50 ms), and returns that; fails
/// with an error naming `what` once `timeout` has passed without it (a check still running
/// then is abandoned).
///
/// # Errors
/// When `timeout` passes first.
pub async fn wait_for<T, F, Fut>(
    timeout: std::time::Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, check()).await {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {timeout:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`wait_for`] for a thread outside an async runtime (a test driving processes): blocks,
/// looking again every 50 ms.
///
/// # Errors
/// When `timeout` passes first.
pub fn wait_blocking<T>(
    timeout: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{what}: not seen within {timeout:?}"
        );
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`wait_for`] with a check that does not wait itself.
///
/// # Errors
/// When `timeout` passes first.
pub async fn wait_until<T>(
    timeout: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    wait_for(timeout, what, || std::future::ready(check())).await
}
