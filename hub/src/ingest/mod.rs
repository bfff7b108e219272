//! The QUIC ingest: where enrolled boxes deliver events, evidence and health, and where the hub
//! sends them commands.
//!
//! - [`IngestServer`]: one quinn endpoint with mutual TLS (ALPN [`protocol::ALPN`], TLS 1.3,
//!   0-RTT off, resumption by stateless tickets, ring only). A connection with a certificate of
//!   the hub's CA is a box session: the box id comes from the certificate's CN, never from a
//!   payload. A connection without a certificate may only enroll (one `EnrollRequest` with a
//!   one-time token).
//! - Admission (`conn::HandshakeGate`): above `handshake_rate_per_sec`, or with
//!   `max_pending_handshakes` connections not yet authenticated (in all, or
//!   `max_pending_per_address` from one address), an address QUIC has not validated gets a
//!   Retry (stateless, so spoofed floods cost the hub nothing); a validated one is refused while
//!   a limit holds. A handshake must finish within `handshake_timeout_ms`. Failed handshakes (a
//!   certificate of another CA, an expired one) are counted. Enrolled boxes with a live session
//!   are not affected.
//! - Connections without a certificate leave the handshake slots as soon as their handshake is
//!   done, for an enrolling pool of their own (`max_enrolling`, `max_enrolling_per_address`;
//!   beyond it they are closed at once), and must send their enrollment within
//!   `enroll_timeout_ms`: however many of them connect and wait, the slots boxes need to
//!   reconnect are not theirs to hold.
//! - Expiry: a box certificate is checked against the hub clock at the handshake, again when a
//!   session opens (a resumed TLS session carries the certificate of its first handshake), and
//!   during the session: an expired one ends the session, and the box reconnects with its
//!   renewed certificate.
//! - Delivery: each `EventBatch` (queued batches are coalesced) is committed to the
//!   [`IngestLog`] in one transaction and only then acknowledged; the log is idempotent on
//!   `(box, seq)`. A hand-off task gives each committed event once to the [`EventSink`] (the
//!   cases), marking it after, so a crash repeats a hand-off that the sink ignores as a duplicate.
//! - Revocation: the registry is polled every `revocation_check_interval_secs`; a revoked box's
//!   live connection is told `Bye { Revoked }` and closed, and new ones are refused. A session
//!   asks the registry whether its box is enrolled only the first time this process sees the
//!   box; later sessions open on the revoked set alone (a reconnect costs no registry lookup).
//! - Where: the log and the evidence are files of the data folder on SQLite, and tables of the
//!   database every hub process shares on PostgreSQL (see `log` and `evidence`), so a box may
//!   reconnect to any process, even mid-batch or mid-upload.
//! - A session's rules (version and epoch, expiry and revocation, coalescing and order, rate
//!   limits, command answers) are `session::BoxSession`, pure and property-tested; `conn` is the
//!   pump around it (frames through `wire::pump`).
//! - [`IngestHandle`]: commands to a connected box, counters.
//!
//! This module must not decide what an event means (the sink does) nor trust a payload for
//! identity.

