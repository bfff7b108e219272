//! The send window of one session with the hub: which events go next, what the hub has
//! acknowledged, and when the session may close.
//!
//! [`SyncWindow`] is the whole state the uplink keeps about delivery within a session (next
//! sequence number, acknowledged position, batches in flight, whether the store had nothing
//! more, a renewal drain). It is pure: no I/O, no clock of its own (callers pass `now`, of any
//! ordered time type), so any interleaving of acks, losses and reconnects can be tested without
//! QUIC (see the property tests below). The session (`session.rs`) is a pump around it: it reads
//! the batch the window asks for, sends it, feeds the hub's answers back, and commits the
//! position [`SyncWindow::on_ack`] returns.
//!
//! This module must not read the store or the network, and must never acknowledge more than
//! the hub acknowledged: the store marks events synced on the hub's word only.

use std::collections::VecDeque;

use super::UplinkMode;

/// The delivery state of one session.
#[derive(Debug, Clone)]
pub(crate) struct SyncWindow<I> {
    /// The highest sequence number the hub acknowledged (or the store had recorded as synced
    /// when the session opened).
    acked: u64,
    /// The first sequence number not yet sent in this session.
    next: u64,
    /// The last sequence number of each batch sent and not yet acknowledged, in order.
    in_flight: VecDeque<u64>,
    /// Batches that may be in flight at once.
    max_in_flight: usize,
    /// The store had nothing from `next` on when last asked (until an ack or a poll).
    exhausted: bool,
    /// Something was acknowledged in this session.
    progressed: bool,
    /// Set when a renewed certificate is installed: no new batches, and the session closes
    /// once those in flight are acknowledged or at this deadline.
    drain_until: Option<I>,
}

/// What the hub's `Welcome` says against what the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Welcomed {
    /// The hub holds no more of this store epoch than the store.
    Consistent,
    /// The hub holds events of this store epoch past the store's last: a copy of another box's
    /// store, or a store restored from an old backup. Events are still sent from the store's
    /// acknowledged position; the hub refuses any that conflict.
    HubAhead {
        /// The hub's last committed sequence number.
        hub_last: u64,
        /// The store's last committed sequence number.
        box_last: u64,
    },
}

impl<I: Copy + Ord> SyncWindow<I> {
    /// The window of a session just welcomed: sending resumes after `stored_acked` (what the
    /// store recorded as synced). Events the hub committed but whose ack never arrived are sent
    /// again: the hub answers a duplicate with an ack, and another event at the same sequence
    /// number with a refusal, so nothing is marked synced on the hub's `Welcome` alone.
    pub(crate) fn open(
        stored_acked: u64,
        stored_last: u64,
        hub_last: Option<u64>,
        max_in_flight: usize,
    ) -> (SyncWindow<I>, Welcomed) {
        let hub_last = hub_last.unwrap_or(0);
        let welcomed = if hub_last > stored_last {
            Welcomed::HubAhead {
                hub_last,
                box_last: stored_last,
            }
        } else {
            Welcomed::Consistent
        };
        let window = SyncWindow {
            acked: stored_acked,
            next: stored_acked + 1,
            in_flight: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            exhausted: false,
            progressed: false,
            drain_until: None,
        };
        (window, welcomed)
    }

    /// Where the next batch starts, when one should be read and sent now: there is room in
    /// the window, the store was not found empty since the last ack or poll, and no renewal
    /// drain runs.
    pub(crate) fn next_batch(&self) -> Option<u64> {
        (self.in_flight.len() < self.max_in_flight && !self.exhausted && self.drain_until.is_none())
            .then_some(self.next)
    }

    /// A batch from [`Self::next_batch`] up to `last` was sent.
    ///
    /// # Panics
    /// In debug builds, when `last` is before the batch's start (a pump bug).
    pub(crate) fn on_sent(&mut self, last: u64) {
        debug_assert!(
            last >= self.next,
            "batch ending at {last} before {}",
            self.next
        );
        self.next = last + 1;
        self.in_flight.push_back(last);
    }

