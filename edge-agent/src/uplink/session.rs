//! One session with the hub, from connect to close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{
    Bye, ByeReason, Codec, CommandAction, CommandOutcome, CommandResult, Digest, EnrollRequest,
    EnrollResponse, EventBatch, EvidenceAck, EvidenceChunk, EvidenceLost, EvidenceQuery, Health,
    Hello, MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION, Seq, Timestamp,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::window::{SyncWindow, Welcomed};
use super::{CommandRequest, Uplink, UplinkError, UplinkMode, now, tls};
use crate::store::{EvidencePins, Store};
use wire::frame::write_frame;
use wire::pump::{self, Outgoing};

/// How long the hub has to answer the handshake and the `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Files named in one `EvidenceQuery` (and confirmations recorded in one commit).
const EVIDENCE_QUERY_FILES: usize = 256;

/// Unconfirmed files the box asks the hub about at the start of a session.
const EVIDENCE_QUERY_MAX_FILES: usize = 4096;
/// How long a command may take on the box.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the status (backlog, oldest event) is refreshed from the store.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// How often renewal is considered (and once as each session opens).
const RENEW_CHECK: Duration = Duration::from_secs(60);
/// After a renewal, how long the session may take to see its batches in flight acknowledged
/// before it closes to reconnect with the new certificate.
const RENEWAL_DRAIN: Duration = Duration::from_secs(5);

/// Why a session ended.
pub(super) enum End {
    /// Cancelled: said `Bye` and closed.
    Shutdown,
    /// A renewed certificate was installed: closed to reconnect with it at once.
    Renewed,
    /// The hub said this box is revoked.
    Revoked,
    /// The link or the hub went away; `progressed` when something was acknowledged first.
    Lost { progressed: bool, why: String },
}

pub(super) async fn run(
    up: &Uplink,
    endpoint: &quinn::Endpoint,
    addr: std::net::SocketAddr,
    cancel: &CancellationToken,
) -> Result<End, UplinkError> {
    let s = &up.settings;
    let config = up.session_configs.config(&s.identity, up.transport())?;
    let connecting = endpoint.connect_with(config, addr, &s.server_name)?;
    let conn = tokio::select! {
        _ = cancel.cancelled() => return Ok(End::Shutdown),
        c = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting) => match c {
            Ok(c) => c?,
            Err(_) => return Err(UplinkError::Timeout(HANDSHAKE_TIMEOUT)),
        },
    };
    let result = session(up, &conn, cancel).await;
    let (code, reason): (u32, &[u8]) = match &result {
        Ok(End::Shutdown) => (0, b"agent stopping"),
        Ok(End::Renewed) => (0, b"reconnecting with a renewed certificate"),
        _ => (1, b"session ended"),
    };
    conn.close(code.into(), reason);
    result
}

/// A session: `Hello`/`Welcome`, then the pump until it ends.
async fn session(
    up: &Uplink,
    conn: &quinn::Connection,
    cancel: &CancellationToken,
) -> Result<End, UplinkError> {
    let codec = Codec::new(up.settings.max_frame_bytes);
    let (send, recv) = conn.open_bi().await?;
    // The reader and writer own the stream halves: their reads and writes are not cancel safe.
    let (mut in_rx, reader) = pump::spawn_reader(recv, codec, 64);
    let (out_tx, writer) = pump::spawn_writer::<Outgoing>(send, codec, 64);

    let window = match welcome(up, conn, &mut in_rx, &out_tx).await? {
        Ok(window) => window,
        Err(end) => return Ok(end),
    };
    let (ack_tx, ack_rx) = tokio::sync::watch::channel(window.acked());
    // Acks are committed to the store by a task of their own, so that the next batches go out
    // while the box's fsync runs; acks that arrive meanwhile are folded into one commit.
    let acker = tokio::spawn(commit_acks(up.store.clone(), ack_rx));
    let (results_tx, results_rx) = mpsc::channel::<CommandResult>(16);
    let mut pump = Pump {
        evidence: Evidence::start(up, conn, codec, &out_tx),
        up,
        conn,
        codec,
        out_tx,
        window,
        ack_tx,
        results_tx,
        pending_key: None,
    };
    let end = pump.run(&mut in_rx, results_rx, cancel).await;
    let Pump { out_tx, ack_tx, .. } = pump;
    drop(out_tx);
    writer.finish(Duration::from_secs(1)).await;
    drop(reader);
    // The last ack is committed before the session counts as over (what the hub holds is
    // synced); a failure here only means those events are offered again next session.
    drop(ack_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), acker).await;
    up.set_mode(UplinkMode::Offline, None);
    end
}

