//! One connection: enrollment (no certificate) or a box session (certificate of the hub CA).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use protocol::{
    Ack, BoxId, Bye, ByeReason, CommandResult, EnrollRefusal, EnrollRequest, EnrollResponse, Event,
    EvidenceAck, EvidenceChunk, Message, Timestamp, Welcome,
};
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::evidence::ChunkOutcome;
use super::session::{BoxSession, End, Limits, Step, agree};
use super::{LiveConn, Shared, close_code, lock};
use crate::registry::{BoxStatus, RegistryError};
use wire::frame::{read_frame, write_frame};
use wire::pump;

/// Messages queued from the reader task before it stops reading (backpressure to the box).
const INBOX_CAPACITY: usize = 32;
/// Messages queued for the writer task.
const OUTBOX_CAPACITY: usize = 256;

/// What the accept loop does with an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Handshake.
    Accept,
    /// Answer with a QUIC Retry: the client must prove its address before the hub keeps any
    /// state for it (a real client comes back validated at once).
    Retry,
    /// Refuse (CONNECTION_REFUSED): too many connections are pending.
    Refuse,
}

/// The admission decision: a token bucket over handshakes and caps on connections that are
/// not authenticated yet, in all and from one address. Pure: the caller gives the time and the
/// counts.
pub(super) struct HandshakeGate {
    bucket: HandshakeBucket,
    max_pending: usize,
    max_pending_per_address: usize,
}

impl HandshakeGate {
    pub(super) fn new(
        rate_per_sec: u32,
        max_pending: usize,
        max_pending_per_address: usize,
    ) -> HandshakeGate {
        HandshakeGate {
            bucket: HandshakeBucket::new(rate_per_sec),
            max_pending: max_pending.max(1),
            max_pending_per_address: max_pending_per_address.max(1),
        }
    }

    /// Every incoming takes a token. Without one, or with `pending` (in all, or `from_address`)
    /// at its cap, an address QUIC has not validated gets a Retry (when it may: a client that
    /// already answered one cannot get another); at a cap, anything else is refused.
    pub(super) fn decide(
        &mut self,
        now: Instant,
        validated: bool,
        may_retry: bool,
        (pending, from_address): (usize, usize),
    ) -> Admission {
        let within_rate = self.bucket.admit(now);
        let full = pending >= self.max_pending || from_address >= self.max_pending_per_address;
        if (!within_rate || full) && !validated && may_retry {
            Admission::Retry
        } else if full {
            Admission::Refuse
        } else {
            Admission::Accept
        }
    }
}

/// A token bucket over handshakes.
struct HandshakeBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl HandshakeBucket {
    fn new(rate_per_sec: u32) -> HandshakeBucket {
        let rate = f64::from(rate_per_sec.max(1));
        HandshakeBucket {
            rate,
            tokens: rate,
            last: None,
        }
    }

