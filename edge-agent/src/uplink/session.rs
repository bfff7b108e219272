//! One session with the hub, from connect to close.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use protocol::{
    Bye, ByeReason, Codec, CommandAction, CommandOutcome, CommandResult, EnrollRequest,
    EnrollResponse, Event, EventBatch, EvidenceAck, EvidenceChunk, Health, Hello,
    MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION, Seq,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{read_frame, write_frame};
use super::{CommandRequest, Uplink, UplinkError, UplinkMode, now, resolve, tls};
use crate::store::Store;

/// How long the hub has to answer the handshake and the `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command may take on the box.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the status (backlog, oldest event) is refreshed from the store.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// How often renewal is considered.
const RENEW_CHECK: Duration = Duration::from_secs(60);

/// Why a session ended.
pub(super) enum End {
    /// Cancelled: said `Bye` and closed.
    Shutdown,
    /// The hub said this box is revoked.
    Revoked,
    /// The link or the hub went away; `progressed` when something was acknowledged first.
    Lost { progressed: bool, why: String },
}

pub(super) async fn run(
    up: &Uplink,
    endpoint: &quinn::Endpoint,
    cancel: &CancellationToken,
) -> Result<End, UplinkError> {
    let s = &up.settings;
    let (config, _) = tls::session_config(&s.identity, up.transport())?;
    let addr = resolve(&s.hub_addr).await?;
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
        _ => (1, b"session ended"),
    };
    conn.close(code.into(), reason);
    result
}