mod config;
pub use config::IngestSection;
mod conn;
pub(crate) mod evidence;
mod log;
mod session;
mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{
    BoxId, Codec, Command, CommandAction, CommandId, CommandResult, Digest, Event, Timestamp,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::registry::{HubCa, Registry, RegistryError};
pub use crate::sink::{EventSink, HandOffError};

pub use log::{
    Committed, Conflict, EvidenceState, INGEST_FILE, IngestLog, POSTGRES_SCHEMA_VERSION,
    SCHEMA_VERSION, STORE, Unhanded,
};

/// QUIC application close codes.
pub mod close_code {
    /// Orderly shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// The box is revoked or not registered.
    pub const REVOKED: u32 = 2;
    /// A newer connection of the same box replaced this one.
    pub const REPLACED: u32 = 3;
    /// The hub failed to commit; reconnect later.
    pub const INTERNAL: u32 = 4;
    /// Enrollment finished.
    pub const DONE: u32 = 5;
    /// The certificate the session was opened with has expired; reconnect with the renewed one.
    pub const CERT_EXPIRED: u32 = 6;
    /// Too many connections without a certificate (enrolling) at once; try again later.
    pub const BUSY: u32 = 7;
}

/// What the ingest needs, from `[ingest]` of the hub config.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Where to listen (UDP).
    pub listen_addr: SocketAddr,
    /// The hub data folder: `ca.pem`, `ca.key`, and on SQLite `registry.db`, `ingest.db`, `evidence/`.
    pub data_dir: PathBuf,
    /// The PostgreSQL database every hub process shares, when the hub runs on one: the box
    /// registry, the ingest log and the evidence are there instead of `registry.db`,
    /// `ingest.db` and `evidence/`. Default none.
    pub database: Option<crate::storage::DatabaseUrl>,
    /// Names in the hub's server certificate (boxes connect with the first).
    pub server_names: Vec<String>,
    /// Lifetime of box certificates signed at enrollment and renewal.
    pub certificate_lifetime: Duration,
    /// How often the registry is polled for revocations.
    pub revocation_check_interval: Duration,
    /// Idle timeout of a connection.
    pub idle_timeout: Duration,
    /// Largest frame accepted.
    pub max_frame_bytes: u32,
    /// Handshakes per second above which unvalidated addresses are sent a Retry.
    pub handshake_rate_per_sec: u32,
    /// Connections not yet authenticated (handshaking, or a box before its Hello) above which
    /// new ones are sent a Retry (unvalidated address) or refused (validated).
    pub max_pending_handshakes: usize,
    /// The same, from one address.
    pub max_pending_per_address: usize,
    /// A handshake not done within this gives its slot back.
    pub handshake_timeout: Duration,
    /// Connections without a certificate past their handshake (enrolling) at once; more are
    /// closed at once. They never count against the handshake slots.
    pub max_enrolling: usize,
    /// The same, from one address.
    pub max_enrolling_per_address: usize,
    /// An enrolling connection must have sent its request within this.
    pub enroll_timeout: Duration,
    /// Events handed on to the sink per round.
    pub handoff_batch_events: usize,
    /// The largest evidence file a box may declare (larger ones are refused).
    pub max_evidence_bytes: u64,
    /// Events a box may deliver per second (slowed down above).
    pub max_events_per_sec: u32,
    /// Health reports a box may send per minute (dropped above).
    pub max_health_per_min: u32,
}

impl IngestSettings {
    /// Settings from the config section.
    pub fn from_config(section: &IngestSection) -> IngestSettings {
        IngestSettings {
            listen_addr: section.listen_addr,
            data_dir: section.data_dir.clone(),
            database: None,
            server_names: section.server_names.clone(),
            certificate_lifetime: Duration::from_secs(section.certificate_lifetime_secs),
            revocation_check_interval: Duration::from_secs(
                section.revocation_check_interval_secs.max(1),
            ),
            idle_timeout: Duration::from_millis(section.idle_timeout_ms.max(100)),
            max_frame_bytes: section.max_frame_bytes,
            handshake_rate_per_sec: section.handshake_rate_per_sec,
            max_pending_handshakes: section.max_pending_handshakes.max(1),
            max_pending_per_address: section.max_pending_per_address.max(1),
            handshake_timeout: Duration::from_millis(section.handshake_timeout_ms.max(100)),
            max_enrolling: section.max_enrolling.max(1),
            max_enrolling_per_address: section.max_enrolling_per_address.max(1),
            enroll_timeout: Duration::from_millis(section.enroll_timeout_ms.max(100)),
            handoff_batch_events: section.handoff_batch_events.max(1),
            max_evidence_bytes: section.max_evidence_bytes,
            max_events_per_sec: section.max_events_per_sec.max(1),
            max_health_per_min: section.max_health_per_min.max(1),
        }
    }

    /// Defaults for a data folder, listening on `127.0.0.1:0` (tests, tools).
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> IngestSettings {
        let mut section = IngestSection::new(data_dir.into());
        section.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        IngestSettings::from_config(&section)
    }
}