    /// True when a handshake at `now` is within the rate (and takes a token).
    fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connections of one kind counted in all and per address, with caps: those not yet
/// authenticated (handshaking, or certificate holders before their Hello), and those without a
/// certificate past their handshake (enrolling).
#[derive(Debug)]
pub(super) struct SlotPool {
    max: usize,
    max_per_address: usize,
    held: std::sync::Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl SlotPool {
    pub(super) fn new(max: usize, max_per_address: usize) -> Arc<SlotPool> {
        Arc::new(SlotPool {
            max: max.max(1),
            max_per_address: max_per_address.max(1),
            held: std::sync::Mutex::new((0, HashMap::new())),
        })
    }

    /// Slots held in all and by `address`.
    pub(super) fn counts(&self, address: IpAddr) -> (usize, usize) {
        let held = lock(&self.held);
        (held.0, held.1.get(&address).copied().unwrap_or(0))
    }

    /// A slot for `address`, whatever the caps (the admission decided already).
    pub(super) fn take(self: &Arc<Self>, address: IpAddr) -> Slot {
        let mut held = lock(&self.held);
        held.0 += 1;
        *held.1.entry(address).or_insert(0) += 1;
        Slot(Some((Arc::clone(self), address)))
    }

    /// A slot for `address` when neither cap is reached.
    pub(super) fn try_take(self: &Arc<Self>, address: IpAddr) -> Option<Slot> {
        let mut held = lock(&self.held);
        if held.0 >= self.max || held.1.get(&address).copied().unwrap_or(0) >= self.max_per_address
        {
            return None;
        }
        held.0 += 1;
        *held.1.entry(address).or_insert(0) += 1;
        Some(Slot(Some((Arc::clone(self), address))))
    }
}

/// One connection counted in a [`SlotPool`] until it is released or dropped.
pub(super) struct Slot(Option<(Arc<SlotPool>, IpAddr)>);

impl Slot {
    pub(super) fn release(&mut self) {
        if let Some((pool, address)) = self.0.take() {
            let mut held = lock(&pool.held);
            held.0 = held.0.saturating_sub(1);
            if let std::collections::hash_map::Entry::Occupied(mut e) = held.1.entry(address) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Serves one incoming connection to its end.
pub(super) async fn serve(
    incoming: quinn::Incoming,
    mut pending: Slot,
    shared: Arc<Shared>,
    revoked: watch::Receiver<Arc<HashSet<BoxId>>>,
    cancel: CancellationToken,
) {
    let peer = incoming.remote_address();
    let span = tracing::info_span!("connection", %peer, device_id = tracing::field::Empty);
    async move {
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(error = %e, "incoming connection failed");
                return;
            }
        };
        // A handshake holds a pending slot only so long: one left hanging gives it back.
        let conn = match tokio::time::timeout(shared.settings.handshake_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                shared
                    .stats
                    .handshakes_failed_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                shared
                    .stats
                    .handshakes_timed_out_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!("handshake not done in time; dropped");
                return;
            }
        };
        shared
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        match box_identity(&conn) {
            Some(Ok((id, not_after))) => {
                tracing::Span::current().record("device_id", tracing::field::display(&id));
                session(conn, id, not_after, &mut pending, shared, revoked, cancel).await;
            }
            Some(Err(())) => {
                shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("certificate names no valid box id; closing");
                conn.close(close_code::REVOKED.into(), b"certificate names no box");
            }
            None => {
                // No certificate: it may only enroll, in a pool of its own, so that such
                // connections never hold the slots boxes need to handshake.
                pending.release();
                let Some(_slot) = shared.admission.enrolling.try_take(peer.ip()) else {
                    shared
                        .stats
                        .certless_refused_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("too many connections without a certificate; closed");
                    conn.close(close_code::BUSY.into(), b"too many enrollments at once");
                    return;
                };
                enrollment(conn, shared).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// The box id in the verified client certificate (its CN) and the certificate's expiry. `None`
/// when there is no certificate.
fn box_identity(conn: &quinn::Connection) -> Option<Result<(BoxId, Timestamp), ()>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let leaf = certs.first()?;
    let parsed = x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            let not_after = Timestamp::from_unix_millis(
                cert.validity().not_after.timestamp().saturating_mul(1000),
            );
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
                .and_then(|cn| BoxId::parse(cn).ok())
                .map(|id| (id, not_after))
        });
    Some(parsed.ok_or(()))
}

/// A connection without a certificate: one `EnrollRequest`, one `EnrollResponse`.
async fn enrollment(conn: quinn::Connection, shared: Arc<Shared>) {
    // The request must be in within the deadline, stream opened and frame read: a client that
    // connects and waits is closed, giving its enrolling slot back.
    let deadline = tokio::time::Instant::now() + shared.settings.enroll_timeout;
    let (mut send, mut recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return, // gone
        Err(_) => {
            shared
                .stats
                .enroll_timeouts_total
                .fetch_add(1, Ordering::Relaxed);
            conn.close(close_code::PROTOCOL_ERROR.into(), b"no enrollment in time");
            return;
        }
    };
    let request = match tokio::time::timeout_at(deadline, read_frame(&mut recv, &shared.codec))
        .await
    {
        Ok(Ok(Some(Message::EnrollRequest(r)))) => r,
        Ok(Ok(Some(other))) => {
            shared
                .stats
                .protocol_errors_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                kind = other.kind(),
                "connection without a certificate sent something other than an enrollment"
            );
            let _ = write_frame(
                &mut send,
                &shared.codec,
                &Message::Bye(Bye {
                    reason: ByeReason::ProtocolError,
                    message: Some("a certificate is required; enroll first".into()),
                }),
            )
            .await;
            let _ = send.finish();
            conn.close(close_code::PROTOCOL_ERROR.into(), b"certificate required");
            return;
        }
        Ok(Err(e)) => {
            shared
                .stats
                .protocol_errors_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %crate::telemetry::chain(&e), "bad enrollment frame; closing");
            conn.close(close_code::PROTOCOL_ERROR.into(), b"bad frame");
            return;
        }
        Ok(Ok(None)) => return,
        Err(_) => {
            shared
                .stats
                .enroll_timeouts_total
                .fetch_add(1, Ordering::Relaxed);
            conn.close(close_code::PROTOCOL_ERROR.into(), b"no enrollment in time");
            return;
        }
    };
    let s = shared.clone();
    let response = tokio::task::spawn_blocking(move || enroll(&s, &request))
        .await
        .unwrap_or_else(|_| refused(EnrollRefusal::Unknown, "internal error"));
    match &response {
        EnrollResponse::Accepted { box_id, .. } => {
            shared
                .stats
                .enrollments_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(device_id = %box_id, "box enrolled");
        }
        EnrollResponse::Refused { reason, .. } => {
            shared
                .stats
                .enrollments_refused_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(?reason, "enrollment refused");
        }
    }
    if write_frame(&mut send, &shared.codec, &Message::EnrollResponse(response))
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Let the box read the answer and close; it does so at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    }
    conn.close(close_code::DONE.into(), b"enrollment done");
}