    /// The store had nothing from [`Self::next_batch`] on: wait for an ack or a poll.
    pub(crate) fn on_exhausted(&mut self) {
        self.exhausted = true;
    }

    /// The poll interval passed: look at the store again (new events may be there).
    pub(crate) fn on_poll(&mut self) {
        self.exhausted = false;
    }

    /// The hub acknowledged everything up to `up_to`. Returns the new acknowledged position
    /// when it moved (to be recorded in the store), never past what this session sent.
    pub(crate) fn on_ack(&mut self, up_to: u64) -> Option<u64> {
        let up_to = up_to.min(self.next.saturating_sub(1));
        let moved = (up_to > self.acked).then(|| {
            self.acked = up_to;
            self.progressed = true;
            up_to
        });
        while self.in_flight.front().is_some_and(|&l| l <= self.acked) {
            self.in_flight.pop_front();
        }
        self.exhausted = false;
        moved
    }

    /// A renewed certificate is in place: send nothing more and close once the batches in
    /// flight are acknowledged, or at `deadline`.
    pub(crate) fn start_drain(&mut self, deadline: I) {
        self.drain_until = Some(deadline);
    }

    /// When the renewal drain ends, if one runs.
    pub(crate) fn drain_deadline(&self) -> Option<I> {
        self.drain_until
    }

    /// Whether a renewal drain is running.
    pub(crate) fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// Whether the session should close now to reconnect with a renewed certificate.
    pub(crate) fn should_close(&self, now: I) -> bool {
        self.drain_until
            .is_some_and(|t| self.in_flight.is_empty() || now >= t)
    }

    /// Whether anything was acknowledged in this session (the reconnect backoff starts over).
    pub(crate) fn progressed(&self) -> bool {
        self.progressed
    }