/// Everything the ingest can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The CA or registry could not be used.
    #[error("registry failed")]
    Registry(#[from] RegistryError),
    /// The database failed on the ingest log or the evidence kept in it.
    #[error("ingest log operation failed: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// An event could not be encoded for the log.
    #[error("event does not encode")]
    Encode(#[source] rmp_serde::encode::Error),
    /// A stored event does not decode.
    #[error("stored event does not decode")]
    Decode(#[source] rmp_serde::decode::Error),
    /// A stored row is not what this build wrote.
    #[error("ingest log holds a malformed row")]
    Corrupt,
    /// The ingest log was written by a newer hub: this one refuses to touch it.
    #[error(
        "`{file}` has an ingest log of schema version {found}, newer than this hub's {supported}: run the newer hub"
    )]
    SchemaTooNew {
        /// The file (or the database's URL, its password hidden).
        file: String,
        /// Its version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// TLS could not be configured.
    #[error("tls configuration failed")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier could not be built")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The endpoint could not bind or a file could not be accessed.
    #[error("failed to {op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The box has no live connection.
    #[error("box `{0}` is not connected")]
    NotConnected(BoxId),
    /// The connection ended or the box did not answer in time.
    #[error("box `{0}` did not answer")]
    NoAnswer(BoxId),
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Connections accepted (handshake done).
    pub connections_total: AtomicU64,
    /// Connections refused (revoked, unknown, no certificate for a session).
    pub refused_total: AtomicU64,
    /// Handshakes that did not complete (a certificate not from this CA or expired, a peer
    /// that went away).
    pub handshakes_failed_total: AtomicU64,
    /// Incoming connections refused because `max_pending_handshakes` were pending (in all or
    /// from the address).
    pub handshakes_refused_total: AtomicU64,
    /// Handshakes not done within `handshake_timeout_ms`.
    pub handshakes_timed_out_total: AtomicU64,
    /// Connections without a certificate closed because `max_enrolling` (in all or from the
    /// address) were enrolling.
    pub certless_refused_total: AtomicU64,
    /// Connections without a certificate closed for sending no enrollment in time.
    pub enroll_timeouts_total: AtomicU64,
    /// Sessions refused or ended because the box certificate had expired.
    pub expired_total: AtomicU64,
    /// Connections closed for a protocol error (malformed, oversized, out of order).
    pub protocol_errors_total: AtomicU64,
    /// Handshakes answered with a Retry.
    pub retries_total: AtomicU64,
    /// Events committed new.
    pub events_total: AtomicU64,
    /// Events received again (already committed).
    pub duplicates_total: AtomicU64,
    /// Events handed on to the sink.
    pub handed_on_total: AtomicU64,
    /// Events the sink refused.
    pub handoff_refused_total: AtomicU64,
    /// Enrollments accepted.
    pub enrollments_total: AtomicU64,
    /// Enrollments and renewals refused (unknown, used or expired token, revoked box, bad CSR).
    pub enrollments_refused_total: AtomicU64,
    /// Certificates renewed.
    pub renewals_total: AtomicU64,
    /// Evidence files completed.
    pub evidence_files_total: AtomicU64,
    /// Evidence files boxes reported gone before upload (asked for and not held).
    pub evidence_lost_total: AtomicU64,
    /// Sessions ended because the box sent another event at a committed sequence number of
    /// its store epoch (a cloned store): its events are refused, never acknowledged.
    pub conflicts_total: AtomicU64,
    /// Evidence files refused for declaring more than `max_evidence_bytes`.
    pub evidence_refused_total: AtomicU64,
    /// Events held back because their box delivered faster than `max_events_per_sec`.
    pub rate_limited_events_total: AtomicU64,
    /// Health reports dropped because their box sent more than `max_health_per_min`.
    pub health_refused_total: AtomicU64,
    /// Evidence files deleted after the retention period of their finished cases.
    pub evidence_expired_total: AtomicU64,
    /// Bytes of those files.
    pub evidence_expired_bytes_total: AtomicU64,
    /// Delivered events whose bodies were dropped from the ingest log after its retention.
    pub log_pruned_total: AtomicU64,
    /// Bytes of those bodies.
    pub log_pruned_bytes_total: AtomicU64,
}

/// A live box connection, as the handle sees it.
struct LiveConn {
    conn: quinn::Connection,
    commands_tx: mpsc::Sender<(Command, oneshot::Sender<CommandResult>)>,
}

/// State shared by the accept loop, connection tasks and handles, by concern.
struct Shared {
    settings: IngestSettings,
    codec: Codec,
    ca: HubCa,
    /// Who the boxes are, when each was seen, which are connected.
    boxes: Boxes,
    /// What the boxes delivered.
    delivery: Delivery,
    /// Connections not yet sessions.
    admission: Admission,
    stats: IngestStats,
    /// The wall clock: certificate signing, expiry checks (the TLS verifier's too), timestamps.
    clock: Clock,
}

/// The boxes: the registry, when each was last seen, and the live connections.
struct Boxes {
    /// Blocking: used from `spawn_blocking` only.
    registry: Mutex<Registry>,
    /// When each box was last seen (session opened, health), written to the registry in one
    /// transaction at each revocation poll rather than one flush per connection.
    seen: Mutex<HashMap<BoxId, Timestamp>>,
    /// The connection of each connected box, for commands.
    live: Mutex<HashMap<BoxId, LiveConn>>,
    /// Boxes found enrolled in the registry: a session of one of these opens without asking
    /// the registry again (a certificate is only signed at enrollment, and an enrolled box
    /// only ever becomes revoked, which the revoked set polled every
    /// `revocation_check_interval` says).
    enrolled: Mutex<HashSet<BoxId>>,
}

/// What the boxes delivered: the ingest log, the evidence files, and the wake-up of the
/// hand-off to the sink.
struct Delivery {
    /// Blocking: used from `spawn_blocking` only.
    log: IngestLog,
    /// Blocking: used from `spawn_blocking` only.
    evidence: evidence::EvidenceStore,
    /// Woken after each commit so the hand-off runs promptly.
    handoff: Notify,
}

/// Connections on their way to a session, which the admission gate counts.
struct Admission {
    /// Connections not yet authenticated (see `conn::Slot`).
    pending: Arc<conn::SlotPool>,
    /// Connections without a certificate past their handshake.
    enrolling: Arc<conn::SlotPool>,
}

impl Shared {
    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn mark_seen(&self, id: &BoxId) {
        lock(&self.boxes.seen).insert(id.clone(), self.now());
    }
}

impl Boxes {
    /// Writes the boxes seen since the last call to the registry (blocking). On failure they
    /// are kept for the next call.
    fn flush_seen(&self) -> Result<(), RegistryError> {
        let seen: Vec<(BoxId, Timestamp)> = lock(&self.seen).drain().collect();
        let result = lock(&self.registry).seen_all(&seen);
        if result.is_err() {
            let mut held = lock(&self.seen);
            for (id, at) in seen {
                held.entry(id).or_insert(at);
            }
        }
        result
    }
}

/// The ingest endpoint, bound and ready to run.
pub struct IngestServer {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    sink: Option<Arc<dyn EventSink>>,
}

/// A cloneable front to a running ingest.
#[derive(Clone)]
pub struct IngestHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl IngestServer {
    /// Loads the CA, opens the registry and the ingest log in the data folder, makes a fresh
    /// server certificate and binds the endpoint. Events go to `sink` once committed (none: they
    /// stay in the log, marked handed on only when a sink takes them).
    ///
    /// # Errors
    /// [`IngestError`] for a missing CA, an unusable database or a failed bind.
    pub fn bind(
        settings: IngestSettings,
        sink: Option<Arc<dyn EventSink>>,
    ) -> Result<IngestServer, IngestError> {
        IngestServer::bind_with_clock(settings, sink, crate::clock::system_clock())
    }

    /// As [`IngestServer::bind`], reading the time from `clock` (tests move it to expire
    /// certificates without waiting). The TLS verifier checks certificate validity by it too.
    ///
    /// # Errors
    /// As [`IngestServer::bind`].
    pub fn bind_with_clock(
        settings: IngestSettings,
        sink: Option<Arc<dyn EventSink>>,
        clock: Clock,
    ) -> Result<IngestServer, IngestError> {
        let ca = HubCa::load(&settings.data_dir)?;
        let registry = Registry::open_for(&settings.data_dir, settings.database.as_ref())?;
        let log = IngestLog::open_for(&settings.data_dir, settings.database.as_ref())?;
        let evidence = log.evidence_store(&settings.data_dir)?;
        let server_config = tls::server_config(&ca, &settings, clock.clone())?;
        let endpoint =
            quinn::Endpoint::server(server_config, settings.listen_addr).map_err(|source| {
                IngestError::Io {
                    op: "bind the ingest endpoint",
                    source,
                }
            })?;
        let pending = conn::SlotPool::new(
            settings.max_pending_handshakes,
            settings.max_pending_per_address,
        );
        let enrolling =
            conn::SlotPool::new(settings.max_enrolling, settings.max_enrolling_per_address);
        Ok(IngestServer {
            endpoint,
            shared: Arc::new(Shared {
                codec: Codec::new(settings.max_frame_bytes),
                settings,
                ca,
                boxes: Boxes {
                    registry: Mutex::new(registry),
                    seen: Mutex::new(HashMap::new()),
                    live: Mutex::new(HashMap::new()),
                    enrolled: Mutex::new(HashSet::new()),
                },
                delivery: Delivery {
                    log,
                    evidence,
                    handoff: Notify::new(),
                },
                admission: Admission { pending, enrolling },
                stats: IngestStats::default(),
                clock,
            }),
            sink,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`IngestError::Io`] when the socket cannot say.
    pub fn local_addr(&self) -> Result<SocketAddr, IngestError> {
        self.endpoint
            .local_addr()
            .map_err(|source| IngestError::Io {
                op: "read the ingest address",
                source,
            })
    }

    /// A handle for commands and counters.
    ///
    /// # Errors
    /// As [`IngestServer::local_addr`].
    pub fn handle(&self) -> Result<IngestHandle, IngestError> {
        Ok(IngestHandle {
            shared: self.shared.clone(),
            local_addr: self.local_addr()?,
        })
    }

    /// Accepts connections until `cancel` fires, then says `Bye` to each box, lets in-flight
    /// commits finish and waits for the endpoint to go idle.
    ///
    /// # Errors
    /// None today; the signature leaves room for fatal endpoint failures.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), IngestError> {
        let tracker = TaskTracker::new();
        let (revoked_tx, revoked_rx) = watch::channel(Arc::new(HashSet::new()));
        tracker.spawn(poll_revocations(
            self.shared.clone(),
            revoked_tx,
            cancel.clone(),
        ));
        tracker.spawn(hand_off(
            self.shared.clone(),
            self.sink.clone(),
            cancel.clone(),
        ));
        let mut gate = conn::HandshakeGate::new(
            self.shared.settings.handshake_rate_per_sec,
            self.shared.settings.max_pending_handshakes,
            self.shared.settings.max_pending_per_address,
        );
        loop {
            let incoming = tokio::select! {
                _ = cancel.cancelled() => break,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let address = incoming.remote_address().ip();
            let admission = gate.decide(
                tokio::time::Instant::now().into_std(),
                incoming.remote_address_validated(),
                incoming.may_retry(),
                self.shared.admission.pending.counts(address),
            );
            match admission {
                conn::Admission::Accept => {
                    let pending = self.shared.admission.pending.take(address);
                    let (shared, revoked, cancel) =
                        (self.shared.clone(), revoked_rx.clone(), cancel.clone());
                    tracker.spawn(conn::serve(incoming, pending, shared, revoked, cancel));
                }
                conn::Admission::Retry => {
                    self.shared
                        .stats
                        .retries_total
                        .fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = incoming.retry() {
                        tracing::debug!(error = %e, "retry failed");
                    }
                }
                conn::Admission::Refuse => {
                    self.shared
                        .stats
                        .handshakes_refused_total
                        .fetch_add(1, Ordering::Relaxed);
                    incoming.refuse();
                }
            }
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        let shared = self.shared.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || shared.boxes.flush_seen()).await {
            tracing::warn!(error = %crate::telemetry::chain(&e), "failed to record when boxes were last seen");
        }
        self.endpoint.close(
            quinn::VarInt::from_u32(close_code::SHUTDOWN),
            b"hub shutting down",
        );
        self.endpoint.wait_idle().await;
        Ok(())
    }
}

impl IngestHandle {
    /// The endpoint's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the CA certificate (what tokens pin).
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        self.shared.ca.fingerprint()
    }

    /// Counters.
    pub fn stats(&self) -> &IngestStats {
        &self.shared.stats
    }

    /// Every registered box (from the registry this ingest serves).
    ///
    /// # Errors
    /// [`IngestError::Registry`].
    pub async fn registered(&self) -> Result<Vec<crate::registry::BoxRecord>, IngestError> {
        let shared = self.shared.clone();
        blocking(move || Ok(lock(&shared.boxes.registry).list()?)).await
    }

    /// Boxes with a live connection.
    pub fn connected(&self) -> Vec<BoxId> {
        let mut v: Vec<BoxId> = lock(&self.shared.boxes.live).keys().cloned().collect();
        v.sort();
        v
    }

    /// Sends a command to a connected box and waits up to `timeout` for its result.
    ///
    /// # Errors
    /// [`CommandError::NotConnected`], [`CommandError::NoAnswer`].
    pub async fn command(
        &self,
        box_id: &BoxId,
        action: CommandAction,
        timeout: Duration,
    ) -> Result<CommandResult, CommandError> {
        let tx = lock(&self.shared.boxes.live)
            .get(box_id)
            .map(|c| c.commands_tx.clone())
            .ok_or_else(|| CommandError::NotConnected(box_id.clone()))?;
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send((Command { id, action }, reply_tx))
            .await
            .map_err(|_| CommandError::NotConnected(box_id.clone()))?;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(result)) => Ok(result),
            _ => Err(CommandError::NoAnswer(box_id.clone())),
        }
    }

    /// Deletes evidence files (their finished cases are past retention) and records them as
    /// expired, so that the API says so and boxes are not asked for them again. Part files go
    /// too. Returns the files deleted and their bytes (counted in the stats).
    ///
    /// # Errors
    /// [`IngestError::Io`] when a file cannot be deleted, [`IngestError::Storage`].
    pub async fn expire_evidence(&self, files: Vec<Digest>) -> Result<(u64, u64), IngestError> {
        let shared = self.shared.clone();
        let (count, bytes) = blocking(move || {
            let (count, bytes) = shared.delivery.evidence.delete(&files)?;
            shared.delivery.log.evidence_expired(&files)?;
            Ok((count, bytes))
        })
        .await?;
        let stats = &self.shared.stats;
        stats
            .evidence_expired_total
            .fetch_add(count, Ordering::Relaxed);
        stats
            .evidence_expired_bytes_total
            .fetch_add(bytes, Ordering::Relaxed);
        Ok((count, bytes))
    }

    /// Drops the bodies of events handed on and received before `before`, in batches (see
    /// [`IngestLog::prune_bodies`]). Returns the events pruned and the bytes dropped (counted
    /// in the stats).
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub async fn prune_log(&self, before: Timestamp) -> Result<(u64, u64), IngestError> {
        const BATCH: usize = 5_000;
        let (mut events, mut bytes) = (0, 0);
        loop {
            let shared = self.shared.clone();
            // one batch per lock hold: sessions committing events wait for a batch at most
            let (n, b) = blocking(move || shared.delivery.log.prune_bodies(before, BATCH)).await?;
            events += n;
            bytes += b;
            let stats = &self.shared.stats;
            stats.log_pruned_total.fetch_add(n, Ordering::Relaxed);
            stats.log_pruned_bytes_total.fetch_add(b, Ordering::Relaxed);
            if n < BATCH as u64 {
                return Ok((events, bytes));
            }
        }
    }

    /// An evidence file's bytes when the hub holds it complete (from the folder or the
    /// database, wherever this hub keeps evidence).
    ///
    /// # Errors
    /// [`IngestError::Io`], [`IngestError::Storage`].
    pub async fn evidence(&self, sha256: Digest) -> Result<Option<Vec<u8>>, IngestError> {
        let shared = self.shared.clone();
        blocking(move || shared.delivery.evidence.read(&sha256)).await
    }

    /// Runs `f` on the ingest log on a blocking thread (queries for tools and tests).
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub async fn with_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&IngestLog) -> Result<T, IngestError> + Send + 'static,
    ) -> Result<T, IngestError> {
        let shared = self.shared.clone();
        blocking(move || f(&shared.delivery.log)).await
    }
}