fn enroll(shared: &Shared, request: &EnrollRequest) -> EnrollResponse {
    let at = shared.now();
    let lifetime = shared.settings.certificate_lifetime.as_secs();
    let result = lock(&shared.boxes.registry).enroll(&request.token, at, |id| {
        shared.ca.sign_box(&request.csr_pem, id, at, lifetime)
    });
    match result {
        Ok((box_id, certificate_pem, not_after)) => EnrollResponse::Accepted {
            box_id,
            certificate_pem,
            ca_pem: shared.ca.cert_pem().to_owned(),
            not_after,
        },
        Err(RegistryError::Refused(reason)) => {
            let message = match reason {
                EnrollRefusal::UnknownToken => "the enrollment token is not known to this hub",
                EnrollRefusal::ExpiredToken => {
                    "the enrollment token has expired; ask for a new one (hub box add)"
                }
                EnrollRefusal::UsedToken => "the enrollment token was already used",
                EnrollRefusal::Revoked => "this box is revoked",
                _ => "refused",
            };
            refused(reason, message)
        }
        Err(RegistryError::BadCsr(_)) => refused(EnrollRefusal::BadCsr, "the CSR is malformed"),
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "enrollment failed");
            refused(EnrollRefusal::Unknown, "internal error")
        }
    }
}

fn refused(reason: EnrollRefusal, message: &str) -> EnrollResponse {
    EnrollResponse::Refused {
        reason,
        message: message.to_owned(),
    }
}

/// A box session: Hello/Welcome, then batches, health, evidence, commands.
#[allow(clippy::too_many_arguments)]
async fn session(
    conn: quinn::Connection,
    box_id: BoxId,
    not_after: Timestamp,
    pending: &mut Slot,
    shared: Arc<Shared>,
    mut revoked: watch::Receiver<Arc<HashSet<BoxId>>>,
    cancel: CancellationToken,
) {
    // The TLS verifier checked validity at a full handshake; a resumed TLS session carries the
    // certificate of its first handshake, so expiry is checked here as well.
    if shared.now() >= not_after {
        shared.stats.expired_total.fetch_add(1, Ordering::Relaxed);
        shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%not_after, "refused a box whose certificate has expired");
        conn.close(close_code::CERT_EXPIRED.into(), b"certificate expired");
        return;
    }
    let Ok(Ok((send, recv))) =
        tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await
    else {
        return;
    };
    // The reader and writer own the stream halves: their reads and writes are not cancel safe.
    let (mut in_rx, reader) = pump::spawn_reader(recv, shared.codec, INBOX_CAPACITY);
    let (out_tx, writer) = pump::spawn_writer::<Message>(send, shared.codec, OUTBOX_CAPACITY);

    let end = run_session(
        &conn,
        &box_id,
        not_after,
        pending,
        &shared,
        &mut in_rx,
        &out_tx,
        &mut revoked,
        &cancel,
    )
    .await;
    {
        let mut live = lock(&shared.boxes.live);
        if live
            .get(&box_id)
            .is_some_and(|c| c.conn.stable_id() == conn.stable_id())
        {
            live.remove(&box_id);
        }
    }
    let (bye, code, why) = close_of(&end, &shared, not_after);
    if let Some(bye) = bye {
        let _ = out_tx.try_send(Message::Bye(bye));
    }
    drop(out_tx);
    writer.finish(Duration::from_secs(1)).await;
    conn.close(code.into(), why);
    drop(reader);
}

