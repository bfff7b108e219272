//! The state of one box session on the hub, from `Hello` to close: the protocol version and
//! store epoch agreed, the certificate's expiry, the box's rate limits, commands awaiting their
//! results, and a message read ahead while batches were coalesced.
//!
//! [`BoxSession`] is pure: no I/O, no clock of its own (callers pass the times), so its rules
//! are tested without QUIC, including by property tests. `conn.rs` is the pump around it: it
//! reads the box's messages, asks [`BoxSession::on_message`] what each one calls for
//! ([`Step`]), does that (commit, record, answer) and sends the answers.
//!
//! This module must not touch the database, the registry or the network, nor trust a payload
//! for identity (the box id comes from the certificate, outside it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::{
    CommandId, CommandResult, Digest, EnrollRequest, Event, Health, Hello, Message, Timestamp,
    VersionRange,
};

use crate::rate::RateBucket;

/// Most events committed in one transaction when batches queue up.
const MAX_COALESCED_EVENTS: usize = 8192;

/// Why a session ended, for the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    PeerClosed,
    Protocol(String),
    Revoked,
    Replaced,
    Shutdown,
    Internal,
    /// The certificate the session was opened with has expired.
    Expired,
    /// The certificate is good but the registry says the box is revoked or unknown.
    NotEnrolled,
    /// The box sent another event at a sequence number already committed (a cloned store).
    Conflict(String),
}

/// A box's rate limits within a session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Events a second (and the burst): faster batches wait.
    pub(super) max_events_per_sec: u32,
    /// Health reports a minute (and the burst): more are dropped.
    pub(super) max_health_per_min: u32,
}

/// What the `Hello` agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Agreed {
    /// The protocol version both speak.
    pub(super) version: u16,
    /// The box store's epoch: sequence numbers count within it (0: an agent that sends none).
    pub(super) epoch: u64,
}

/// What the pump does with one message of the box.
#[derive(Debug)]
pub(super) enum Step<R> {
    /// Commit these events (coalesced from queued batches, sequence numbers rising) after
    /// waiting `wait` for the box's rate; `wait` is zero within the rate.
    Commit { events: Vec<Event>, wait: Duration },
    /// Answer which of these files the hub holds.
    Query(Vec<Digest>),
    /// Record these files lost on the box.
    Lost(Vec<Digest>),
    /// Record this health report.
    Health(Health),
    /// A health report over the box's rate: dropped (counted).
    HealthDropped,
    /// Give this result to whoever sent the command.
    Answer(R, CommandResult),
    /// A result for no command of this session.
    UnknownResult(CommandId),
    /// Renew the box's certificate.
    Renew(EnrollRequest),
    /// A message of a type this hub does not know: skipped.
    Skip,
    /// End the session.
    Close(End),
}

/// What a box's `Hello` agrees to, or why no version is common (the box is told so).
pub(super) fn agree(hello: &Hello) -> Result<Agreed, String> {
    let theirs = VersionRange {
        min: hello.min_protocol_version,
        max: hello.protocol_version,
    };
    let version = VersionRange::CURRENT
        .negotiate(theirs)
        .map_err(|e| e.to_string())?;
    Ok(Agreed {
        version,
        epoch: hello.store_epoch.unwrap_or(0),
    })
}

/// One box session's state. `R` is how a command's result is handed back (a oneshot sender in
/// the hub, anything in tests).
pub(super) struct BoxSession<R> {
    not_after: Timestamp,
    agreed: Agreed,
    events: RateBucket,
    health: RateBucket,
    deferred: Option<Message>,
    commands: HashMap<CommandId, R>,
}

impl<R> BoxSession<R> {
    /// A session agreed by [`agree`] on a certificate valid until `not_after`.
    pub(super) fn new(agreed: Agreed, not_after: Timestamp, limits: Limits) -> BoxSession<R> {
        let events = f64::from(limits.max_events_per_sec);
        let health = f64::from(limits.max_health_per_min);
        BoxSession {
            not_after,
            agreed,
            events: RateBucket::new(events, events),
            health: RateBucket::new(health / 60.0, health),
            deferred: None,
            commands: HashMap::new(),
        }
    }

    /// The store epoch of this session.
    pub(super) fn epoch(&self) -> u64 {
        self.agreed.epoch
    }

    /// Whether the session must end before reading more: the box was revoked, or the
    /// certificate it was opened with expired (checked at every message and timer tick; a
    /// resumed TLS session carries the certificate of its first handshake).
    pub(super) fn check(&self, now: Timestamp, revoked: bool) -> Option<End> {
        if revoked {
            Some(End::Revoked)
        } else if now >= self.not_after {
            Some(End::Expired)
        } else {
            None
        }
    }

    /// A message read ahead while coalescing batches, to handle before reading on.
    pub(super) fn take_deferred(&mut self) -> Option<Message> {
        self.deferred.take()
    }

    /// A command was sent to the box; its result goes to `reply`.
    pub(super) fn command_sent(&mut self, id: CommandId, reply: R) {
        self.commands.insert(id, reply);
    }

