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
pub mod password;
mod report;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::events::EvidenceRenderer;
use crate::probes::Probes;

pub use config::LocalApiConfig;
pub use report::{
    CameraReport, DetectorReport, EventCounts, EventReport, ExplanationReport, MqttReport, Problem,
    SensorReport, StatusReport, StoreReport, TrackReport, UplinkReport,
};

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
    /// The admin password file holds neither an argon2id hash nor a SHA-256 (stop).
    #[error(
        "admin password file `{}` must hold the password's argon2id hash (edge-agent admin-password --out FILE)",
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

/// What the box page shows and how it behaves: the settings it is given, not the whole config.
#[derive(Debug, Clone)]
pub struct PageSettings {
    /// `[local_api]` (its defaults when the section is absent).
    pub local_api: LocalApiConfig,
    /// The cameras it lists and tests.
    pub cameras: Vec<crate::camera::config::CameraConfig>,
    /// The sensors it lists.
    pub sensors: Vec<crate::sensors::SensorConfig>,
    /// Where the store is and its quota (disk figures).
    pub store: crate::store::config::StoreConfig,
    /// How its snapshots are rendered.
    pub evidence: crate::events::config::EvidenceConfig,
}

impl LocalApi {
    /// Reads the admin password file and binds `settings.local_api.listen`.
    ///
    /// # Errors
    /// [`LocalApiError`] when the port is taken or the password file is unusable.
    pub async fn bind(settings: PageSettings, sources: Probes) -> Result<LocalApi, LocalApiError> {
        let local = &settings.local_api;
        let admin_password = match &local.admin_password_path {
            Some(path) => Some(password::AdminPassword::read(path)?),
            None => None,
        };
        let listener = server::bind(local.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| LocalApiError::Bind {
                addr: local.listen,
                source,
            })?;
        let ev = &settings.evidence;
        let renderer = EvidenceRenderer::new(
            ev.jpeg_quality,
            ev.privacy_blur,
            ev.blur_radius_px,
            Default::default(),
        );
        let state = Arc::new(server::ApiState {
            settings,
            sources,
            started: Instant::now(),
            admin_password,
            renderer,
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
        let local = &self.state.settings.local_api;
        let (max_connections, header_read_timeout) =
            (local.max_connections, local.header_read_timeout);
        let serve = serve_http(
            self.listener,
            server::router(self.state),
            max_connections,
            header_read_timeout,
            cancel.clone(),
        );
        tokio::join!(serve, sampler);
    }
}

/// Serves `app` over HTTP/1.1 until `cancel` fires, with at most `max_connections` at once
/// (more are closed as they arrive) and `header_read_timeout` for a request's head (a client
/// that opens connections and never finishes a request cannot hold the box page). Requests in
/// flight at `cancel` may finish for a few seconds.
///
/// (The hub's `api::server` does the same with TLS: the two binaries share no crate for it.)
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    max_connections: usize,
    header_read_timeout: std::time::Duration,
    cancel: CancellationToken,
) {
    use tower_service::Service as _;
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a box page connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::debug!(%peer, "box page connection over the limit closed");
            continue;
        };
        let Ok(service) = make.call(peer).await;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder.serve_connection(
                hyper_util::rt::TokioIo::new(tcp),
                hyper_util::service::TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "box page connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let drained =
        tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
    if drained.is_err() {
        tracing::warn!("box page connections still open at shutdown; closed");
    }
}