/// How a session that ended with `end` is closed: the `Bye` the box is told (if any), the
/// QUIC close code and reason. Counts and logs what the close says about the box. (Long as
/// one flat arm per way a session ends, which reads best side by side.)
fn close_of(end: &End, shared: &Shared, not_after: Timestamp) -> (Option<Bye>, u32, &'static [u8]) {
    match end {
        End::PeerClosed => (None, close_code::SHUTDOWN, b"bye"),
        End::Protocol(reason) => {
            shared
                .stats
                .protocol_errors_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%reason, "closing connection: protocol error");
            (
                Some(Bye {
                    reason: ByeReason::ProtocolError,
                    message: Some(reason.clone()),
                }),
                close_code::PROTOCOL_ERROR,
                b"protocol error",
            )
        }
        End::Conflict(reason) => {
            shared.stats.conflicts_total.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%reason, "refused events that conflict with committed ones: is this box's store a copy of another's?");
            (
                Some(Bye {
                    reason: ByeReason::ProtocolError,
                    message: Some(reason.clone()),
                }),
                close_code::PROTOCOL_ERROR,
                b"conflicting events",
            )
        }
        End::NotEnrolled => {
            shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("refused a box that is revoked or not enrolled");
            (
                Some(Bye {
                    reason: ByeReason::Revoked,
                    message: Some("this box is revoked or not enrolled".into()),
                }),
                close_code::REVOKED,
                b"revoked",
            )
        }
        End::Revoked => {
            tracing::info!("closing connection: box revoked");
            (
                Some(Bye {
                    reason: ByeReason::Revoked,
                    message: Some("this box is revoked".into()),
                }),
                close_code::REVOKED,
                b"revoked",
            )
        }
        End::Replaced => (
            None,
            close_code::REPLACED,
            b"replaced by a newer connection",
        ),
        End::Shutdown => (
            Some(Bye {
                reason: ByeReason::Shutdown,
                message: None,
            }),
            close_code::SHUTDOWN,
            b"hub shutting down",
        ),
        End::Internal => (None, close_code::INTERNAL, b"hub storage failed"),
        End::Expired => {
            shared.stats.expired_total.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%not_after, "closing connection: box certificate expired");
            (
                Some(Bye {
                    reason: ByeReason::Shutdown,
                    message: Some(
                        "the certificate of this session expired; reconnect with the renewed one"
                            .into(),
                    ),
                }),
                close_code::CERT_EXPIRED,
                b"certificate expired",
            )
        }
    }
}

/// Registers the connection of `box_id` for commands (closing a previous one of the same
/// box: the newer connection wins); the commands for it arrive on the returned receiver.
fn register_live(
    shared: &Shared,
    box_id: &BoxId,
    conn: &quinn::Connection,
) -> mpsc::Receiver<(protocol::Command, Reply)> {
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let replaced = lock(&shared.boxes.live).insert(
        box_id.clone(),
        LiveConn {
            conn: conn.clone(),
            commands_tx,
        },
    );
    if let Some(old) = replaced {
        old.conn.close(
            close_code::REPLACED.into(),
            b"replaced by a newer connection",
        );
    }
    commands_rx
}

/// What one session works with: the box, the hub's shared state, and the channels to its
/// reader and writer tasks.
struct Pump<'a> {
    box_id: &'a BoxId,
    shared: &'a Arc<Shared>,
    in_rx: &'a mut mpsc::Receiver<Result<Message, String>>,
    out_tx: &'a mpsc::Sender<Message>,
    cancel: &'a CancellationToken,
}

type Reply = oneshot::Sender<CommandResult>;

#[allow(clippy::too_many_arguments)]
async fn run_session(
    conn: &quinn::Connection,
    box_id: &BoxId,
    not_after: Timestamp,
    pending: &mut Slot,
    shared: &Arc<Shared>,
    in_rx: &mut mpsc::Receiver<Result<Message, String>>,
    out_tx: &mpsc::Sender<Message>,
    revoked: &mut watch::Receiver<Arc<HashSet<BoxId>>>,
    cancel: &CancellationToken,
) -> End {
    let mut pump = Pump {
        box_id,
        shared,
        in_rx,
        out_tx,
        cancel,
    };
    let is_revoked = revoked.borrow_and_update().contains(box_id);
    let mut state = match pump.open(not_after, pending, is_revoked).await {
        Ok(state) => state,
        Err(end) => return end,
    };
    let mut commands_rx = register_live(shared, box_id, conn);
    // Evidence streams.
    let evidence_task = tokio::spawn(
        accept_evidence(conn.clone(), box_id.clone(), shared.clone(), out_tx.clone())
            .in_current_span(),
    );
    let _guard = AbortOnDrop(evidence_task);

    // Expiry is looked at as often as revocations.
    let mut expiry = tokio::time::interval(shared.settings.revocation_check_interval);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let is_revoked = revoked.borrow_and_update().contains(box_id);
        if let Some(end) = state.check(shared.now(), is_revoked) {
            return end;
        }
        let msg = if let Some(m) = state.take_deferred() {
            m
        } else {
            tokio::select! {
                _ = cancel.cancelled() => return End::Shutdown,
                changed = revoked.changed() => {
                    if changed.is_err() { return End::Shutdown; }
                    continue;
                }
                _ = expiry.tick() => continue,
                reason = conn.closed() => {
                    if matches!(reason, quinn::ConnectionError::LocallyClosed) {
                        return End::Replaced;
                    }
                    return End::PeerClosed;
                }
                cmd = commands_rx.recv() => {
                    let Some((command, reply)) = cmd else { continue };
                    state.command_sent(command.id, reply);
                    if out_tx.send(Message::Command(command)).await.is_err() {
                        return End::PeerClosed;
                    }
                    continue;
                }
                m = pump.in_rx.recv() => match m {
                    None => return End::PeerClosed,
                    Some(Err(e)) => return End::Protocol(e),
                    Some(Ok(m)) => m,
                },
            }
        };
        let in_rx = &mut *pump.in_rx;
        let step = state.on_message(msg, || in_rx.try_recv().ok(), Instant::now());
        if let Err(end) = pump.step(step, state.epoch()).await {
            return end;
        }
    }
}

