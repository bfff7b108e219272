//! The box's technician page and local API: what a technician standing next to the box needs to
//! see at a glance (is every camera decoding, every sensor reporting, the link syncing, the disk
//! holding?), served over HTTP on the `[local_api]` address, and the `edge-agent status` CLI that
//! reads the same JSON.
//!
//! - [`LocalApi`]: bind with [`LocalApi::bind`] (in `Agent::start`, so a taken port fails the
//!   start), then [`LocalApi::run`] until the agent's cancel fires;
//! - [`StatusReport`]: the JSON of `GET /api/status`;
//! - [`cli`]: `edge-agent status [--json] [--url URL]`.
//!
//! The page is one HTML, CSS and JS file built into the binary; it loads nothing from anywhere
//! else (a Content-Security-Policy says so to the browser) and polls `/api/status`.
//!
//! Read-only unless signed in with the box's local admin password; the one action behind it is a
//! camera reconnect. This module must not write events or change the store, and must not stall
//! a stage: it only reads their shared counters and store snapshots (on the blocking pool).

pub mod cli;
mod config;
mod report;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agent::EventsStats;
use crate::camera::CameraStats;
use crate::config::Config;
use crate::events::EvidenceRenderer;
use crate::sensors::SensorStats;
use crate::store::Store;
use crate::uplink::UplinkStatus;

pub use config::LocalApiConfig;
pub use report::{
    CameraReport, DetectorReport, EventCounts, EventReport, ExplanationReport, MqttReport, Problem,
    SensorReport, StatusReport, StoreReport, TrackReport, UplinkReport,
};

/// What the page reads: the stages' shared counters and the store.
#[derive(Debug, Clone)]
pub struct StatusSources {
    /// The event store.
    pub store: Store,
    /// The cameras (none when none are configured).
    pub cameras: Option<CameraStats>,
    /// The sensors (none when none are configured).
    pub sensors: Option<Arc<Mutex<SensorStats>>>,
    /// The events stage.
    pub events: Arc<EventsStats>,
    /// The uplink's status (none without `[uplink]`).
    pub uplink: Option<watch::Receiver<UplinkStatus>>,
}

/// Why the local API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalApiError {
    /// The listen address is taken or not the box's (stop: fix `local_api.listen`).
    #[error("failed to listen on `{addr}` (local_api.listen)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin password file cannot be read (stop).
    #[error("failed to read the admin password file `{}` (local_api.admin_password_path)", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin password file does not hold a SHA-256 (stop).
    #[error(
        "admin password file `{}` must hold the password's SHA-256 as 64 hex digits (printf %s PASSWORD | sha256sum)",
        path.display()
    )]
    PasswordHash {
        /// The file.
        path: PathBuf,
    },
}

/// The local HTTP server, bound and ready to run.
pub struct LocalApi {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<server::ApiState>,
}

impl std::fmt::Debug for LocalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl LocalApi {
    /// Reads the admin password file and binds `local_api.listen`. `config.local_api` must be
    /// set (the default section otherwise).
    ///
    /// # Errors
    /// [`LocalApiError`] when the port is taken or the password file is unusable.
    pub async fn bind(config: &Config, sources: StatusSources) -> Result<LocalApi, LocalApiError> {
        let local = config.local_api.clone().unwrap_or_default();
        let password_sha256 = match &local.admin_password_path {
            Some(path) => Some(server::read_password_hash(path)?),
            None => None,
        };
        let listener = server::bind(local.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| LocalApiError::Bind {
                addr: local.listen,
                source,
            })?;
        let ev = &config.events.evidence;
        let state = Arc::new(server::ApiState {
            config: config.clone(),
            sources,
            started: Instant::now(),
            password_sha256,
            renderer: EvidenceRenderer::new(
                ev.jpeg_quality,
                ev.privacy_blur,
                ev.blur_radius_px,
                Default::default(),
            ),
            rates: Mutex::new(server::Rates::default()),
            sessions: Mutex::new(HashMap::new()),
        });
        Ok(LocalApi {
            listener,
            addr,
            state,
        })
    }

    /// The address it listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `cancel` fires, then lets in-flight requests finish.
    ///
    /// # Cancel safety
    /// Stop it through `cancel`, not by dropping it.
    pub async fn run(self, cancel: CancellationToken) {
        let sampler = server::sample_rates(Arc::clone(&self.state), cancel.clone());
        tracing::info!(addr = %self.addr, "box page listening");
        let shutdown = cancel.clone();
        let serve = async move {
            let served = axum::serve(self.listener, server::router(self.state))
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "box page server failed");
            }
        };
        tokio::join!(serve, sampler);
    }
}