/// Says `Hello` with what the store holds and takes the hub's `Welcome`: the session's send
/// window, or how the session ended before it.
async fn welcome(
    up: &Uplink,
    conn: &quinn::Connection,
    in_rx: &mut mpsc::Receiver<Result<Message, String>>,
    out_tx: &mpsc::Sender<Outgoing>,
) -> Result<Result<SyncWindow<tokio::time::Instant>, End>, UplinkError> {
    let store = up.store.clone();
    let stats = blocking(move || store.stats()).await??;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        min_protocol_version: MIN_PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        last_acked_seq: (stats.acked_seq > 0).then_some(Seq(stats.acked_seq)),
        last_committed_seq: (stats.last_seq > 0).then_some(Seq(stats.last_seq)),
        store_epoch: Some(up.store.epoch()).filter(|&e| e != 0),
    };
    send_or_lost(out_tx, Message::Hello(hello)).await?;
    let welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, in_rx.recv()).await {
        Ok(Some(Ok(Message::Welcome(w)))) => w,
        Ok(Some(Ok(Message::Bye(bye)))) => return Ok(Err(bye_end(&bye, false))),
        Ok(Some(Ok(other))) => {
            return Err(UplinkError::Session(format!(
                "expected welcome, got {}",
                other.kind()
            )));
        }
        Ok(Some(Err(e))) => return Err(UplinkError::Session(e)),
        Ok(None) => {
            return Ok(Err(End::Lost {
                progressed: false,
                why: close_reason(conn, "the hub closed the session before welcome"),
            }));
        }
        Err(_) => return Err(UplinkError::Timeout(HANDSHAKE_TIMEOUT)),
    };
    up.status_tx.send_modify(|st| st.sessions_total += 1);
    tracing::info!(stage = "uplink", device_id = %welcome.box_id, hub = %conn.remote_address(), hub_last = ?welcome.last_committed_seq, acked = stats.acked_seq, "session open");
    let (window, welcomed) = SyncWindow::open(
        stats.acked_seq,
        stats.last_seq,
        welcome.last_committed_seq.map(|q| q.0),
        up.settings.max_batches_in_flight,
    );
    if let Welcomed::HubAhead { hub_last, box_last } = welcomed {
        tracing::error!(
            stage = "uplink",
            hub_last,
            box_last,
            epoch = up.store.epoch(),
            "the hub holds more events of this store epoch than the store; is it a copy of another box's store?"
        );
    }
    Ok(Ok(window))
}

/// The evidence side of a session: uploads the hub asks for, confirmations to record, and the
/// question about files of earlier sessions (tasks aborted with the session).
struct Evidence {
    /// Requests for files (or the rest of one).
    requests: mpsc::Sender<EvidenceAck>,
    /// Files the hub holds complete.
    confirmed: mpsc::Sender<Digest>,
    _tasks: [AbortOnDrop<()>; 3],
}

impl Evidence {
    fn start(
        up: &Uplink,
        conn: &quinn::Connection,
        codec: Codec,
        out_tx: &mpsc::Sender<Outgoing>,
    ) -> Evidence {
        let s = &up.settings;
        // Files being uploaded stay pinned until the hub's confirmation is recorded, so that
        // eviction does not report lost a file that arrives after all (unpinned at session end).
        let pins = Arc::new(up.store.evidence_pins());
        let (requests, evidence_rx) = mpsc::channel::<EvidenceAck>(1024);
        let upload = AbortOnDrop(tokio::spawn(upload_evidence(
            conn.clone(),
            up.store.clone(),
            Arc::clone(&pins),
            codec,
            s.evidence_chunk_bytes,
            s.evidence_budget_bytes_per_sec,
            evidence_rx,
            out_tx.clone(),
        )));
        // Files the hub confirmed are recorded by a task of their own (a commit each batch).
        let (confirmed, confirmed_rx) = mpsc::channel::<Digest>(1024);
        let confirm = AbortOnDrop(tokio::spawn(confirm_evidence(
            up.store.clone(),
            Arc::clone(&pins),
            confirmed_rx,
        )));
        // Files sent in earlier sessions whose confirmation never arrived: ask the hub.
        let query = AbortOnDrop(tokio::spawn(query_evidence(
            up.store.clone(),
            out_tx.clone(),
        )));
        Evidence {
            requests,
            confirmed,
            _tasks: [upload, confirm, query],
        }
    }
}