impl Pump<'_> {
    /// `Hello` → `Welcome`: agrees the version, checks the box is enrolled (in the registry the
    /// first time this process sees it, then in the revoked set), tells the box what the log
    /// holds of it, and asks for the evidence still wanted.
    async fn open(
        &mut self,
        not_after: Timestamp,
        pending: &mut Slot,
        revoked: bool,
    ) -> Result<BoxSession<Reply>, End> {
        let hello = match tokio::time::timeout(Duration::from_secs(10), self.in_rx.recv()).await {
            Ok(Some(Ok(Message::Hello(h)))) => h,
            Ok(Some(Ok(other))) => {
                return Err(End::Protocol(format!(
                    "expected hello, got {}",
                    other.kind()
                )));
            }
            Ok(Some(Err(e))) => return Err(End::Protocol(e)),
            _ => return Err(End::PeerClosed),
        };
        let agreed = match agree(&hello) {
            Ok(agreed) => agreed,
            Err(e) => {
                tracing::warn!(error = %e, "no common protocol version");
                let _ = self
                    .out_tx
                    .send(Message::Bye(Bye {
                        reason: ByeReason::UnsupportedVersion,
                        message: Some(e),
                    }))
                    .await;
                return Err(End::PeerClosed);
            }
        };
        let epoch = agreed.epoch;
        if revoked {
            return Err(End::NotEnrolled);
        }
        // A box found enrolled before is not looked up again (a revocation since reaches it
        // through the revoked set within the poll interval, as it reaches live connections).
        let known = lock(&self.shared.boxes.enrolled).contains(self.box_id);
        // One trip to the blocking pool per session open.
        let (s, id) = (self.shared.clone(), self.box_id.clone());
        let opened = tokio::task::spawn_blocking(move || {
            if !known {
                let status = lock(&s.boxes.registry).status(&id)?;
                if status != Some(BoxStatus::Enrolled) {
                    return Ok(None);
                }
                lock(&s.boxes.enrolled).insert(id.clone());
            }
            Ok::<_, super::IngestError>(Some(s.delivery.log.session_start(&id, epoch)?))
        })
        .await;
        let (last_committed, wanted) = match opened {
            Ok(Ok(Some(v))) => v,
            Ok(Ok(None)) => return Err(End::NotEnrolled),
            _ => return Err(End::Internal),
        };
        self.shared.mark_seen(self.box_id);
        // Authenticated: no longer counts against the handshake admission limit.
        pending.release();
        let welcome = Message::Welcome(Welcome {
            protocol_version: agreed.version,
            hub_version: env!("CARGO_PKG_VERSION").to_owned(),
            box_id: self.box_id.clone(),
            last_committed_seq: last_committed,
        });
        self.send(welcome).await?;
        tracing::debug!(
            epoch,
            last_acked = ?hello.last_acked_seq,
            last_committed = ?last_committed,
            "session open"
        );
        request_evidence(self.shared, self.out_tx, wanted).await;
        let settings = &self.shared.settings;
        let limits = Limits {
            max_events_per_sec: settings.max_events_per_sec,
            max_health_per_min: settings.max_health_per_min,
        };
        Ok(BoxSession::new(agreed, not_after, limits))
    }

    async fn send(&self, msg: Message) -> Result<(), End> {
        self.out_tx.send(msg).await.map_err(|_| End::PeerClosed)
    }

    /// Does what one message of the box calls for.
    async fn step(&mut self, step: Step<Reply>, epoch: u64) -> Result<(), End> {
        let (shared, box_id) = (self.shared, self.box_id);
        match step {
            Step::Commit { events, wait } => self.commit(events, wait, epoch).await?,
            Step::Query(files) => {
                for ack in held_evidence(shared, box_id, files).await {
                    self.send(Message::EvidenceAck(ack)).await?;
                }
            }
            Step::Lost(files) => evidence_lost(shared, box_id, files).await?,
            Step::HealthDropped => {
                shared
                    .stats
                    .health_refused_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!("health report over the box's rate dropped");
            }
            Step::Health(health) => {
                let (s, id) = (shared.clone(), box_id.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let at = s.now();
                    if let Err(e) = s.delivery.log.record_health(&id, &health, at) {
                        tracing::warn!(error = %crate::telemetry::chain(&e), "failed to record health");
                    }
                    s.mark_seen(&id);
                })
                .await;
            }
            Step::Answer(reply, result) => {
                let _ = reply.send(result);
            }
            Step::UnknownResult(id) => {
                tracing::debug!(command = %id, "result for an unknown command");
            }
            Step::Renew(request) => {
                let response = renew(shared, box_id, request).await;
                self.send(Message::EnrollResponse(response)).await?;
            }
            Step::Skip => tracing::debug!("skipped a message of an unknown type"),
            Step::Close(End::PeerClosed) => {
                tracing::debug!("box said bye");
                return Err(End::PeerClosed);
            }
            Step::Close(end) => return Err(end),
        }
        Ok(())
    }

    /// Commits a batch after the wait its rate asks, then acknowledges it and asks for the
    /// evidence it names.
    async fn commit(&mut self, events: Vec<Event>, wait: Duration, epoch: u64) -> Result<(), End> {
        let shared = self.shared;
        if !wait.is_zero() {
            shared
                .stats
                .rate_limited_events_total
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(End::Shutdown),
                () = tokio::time::sleep(wait) => {}
            }
        }
        let (ack, wanted, conflict) = commit(shared, self.box_id, epoch, events)
            .await
            .map_err(|()| End::Internal)?;
        if let Some(ack) = ack {
            self.send(Message::Ack(ack)).await?;
        }
        request_evidence(shared, self.out_tx, wanted).await;
        match conflict {
            Some(c) => Err(End::Conflict(format!(
                "seq {} of store epoch {epoch} is committed with event {}, not {}",
                c.seq, c.held, c.sent
            ))),
            None => Ok(()),
        }
    }
}

