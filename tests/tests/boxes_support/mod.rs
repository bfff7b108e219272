//! Enrolling test boxes with a hub the way an installer does: a one-time token from the hub's
//! registry (`hub box add`), then `edge-agent enroll` against the hub's ingest port. One helper
//! for every test, whether the hub runs in-process (`sync_support`) or as a process
//! (`hub_support`), both of which include this file. (Not in the `e2e` library, which does not
//! link the binaries' crates: the simulators built from it stay small.)

// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::path::Path;

use anyhow::Context as _;
use edge_agent::uplink::{IdentityPaths, UplinkConfig};
use protocol::{BoxId, Timestamp};

/// The ingest's TLS server name in tests (the `[ingest] server_names` default).
pub(crate) const HUB_SERVER_NAME: &str = "gridsense-hub";

/// Registers box `id` in the registry of the hub whose data folder is `hub_data`, and returns
/// its one-time enrollment token (valid for an hour from `now`).
///
/// # Errors
/// A bad id, or a registry that cannot be opened or written.
pub(crate) fn add_box(
    hub_data: &Path,
    id: &str,
    label: Option<&str>,
    now: Timestamp,
) -> anyhow::Result<String> {
    let box_id = BoxId::parse(id).with_context(|| format!("box id `{id}`"))?;
    let token = hub::registry::admin::box_add(hub_data, &box_id, label, None, 3600, now)
        .with_context(|| {
            format!(
                "adding box `{id}` to the registry in {}",
                hub_data.display()
            )
        })?;
    Ok(token.trim().to_owned())
}

/// Enrolls with `token` at the hub's ingest `addr` (`host:port`); the identity files land in
/// `tls_dir` under their usual names.
///
/// # Errors
/// When the hub refuses or cannot be reached.
pub(crate) async fn enroll(
    addr: &str,
    token: &str,
    tls_dir: &Path,
) -> anyhow::Result<IdentityPaths> {
    let paths = IdentityPaths::in_dir(tls_dir);
    edge_agent::enroll::enroll(addr, HUB_SERVER_NAME, token, &paths)
        .await
        .with_context(|| format!("enrolling at {addr}"))?;
    Ok(paths)
}

/// [`add_box`] then [`enroll`]: box `id` enrolled with the hub whose data folder is `hub_data`
/// and whose ingest listens at `addr`.
///
/// # Errors
/// As theirs.
pub(crate) async fn add_and_enroll(
    hub_data: &Path,
    addr: &str,
    id: &str,
    tls_dir: &Path,
    now: Timestamp,
) -> anyhow::Result<IdentityPaths> {
    let token = add_box(hub_data, id, None, now)?;
    enroll(addr, &token, tls_dir).await
}

/// The uplink of a test box enrolled into `tls_dir`, sending to `hub_addr`, with timers short
/// enough for tests: a lost hub noticed within 1.5 s, reconnects after 50–500 ms, the store
/// looked at every 20 ms.
pub(crate) fn quick_uplink(hub_addr: &str, tls_dir: &Path) -> UplinkConfig {
    let mut config = UplinkConfig::new(hub_addr, tls_dir);
    config.idle_timeout_ms = 1500;
    config.keep_alive_interval_ms = 300;
    config.backoff_initial_ms = 50;
    config.backoff_max_ms = 500;
    config.poll_interval_ms = 20;
    config
}