/// Runs blocking ingest-log or file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IngestError> + Send + 'static,
) -> Result<T, IngestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IngestError::Io {
            op: "join the log query",
            source: std::io::Error::other(e),
        })?
}

/// Polls the registry for revoked boxes and publishes the set when it changes.
async fn poll_revocations(
    shared: Arc<Shared>,
    revoked_tx: watch::Sender<Arc<HashSet<BoxId>>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.settings.revocation_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = shared.clone();
        let found = tokio::task::spawn_blocking(move || {
            if let Err(e) = s.boxes.flush_seen() {
                tracing::debug!(error = %crate::telemetry::chain(&e), "failed to record when boxes were last seen");
            }
            lock(&s.boxes.registry).revoked()
        })
        .await;
        match found {
            Ok(Ok(set)) => {
                failing = false;
                if **revoked_tx.borrow() != set {
                    tracing::info!(count = set.len(), "revoked boxes changed");
                    revoked_tx.send_replace(Arc::new(set));
                }
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %crate::telemetry::chain(&e), "revocation check failed");
            }
            _ => {}
        }
    }
}

/// Hands committed events on to the sink, oldest first, marking each after.
async fn hand_off(
    shared: Arc<Shared>,
    sink: Option<Arc<dyn EventSink>>,
    cancel: CancellationToken,
) {
    let Some(sink) = sink else { return };
    let mut backoff = Duration::from_millis(100);
    loop {
        let (s, k) = (shared.clone(), sink.clone());
        let round = tokio::task::spawn_blocking(move || hand_off_round(&s, k.as_ref())).await;
        let wait = match round {
            Ok(Ok(0)) => None,
            Ok(Ok(_)) => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "hand-off failed");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                Some(backoff)
            }
            Err(e) => {
                tracing::warn!(error = %e, "hand-off task failed");
                Some(backoff)
            }
        };
        let delay = wait.unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.delivery.handoff.notified(), if wait.is_none() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One round: returns how many events were marked.