/// Records files the box reports lost before their upload.
async fn evidence_lost(
    shared: &Arc<Shared>,
    box_id: &BoxId,
    files: Vec<protocol::Digest>,
) -> Result<(), End> {
    let (s, id) = (shared.clone(), box_id.clone());
    let marked =
        tokio::task::spawn_blocking(move || s.delivery.log.evidence_lost(&id, &files)).await;
    match marked {
        Ok(Ok(n)) => {
            shared
                .stats
                .evidence_lost_total
                .fetch_add(n, Ordering::Relaxed);
            if n > 0 {
                tracing::warn!(count = n, "the box reports evidence lost before upload");
            }
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "failed to record lost evidence");
            Err(End::Internal)
        }
        Err(_) => Err(End::Internal),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a committed batch answers: the ack (if any event of this epoch is committed), the
/// evidence now wanted, and a conflict that ends the session.
type BatchAnswer = (
    Option<Ack>,
    Vec<(protocol::Digest, u64)>,
    Option<super::Conflict>,
);

async fn commit(
    shared: &Arc<Shared>,
    box_id: &BoxId,
    epoch: u64,
    events: Vec<Event>,
) -> Result<BatchAnswer, ()> {
    if events.is_empty() {
        return Ok((None, Vec::new(), None));
    }
    let (s, id) = (shared.clone(), box_id.clone());
    let n = events.len();
    let done = tokio::task::spawn_blocking(move || {
        let max = s.settings.max_evidence_bytes;
        s.delivery.log.commit(&id, epoch, &events, max, s.now())
    })
    .await;
    match done {
        Ok(Ok((committed, wanted))) => {
            shared
                .stats
                .events_total
                .fetch_add(committed.inserted, Ordering::Relaxed);
            shared
                .stats
                .duplicates_total
                .fetch_add(committed.duplicates, Ordering::Relaxed);
            if committed.evidence_refused > 0 {
                shared
                    .stats
                    .evidence_refused_total
                    .fetch_add(committed.evidence_refused, Ordering::Relaxed);
                tracing::warn!(
                    count = committed.evidence_refused,
                    max_bytes = shared.settings.max_evidence_bytes,
                    "evidence declared larger than the hub takes: refused"
                );
            }
            shared.delivery.handoff.notify_one();
            tracing::debug!(count = n, up_to = ?committed.up_to, "batch committed");
            Ok((
                committed.up_to.map(|up_to| Ack { up_to }),
                wanted,
                committed.conflict,
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "failed to commit a batch; closing so the box retries");
            Err(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "commit task failed");
            Err(())
        }
    }
}

/// Confirmations for the files of `query` that the hub holds complete from this box.
async fn held_evidence(
    shared: &Arc<Shared>,
    box_id: &BoxId,
    files: Vec<protocol::Digest>,
) -> Vec<EvidenceAck> {
    let (s, id) = (shared.clone(), box_id.clone());
    tokio::task::spawn_blocking(move || {
        let log = &s.delivery.log;
        files
            .into_iter()
            .filter_map(|sha256| match log.evidence_state(&sha256) {
                // held, or held and deleted after its retention: either way the box may let go
                Ok(Some((
                    owner,
                    total,
                    super::EvidenceState::Complete | super::EvidenceState::Expired,
                ))) if owner == id => Some(EvidenceAck {
                    sha256,
                    received_bytes: total,
                    complete: true,
                }),
                _ => None,
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

async fn request_evidence(
    shared: &Arc<Shared>,
    out_tx: &mpsc::Sender<Message>,
    wanted: Vec<(protocol::Digest, u64)>,
) {
    if wanted.is_empty() {
        return;
    }
    // where each upload resumes (the store may be the database: off the async threads)
    let s = shared.clone();
    let held = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(sha256, _)| (sha256, s.delivery.evidence.received(&sha256)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (sha256, received_bytes) in held {
        let received_bytes = received_bytes.unwrap_or_else(|e| {
            tracing::warn!(error = %crate::telemetry::chain(&e), %sha256, "evidence held unreadable; asking from the start");
            0
        });
        let _ = out_tx
            .send(Message::EvidenceAck(EvidenceAck {
                sha256,
                received_bytes,
                complete: false,
            }))
            .await;
    }
}

/// Signs a renewed certificate for the box of this session, if it is still enrolled.
async fn renew(shared: &Arc<Shared>, box_id: &BoxId, request: EnrollRequest) -> EnrollResponse {
    let (s, id) = (shared.clone(), box_id.clone());
    let response = tokio::task::spawn_blocking(move || {
        let at = s.now();
        let lifetime = s.settings.certificate_lifetime.as_secs();
        // A box revoked since its session opened is not given a new certificate, even before
        // the revocation reaches this connection.
        match lock(&s.boxes.registry).status(&id) {
            Ok(Some(BoxStatus::Enrolled)) => {}
            Ok(_) => return refused(EnrollRefusal::Revoked, "this box is revoked"),
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "renewal failed");
                return refused(EnrollRefusal::Unknown, "internal error");
            }
        }
        match s.ca.sign_box(&request.csr_pem, &id, at, lifetime) {
            Ok((certificate_pem, not_after)) => {
                if let Err(e) = lock(&s.boxes.registry).renewed(&id, not_after) {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "failed to record a renewal");
                    return refused(EnrollRefusal::Unknown, "internal error");
                }
                s.stats.renewals_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(device_id = %id, %not_after, "certificate renewed");
                EnrollResponse::Accepted {
                    box_id: id,
                    certificate_pem,
                    ca_pem: s.ca.cert_pem().to_owned(),
                    not_after,
                }
            }
            Err(_) => refused(EnrollRefusal::BadCsr, "the CSR is malformed"),
        }
    })
    .await
    .unwrap_or_else(|_| refused(EnrollRefusal::Unknown, "internal error"));
    if let EnrollResponse::Refused { reason, .. } = &response {
        shared
            .stats
            .enrollments_refused_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(?reason, "certificate renewal refused");
    }
    response
}

/// Accepts evidence streams (one file per stream, chunks in order) until the connection ends.
async fn accept_evidence(
    conn: quinn::Connection,
    box_id: BoxId,
    shared: Arc<Shared>,
    out_tx: mpsc::Sender<Message>,
) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let (shared, box_id, out_tx) = (shared.clone(), box_id.clone(), out_tx.clone());
        tokio::spawn(
            async move {
                loop {
                    match read_frame(&mut recv, &shared.codec).await {
                        Ok(Some(Message::EvidenceChunk(chunk))) => {
                            if !evidence_chunk(&shared, &box_id, chunk, &out_tx).await {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Ok(Some(other)) => {
                            tracing::warn!(kind = other.kind(), "unexpected message on an evidence stream");
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(error = %crate::telemetry::chain(&e), "evidence stream ended");
                            break;
                        }
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// Stores one chunk; false when the stream should stop (unwanted file, failure).
async fn evidence_chunk(
    shared: &Arc<Shared>,
    box_id: &BoxId,
    chunk: EvidenceChunk,
    out_tx: &mpsc::Sender<Message>,
) -> bool {
    let (s, id) = (shared.clone(), box_id.clone());
    let (sha256, total_bytes) = (chunk.sha256, chunk.total_bytes);
    let outcome = tokio::task::spawn_blocking(move || {
        let state = s.delivery.log.evidence_state(&chunk.sha256)?;
        match state {
            // a file reported lost that turns up after all is taken too
            Some((owner, total, super::EvidenceState::Wanted | super::EvidenceState::Lost))
                if owner == id && total == chunk.total_bytes =>
            {
                let outcome = s.delivery.evidence.write_chunk(
                    &chunk.sha256,
                    chunk.offset,
                    &chunk.data,
                    total,
                )?;
                if outcome == ChunkOutcome::Complete {
                    s.delivery.log.evidence_complete(&chunk.sha256)?;
                    s.stats.evidence_files_total.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(outcome))
            }
            Some((_, _, super::EvidenceState::Complete | super::EvidenceState::Expired)) => {
                Ok(Some(ChunkOutcome::Complete))
            }
            _ => Ok::<_, super::IngestError>(None),
        }
    })
    .await;
    let ack = match outcome {
        Ok(Ok(Some(ChunkOutcome::Complete))) => EvidenceAck {
            sha256,
            received_bytes: total_bytes,
            complete: true,
        },
        Ok(Ok(Some(ChunkOutcome::Partial(_)))) => return true,
        Ok(Ok(Some(ChunkOutcome::Mismatch))) => {
            tracing::warn!(%sha256, "evidence did not match its hash; asking again");
            EvidenceAck {
                sha256,
                received_bytes: 0,
                complete: false,
            }
        }
        Ok(Ok(None)) => {
            tracing::debug!(%sha256, "unwanted evidence stream");
            return false;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "failed to store evidence");
            return false;
        }
        Err(_) => return false,
    };
    let _ = out_tx.send(Message::EvidenceAck(ack)).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_bucket_admits_its_rate_then_refills() {
        let mut b = HandshakeBucket::new(2);
        let t0 = Instant::now();
        assert!(b.admit(t0));
        assert!(b.admit(t0));
        assert!(!b.admit(t0));
        assert!(b.admit(t0 + Duration::from_millis(600)));
    }

    #[test]
    fn above_the_rate_unvalidated_addresses_get_a_retry_and_validated_ones_are_let_in() {
        let mut g = HandshakeGate::new(1, 100, 100);
        let t0 = Instant::now();
        assert_eq!(g.decide(t0, false, true, (0, 0)), Admission::Accept);
        assert_eq!(g.decide(t0, false, true, (0, 0)), Admission::Retry);
        // Back with the Retry token: its address is proven, it may handshake.
        assert_eq!(g.decide(t0, true, false, (0, 0)), Admission::Accept);
        // A client that cannot be sent another Retry is not turned away for the rate alone.
        assert_eq!(g.decide(t0, false, false, (0, 0)), Admission::Accept);
        // The bucket refills.
        assert_eq!(
            g.decide(t0 + Duration::from_secs(2), false, true, (0, 0)),
            Admission::Accept
        );
    }

    #[test]
    fn with_too_many_pending_handshakes_new_ones_are_retried_or_refused() {
        let mut g = HandshakeGate::new(1000, 4, 2);
        let t0 = Instant::now();
        assert_eq!(g.decide(t0, false, true, (3, 1)), Admission::Accept);
        assert_eq!(g.decide(t0, false, true, (4, 0)), Admission::Retry);
        assert_eq!(g.decide(t0, true, false, (4, 0)), Admission::Refuse);
        assert_eq!(g.decide(t0, false, false, (9, 0)), Admission::Refuse);
        assert_eq!(g.decide(t0, true, false, (3, 0)), Admission::Accept);
        // one address at its own cap, with room in all
        assert_eq!(g.decide(t0, false, true, (2, 2)), Admission::Retry);
        assert_eq!(g.decide(t0, true, false, (2, 2)), Admission::Refuse);
    }

    #[test]
    fn a_slot_is_counted_until_released_once_and_caps_hold_per_address() {
        let pool = SlotPool::new(3, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let mut first = pool.try_take(a).unwrap();
        let second = pool.try_take(a).unwrap();
        assert!(pool.try_take(a).is_none(), "two per address");
        let third = pool.try_take(b).unwrap();
        assert!(pool.try_take(b).is_none(), "three in all");
        assert_eq!(pool.counts(a), (3, 2));
        first.release();
        first.release();
        assert_eq!(pool.counts(a), (2, 1));
        drop(second);
        drop(third);
        assert_eq!(pool.counts(a), (0, 0));
        assert!(lock(&pool.held).1.is_empty(), "no address left behind");
        // taken whatever the caps (the admission decided)
        let held: Vec<Slot> = (0..5).map(|_| pool.take(a)).collect();
        assert_eq!(pool.counts(a), (5, 5));
        drop(held);
        assert_eq!(pool.counts(a), (0, 0));
    }
}