/// The session after `Welcome`: fills the window, handles the hub's messages and the timers.
struct Pump<'a> {
    up: &'a Uplink,
    conn: &'a quinn::Connection,
    codec: Codec,
    out_tx: mpsc::Sender<Outgoing>,
    window: SyncWindow<tokio::time::Instant>,
    /// The acknowledged position, for the ack committer.
    ack_tx: tokio::sync::watch::Sender<u64>,
    evidence: Evidence,
    /// Answers of commands, from their tasks.
    results_tx: mpsc::Sender<CommandResult>,
    /// The key of a renewal asked for and not yet answered.
    pending_key: Option<String>,
}

impl Pump<'_> {
    async fn run(
        &mut self,
        in_rx: &mut mpsc::Receiver<Result<Message, String>>,
        mut results_rx: mpsc::Receiver<CommandResult>,
        cancel: &CancellationToken,
    ) -> Result<End, UplinkError> {
        let s = &self.up.settings;
        let mut poll = interval(s.poll_interval);
        let mut health = interval(s.health_interval);
        let mut renew = interval(RENEW_CHECK);
        let mut last_status = Instant::now() - STATUS_REFRESH;
        loop {
            if self.window.should_close(tokio::time::Instant::now()) {
                self.bye(Some("reconnecting with a renewed certificate"));
                return Ok(End::Renewed);
            }
            self.fill_window().await?;
            if last_status.elapsed() >= STATUS_REFRESH {
                last_status = Instant::now();
                refresh_status(self.up, self.conn.rtt(), &self.window).await;
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.bye(None);
                    return Ok(End::Shutdown);
                }
                m = in_rx.recv() => match m {
                    None => return Ok(self.lost(close_reason(self.conn, "the hub closed the session"))),
                    Some(Err(e)) => return Err(UplinkError::Session(e)),
                    Some(Ok(msg)) => if let Some(end) = self.on_message(msg).await? {
                        return Ok(end);
                    },
                },
                Some(result) = results_rx.recv() => {
                    send_or_lost(&self.out_tx, Message::CommandResult(result)).await?;
                }
                _ = poll.tick() => self.window.on_poll(),
                _ = health.tick() => {
                    let report = health_report(self.up).await;
                    send_or_lost(&self.out_tx, Message::Health(report)).await?;
                }
                () = sleep_until_some(self.window.drain_deadline()) => {}
                _ = renew.tick() => self.maybe_renew().await?,
                reason = self.conn.closed() => return Ok(self.lost(reason.to_string())),
            }
        }
    }

    /// Sends pending events, in sequence order, while the window has room.
    async fn fill_window(&mut self) -> Result<(), UplinkError> {
        let s = &self.up.settings;
        while let Some(from) = self.window.next_batch() {
            let (store, codec) = (self.up.store.clone(), self.codec);
            let (max_events, max_bytes) = (s.batch_max_events, s.batch_max_bytes);
            let batch =
                blocking(move || read_batch(&store, &codec, Seq(from), max_events, max_bytes))
                    .await??;
            let Some((last, frame)) = batch else {
                self.window.on_exhausted();
                break;
            };
            self.window.on_sent(last);
            self.out_tx
                .send(Outgoing::Frame(frame))
                .await
                .map_err(|_| UplinkError::Session("control stream closed".into()))?;
        }
        Ok(())
    }

    /// Handles one message of the hub; the session's end when it ends it.
    async fn on_message(&mut self, msg: Message) -> Result<Option<End>, UplinkError> {
        match msg {
            Message::Ack(ack) => {
                if let Some(acked) = self.window.on_ack(ack.up_to.0) {
                    let _ = self.ack_tx.send(acked);
                    tracing::debug!(stage = "uplink", seq = acked, "acked");
                }
            }
            Message::Command(command) => {
                tracing::info!(stage = "uplink", command = %command.id, "command from the hub");
                let (commands, results) = (self.up.commands_tx.clone(), self.results_tx.clone());
                tokio::spawn(answer_command(command, commands, results));
            }
            Message::EvidenceAck(ev) if ev.complete => {
                if self.evidence.confirmed.try_send(ev.sha256).is_err() {
                    tracing::debug!(
                        stage = "uplink",
                        "confirmation queue full; the box asks again at the next session"
                    );
                }
            }
            Message::EvidenceAck(ev) => {
                if self.evidence.requests.try_send(ev).is_err() {
                    tracing::debug!(
                        stage = "uplink",
                        "evidence queue full; the hub asks again at the next session"
                    );
                }
            }
            Message::EnrollResponse(response) => {
                if install_renewal(self.up, self.pending_key.take(), response).await {
                    *lock(&self.up.last_renewal) = Some(Instant::now());
                    self.window
                        .start_drain(tokio::time::Instant::now() + RENEWAL_DRAIN);
                }
            }
            Message::Bye(bye) => return Ok(Some(bye_end(&bye, self.window.progressed()))),
            Message::Unknown => {
                tracing::debug!(stage = "uplink", "skipped a message of an unknown type");
            }
            other => {
                return Err(UplinkError::Session(format!(
                    "unexpected {} from the hub",
                    other.kind()
                )));
            }
        }
        Ok(None)
    }

    /// Asks the hub for a renewed certificate when it is due and none is on its way.
    async fn maybe_renew(&mut self) -> Result<(), UplinkError> {
        if self.pending_key.is_some() || self.window.draining() || !renewal_due(self.up) {
            return Ok(());
        }
        let (key, csr_pem) = tls::new_key_and_csr()?;
        self.pending_key = Some(key);
        tracing::info!(stage = "uplink", "renewing the box certificate");
        let request = Message::EnrollRequest(EnrollRequest {
            token: String::new(),
            csr_pem,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        send_or_lost(&self.out_tx, request).await
    }

    /// Says `Bye` (shutting down) if the writer has room; the close follows either way.
    fn bye(&self, message: Option<&str>) {
        let _ = self.out_tx.try_send(Outgoing::Message(Message::Bye(Bye {
            reason: ByeReason::Shutdown,
            message: message.map(str::to_owned),
        })));
    }

    fn lost(&self, why: String) -> End {
        End::Lost {
            progressed: self.window.progressed(),
            why,
        }
    }
}

/// A timer that waits its period again after a late tick rather than catching up.
fn interval(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

fn bye_end(bye: &Bye, progressed: bool) -> End {
    match bye.reason {
        ByeReason::Revoked => End::Revoked,
        reason => End::Lost {
            progressed,
            why: format!(
                "the hub said bye ({reason:?}{})",
                bye.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        },
    }
}

fn close_reason(conn: &quinn::Connection, fallback: &str) -> String {
    conn.close_reason()
        .map_or_else(|| fallback.to_owned(), |r| r.to_string())
}

async fn send_or_lost(out_tx: &mpsc::Sender<Outgoing>, msg: Message) -> Result<(), UplinkError> {
    out_tx
        .send(Outgoing::Message(msg))
        .await
        .map_err(|_| UplinkError::Session("control stream closed".into()))
}

/// The `EventBatch` frame of the events from `from` on: at most `max_events`, and at most
/// `max_bytes` encoded unless one event alone is larger. Returns the last sequence number in
/// it with the frame, or `None` when nothing is pending. Each batch is encoded once here; a
/// batch over the byte limit is cut to the share of it that fits and encoded again (usually
/// once more).
fn read_batch(
    store: &Store,
    codec: &Codec,
    from: Seq,
    max_events: usize,
    max_bytes: usize,
) -> Result<Option<(u64, Vec<u8>)>, UplinkError> {
    let events = store.events_from(from, max_events)?;
    let mut batch = Message::EventBatch(EventBatch { events });
    loop {
        let Message::EventBatch(EventBatch { events }) = &batch else {
            return Ok(None);
        };
        let Some(last) = events.last().map(|e| e.seq.0) else {
            return Ok(None);
        };
        let n = events.len();
        match codec.encode_to_vec(&batch) {
            Ok(frame) if frame.len() <= max_bytes + protocol::FRAME_HEADER_BYTES || n == 1 => {
                return Ok(Some((last, frame)));
            }
            Err(e) if n == 1 => {
                return Err(UplinkError::Session(format!(
                    "event {last} does not encode: {}",
                    super::chain(&e)
                )));
            }
            // Too large: cut it to the share of events that fits (by the encoded size, with a
            // margin, at least one fewer), keeping sequence order; halved when the encoder
            // gave no size.
            result => {
                let size = match &result {
                    Ok(frame) => Some(frame.len() - protocol::FRAME_HEADER_BYTES),
                    Err(protocol::EncodeError::FrameTooLarge { len, .. }) => Some(*len),
                    Err(_) => None,
                };
                let keep = match size {
                    Some(size) => {
                        let fits = (n as f64 * 0.95 * max_bytes as f64 / size as f64) as usize;
                        fits.clamp(1, n - 1)
                    }
                    None => n.div_ceil(2),
                };
                if let Message::EventBatch(b) = &mut batch {
                    b.events.truncate(keep);
                }
            }
        }
    }
}

async fn refresh_status(up: &Uplink, rtt: Duration, window: &SyncWindow<tokio::time::Instant>) {
    let store = up.store.clone();
    let found = blocking(move || -> Result<_, crate::store::StoreError> {
        let stats = store.stats()?;
        let oldest = store.pending(1)?.first().map(|e| e.observed_at);
        Ok((stats, oldest))
    })
    .await;
    if let Ok(Ok((stats, oldest))) = found {
        up.publish(window.mode(stats.unsynced_events), |st| {
            st.backlog_events = stats.unsynced_events;
            st.acked_seq = stats.acked_seq;
            st.oldest_unsynced_at = oldest;
            st.rtt = Some(rtt);
        });
    }
}

async fn health_report(up: &Uplink) -> Health {
    let store = up.store.clone();
    let stats = blocking(move || store.stats())
        .await
        .ok()
        .and_then(Result::ok);
    let status = up.status_tx.borrow().clone();
    Health {
        at: now(),
        uptime_secs: up.started.elapsed().as_secs(),
        backlog_events: stats.map_or(status.backlog_events, |s| s.unsynced_events),
        oldest_unsynced_at: status.oldest_unsynced_at,
        store_bytes: stats.map_or(0, |s| s.usage_bytes),
        disk_free_bytes: up.store.disk_free_bytes().unwrap_or(0),
        components: up.components.as_ref().map(|f| f()).unwrap_or_default(),
    }
}

/// Commits the latest acknowledged position to the store until the session drops its sender
/// (then commits whatever it had not yet). A failed commit is logged once and retried with the
/// next ack or after [`ACK_RETRY`], whichever comes first: until then the events stay unsynced
/// and are offered again, which the hub ignores.
async fn commit_acks(store: Store, mut acks: tokio::sync::watch::Receiver<u64>) {
    let mut failing = false;
    loop {
        let open = if failing {
            tokio::select! {
                changed = acks.changed() => changed.is_ok(),
                () = tokio::time::sleep(ACK_RETRY) => true,
            }
        } else {
            acks.changed().await.is_ok()
        };
        let up_to = *acks.borrow_and_update();
        let s = store.clone();
        match blocking(move || s.ack(Seq(up_to))).await {
            Ok(Ok(())) => failing = false,
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(stage = "uplink", error = %super::chain(&e), "failed to record the hub's acknowledgement");
                }
                failing = true;
            }
            Err(e) => {
                tracing::error!(stage = "uplink", error = %e, "recording the hub's acknowledgement panicked");
                failing = true;
            }
        }
        if !open {
            break;
        }
    }
}

/// How soon a failed commit of an acknowledged position is tried again without a new ack.
const ACK_RETRY: Duration = Duration::from_secs(1);

/// Completes at `at`, never without one (a `select!` arm that is off until set).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn renewal_due(up: &Uplink) -> bool {
    let Some(validity) = tls::validity(&up.settings.identity.cert_path) else {
        return false;
    };
    let since_last = lock(&up.last_renewal).map(|t| t.elapsed());
    renewal_due_at(
        validity,
        (up.clock)(),
        up.settings.renew_at_fraction,
        since_last,
    )
}