#[allow(clippy::too_many_lines)]
async fn session(
    up: &Uplink,
    conn: &quinn::Connection,
    cancel: &CancellationToken,
) -> Result<End, UplinkError> {
    let s = &up.settings;
    let codec = Codec::new(s.max_frame_bytes);
    let (send, mut recv) = conn.open_bi().await?;

    // The reader and writer own the stream halves: their reads and writes are not cancel safe.
    let (in_tx, mut in_rx) = mpsc::channel::<Result<Message, String>>(64);
    let reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let item = match read_frame(&mut recv, &codec).await {
                Ok(Some(m)) => Ok(m),
                Ok(None) => break,
                Err(e) => Err(super::chain(&e)),
            };
            let stop = item.is_err();
            if in_tx.send(item).await.is_err() || stop {
                break;
            }
        }
    }));
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        let mut send = send;
        while let Some(msg) = out_rx.recv().await {
            if let Err(e) = write_frame(&mut send, &codec, &msg).await {
                tracing::debug!(error = %super::chain(&e), "control stream write failed");
                return;
            }
        }
        let _ = send.finish();
    });

    let store = up.store.clone();
    let stats = blocking(move || store.stats()).await??;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        min_protocol_version: MIN_PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        last_acked_seq: (stats.acked_seq > 0).then_some(Seq(stats.acked_seq)),
        last_committed_seq: (stats.last_seq > 0).then_some(Seq(stats.last_seq)),
    };
    send_or_lost(&out_tx, Message::Hello(hello)).await?;
    let welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, in_rx.recv()).await {
        Ok(Some(Ok(Message::Welcome(w)))) => w,
        Ok(Some(Ok(Message::Bye(bye)))) => return Ok(bye_end(&bye, false)),
        Ok(Some(Ok(other))) => {
            return Err(UplinkError::Session(format!(
                "expected welcome, got {}",
                other.kind()
            )));
        }
        Ok(Some(Err(e))) => return Err(UplinkError::Session(e)),
        Ok(None) => {
            return Ok(End::Lost {
                progressed: false,
                why: close_reason(conn, "the hub closed the session before welcome"),
            });
        }
        Err(_) => return Err(UplinkError::Timeout(HANDSHAKE_TIMEOUT)),
    };
    up.status_tx.send_modify(|st| st.sessions_total += 1);
    tracing::info!(stage = "uplink", device_id = %welcome.box_id, hub_last = ?welcome.last_committed_seq, acked = stats.acked_seq, "session open");

    // What the hub committed is synced, even if its ack never reached us.
    let hub_last = welcome.last_committed_seq.map_or(0, |q| q.0);
    let mut acked = stats.acked_seq;
    if hub_last > stats.last_seq {
        tracing::error!(
            stage = "uplink",
            hub_last,
            box_last = stats.last_seq,
            "the hub holds events of this box beyond its store; was the store replaced?"
        );
    }
    let up_to = hub_last.min(stats.last_seq);
    if up_to > acked {
        let store = up.store.clone();
        blocking(move || store.ack(Seq(up_to))).await??;
        acked = up_to;
    }
    let mut next = acked.max(hub_last.min(stats.last_seq)) + 1;
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut exhausted = false;
    let mut progressed = false;

    let (evidence_tx, evidence_rx) = mpsc::channel::<EvidenceAck>(1024);
    let _evidence = AbortOnDrop(tokio::spawn(upload_evidence(
        conn.clone(),
        up.store.clone(),
        codec,
        s.evidence_chunk_bytes,
        s.evidence_budget_bytes_per_sec,
        evidence_rx,
    )));

    let mut poll = tokio::time::interval(s.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = tokio::time::interval(s.health_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(RENEW_CHECK);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = Instant::now() - STATUS_REFRESH;
    let mut pending_key: Option<String> = None;
    let (results_tx, mut results_rx) = mpsc::channel::<CommandResult>(16);

    let end = loop {
        // Fill the window with pending events, in sequence order.
        while in_flight.len() < s.max_batches_in_flight && !exhausted {
            let store = up.store.clone();
            let (max_events, max_bytes) = (s.batch_max_events, s.batch_max_bytes);
            let events =
                blocking(move || read_batch(&store, Seq(next), max_events, max_bytes)).await??;
            let Some(last) = events.last().map(|e| e.seq.0) else {
                exhausted = true;
                break;
            };
            next = last + 1;
            in_flight.push_back(last);
            send_or_lost(&out_tx, Message::EventBatch(EventBatch { events })).await?;
        }
        if last_status.elapsed() >= STATUS_REFRESH {
            last_status = Instant::now();
            refresh_status(up, conn.rtt(), in_flight.is_empty() && exhausted).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = out_tx.try_send(Message::Bye(Bye { reason: ByeReason::Shutdown, message: None }));
                break End::Shutdown;
            }
            m = in_rx.recv() => match m {
                None => break End::Lost { progressed, why: close_reason(conn, "the hub closed the session") },
                Some(Err(e)) => return Err(UplinkError::Session(e)),
                Some(Ok(msg)) => match msg {
                    Message::Ack(ack) => {
                        let up_to = ack.up_to.0.min(next.saturating_sub(1));
                        if up_to > acked {
                            let store = up.store.clone();
                            blocking(move || store.ack(Seq(up_to))).await??;
                            acked = up_to;
                            progressed = true;
                        }
                        while in_flight.front().is_some_and(|&l| l <= acked) {
                            in_flight.pop_front();
                        }
                        exhausted = false;
                        tracing::debug!(stage = "uplink", seq = acked, "acked");
                    }
                    Message::Command(command) => {
                        tracing::info!(stage = "uplink", command = %command.id, "command from the hub");
                        tokio::spawn(answer_command(command, up.commands_tx.clone(), results_tx.clone()));
                    }
                    Message::EvidenceAck(ev) => {
                        if !ev.complete && evidence_tx.try_send(ev).is_err() {
                            tracing::debug!(stage = "uplink", "evidence queue full; the hub asks again at the next session");
                        }
                    }
                    Message::EnrollResponse(response) => {
                        install_renewal(up, pending_key.take(), response).await;
                    }
                    Message::Bye(bye) => break bye_end(&bye, progressed),
                    Message::Unknown => tracing::debug!(stage = "uplink", "skipped a message of an unknown type"),
                    other => return Err(UplinkError::Session(format!("unexpected {} from the hub", other.kind()))),
                },
            },
            Some(result) = results_rx.recv() => {
                send_or_lost(&out_tx, Message::CommandResult(result)).await?;
            }
            _ = poll.tick() => exhausted = false,
            _ = health.tick() => {
                let report = health_report(up).await;
                send_or_lost(&out_tx, Message::Health(report)).await?;
            }
            _ = renew.tick() => {
                if pending_key.is_none() && renewal_due(up) {
                    let (key, csr_pem) = tls::new_key_and_csr()?;
                    pending_key = Some(key);
                    tracing::info!(stage = "uplink", "renewing the box certificate");
                    send_or_lost(&out_tx, Message::EnrollRequest(EnrollRequest {
                        token: String::new(),
                        csr_pem,
                        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                    })).await?;
                }
            }
            reason = conn.closed() => break End::Lost { progressed, why: reason.to_string() },
        }
    };
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    drop(reader);
    up.status_tx.send_modify(|st| {
        st.mode = UplinkMode::Offline;
        st.rtt = None;
    });
    Ok(end)
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

async fn send_or_lost(out_tx: &mpsc::Sender<Message>, msg: Message) -> Result<(), UplinkError> {
    out_tx
        .send(msg)
        .await
        .map_err(|_| UplinkError::Session("control stream closed".into()))
}

/// Events from `from` on, at most `max_events` and about `max_bytes` encoded (at least one).
fn read_batch(
    store: &Store,
    from: Seq,
    max_events: usize,
    max_bytes: usize,
) -> Result<Vec<Event>, crate::store::StoreError> {
    let mut events = store.events_from(from, max_events)?;
    let mut bytes = 0;
    let mut keep = events.len();
    for (i, e) in events.iter().enumerate() {
        bytes += rmp_serde::to_vec_named(e).map_or(0, |v| v.len());
        if bytes > max_bytes && i > 0 {
            keep = i;
            break;
        }
    }
    events.truncate(keep);
    Ok(events)
}

async fn refresh_status(up: &Uplink, rtt: Duration, idle: bool) {
    let store = up.store.clone();
    let found = blocking(move || -> Result<_, crate::store::StoreError> {
        let stats = store.stats()?;
        let oldest = store.pending(1)?.first().map(|e| e.observed_at);
        Ok((stats, oldest))
    })
    .await;
    if let Ok(Ok((stats, oldest))) = found {
        up.status_tx.send_modify(|st| {
            st.backlog_events = stats.unsynced_events;
            st.acked_seq = stats.acked_seq;
            st.oldest_unsynced_at = oldest;
            st.rtt = Some(rtt);
            st.mode = if stats.unsynced_events == 0 && idle {
                UplinkMode::Connected
            } else {
                UplinkMode::CatchingUp
            };
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
        disk_free_bytes: 0,
        components: Vec::new(),
    }
}

fn renewal_due(up: &Uplink) -> bool {
    let Some((from, to)) = tls::validity(&up.settings.identity.cert_path) else {
        return false;
    };
    let span = to.millis_since(from) as f64;
    let due = from.as_unix_millis() + (span * up.settings.renew_at_fraction) as i64;
    now().as_unix_millis() >= due
}

async fn install_renewal(up: &Uplink, key: Option<String>, response: EnrollResponse) {
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
            match blocking(move || tls::install_identity(&paths, &ca_pem, &certificate_pem, &key))
                .await
            {
                Ok(Ok(())) => {
                    tracing::info!(stage = "uplink", %not_after, "certificate renewed; used from the next session");
                }
                Ok(Err(e)) => {
                    tracing::warn!(stage = "uplink", error = %super::chain(&e), "failed to install the renewed certificate");
                }
                Err(e) => tracing::warn!(stage = "uplink", error = %e, "renewal task failed"),
            }
        }
        (_, EnrollResponse::Refused { reason, message }) => {
            tracing::warn!(stage = "uplink", ?reason, %message, "certificate renewal refused");
        }
        (None, _) => tracing::debug!(stage = "uplink", "unexpected enrollment response"),
    }
}

/// Answers one command: recheck goes to the camera side, anything unknown is unsupported.
async fn answer_command(
    command: protocol::Command,
    commands_tx: Option<mpsc::Sender<CommandRequest>>,
    results_tx: mpsc::Sender<CommandResult>,
) {
    let id = command.id;
    let failed = |reason: &str| CommandResult {
        id,
        outcome: CommandOutcome::Failed {
            reason: reason.to_owned(),
        },
        at: now(),
        evidence: Vec::new(),
        attributes: Default::default(),
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
        _ => CommandResult {
            id,
            outcome: CommandOutcome::Unsupported,
            at: now(),
            evidence: Vec::new(),
            attributes: Default::default(),
        },
    };
    let _ = results_tx.send(result).await;
}

/// Uploads evidence the hub asks for, one file per stream at a lower priority than events,
/// from the offset the hub holds, within the byte budget.
async fn upload_evidence(
    conn: quinn::Connection,
    store: Store,
    codec: Codec,
    chunk_bytes: usize,
    budget_bytes_per_sec: u64,
    mut requests: mpsc::Receiver<EvidenceAck>,
) {
    while let Some(req) = requests.recv().await {
        let sha = req.sha256;
        let path = store.evidence_path(&sha);
        let s = store.clone();
        let held = blocking(move || s.has_evidence(&sha)).await;
        if !matches!(held, Ok(Ok(true))) {
            tracing::debug!(stage = "uplink", %sha, "evidence asked for is not on the box");
            continue;
        }
        let Ok(Ok(data)) = blocking(move || std::fs::read(path)).await else {
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
