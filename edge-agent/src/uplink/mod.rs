//! The uplink: store-and-forward from the box's event store to the hub over QUIC with mutual TLS.
//!
//! - [`Uplink`]: built from [`UplinkConfig`] and a [`Store`], run until cancelled. Each session
//!   sends `Hello` (with the last acknowledged sequence number), takes the hub's `Welcome`
//!   (which says what the hub already committed), then streams `EventBatch`es of pending events
//!   in sequence order (bounded by count and bytes, a few in flight) and marks events synced in
//!   the store only on the hub's `Ack`. Evidence the hub asks for goes on its own streams at a
//!   lower priority, resumable by SHA-256 and offset, under a bandwidth budget. `Health` goes
//!   every `health_interval_secs`. Commands are answered (unknown ones as unsupported). The
//!   certificate is renewed over the session before it expires.
//! - What a session knows about delivery (next, acknowledged, in flight, exhausted, renewal
//!   drain) is `window::SyncWindow`, pure and property-tested; `session` is the pump around it
//!   (frames through `wire::pump`).
//! - Reconnects use exponential backoff with jitter. The mode ([`UplinkMode`]: offline,
//!   catching up, connected, revoked) with the backlog and the age of the oldest unsynced event
//!   is published on a watch channel ([`UplinkStatus`]), so "connected but not syncing" shows;
//!   each change of mode is logged once.
//! - `enroll`: the one-time enrollment with a token (see `crate::enroll`).
//!
//! This module must not decide what an event is, nor write events: it reads pending events and
//! records acknowledgements, nothing else, so the store stays the single source of truth.

mod backoff;
mod config;
mod probe;
mod session;
pub(crate) mod tls;
mod window;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::{Command, CommandResult, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

pub use config::UplinkConfig;
pub use probe::{HubProbe, probe_hub};
pub(crate) use tls::validity as cert_validity;
pub use tls::{IdentityPaths, install_identity};

/// How the uplink stands. Shown as written in snake case (`catching_up`) on the status page,
/// in its JSON and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkMode {
    /// No `[uplink]` in the config: the box keeps its events and sends nothing.
    Disabled,
    /// No session with the hub (never connected, link down, or refused).
    Offline,
    /// In session, with events still to deliver.
    CatchingUp,
    /// In session, nothing pending.
    Connected,
    /// The hub said this box is revoked; retrying slowly in case it is re-enrolled.
    Revoked,
}

impl UplinkMode {
    /// The name the status page, its JSON and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkMode::Disabled => "disabled",
            UplinkMode::Offline => "offline",
            UplinkMode::CatchingUp => "catching_up",
            UplinkMode::Connected => "connected",
            UplinkMode::Revoked => "revoked",
        }
    }

    /// Whether a session with the hub is open.
    pub fn in_session(self) -> bool {
        matches!(self, UplinkMode::CatchingUp | UplinkMode::Connected)
    }
}

impl std::fmt::Display for UplinkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the status page and health reports show about the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkStatus {
    /// The mode.
    pub mode: UplinkMode,
    /// Events committed but not yet acknowledged by the hub.
    pub backlog_events: u64,
    /// When the oldest unacknowledged event was observed.
    pub oldest_unsynced_at: Option<Timestamp>,
    /// The highest sequence number the hub acknowledged.
    pub acked_seq: u64,
    /// Sessions opened since start.
    pub sessions_total: u64,
    /// Why the last session ended or failed, for a human.
    pub last_error: Option<String>,
    /// The QUIC round-trip time of the current session (none while offline).
    pub rtt: Option<Duration>,
}

/// A command for the box's camera side, with where to send the result.
#[derive(Debug)]
pub struct CommandRequest {
    /// The command (only actions this build knows are forwarded).
    pub command: Command,
    /// The answer.
    pub reply: oneshot::Sender<CommandResult>,
}