fn hand_off_round(shared: &Shared, sink: &dyn EventSink) -> Result<usize, IngestError> {
    let batch = shared
        .delivery
        .log
        .unhanded(shared.settings.handoff_batch_events, shared.now())?;
    let epochs: Vec<u64> = batch.iter().map(|u| u.epoch).collect();
    let batch: Vec<(BoxId, Event)> = batch.into_iter().map(|u| (u.box_id, u.event)).collect();
    let mut done = Vec::with_capacity(batch.len());
    let now = shared.now();
    let mut retry = None;
    let results = sink.hand_on_many(&batch, now);
    for (((box_id, event), result), epoch) in batch.into_iter().zip(results).zip(epochs) {
        match result {
            Ok(()) => {
                shared.stats.handed_on_total.fetch_add(1, Ordering::Relaxed);
                done.push((box_id, epoch, event.seq, 1));
            }
            Err(HandOffError::Refused { reason }) => {
                shared
                    .stats
                    .handoff_refused_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device_id = %box_id, seq = %event.seq, %reason, "event refused by cases");
                done.push((box_id, epoch, event.seq, 2));
            }
            Err(HandOffError::Retry { reason }) => {
                retry = Some(reason);
                break;
            }
        }
    }
    let n = done.len();
    shared.delivery.log.mark_handed(&done)?;
    match retry {
        Some(reason) if n == 0 => Err(IngestError::Io {
            op: "hand events on",
            source: std::io::Error::other(reason),
        }),
        _ => Ok(n),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves SQLite consistent (its transaction rolled back).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