/// Whether the certificate valid over `validity` should be renewed at `now`: once `fraction`
/// of its validity has passed by the box clock. After a renewal in this process
/// (`since_last`), by the time elapsed since then instead: a box clock far ahead of the hub's
/// would otherwise find each new certificate due at once and renew in a loop.
fn renewal_due_at(
    (from, to): (Timestamp, Timestamp),
    now: Timestamp,
    fraction: f64,
    since_last: Option<Duration>,
) -> bool {
    let span_ms = to.millis_since(from).max(0) as f64;
    match since_last {
        Some(elapsed) => elapsed.as_secs_f64() * 1000.0 >= span_ms * fraction,
        None => now.as_unix_millis() >= from.as_unix_millis() + (span_ms * fraction) as i64,
    }
}

/// Installs a renewed certificate after checking it; true when it is in place.
async fn install_renewal(up: &Uplink, key: Option<String>, response: EnrollResponse) -> bool {
    match (key, response) {
        (
            Some(key),
            EnrollResponse::Accepted {
                certificate_pem,
                ca_pem,
                not_after,
                ..
            },
        ) => {
            let paths = up.settings.identity.clone();
            let installed = blocking(move || {
                tls::check_renewed(&paths, &certificate_pem, &key, &ca_pem)?;
                tls::install_identity(&paths, &ca_pem, &certificate_pem, &key)
            })
            .await;
            match installed {
                Ok(Ok(())) => {
                    tracing::info!(stage = "uplink", %not_after, "certificate renewed; reconnecting with it");
                    true
                }
                Ok(Err(e)) => {
                    tracing::warn!(stage = "uplink", error = %super::chain(&e), "renewed certificate not installed; keeping the current one");
                    false
                }
                Err(e) => {
                    tracing::warn!(stage = "uplink", error = %e, "renewal task failed");
                    false
                }
            }
        }
        (_, EnrollResponse::Refused { reason, message }) => {
            tracing::warn!(stage = "uplink", ?reason, %message, "certificate renewal refused");
            false
        }
        (None, _) => {
            tracing::debug!(stage = "uplink", "unexpected enrollment response");
            false
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded value is a plain timestamp: a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Answers one command: recheck goes to the camera side, anything unknown is unsupported.
async fn answer_command(
    command: protocol::Command,
    commands_tx: Option<mpsc::Sender<CommandRequest>>,
    results_tx: mpsc::Sender<CommandResult>,
) {
    let id = command.id;
    let failed = |reason: &str| {
        let reason = reason.to_owned();
        CommandResult::new(id, CommandOutcome::Failed { reason }, now())
    };
    let result = match (&command.action, commands_tx) {
        (CommandAction::Recheck { .. }, Some(tx)) => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if tx.send(CommandRequest { command, reply }).await.is_err() {
                failed("the camera pipeline is not running")
            } else {
                match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => failed("the camera pipeline dropped the command"),
                    Err(_) => failed("the camera pipeline did not answer in time"),
                }
            }
        }
        (CommandAction::Recheck { .. }, None) => failed("no camera pipeline runs on this agent"),
        _ => CommandResult::new(id, CommandOutcome::Unsupported, now()),
    };
    let _ = results_tx.send(result).await;
}

/// Records the files the hub confirmed, a batch per commit, and unpins them.
async fn confirm_evidence(
    store: Store,
    pins: Arc<EvidencePins>,
    mut confirmed: mpsc::Receiver<Digest>,
) {
    while let Some(first) = confirmed.recv().await {
        let mut files = vec![first];
        while files.len() < EVIDENCE_QUERY_FILES {
            match confirmed.try_recv() {
                Ok(sha) => files.push(sha),
                Err(_) => break,
            }
        }
        let s = store.clone();
        let done = files.clone();
        match blocking(move || s.confirm_evidence(files)).await {
            Ok(Ok(n)) => {
                for sha in &done {
                    pins.unpin(sha);
                }
                tracing::debug!(stage = "uplink", count = n, "evidence confirmed by the hub");
            }
            Ok(Err(e)) => {
                tracing::warn!(stage = "uplink", error = %super::chain(&e), "evidence confirmations not recorded; asked again next session")
            }
            Err(e) => {
                tracing::warn!(stage = "uplink", error = %super::chain(&e), "evidence confirmations not recorded; asked again next session")
            }
        }
    }
}

/// Asks the hub which unconfirmed files of synced events it holds (a confirmation lost with a
/// connection would otherwise leave them unconfirmed until evicted as lost).
async fn query_evidence(store: Store, out_tx: mpsc::Sender<Outgoing>) {
    let s = store.clone();
    let Ok(Ok(files)) = blocking(move || s.unconfirmed_evidence(EVIDENCE_QUERY_MAX_FILES)).await
    else {
        return;
    };
    for chunk in files.chunks(EVIDENCE_QUERY_FILES) {
        let query = Message::EvidenceQuery(EvidenceQuery {
            sha256s: chunk.to_vec(),
        });
        if out_tx.send(Outgoing::Message(query)).await.is_err() {
            return;
        }
    }
}

/// Uploads evidence the hub asks for, one file per stream at a lower priority than events,
/// from the offset the hub holds, within the byte budget. A file the box no longer holds is
/// reported lost, so the hub stops asking.
#[allow(clippy::too_many_arguments)]
async fn upload_evidence(
    conn: quinn::Connection,
    store: Store,
    pins: Arc<EvidencePins>,
    codec: Codec,
    chunk_bytes: usize,
    budget_bytes_per_sec: u64,
    mut requests: mpsc::Receiver<EvidenceAck>,
    out_tx: mpsc::Sender<Outgoing>,
) {
    while let Some(req) = requests.recv().await {
        let sha = req.sha256;
        let path = store.evidence_path(&sha);
        let s = store.clone();
        // pinned before looking, so that it cannot be evicted between the look and the read
        pins.pin(sha);
        let held = blocking(move || s.has_evidence(&sha)).await;
        let data = match held {
            Ok(Ok(true)) => blocking(move || std::fs::read(path)).await,
            Ok(Ok(false)) => {
                pins.unpin(&sha);
                tracing::warn!(stage = "uplink", %sha, "the hub asked for evidence the box no longer holds; reported lost");
                let lost = Message::EvidenceLost(EvidenceLost { sha256s: vec![sha] });
                if out_tx.send(Outgoing::Message(lost)).await.is_err() {
                    return;
                }
                continue;
            }
            _ => {
                pins.unpin(&sha);
                continue;
            }
        };
        let Ok(Ok(data)) = data else {
            pins.unpin(&sha);
            continue;
        };
        let total = data.len() as u64;
        let Ok(mut send) = conn.open_uni().await else {
            return;
        };
        // Events go first: the control stream keeps the default priority 0.
        let _ = send.set_priority(-1);
        let mut offset = req.received_bytes.min(total) as usize;
        while offset < data.len() {
            let end = (offset + chunk_bytes).min(data.len());
            if end == data.len() && !may_finish(&store, &pins, sha).await {
                // evicted meanwhile (and reported lost): the hub must not complete it
                tracing::debug!(stage = "uplink", %sha, "evidence evicted during its upload; given up");
                pins.unpin(&sha);
                let _ = send.reset(0u32.into());
                break;
            }
            let chunk = EvidenceChunk {
                sha256: sha,
                offset: offset as u64,
                total_bytes: total,
                data: data[offset..end].to_vec(),
            };
            if write_frame(&mut send, &codec, &Message::EvidenceChunk(chunk))
                .await
                .is_err()
            {
                return;
            }
            // Pace to the budget: the time this chunk is worth at the budgeted rate.
            let secs = (end - offset) as f64 / budget_bytes_per_sec as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            offset = end;
        }
        let _ = send.finish();
    }
}

/// Claims a file before its last chunk (see [`EvidencePins::claim_final`]): true when it is
/// still held and can no longer be evicted.
async fn may_finish(store: &Store, pins: &EvidencePins, sha: Digest) -> bool {
    if !pins.claim_final(&sha) {
        return false;
    }
    let s = store.clone();
    matches!(blocking(move || s.has_evidence(&sha)).await, Ok(Ok(true)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, UplinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UplinkError::Session(format!("blocking task failed: {e}")))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64, text_bytes: usize) -> protocol::Event {
        use protocol::{AttrValue, CategoryCode, Crs, EventId, Location, Severity, Source};
        protocol::Event {
            id: EventId::v7(1_767_225_600_000 + n, [n as u8; 10]),
            seq: Seq(0),
            source: Source {
                kind: protocol::SourceKind::Camera,
                id: protocol::SourceId::parse("cam-1").unwrap(),
            },
            category: CategoryCode::parse("0404").unwrap(),
            severity: Severity::Medium,
            observed_at: Timestamp::from_unix_millis(1_767_225_600_000 + n as i64),
            location: Location {
                lat: 31.3,
                lon: 120.6,
                crs: Crs::Wgs84,
            },
            grid: None,
            attributes: [("note".to_owned(), AttrValue::Text("x".repeat(text_bytes)))].into(),
            evidence: Vec::new(),
        }
    }

    #[test]
    fn a_batch_over_the_byte_limit_is_cut_to_what_fits_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(crate::store::StoreOptions::new(
            dir.path(),
            protocol::Location {
                lat: 31.3,
                lon: 120.6,
                crs: protocol::Crs::Wgs84,
            },
        ))
        .unwrap();
        let events = (0..300).map(|n| (event(n, 1000), Vec::new())).collect();
        assert!(store.submit_many(events).iter().all(Result::is_ok));
        let codec = Codec::default();
        let max_bytes = 64 * 1024;
        let (last, frame) = read_batch(&store, &codec, Seq(11), 256, max_bytes)
            .unwrap()
            .unwrap();
        let body = frame.len() - protocol::FRAME_HEADER_BYTES;
        assert!(body <= max_bytes, "{body} bytes");
        // cut to what fits, not halved until it does (256 events of ~1.1 KB: halving gives 32)
        assert!(
            body >= max_bytes * 85 / 100,
            "only {body} of {max_bytes} bytes used"
        );
        let Ok(Some((Message::EventBatch(EventBatch { events }), _))) = codec.decode(&frame) else {
            panic!("not an event batch");
        };
        let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
        assert_eq!(seqs, (11..11 + events.len() as u64).collect::<Vec<_>>());
        assert_eq!(last, 10 + events.len() as u64);

        // one event over the limit alone goes alone
        store.submit(event(300, 100_000), Vec::new()).unwrap();
        let (last, frame) = read_batch(&store, &codec, Seq(301), 256, max_bytes)
            .unwrap()
            .unwrap();
        assert_eq!(last, 301);
        assert!(frame.len() > max_bytes);
        // nothing pending past the end
        assert!(
            read_batch(&store, &codec, Seq(302), 256, max_bytes)
                .unwrap()
                .is_none()
        );
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    #[test]
    fn renewal_is_due_once_the_share_of_the_validity_has_passed_by_the_box_clock() {
        let validity = (t(1000), t(2000));
        assert!(!renewal_due_at(validity, t(1659), 0.66, None));
        assert!(renewal_due_at(validity, t(1660), 0.66, None));
        assert!(renewal_due_at(validity, t(5000), 0.66, None));
    }

    #[test]
    fn after_a_renewal_the_next_is_timed_by_elapsed_time_whatever_the_box_clock_says() {
        // A box clock far ahead: the new certificate looks due at once by the wall clock.
        let validity = (t(1000), t(2000));
        let ahead = t(1_000_000);
        assert!(!renewal_due_at(
            validity,
            ahead,
            0.66,
            Some(Duration::from_secs(1))
        ));
        assert!(renewal_due_at(
            validity,
            ahead,
            0.66,
            Some(Duration::from_secs(660))
        ));
    }
}