/// Everything the uplink can fail at. Session failures are retried with backoff inside
/// [`Uplink::run`]; only start-up errors return from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UplinkError {
    /// An identity file is missing or does not parse.
    #[error("identity file `{}` is unusable: {detail}", path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("failed to access `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be configured.
    #[error("tls configuration failed")]
    Tls(#[from] rustls::Error),
    /// A key or CSR could not be made.
    #[error("failed to make a key or CSR")]
    Key(#[from] rcgen::Error),
    /// The hub address does not resolve.
    #[error("hub address `{0}` does not resolve")]
    Resolve(String),
    /// The QUIC endpoint could not be made.
    #[error("failed to open a UDP socket")]
    Socket(#[source] std::io::Error),
    /// The connection could not be made or was lost.
    #[error("connection to the hub failed")]
    Connect(#[from] quinn::ConnectError),
    /// The connection was lost.
    #[error("connection to the hub lost")]
    Connection(#[from] quinn::ConnectionError),
    /// The hub broke the protocol or closed the session.
    #[error("hub session ended: {0}")]
    Session(String),
    /// The store failed.
    #[error("event store failed")]
    Store(#[from] StoreError),
    /// Enrollment was refused.
    #[error("enrollment refused ({reason:?}): {message}")]
    Refused {
        /// The hub's code.
        reason: protocol::EnrollRefusal,
        /// The hub's words.
        message: String,
    },
    /// An enrollment token that is not `gs1-<64 hex>-<32 hex>`.
    #[error(
        "enrollment token is malformed (expected gs1-<64 hex>-<32 hex>, as `hub box add` prints it)"
    )]
    BadToken,
    /// The hub did not answer in time.
    #[error("the hub did not answer within {0:?}")]
    Timeout(Duration),
    /// A renewed certificate from the hub failed a check; the working one is kept.
    #[error("the renewed certificate is unusable: {0}")]
    BadRenewal(String),
}

/// Settings derived from the config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `hub_addr`, then `hubs`.
    pub(crate) hub_addrs: Vec<String>,
    pub(crate) server_name: String,
    pub(crate) identity: IdentityPaths,
    pub(crate) batch_max_events: usize,
    pub(crate) batch_max_bytes: usize,
    pub(crate) max_batches_in_flight: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) health_interval: Duration,
    pub(crate) evidence_budget_bytes_per_sec: u64,
    pub(crate) evidence_chunk_bytes: usize,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive_interval: Duration,
    pub(crate) renew_at_fraction: f64,
    pub(crate) max_frame_bytes: u32,
}

/// Reports the state of the box's cameras and sensors for the health messages.
pub type ComponentsFn = Arc<dyn Fn() -> Vec<protocol::ComponentHealth> + Send + Sync>;

/// A wall clock (tests move it to bring a certificate into its renewal window).
pub use crate::clock::Clock;

/// The uplink stage.
pub struct Uplink {
    settings: Settings,
    store: Store,
    status_tx: watch::Sender<UplinkStatus>,
    commands_tx: Option<mpsc::Sender<CommandRequest>>,
    components: Option<ComponentsFn>,
    started: std::time::Instant,
    /// The wall clock renewal decisions read.
    clock: Clock,
    /// When this process last installed a renewed certificate (monotonic), so the next renewal
    /// is timed by elapsed time, not by a box clock that may be far off the hub's.
    last_renewal: std::sync::Mutex<Option<std::time::Instant>>,
    /// The session TLS config, kept across sessions for resumption.
    session_configs: tls::SessionConfigCache,
}

impl Uplink {
    /// Builds the stage. Identity files are read at each connection (renewal replaces them), so
    /// a box that is not enrolled yet starts and stays offline, buffering.
    pub fn from_config(config: &UplinkConfig, store: Store) -> Uplink {
        let settings = config.settings();
        let (status_tx, _) = watch::channel(UplinkStatus {
            mode: UplinkMode::Offline,
            backlog_events: 0,
            oldest_unsynced_at: None,
            acked_seq: 0,
            sessions_total: 0,
            last_error: None,
            rtt: None,
        });
        Uplink {
            settings,
            store,
            status_tx,
            commands_tx: None,
            components: None,
            started: std::time::Instant::now(),
            clock: Arc::new(now),
            last_renewal: std::sync::Mutex::new(None),
            session_configs: tls::SessionConfigCache::default(),
        }
    }

    /// Reads the wall clock from `clock` for renewal decisions (default: the system clock). The
    /// TLS handshake still checks the hub's certificate against the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Uplink {
        self.clock = clock;
        self
    }

    /// Sends known commands (recheck) to `commands_tx`; without it they are answered as failed
    /// ("no camera pipeline"). Unknown commands are always answered as unsupported.
    #[must_use]
    pub fn with_commands(mut self, commands_tx: mpsc::Sender<CommandRequest>) -> Uplink {
        self.commands_tx = Some(commands_tx);
        self
    }

    /// Reports `components()` (cameras, sensors) in every health message.
    #[must_use]
    pub fn with_components(mut self, components: ComponentsFn) -> Uplink {
        self.components = Some(components);
        self
    }

    /// The status channel.
    pub fn status(&self) -> watch::Receiver<UplinkStatus> {
        self.status_tx.subscribe()
    }

    /// Runs sessions with the hub until `cancel` fires; between them, waits with backoff.
    ///
    /// # Errors
    /// [`UplinkError::Socket`] when no UDP socket can be opened.
    ///
    /// # Cancel safety
    /// Cancel through `cancel`: the session says `Bye` and closes with an app close code.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), UplinkError> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .map_err(UplinkError::Socket)?;
        let seed = std::process::id() as u64 ^ self.started.elapsed().as_nanos() as u64;
        let mut backoff = backoff::Backoff::new(
            self.settings.backoff_initial,
            self.settings.backoff_max,
            seed,
        );
        let mut last_logged: Option<String> = None;
        // Which of the hub's addresses the next session goes to; moves on when a session fails
        // or ends without delivering anything (so a dead hub process is left for the next).
        let mut turn = 0usize;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let outcome = match resolve_all(&self.settings.hub_addrs).await {
                Ok(addrs) => {
                    let addr = addrs[turn % addrs.len()];
                    let outcome = session::run(&self, &endpoint, addr, &cancel).await;
                    let stay = matches!(
                        &outcome,
                        Ok(session::End::Renewed
                            | session::End::Lost {
                                progressed: true,
                                ..
                            })
                    );
                    if !stay && addrs.len() > 1 {
                        turn = turn.wrapping_add(1);
                        tracing::debug!(stage = "uplink", next = %addrs[turn % addrs.len()], "trying the next hub address");
                    }
                    outcome
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(session::End::Shutdown) => break,
                Ok(session::End::Renewed) => {
                    // Straight back with the new certificate; nothing went wrong.
                    backoff.reset();
                    last_logged = None;
                    continue;
                }
                Ok(session::End::Revoked) => {
                    self.set_mode(UplinkMode::Revoked, Some("revoked by the hub".into()));
                    if last_logged.as_deref() != Some("revoked") {
                        tracing::error!(
                            stage = "uplink",
                            "the hub revoked this box; buffering until it is re-enrolled"
                        );
                        last_logged = Some("revoked".into());
                    }
                    backoff = backoff::Backoff::new(
                        self.settings.backoff_max,
                        self.settings.backoff_max,
                        seed,
                    );
                }
                Ok(session::End::Lost { progressed, why }) => {
                    if progressed {
                        backoff.reset();
                    }
                    self.set_mode(UplinkMode::Offline, Some(why.clone()));
                    if last_logged.as_deref() != Some(why.as_str()) {
                        tracing::warn!(stage = "uplink", reason = %why, "hub unreachable, buffering");
                        last_logged = Some(why);
                    }
                }
                Err(e) => {
                    let why = chain(&e);
                    self.set_mode(UplinkMode::Offline, Some(why.clone()));
                    if last_logged.as_deref() != Some(why.as_str()) {
                        tracing::warn!(stage = "uplink", error = %why, "hub unreachable, buffering");
                        last_logged = Some(why);
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.set_mode(UplinkMode::Offline, None);
        endpoint.close(0u32.into(), b"agent stopping");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok(())
    }

    /// Publishes the mode (and why the last session failed, when given); a change of mode is
    /// logged once, in the style of bytebeamio/uplink, so the log tells the link's story.
    fn set_mode(&self, mode: UplinkMode, error: Option<String>) {
        self.publish(mode, |s| {
            if error.is_some() {
                s.last_error = error;
            }
        });
    }

    /// Publishes `mode` with what `update` changes, in one notification of the status
    /// channel; logs a change of mode.
    fn publish(&self, mode: UplinkMode, update: impl FnOnce(&mut UplinkStatus)) {
        let mut was = mode;
        self.status_tx.send_modify(|s| {
            was = s.mode;
            s.mode = mode;
            if !mode.in_session() {
                s.rtt = None;
            }
            update(s);
        });
        if was != mode {
            tracing::info!(stage = "uplink", from = %was, to = %mode, "uplink mode changed");
        }
    }

    pub(crate) fn transport(&self) -> Arc<quinn::TransportConfig> {
        transport(
            self.settings.idle_timeout,
            self.settings.keep_alive_interval,
        )
    }
}

pub(crate) fn transport(idle: Duration, keep_alive: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t.keep_alive_interval(Some(keep_alive));
    t.stream_receive_window(quinn::VarInt::from_u32(4 * 1024 * 1024));
    t.send_window(16 * 1024 * 1024);
    Arc::new(t)
}

pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    crate::telemetry::chain(err)
}

/// The first address `addr` resolves to.
pub(crate) async fn resolve(addr: &str) -> Result<SocketAddr, UplinkError> {
    resolve_all(&[addr])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| UplinkError::Resolve(addr.to_owned()))
}

/// Every address the hub names resolve to, in the order given (each once); names that do not
/// resolve now are left out. Resolved again before each session, so a DNS change is followed.
async fn resolve_all(names: &[impl AsRef<str>]) -> Result<Vec<SocketAddr>, UplinkError> {
    let mut all = Vec::new();
    for name in names.iter().map(AsRef::as_ref) {
        match tokio::net::lookup_host(name).await {
            Ok(addrs) => {
                for a in addrs {
                    if !all.contains(&a) {
                        all.push(a);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(stage = "uplink", hub = %name, error = %e, "hub address does not resolve")
            }
        }
    }
    if all.is_empty() {
        let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        return Err(UplinkError::Resolve(names.join(", ")));
    }
    Ok(all)
}

pub(crate) use crate::clock::now;