    /// The acknowledged position.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Nothing in flight and the store had nothing more when last asked.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.exhausted
    }

    /// The mode of a session with `backlog` events unsynced in the store.
    pub(crate) fn mode(&self, backlog: u64) -> UplinkMode {
        if backlog == 0 && self.idle() {
            UplinkMode::Connected
        } else {
            UplinkMode::CatchingUp
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_session_resumes_after_the_stored_position_and_fills_its_window() {
        let (mut w, welcomed) = SyncWindow::<u64>::open(10, 30, Some(12), 2);
        assert_eq!(welcomed, Welcomed::Consistent);
        assert_eq!(w.next_batch(), Some(11));
        w.on_sent(15);
        assert_eq!(w.next_batch(), Some(16));
        w.on_sent(20);
        assert_eq!(
            w.next_batch(),
            None,
            "two batches in flight fill a window of two"
        );
        assert_eq!(w.on_ack(15), Some(15));
        assert_eq!(w.next_batch(), Some(21));
        assert!(w.progressed());
    }

    #[test]
    fn an_ack_past_what_was_sent_moves_the_position_only_to_what_was_sent() {
        let (mut w, _) = SyncWindow::<u64>::open(0, 100, Some(100), 4);
        w.on_sent(5);
        assert_eq!(w.on_ack(100), Some(5));
        assert_eq!(w.on_ack(3), None, "an older ack moves nothing");
        assert_eq!(w.acked(), 5);
    }

    #[test]
    fn a_hub_that_holds_more_than_the_store_is_reported_and_still_not_trusted() {
        let (w, welcomed) = SyncWindow::<u64>::open(3, 5, Some(9), 4);
        assert_eq!(
            welcomed,
            Welcomed::HubAhead {
                hub_last: 9,
                box_last: 5
            }
        );
        assert_eq!(w.next_batch(), Some(4));
        assert_eq!(w.acked(), 3);
    }

    #[test]
    fn an_empty_store_waits_for_a_poll_or_an_ack() {
        let (mut w, _) = SyncWindow::<u64>::open(0, 0, None, 4);
        w.on_exhausted();
        assert_eq!(w.next_batch(), None);
        assert!(w.idle());
        assert_eq!(w.mode(0), UplinkMode::Connected);
        assert_eq!(w.mode(3), UplinkMode::CatchingUp);
        w.on_poll();
        assert_eq!(w.next_batch(), Some(1));
        assert_eq!(w.mode(0), UplinkMode::CatchingUp);
    }

    #[test]
    fn a_renewal_drain_stops_sending_and_closes_when_acked_or_at_its_deadline() {
        let (mut w, _) = SyncWindow::<u64>::open(0, 10, None, 4);
        w.on_sent(4);
        w.start_drain(100);
        assert_eq!(w.next_batch(), None);
        assert!(!w.should_close(50));
        assert!(
            w.should_close(100),
            "the deadline closes it with batches in flight"
        );
        w.on_ack(4);
        assert!(w.should_close(50), "all acknowledged closes it at once");
    }

    /// One step of the property test's world.
    #[derive(Debug, Clone)]
    enum Step {
        /// The box commits `n` new events.
        Produce(u8),
        /// The box sends what its window allows (at most `n` events a batch).
        Send(u8),
        /// The hub commits the oldest batch it received and sends its ack.
        HubCommit,
        /// The oldest ack on the way reaches the box.
        AckArrives,
        /// The box's ack committer records the latest acknowledged position.
        AckRecorded,
        /// The poll interval passes.
        Poll,
        /// The link drops: everything on the way is lost, the session starts again from what
        /// the box's store recorded.
        Reconnect,
        /// The box restarts (power loss): as a reconnect.
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            2 => (1u8..8).prop_map(Step::Produce),
            4 => (1u8..6).prop_map(Step::Send),
            4 => Just(Step::HubCommit),
            4 => Just(Step::AckArrives),
            2 => Just(Step::AckRecorded),
            1 => Just(Step::Poll),
            1 => Just(Step::Reconnect),
            1 => Just(Step::Restart),
        ]
    }

    /// The box, the hub and the link between them, driven through the window as the session
    /// drives it.
    struct World {
        /// Events the box's store holds (ids by sequence number, from 1).
        store: Vec<u64>,
        /// What the store recorded as synced.
        stored_acked: u64,
        /// The latest position the window asked to record (the ack committer's input).
        to_record: u64,
        window: SyncWindow<u64>,
        /// Batches on the way to the hub.
        uplink: VecDeque<Vec<(u64, u64)>>,
        /// Acks on the way to the box.
        downlink: VecDeque<u64>,
        /// The hub's log: event id by sequence number.
        hub: BTreeMap<u64, u64>,
        /// The order in which the hub inserted events.
        hub_order: Vec<u64>,
        max_in_flight: usize,
    }

    impl World {
        fn new(max_in_flight: usize) -> World {
            let (window, _) = SyncWindow::open(0, 0, None, max_in_flight);
            World {
                store: Vec::new(),
                stored_acked: 0,
                to_record: 0,
                window,
                uplink: VecDeque::new(),
                downlink: VecDeque::new(),
                hub: BTreeMap::new(),
                hub_order: Vec::new(),
                max_in_flight,
            }
        }

        fn reconnect(&mut self) {
            self.uplink.clear();
            self.downlink.clear();
            let hub_last = self.hub.keys().next_back().copied();
            let (window, welcomed) = SyncWindow::open(
                self.stored_acked,
                self.store.len() as u64,
                hub_last,
                self.max_in_flight,
            );
            assert_eq!(
                welcomed,
                Welcomed::Consistent,
                "the hub never holds more than the box"
            );
            self.window = window;
            self.to_record = self.stored_acked;
        }

        fn apply(&mut self, step: &Step) {
            match *step {
                Step::Produce(n) => {
                    for _ in 0..n {
                        let seq = self.store.len() as u64 + 1;
                        self.store.push(seq * 7919);
                    }
                }
                Step::Send(max) => {
                    while let Some(from) = self.window.next_batch() {
                        let batch: Vec<(u64, u64)> = (from..)
                            .take(usize::from(max))
                            .take_while(|&s| s <= self.store.len() as u64)
                            .map(|s| (s, self.store[s as usize - 1]))
                            .collect();
                        match batch.last() {
                            Some(&(last, _)) => {
                                self.window.on_sent(last);
                                self.uplink.push_back(batch);
                            }
                            None => self.window.on_exhausted(),
                        }
                    }
                }
                Step::HubCommit => {
                    if let Some(batch) = self.uplink.pop_front() {
                        for (seq, id) in batch {
                            match self.hub.get(&seq) {
                                Some(&held) => assert_eq!(held, id, "a conflict at {seq}"),
                                None => {
                                    self.hub.insert(seq, id);
                                    self.hub_order.push(seq);
                                }
                            }
                        }
                        let up_to = *self.hub.keys().next_back().unwrap_or(&0);
                        self.downlink.push_back(up_to);
                    }
                }
                Step::AckArrives => {
                    if let Some(up_to) = self.downlink.pop_front() {
                        if let Some(moved) = self.window.on_ack(up_to) {
                            assert!(moved > self.to_record, "the position only rises");
                            self.to_record = moved;
                        }
                        let hub_last = *self.hub.keys().next_back().unwrap_or(&0);
                        assert!(
                            self.window.acked() <= hub_last,
                            "acknowledged {} with the hub at {hub_last}",
                            self.window.acked()
                        );
                    }
                }
                Step::AckRecorded => self.stored_acked = self.to_record,
                Step::Poll => self.window.on_poll(),
                Step::Reconnect => self.reconnect(),
                Step::Restart => {
                    // what the ack committer had not recorded is lost with the process
                    self.reconnect();
                }
            }
        }

        /// Runs without faults until nothing moves.
        fn settle(&mut self) {
            self.reconnect();
            for _ in 0..10_000 {
                self.window.on_poll();
                self.apply(&Step::Send(5));
                if self.uplink.is_empty() && self.downlink.is_empty() {
                    break;
                }
                while !self.uplink.is_empty() {
                    self.apply(&Step::HubCommit);
                }
                while !self.downlink.is_empty() {
                    self.apply(&Step::AckArrives);
                }
                self.apply(&Step::AckRecorded);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any interleaving of production, sends, hub commits, acks, losses, reconnects and
        /// restarts delivers every event to the hub exactly once, in sequence order, and the
        /// box records as synced only what the hub holds.
        #[test]
        fn every_event_reaches_the_hub_once_and_in_order(
            max_in_flight in 1usize..5,
            steps in proptest::collection::vec(step(), 0..200),
        ) {
            let mut world = World::new(max_in_flight);
            for step in &steps {
                world.apply(step);
                let hub_last = *world.hub.keys().next_back().unwrap_or(&0);
                prop_assert!(world.stored_acked <= hub_last);
            }
            world.settle();
            let n = world.store.len() as u64;
            let expected: Vec<u64> = (1..=n).collect();
            prop_assert_eq!(&world.hub_order, &expected, "inserted once each, in order");
            for (&seq, &id) in &world.hub {
                prop_assert_eq!(id, world.store[seq as usize - 1]);
            }
            prop_assert_eq!(world.stored_acked, n, "everything recorded as synced");
            prop_assert!(world.window.idle());
            prop_assert_eq!(world.window.mode(0), UplinkMode::Connected);
        }

        /// However acks arrive (late, repeated, out of order, past the end), the acknowledged
        /// position never falls and never passes what was sent.
        #[test]
        fn the_acknowledged_position_never_falls_nor_passes_what_was_sent(
            sends in proptest::collection::vec(1u64..10, 1..20),
            acks in proptest::collection::vec(0u64..300, 0..40),
        ) {
            let (mut w, _) = SyncWindow::<u64>::open(0, 1000, None, 64);
            let mut sent = 0;
            for n in sends {
                if w.next_batch().is_some() {
                    sent += n;
                    w.on_sent(sent);
                }
            }
            let mut last = 0;
            for a in acks {
                let moved = w.on_ack(a);
                prop_assert!(w.acked() >= last && w.acked() <= sent);
                prop_assert_eq!(moved.is_some(), w.acked() > last);
                last = w.acked();
            }
        }
    }
}