    /// What `msg` calls for. An `EventBatch` takes the batches already queued behind it
    /// (`queued` yields them without waiting, `None` when none is ready) up to
    /// [`MAX_COALESCED_EVENTS`], keeping the first other message for [`Self::take_deferred`].
    pub(super) fn on_message(
        &mut self,
        msg: Message,
        mut queued: impl FnMut() -> Option<Result<Message, String>>,
        now: Instant,
    ) -> Step<R> {
        match msg {
            Message::EventBatch(batch) => {
                let mut events = batch.events;
                while events.len() < MAX_COALESCED_EVENTS {
                    match queued() {
                        Some(Ok(Message::EventBatch(more))) => events.extend(more.events),
                        Some(Ok(other)) => {
                            self.deferred = Some(other);
                            break;
                        }
                        Some(Err(e)) => return Step::Close(End::Protocol(e)),
                        None => break,
                    }
                }
                if let Some(problem) = batch_problem(&events) {
                    return Step::Close(End::Protocol(problem));
                }
                // Faster than allowed: wait until the batch fits the rate (the box's window
                // fills and it slows down; catching up after an outage just takes longer).
                let wait = self.events.take(events.len() as f64, now);
                Step::Commit { events, wait }
            }
            Message::EvidenceQuery(query) => Step::Query(query.sha256s),
            Message::EvidenceLost(lost) => Step::Lost(lost.sha256s),
            Message::Health(health) => {
                if self.health.try_take(1.0, now) {
                    Step::Health(health)
                } else {
                    Step::HealthDropped
                }
            }
            Message::CommandResult(result) => match self.commands.remove(&result.id) {
                Some(reply) => Step::Answer(reply, result),
                None => Step::UnknownResult(result.id),
            },
            Message::EnrollRequest(request) => Step::Renew(request),
            Message::Bye(_) => Step::Close(End::PeerClosed),
            Message::Unknown => Step::Skip,
            other => Step::Close(End::Protocol(format!(
                "unexpected {} from a box",
                other.kind()
            ))),
        }
    }
}

/// Sequence numbers must rise strictly within what was received together.
pub(super) fn batch_problem(events: &[Event]) -> Option<String> {
    if events.iter().any(|e| e.seq.0 == 0) {
        return Some("event with sequence number 0".into());
    }
    events.windows(2).find(|w| w[1].seq <= w[0].seq).map(|w| {
        format!(
            "sequence numbers out of order ({} then {})",
            w[0].seq, w[1].seq
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};

    use proptest::prelude::*;
    use protocol::{CommandOutcome, EventBatch};

    use super::*;
    use crate::testing::event;

    fn batch(seqs: &[u64]) -> Message {
        Message::EventBatch(EventBatch {
            events: seqs.iter().map(|&s| event(s, s as u8)).collect(),
        })
    }

    fn session(events_per_sec: u32, health_per_min: u32) -> BoxSession<u32> {
        let agreed = Agreed {
            version: 1,
            epoch: 7,
        };
        let limits = Limits {
            max_events_per_sec: events_per_sec,
            max_health_per_min: health_per_min,
        };
        BoxSession::new(agreed, Timestamp::from_unix_millis(10_000), limits)
    }

    fn result(id: CommandId) -> CommandResult {
        CommandResult::new(
            id,
            CommandOutcome::Unsupported,
            Timestamp::from_unix_millis(0),
        )
    }

    #[test]
    fn queued_batches_are_committed_together_and_the_next_message_waits_its_turn() {
        let mut s = session(1000, 30);
        let mut queue: VecDeque<Result<Message, String>> =
            [Ok(batch(&[3, 4])), Ok(Message::Unknown), Ok(batch(&[5]))].into();
        let step = s.on_message(batch(&[1, 2]), || queue.pop_front(), Instant::now());
        let Step::Commit { events, wait } = step else {
            panic!("{step:?}");
        };
        assert_eq!(
            events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(wait, Duration::ZERO);
        assert!(matches!(s.take_deferred(), Some(Message::Unknown)));
        assert!(s.take_deferred().is_none());
        assert_eq!(queue.len(), 1, "reading stops at the first other message");
    }

    #[test]
    fn a_batch_whose_numbers_do_not_rise_closes_the_session() {
        let mut s = session(1000, 30);
        for bad in [&[2, 2][..], &[3, 1], &[0, 1]] {
            let step = s.on_message(batch(bad), || None, Instant::now());
            assert!(
                matches!(step, Step::Close(End::Protocol(_))),
                "{bad:?}: {step:?}"
            );
        }
        // across coalesced batches too
        let mut queue: VecDeque<_> = [Ok(batch(&[2]))].into();
        let step = s.on_message(batch(&[5]), || queue.pop_front(), Instant::now());
        assert!(matches!(step, Step::Close(End::Protocol(_))), "{step:?}");
    }

    #[test]
    fn a_revoked_box_or_an_expired_certificate_ends_the_session() {
        let s = session(10, 30);
        assert_eq!(s.check(Timestamp::from_unix_millis(9_999), false), None);
        assert_eq!(
            s.check(Timestamp::from_unix_millis(9_999), true),
            Some(End::Revoked)
        );
        assert_eq!(
            s.check(Timestamp::from_unix_millis(10_000), false),
            Some(End::Expired)
        );
    }

    #[test]
    fn a_box_is_told_when_no_protocol_version_is_common() {
        let hello = |min, max| Hello {
            protocol_version: max,
            min_protocol_version: min,
            agent_version: "x".into(),
            last_acked_seq: None,
            last_committed_seq: None,
            store_epoch: Some(5),
        };
        let current = VersionRange::CURRENT;
        let agreed = agree(&hello(current.min, current.max)).unwrap();
        assert_eq!(agreed.version, current.max);
        assert_eq!(agreed.epoch, 5);
        assert!(agree(&hello(current.max + 1, current.max + 2)).is_err());
    }

    /// A message the property tests send, with the milliseconds since the last.
    #[derive(Debug, Clone)]
    enum Sent {
        Batch(u8),
        Health,
        Command(u8),
        Result(u8),
    }

    fn sent() -> impl Strategy<Value = (Sent, u16)> {
        let msg = prop_oneof![
            3 => (1u8..40).prop_map(Sent::Batch),
            2 => Just(Sent::Health),
            1 => (0u8..6).prop_map(Sent::Command),
            1 => (0u8..6).prop_map(Sent::Result),
        ];
        (msg, 0u16..3000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a box sends and however fast: batches in order are committed whole, in
        /// order; the events committed by any time stay within the rate and its burst; health
        /// reports within any window stay within their rate and burst; every command's result
        /// is handed on once, and results for no command are not.
        #[test]
        fn a_session_keeps_order_rates_and_command_answers(
            rate in 1u32..200,
            health_per_min in 1u32..60,
            sends in proptest::collection::vec(sent(), 1..120),
        ) {
            let mut s = session(rate, health_per_min);
            let t0 = Instant::now();
            // the pump handles one message at a time: the next is read after a batch's wait
            let mut now = t0;
            let mut next_seq = 1u64;
            let mut committed: Vec<(Instant, u64)> = Vec::new();
            let mut health_at: Vec<Instant> = Vec::new();
            let mut outstanding: HashSet<u8> = HashSet::new();
            let mut answered: Vec<u32> = Vec::new();
            for (msg, gap_ms) in sends {
                now = now.max(t0) + Duration::from_millis(u64::from(gap_ms));
                let message = match &msg {
                    Sent::Batch(n) => {
                        let seqs: Vec<u64> = (next_seq..next_seq + u64::from(*n)).collect();
                        next_seq += u64::from(*n);
                        batch(&seqs)
                    }
                    Sent::Health => Message::Health(Health {
                        at: Timestamp::from_unix_millis(0),
                        uptime_secs: 0,
                        backlog_events: 0,
                        oldest_unsynced_at: None,
                        store_bytes: 0,
                        disk_free_bytes: 0,
                        components: Vec::new(),
                    }),
                    Sent::Command(id) => {
                        s.command_sent(command_id(*id), u32::from(*id));
                        outstanding.insert(*id);
                        continue;
                    }
                    Sent::Result(id) => Message::CommandResult(result(command_id(*id))),
                };
                match s.on_message(message, || None, now) {
                    Step::Commit { events, wait } => {
                        now += wait;
                        let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
                        prop_assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
                        let before = committed.last().map_or(0, |c| c.1);
                        prop_assert_eq!(seqs[0], before + 1, "in order, nothing skipped");
                        committed.push((now, *seqs.last().unwrap()));
                    }
                    Step::Health(_) => health_at.push(now),
                    Step::HealthDropped => {}
                    Step::Answer(reply, result) => {
                        prop_assert_eq!(command_id(reply as u8), result.id);
                        prop_assert!(outstanding.remove(&(reply as u8)));
                        answered.push(reply);
                    }
                    Step::UnknownResult(id) => {
                        prop_assert!(!outstanding.iter().any(|&o| command_id(o) == id));
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            // events: by any commit, at most the burst plus the rate times the time since start
            for &(at, up_to) in &committed {
                let allowed = f64::from(rate) * (1.0 + at.duration_since(t0).as_secs_f64());
                prop_assert!(up_to as f64 <= allowed + 1e-6, "{} events by {:?} at {}/s", up_to, at - t0, rate);
            }
            // health: within any window, at most the burst plus the rate times its length
            for (i, &from) in health_at.iter().enumerate() {
                for (j, &to) in health_at.iter().enumerate().skip(i) {
                    let allowed = f64::from(health_per_min) * (1.0 + to.duration_since(from).as_secs_f64() / 60.0);
                    prop_assert!((j - i + 1) as f64 <= allowed + 1e-6);
                }
            }
        }
    }

    fn command_id(n: u8) -> CommandId {
        CommandId::from_uuid(uuid::Uuid::from_u128(u128::from(n) + 1))
    }
}
