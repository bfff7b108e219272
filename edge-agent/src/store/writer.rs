//! The writer thread: the only code that writes to the database.
//!
//! It takes whatever requests are queued (up to `max_batch`, including those that arrive while
//! the batch is applied), applies them in one `BEGIN IMMEDIATE` transaction in arrival order,
//! commits once (one fsync for the group), and only then answers each caller (a larger group
//! through a second thread, `store-answers`, so that waking callers overlaps the next commit).
//! Sequence numbers are assigned here, so they follow commit order and have no gaps. Eviction (see the module doc of `store`) runs inside the same transaction as the
//! commit that needs the room, so an eviction and the data-loss event that reports it are
//! durable together or not at all; evicted evidence files are unlinked only after that commit.
//!
//! A full disk (a commit or a submitter's evidence file refused for lack of space) is relieved
//! before the writer takes its next request: it gives back the disk reserve (see `reserve.rs`),
//! checkpoints the WAL, lowers the quota and evicts down to it in bounded steps, then allocates
//! the reserve again. The WAL is kept to half the reserve (its checkpoint point), so that a
//! checkpoint always fits in the room the reserve gives back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{
    AttrValue, Catalog, CategoryCode, Digest, Event, EventId, GridCode, Location, Seq, Severity,
    Source, SourceId, SourceKind, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::evidence::{EvidenceDir, Staged, disk_space};
use super::reserve::DiskReserve;
use super::{
    Committed, DiskCounters, OpenReport, ROW_OVERHEAD_BYTES, StoreError, StoreOptions,
    is_disk_full, sqlite_error,
};

/// A request to the writer.
pub(super) enum Request {
    /// Commit events, all in the same transaction, in order; one result per event.
    Submit {
        items: Vec<(Encoded, Vec<Staged>)>,
        reply: SubmitReply,
    },
    /// Move the sync cursor.
    Ack {
        up_to: Seq,
        reply: SyncSender<Result<(), StoreError>>,
    },
    /// Delete synced events past retention.
    Sweep {
        now: Timestamp,
        reply: SyncSender<Result<u64, StoreError>>,
    },
    /// Mark evidence files the hub holds complete.
    Confirm {
        files: Vec<Digest>,
        reply: SyncSender<Result<u64, StoreError>>,
    },
    /// A submitter found the disk full while staging evidence: relieve the disk, unless that
    /// was done since the submitter looked (`reliefs` is the count of reliefs it saw).
    DiskPressure { reliefs: u64 },
    /// Answered as soon as the writer reaches it: the writer is turning (the service watchdog).
    Ping(SyncSender<()>),
}

/// Where the results of a submission go: a blocked caller's channel or an awaiting task's.
pub(super) enum SubmitReply {
    Blocking(SyncSender<Vec<Result<Committed, StoreError>>>),
    Async(tokio::sync::oneshot::Sender<Vec<Result<Committed, StoreError>>>),
}

impl SubmitReply {
    /// Hands over the results; a caller that went away no longer needs them (the commit stands).
    fn send(self, results: Vec<Result<Committed, StoreError>>) {
        match self {
            SubmitReply::Blocking(tx) => drop(tx.send(results)),
            SubmitReply::Async(tx) => drop(tx.send(results)),
        }
    }
}

/// An event encoded by its submitter (so that encoding runs in parallel, off the writer).
pub(super) struct Encoded {
    pub(super) id: EventId,
    pub(super) observed_at: Timestamp,
    pub(super) category: CategoryCode,
    pub(super) body: Vec<u8>,
}

impl Encoded {
    pub(super) fn new(event: &Event) -> Result<Encoded, StoreError> {
        let body = rmp_serde::to_vec_named(event).map_err(|source| StoreError::Encode {
            id: event.id,
            source,
        })?;
        Ok(Encoded {
            id: event.id,
            observed_at: event.observed_at,
            category: event.category.clone(),
            body,
        })
    }

    fn stored_bytes(&self) -> u64 {
        self.body.len() as u64 + ROW_OVERHEAD_BYTES
    }
}

/// Up to this many callers of a commit are answered by the writer itself: handing them to the
/// answering thread would cost a wake of its own (the single-caller path stays one hand-off).
const ANSWER_INLINE_MAX: usize = 2;

/// Free space kept on the data disk when a quota lowered by a full disk is raised again (or a
/// twentieth of what the store could use, when that is more).
const DISK_RESERVE_MIN_BYTES: u64 = 1 << 20;

/// Most victims one eviction step takes while relieving a full disk, so that its transaction's
/// pages fit in the room the disk reserve gives back.
const RELIEF_STEP_VICTIMS: usize = 256;

/// Most rounds of lowering the quota and evicting that one relief takes to make room for the
/// disk reserve again (each round takes a tenth of what the store holds).
const RELIEF_MAX_ROUNDS: usize = 8;

pub(super) struct Writer {
    conn: Connection,
    policy: Policy,
    /// The committed state; `Work` copies it for a transaction and it is replaced on commit.
    meta: Meta,
    /// The answering thread's queue (see [`Writer::run`]); `None` answers on this thread.
    answers: Option<mpsc::Sender<Vec<Reply>>>,
    /// Room given back to the file system when the disk is full (see `reserve.rs`).
    reserve: DiskReserve,
    /// Reliefs of a full disk and the reserve held, published for the handles.
    disk: Arc<DiskCounters>,
}

/// Everything but the connection, so it can be borrowed while a transaction borrows `conn`.
struct Policy {
    evidence: EvidenceDir,
    quota_bytes: u64,
    /// Set below `quota_bytes` once the disk has filled up; raised again by the periodic sweep
    /// once the disk has room (see [`Policy::reconsider_disk_quota`]).
    disk_quota_bytes: Option<u64>,
    /// The quota was lowered: the next transaction evicts down to it even without new data.
    must_evict: bool,
    retention: Duration,
    max_batch: usize,
    location: Location,
    grid: Option<GridCode>,
    loss_category: CategoryCode,
    loss_severity: Severity,
    loss_source: SourceId,
    rng: fastrand::Rng,
    /// Files being uploaded (or uploaded and awaiting the hub's confirmation): evicted as lost
    /// only when no other unconfirmed file can go, since they may well arrive.
    pinned: super::pins::Pins,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Meta {
    last_seq: u64,
    acked_seq: u64,
    usage_bytes: u64,
    lost_events_total: u64,
    evicted_events_total: u64,
    evicted_evidence_total: u64,
    expired_events_total: u64,
    lost_evidence_total: u64,
}

/// The state of one transaction in progress.
struct Work {
    meta: Meta,
    /// Files renamed into place in this transaction (removed again if it rolls back).
    placed: Vec<Digest>,
    /// Files to unlink once this transaction has committed.
    unlink: HashSet<Digest>,
    /// Unsynced events evicted in this transaction.
    lost: Option<LostRange>,
    /// Evidence files evicted in this transaction before the hub confirmed them.
    lost_files: Vec<LostFile>,
    /// An eviction step stopped at its limit of victims while still over the quota.
    capped: bool,
}

/// An evidence file gone before the hub had it, and the newest event that named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LostFile {
    sha256: Digest,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct LostRange {
    first: u64,
    last: u64,
    count: u64,
}

/// What [`Policy::make_room`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    /// The incoming bytes fit under the quota.
    Made,
    /// Not even an empty store would make room.
    None,
    /// The step's limit of victims was reached first.
    Capped,
}

/// Why a request in a batch failed: only that request, or the whole transaction.
enum Failure {
    Item(StoreError),
    Batch(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Batch(e)
    }
}

enum Reply {
    Submit(SubmitReply, Vec<Result<Committed, StoreError>>),
    Ack(SyncSender<Result<(), StoreError>>, Result<(), StoreError>),
    Count(SyncSender<Result<u64, StoreError>>, Result<u64, StoreError>),
}

impl Writer {
    /// Loads the committed state and runs the start-up repairs on the evidence folder.
    pub(super) fn start_up(
        conn: Connection,
        evidence: EvidenceDir,
        options: &StoreOptions,
        disk: Arc<DiskCounters>,
        pinned: super::pins::Pins,
    ) -> Result<(Writer, OpenReport), StoreError> {
        // invariant: the embedded catalog holds `device.data_loss` (checked by this module's
        // tests and by protocol's catalog tests).
        #[allow(clippy::expect_used)]
        let loss = Catalog::embedded()
            .by_key(LOSS_CATEGORY_KEY)
            .expect("the embedded catalog has device.data_loss");
        let (loss_category, loss_severity) = (loss.code.clone(), loss.severity);
        // invariant: a constant that satisfies the id rules.
        #[allow(clippy::expect_used)]
        let loss_source = SourceId::parse(LOSS_SOURCE_ID).expect("valid source id");
        let meta = load_meta(&conn).map_err(|e| sqlite_error("read store counters", e))?;
        let mut reserve = DiskReserve::new(
            &options.data_dir,
            disk_space(&options.data_dir).map(|(_, total)| total),
        );
        // The WAL is checkpointed (and so can be reset) once it holds half the reserve: a
        // checkpoint grows the database file by at most the WAL's size.
        let page_bytes: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sqlite_error("read page size", e))?;
        let wal_pages = (reserve.size_bytes() as i64 / 2 / page_bytes.max(512))
            .clamp(WAL_MIN_CHECKPOINT_PAGES, WAL_MAX_CHECKPOINT_PAGES);
        conn.pragma_update(None, "wal_autocheckpoint", wal_pages)
            .map_err(|e| sqlite_error("set the WAL checkpoint point", e))?;
        if !reserve.allocate()? {
            tracing::warn!(
                stage = "store",
                bytes = reserve.size_bytes(),
                "no room on the data disk for the disk reserve; allocated once there is"
            );
        }
        let mut writer = Writer {
            conn,
            policy: Policy {
                evidence,
                quota_bytes: options.quota_bytes,
                disk_quota_bytes: None,
                must_evict: false,
                retention: options.retention,
                max_batch: options.max_batch.max(1),
                location: options.location,
                grid: options.grid.clone(),
                loss_category,
                loss_severity,
                loss_source,
                rng: fastrand::Rng::new(),
                pinned,
            },
            meta,
            answers: None,
            reserve,
            disk,
        };
        writer.publish_reserve();
        let report = writer.repair_evidence()?;
        Ok((writer, report))
    }

    /// Serves requests until every sender is gone.
    pub(super) fn run(mut self, requests_rx: Receiver<Request>) {
        let _span = tracing::info_span!("store_writer", stage = "store").entered();
        // Waking callers costs more than committing their events when there are many of them
        // (a futex wake each, most of it spent waking another CPU): a second thread answers
        // large groups while the writer goes on with the next commit.
        let (answers_tx, answers_rx) = mpsc::channel::<Vec<Reply>>();
        let answerer = std::thread::Builder::new()
            .name("store-answers".to_owned())
            .spawn(move || {
                for replies in answers_rx {
                    replies.into_iter().for_each(Reply::send);
                }
            });
        let answerer = match answerer {
            Ok(handle) => {
                self.answers = Some(answers_tx);
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(stage = "store", error = %e, "no answering thread; the writer answers callers itself");
                None
            }
        };
        while let Ok(first) = requests_rx.recv() {
            let mut batch = Vec::with_capacity(self.policy.max_batch.min(64));
            batch.push(first);
            while batch.len() < self.policy.max_batch {
                match requests_rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            // A submitter found the disk full: room comes before anything else is written.
            let mut pressure = false;
            batch.retain(|request| match request {
                Request::DiskPressure { reliefs } => {
                    pressure |= self.is_current(*reliefs);
                    false
                }
                Request::Ping(reply) => {
                    let _ = reply.send(());
                    false
                }
                _ => true,
            });
            if pressure {
                self.relieve_full_disk();
            }
            if batch.is_empty() {
                continue;
            }
            if self.commit_batch(batch, Some(&requests_rx)) {
                self.relieve_full_disk();
            } else if !self.reserve.is_held() {
                self.restore_reserve();
            }
        }
        // Every answer is out before the writer is done (dropping the store joins the writer).
        self.answers = None;
        if let Some(handle) = answerer
            && handle.join().is_err()
        {
            tracing::error!(stage = "store", "the answering thread panicked");
        }
    }

    /// Answers the callers of a committed batch: a few at once, a larger group through the
    /// answering thread (in commit order either way for each caller: a caller has one request
    /// in flight).
    fn answer(&self, replies: Vec<Reply>) {
        if replies.len() > ANSWER_INLINE_MAX
            && let Some(answers) = &self.answers
        {
            // A send fails only when the answering thread is gone; then answer here.
            if let Err(mpsc::SendError(replies)) = answers.send(replies) {
                replies.into_iter().for_each(Reply::send);
            }
        } else {
            replies.into_iter().for_each(Reply::send);
        }
    }

    /// Whether a disk-pressure report that saw `reliefs` reliefs is still news.
    fn is_current(&self, reliefs: u64) -> bool {
        reliefs == self.disk.reliefs.load(Ordering::Relaxed)
    }

    /// After a commit or a submitter found the disk full, before the next request: gives back
    /// the reserve, checkpoints the WAL into the room it leaves, lowers the quota and evicts down
    /// to it (in steps small enough for that room), then allocates the reserve again — lowering
    /// the quota further while the disk has no room for it.
    fn relieve_full_disk(&mut self) {
        self.disk.reliefs.fetch_add(1, Ordering::Relaxed);
        self.policy.lower_quota(self.meta.usage_bytes);
        if let Err(e) = self.reserve.release() {
            tracing::warn!(stage = "store", error = %crate::telemetry::chain(&e), "disk reserve not released");
        }
        self.publish_reserve();
        self.checkpoint();
        for _ in 0..RELIEF_MAX_ROUNDS {
            self.evict_to_quota();
            self.checkpoint();
            match self.reserve.allocate() {
                Ok(true) => break,
                Ok(false) if self.policy.lower_quota(self.meta.usage_bytes) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(stage = "store", error = %crate::telemetry::chain(&e), "disk reserve not allocated");
                    break;
                }
            }
        }
        self.publish_reserve();
        if !self.reserve.is_held() {
            tracing::error!(
                stage = "store",
                usage_bytes = self.meta.usage_bytes,
                "data disk full and the store has nothing left to evict: free space on it"
            );
        }
    }

    /// Commits eviction steps while the quota lowered by a full disk is exceeded.
    fn evict_to_quota(&mut self) {
        while self.policy.must_evict {
            let before = self.meta.usage_bytes;
            if self.commit_batch(Vec::new(), None) {
                tracing::warn!(
                    stage = "store",
                    "eviction on a full disk failed; retrying with the next commit"
                );
                return;
            }
            if self.meta.usage_bytes >= before {
                return;
            }
        }
    }

    /// Allocates the reserve again once the disk has room for it.
    fn restore_reserve(&mut self) {
        let room = self
            .policy
            .evidence
            .free_bytes()
            .is_some_and(|free| free >= self.reserve.size_bytes());
        if !room {
            return;
        }
        match self.reserve.allocate() {
            Ok(true) => {
                tracing::info!(
                    stage = "store",
                    bytes = self.reserve.size_bytes(),
                    "disk reserve allocated again"
                );
                self.publish_reserve();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(stage = "store", error = %crate::telemetry::chain(&e), "disk reserve not allocated")
            }
        }
    }

    fn publish_reserve(&self) {
        let held = if self.reserve.is_held() {
            self.reserve.size_bytes()
        } else {
            0
        };
        self.disk.reserve_bytes.store(held, Ordering::Relaxed);
    }

    /// Copies the WAL into the database and truncates it (waiting on readers for the busy
    /// timeout). A checkpoint that cannot finish leaves the WAL to grow; it is only logged.
    fn checkpoint(&self) {
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(0) => {}
            Ok(_) => tracing::warn!(stage = "store", "WAL checkpoint held up by a reader"),
            Err(e) => tracing::warn!(stage = "store", error = %e, "WAL checkpoint failed"),
        }
    }

    /// Removes staged and orphan files and marks files the database names but lacks as absent.
    fn repair_evidence(&mut self) -> Result<OpenReport, StoreError> {
        let mut report = OpenReport {
            staged_removed: self.policy.evidence.clear_staging()?,
            ..OpenReport::default()
        };
        let present: HashSet<Digest> = {
            let mut stmt = self
                .conn
                .prepare("SELECT sha256 FROM evidence WHERE present = 1")
                .map_err(|e| sqlite_error("list evidence", e))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, Vec<u8>>(0))
                .map_err(|e| sqlite_error("list evidence", e))?;
            let mut set = HashSet::new();
            for row in rows {
                let bytes = row.map_err(|e| sqlite_error("list evidence", e))?;
                if let Ok(d) = <[u8; 32]>::try_from(bytes.as_slice()) {
                    set.insert(Digest(d));
                }
            }
            set
        };
        let on_disk: HashSet<Digest> = self.policy.evidence.list()?.into_iter().collect();
        for orphan in on_disk.difference(&present) {
            self.policy.evidence.remove(orphan)?;
            report.orphans_removed += 1;
        }
        let missing: Vec<Digest> = present.difference(&on_disk).copied().collect();
        if !missing.is_empty() {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sqlite_error("begin repair", e))?;
            let mut work = Work {
                meta: self.meta,
                placed: Vec::new(),
                unlink: HashSet::new(),
                lost: None,
                lost_files: Vec::new(),
                capped: false,
            };
            for sha in &missing {
                let (bytes, confirmed, seq): (i64, i64, i64) = tx
                    .query_row(
                        "UPDATE evidence SET present = 0 WHERE sha256 = ?1
                         RETURNING bytes, confirmed, last_seq",
                        [&sha.0[..]],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .map_err(|e| sqlite_error("mark evidence missing", e))?;
                work.meta.usage_bytes = work.meta.usage_bytes.saturating_sub(to_u64(bytes));
                if confirmed == 0 {
                    // never reaches the hub: reported like an eviction
                    work.meta.lost_evidence_total += 1;
                    work.lost_files.push(LostFile {
                        sha256: *sha,
                        seq: to_u64(seq),
                    });
                }
                tracing::error!(stage = "store", sha256 = %sha, "evidence file named by an event is missing");
            }
            self.policy
                .record_loss(&tx, &mut work, Some("missing"))
                .map_err(|e| sqlite_error("record missing evidence", e))?;
            store_meta(&tx, &self.meta, &work.meta)
                .map_err(|e| sqlite_error("write counters", e))?;
            tx.commit()
                .map_err(|e| sqlite_error("commit evidence repair", e))?;
            self.meta = work.meta;
            report.missing_evidence = missing.len() as u64;
        }
        if report.orphans_removed > 0 {
            self.policy.evidence.sync()?;
        }
        if report != OpenReport::default() {
            tracing::warn!(
                stage = "store",
                staged_removed = report.staged_removed,
                orphans_removed = report.orphans_removed,
                missing_evidence = report.missing_evidence,
                "store repaired evidence folder at start-up"
            );
        }
        Ok(report)
    }

    /// Applies and commits a batch, answers every request, and returns true when the disk is
    /// full: the commit failed for lack of space, or a submitter reported it while the batch
    /// was applied.
    ///
    /// Requests that arrive while the batch is applied join it (up to `max_batch`): callers
    /// answered by the previous commit come back during this one, and those that make it
    /// before the sync share it instead of waiting a whole commit for the next.
    fn commit_batch(&mut self, batch: Vec<Request>, late: Option<&Receiver<Request>>) -> bool {
        let mut work = Work {
            meta: self.meta,
            placed: Vec::new(),
            unlink: HashSet::new(),
            lost: None,
            lost_files: Vec::new(),
            capped: false,
        };
        let mut replies = Vec::with_capacity(batch.len());
        let mut pressure = false;
        let outcome = (|| -> Result<(), rusqlite::Error> {
            let mut tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut room = self.policy.max_batch.saturating_sub(batch.len());
            // Cleared once the transaction has failed: later arrivals wait for the next one.
            let joining = std::cell::Cell::new(true);
            let late_joiners = std::iter::from_fn(|| {
                let request = late
                    .filter(|_| room > 0 && joining.get())?
                    .try_recv()
                    .ok()?;
                room -= 1;
                Some(request)
            });
            let mut requests = batch.into_iter().chain(late_joiners);
            // A statement failed: the transaction is lost for every request in it.
            let mut lost = None;
            let reliefs = self.disk.reliefs.load(Ordering::Relaxed);
            for request in requests.by_ref() {
                let applied = self
                    .policy
                    .apply(&mut tx, &mut work, request, &mut replies, reliefs);
                match applied {
                    Ok(Applied::Done) => {}
                    Ok(Applied::DiskPressure) => pressure = true,
                    Err(e) => {
                        lost = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = lost {
                // The rest of the batch gets the transaction's error; later arrivals wait.
                joining.set(false);
                for rest in requests {
                    replies.extend(self.policy.unanswered(rest));
                }
                return Err(e);
            }
            if self.policy.must_evict {
                work.capped = self
                    .policy
                    .make_room(&tx, &mut work, 0, RELIEF_STEP_VICTIMS)?
                    == Room::Capped;
            }
            self.policy.record_loss(&tx, &mut work, None)?;
            store_meta(&tx, &self.meta, &work.meta)?;
            if !work.placed.is_empty() {
                // The renames must be durable before the rows naming them are.
                if let Err(e) = self.policy.evidence.sync() {
                    tracing::warn!(stage = "store", error = %crate::telemetry::chain(&e), "evidence folder fsync failed");
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                        Some("evidence folder fsync failed".to_owned()),
                    ));
                }
            }
            tx.commit()
        })();

        // the transaction is over: what it chose to evict is gone or back
        super::pins::lock(&self.policy.pinned).clear_evicting();
        match outcome {
            Ok(()) => {
                self.committed(work);
                self.answer(replies);
                pressure
            }
            Err(e) => self.policy.failed(e, &work, replies) || pressure,
        }
    }

    /// After a commit: the new state is this writer's, evicted files are removed, and freed
    /// pages go back to the file system.
    fn committed(&mut self, work: Work) {
        let evicted = !work.unlink.is_empty() || work.lost.is_some() || !work.lost_files.is_empty();
        self.meta = work.meta;
        self.policy.must_evict = work.capped;
        for sha in &work.unlink {
            if let Err(e) = self.policy.evidence.remove(sha) {
                // Left as an orphan; start-up removes it.
                tracing::warn!(stage = "store", error = %crate::telemetry::chain(&e), "evicted evidence file not removed");
            }
        }
        if evicted {
            // Give freed pages back to the file system; failure only delays that.
            let _ = self.conn.execute_batch("PRAGMA incremental_vacuum");
        }
    }
}

/// What applying one request asks of the batch.
enum Applied {
    /// Applied (or answered).
    Done,
    /// A submitter found the disk full since the last relief: relieve it after this batch.
    DiskPressure,
}

impl Reply {
    fn send(self) {
        // A caller that went away no longer needs its answer; the commit stands.
        match self {
            Reply::Submit(tx, r) => tx.send(r),
            Reply::Ack(tx, r) => drop(tx.send(r)),
            Reply::Count(tx, r) => drop(tx.send(r)),
        }
    }
}

impl Policy {
    /// Applies one request of a batch in `tx`, putting its answer in `replies`. An error is
    /// the transaction's: it is lost for every request in it (this one is answered
    /// [`StoreError::Closed`] until the replies are sent).
    fn apply(
        &mut self,
        tx: &mut rusqlite::Transaction<'_>,
        work: &mut Work,
        request: Request,
        replies: &mut Vec<Reply>,
        reliefs_now: u64,
    ) -> Result<Applied, rusqlite::Error> {
        match request {
            Request::Submit { items, reply } => {
                let mut results = Vec::with_capacity(items.len());
                let mut items = items.into_iter();
                let mut failed = None;
                for (event, staged) in items.by_ref() {
                    match self.submit(tx, work, event, staged) {
                        Ok(c) => results.push(Ok(c)),
                        Err(Failure::Item(e)) => results.push(Err(e)),
                        Err(Failure::Batch(e)) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    // This item and the rest get the transaction's error (`Closed` stands for
                    // "no error of its own" until the replies are sent).
                    results.push(Err(StoreError::Closed));
                    for (_, staged) in items {
                        self.discard_all(staged);
                        results.push(Err(StoreError::Closed));
                    }
                    replies.push(Reply::Submit(reply, results));
                    return Err(e);
                }
                replies.push(Reply::Submit(reply, results));
            }
            Request::Ack { up_to, reply } => {
                let result = if up_to.0 > work.meta.last_seq {
                    Err(StoreError::AckBeyondCommitted {
                        up_to,
                        last_seq: work.meta.last_seq,
                    })
                } else {
                    work.meta.acked_seq = work.meta.acked_seq.max(up_to.0);
                    Ok(())
                };
                replies.push(Reply::Ack(reply, result));
            }
            Request::Sweep { now, reply } => {
                self.reconsider_disk_quota(work.meta.usage_bytes);
                match self.sweep(tx, work, now) {
                    Ok(n) => replies.push(Reply::Count(reply, Ok(n))),
                    Err(e) => {
                        replies.push(Reply::Count(reply, Err(StoreError::Closed)));
                        return Err(e);
                    }
                }
            }
            Request::Confirm { files, reply } => match self.confirm(tx, work, &files) {
                Ok(n) => replies.push(Reply::Count(reply, Ok(n))),
                Err(e) => {
                    replies.push(Reply::Count(reply, Err(StoreError::Closed)));
                    return Err(e);
                }
            },
            Request::DiskPressure { reliefs } if reliefs == reliefs_now => {
                return Ok(Applied::DiskPressure);
            }
            Request::DiskPressure { .. } => {}
            Request::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(Applied::Done)
    }

    /// After a failed commit: the files it placed are removed and every request gets the
    /// failure (its own error where it had one). True when the disk is full.
    fn failed(&self, e: rusqlite::Error, work: &Work, replies: Vec<Reply>) -> bool {
        for sha in &work.placed {
            let _ = self.evidence.remove(sha);
        }
        let disk_full = is_disk_full(&e);
        if !disk_full {
            tracing::warn!(stage = "store", error = %e, "store commit failed");
        }
        let shared = Arc::new(e);
        let fail = |prior: Option<StoreError>| -> StoreError {
            match prior {
                Some(item) if !matches!(item, StoreError::Closed) => item,
                _ if disk_full => StoreError::DiskFull,
                _ => StoreError::Sqlite {
                    op: "commit events",
                    source: Arc::clone(&shared),
                },
            }
        };
        for reply in replies {
            match reply {
                Reply::Submit(tx, results) => {
                    tx.send(results.into_iter().map(|r| Err(fail(r.err()))).collect());
                }
                Reply::Ack(tx, r) => {
                    let _ = tx.send(Err(fail(r.err())));
                }
                Reply::Count(tx, r) => {
                    let _ = tx.send(Err(fail(r.err())));
                }
            }
        }
        disk_full
    }

    /// Removes the staged files of a submission that will not be applied.
    fn discard_all(&self, staged: Vec<Staged>) {
        for s in staged {
            self.evidence.discard(s);
        }
    }

    /// The reply for a request left unapplied by a failed transaction (its error is filled in
    /// from the transaction's), after discarding what it staged.
    fn unanswered(&self, request: Request) -> Option<Reply> {
        match request {
            Request::Submit { items, reply } => {
                let results = items
                    .into_iter()
                    .map(|(_, staged)| {
                        self.discard_all(staged);
                        Err(StoreError::Closed)
                    })
                    .collect();
                Some(Reply::Submit(reply, results))
            }
            Request::Ack { reply, .. } => Some(Reply::Ack(reply, Err(StoreError::Closed))),
            Request::Sweep { reply, .. } | Request::Confirm { reply, .. } => {
                Some(Reply::Count(reply, Err(StoreError::Closed)))
            }
            Request::DiskPressure { .. } => None,
            Request::Ping(reply) => {
                let _ = reply.send(());
                None
            }
        }
    }

    fn effective_quota(&self) -> u64 {
        match self.disk_quota_bytes {
            Some(d) => d.min(self.quota_bytes),
            None => self.quota_bytes,
        }
    }

    /// Lowers the effective quota to nine tenths of `usage_bytes`; false when it already was
    /// that low (nothing more to take).
    fn lower_quota(&mut self, usage_bytes: u64) -> bool {
        let lowered = usage_bytes / 10 * 9;
        if self.disk_quota_bytes.is_some_and(|q| lowered >= q) {
            return false;
        }
        tracing::warn!(
            stage = "store",
            bytes = lowered,
            "data disk full, store quota lowered"
        );
        self.disk_quota_bytes = Some(lowered);
        self.must_evict = true;
        true
    }

    /// Raises a quota that a full disk lowered once the disk has room again (someone freed
    /// space, the disk was grown): to what the store holds plus the free space, less a reserve,
    /// and back to the configured quota when that fits.
    fn reconsider_disk_quota(&mut self, usage_bytes: u64) {
        let Some(lowered) = self.disk_quota_bytes else {
            return;
        };
        let Some(free) = self.evidence.free_bytes() else {
            return;
        };
        let room = usage_bytes.saturating_add(free);
        let room = room.saturating_sub((room / 20).max(DISK_RESERVE_MIN_BYTES));
        if room >= self.quota_bytes {
            tracing::info!(
                stage = "store",
                bytes = self.quota_bytes,
                "data disk has room again, configured store quota restored"
            );
            self.disk_quota_bytes = None;
        } else if room > lowered {
            tracing::info!(
                stage = "store",
                bytes = room,
                "data disk has more room, store quota raised"
            );
            self.disk_quota_bytes = Some(room);
        }
    }

    /// Applies one submission inside the batch transaction.
    fn submit(
        &mut self,
        tx: &mut Transaction<'_>,
        work: &mut Work,
        event: Encoded,
        staged: Vec<Staged>,
    ) -> Result<Committed, Failure> {
        let evidence_bytes: u64 = staged.iter().map(|s| s.reference.bytes).sum();
        let total = event.stored_bytes() + evidence_bytes;
        if total
            > self
                .effective_quota()
                .saturating_sub(LOSS_EVENT_RESERVE_BYTES)
        {
            for s in staged {
                self.evidence.discard(s);
            }
            return Err(Failure::Item(StoreError::TooLarge {
                bytes: total,
                quota_bytes: self.effective_quota(),
            }));
        }
        let seq = work.meta.last_seq + 1;
        if staged.is_empty() {
            if self.make_room(tx, work, event.stored_bytes(), usize::MAX)? != Room::Made {
                return Err(Failure::Item(StoreError::TooLarge {
                    bytes: total,
                    quota_bytes: self.effective_quota(),
                }));
            }
            return match insert_event(tx, seq, &event) {
                Ok(()) => {
                    work.meta.last_seq = seq;
                    work.meta.usage_bytes += event.stored_bytes();
                    Ok(Committed {
                        seq: Seq(seq),
                        id: event.id,
                    })
                }
                Err(e) if is_constraint(&e) => {
                    Err(Failure::Item(StoreError::DuplicateId { id: event.id }))
                }
                Err(e) => Err(Failure::Batch(e)),
            };
        }

        // With evidence: several statements and renames, undone together on rejection.
        let before_meta = work.meta;
        let before_placed = work.placed.len();
        let before_lost = work.lost;
        let before_lost_files = work.lost_files.len();
        let before_unlink = work.unlink.clone();
        let sp = tx.savepoint()?;
        let result = (|| -> Result<(), Failure> {
            let mut newly = HashSet::new();
            for s in &staged {
                let sha = s.reference.sha256;
                let present: bool = sp
                    .prepare_cached("SELECT present FROM evidence WHERE sha256 = ?1")?
                    .query_row([&sha.0[..]], |r| r.get::<_, i64>(0))
                    .optional()?
                    == Some(1);
                if present {
                    self.evidence.discard_path(&s.path);
                } else if newly.insert(sha) {
                    self.evidence.place(s).map_err(Failure::Item)?;
                    work.placed.push(sha);
                    work.unlink.remove(&sha);
                    work.meta.usage_bytes += s.reference.bytes;
                } else {
                    self.evidence.discard_path(&s.path);
                }
                // Naming the file with this (unsynced) seq before making room keeps eviction
                // from choosing the file this event is about to reference.
                sp.prepare_cached(
                    "INSERT INTO evidence (sha256, bytes, media_type, present, last_seq)
                     VALUES (?1, ?2, ?3, 1, ?4)
                     ON CONFLICT (sha256) DO UPDATE SET present = 1, last_seq = excluded.last_seq",
                )?
                .execute(params![
                    &sha.0[..],
                    to_i64(s.reference.bytes),
                    s.reference.media_type,
                    to_i64(seq)
                ])?;
                sp.prepare_cached(
                    "INSERT OR IGNORE INTO event_evidence (seq, sha256) VALUES (?1, ?2)",
                )?
                .execute(params![to_i64(seq), &sha.0[..]])?;
            }
            if self.make_room(&sp, work, event.stored_bytes(), usize::MAX)? != Room::Made {
                return Err(Failure::Item(StoreError::TooLarge {
                    bytes: total,
                    quota_bytes: self.effective_quota(),
                }));
            }
            insert_event(&sp, seq, &event).map_err(|e| {
                if is_constraint(&e) {
                    Failure::Item(StoreError::DuplicateId { id: event.id })
                } else {
                    Failure::Batch(e)
                }
            })?;
            work.meta.last_seq = seq;
            work.meta.usage_bytes += event.stored_bytes();
            Ok(())
        })();
        match result {
            Ok(()) => {
                sp.commit()?;
                Ok(Committed {
                    seq: Seq(seq),
                    id: event.id,
                })
            }
            Err(failure) => {
                drop(sp); // rolls back to the savepoint
                for s in &staged {
                    self.evidence.discard_path(&s.path);
                }
                for sha in work.placed.drain(before_placed..) {
                    let _ = self.evidence.remove(&sha);
                }
                work.meta = before_meta;
                work.lost = before_lost;
                work.lost_files.truncate(before_lost_files);
                work.unlink = before_unlink;
                Err(failure)
            }
        }
    }

    /// Evicts, in policy order, until `incoming` more bytes fit under the quota (keeping room
    /// for the data-loss event once an unsynced event has been evicted), taking at most
    /// `max_victims` rows and files.
    fn make_room(
        &mut self,
        conn: &Connection,
        work: &mut Work,
        incoming: u64,
        max_victims: usize,
    ) -> rusqlite::Result<Room> {
        let mut victims = 0;
        loop {
            let limit = self
                .effective_quota()
                .saturating_sub(loss_report_bytes(work));
            if work.meta.usage_bytes + incoming <= limit {
                return Ok(Room::Made);
            }
            if victims == max_victims {
                return Ok(Room::Capped);
            }
            victims += 1;
            let acked = to_i64(work.meta.acked_seq);
            // 1. Files of synced events that the hub confirmed, oldest first.
            let confirmed: Option<(Vec<u8>, i64, i64)> = conn
                .prepare_cached(
                    "SELECT sha256, bytes, last_seq FROM evidence
                     WHERE present = 1 AND confirmed = 1 AND last_seq <= ?1
                     ORDER BY last_seq LIMIT 1",
                )?
                .query_row([acked], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((sha, bytes, _)) = confirmed {
                evict_file(conn, work, &sha, bytes)?;
                work.meta.evicted_evidence_total += 1;
                continue;
            }
            // 2. Synced events, oldest first; files the hub has not confirmed stay.
            let synced: Option<i64> = conn
                .prepare_cached("SELECT seq FROM events WHERE seq <= ?1 ORDER BY seq LIMIT 1")?
                .query_row([acked], |r| r.get(0))
                .optional()?;
            if let Some(seq) = synced {
                delete_event(conn, work, seq, Keep::Unconfirmed)?;
                work.meta.evicted_events_total += 1;
                continue;
            }
            // 3. Files of synced events that the hub has not confirmed, oldest first (those
            //    being uploaded last): lost before upload, counted and reported.
            let unconfirmed = self.unconfirmed_victim(conn, acked)?;
            if let Some((sha, bytes, seq)) = unconfirmed {
                evict_file(conn, work, &sha, bytes)?;
                work.meta.evicted_evidence_total += 1;
                work.meta.lost_evidence_total += 1;
                if let Some(sha256) = digest(&sha) {
                    work.lost_files.push(LostFile {
                        sha256,
                        seq: to_u64(seq),
                    });
                }
                continue;
            }
            // 4. Unsynced events, oldest first: a counted, reported loss. Data-loss events go
            //    last, so that the reports of earlier losses reach the hub.
            let unsynced: Option<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM events WHERE seq > ?1 AND category != ?2
                     ORDER BY seq LIMIT 1",
                )?
                .query_row(params![acked, self.loss_category.as_str()], |r| r.get(0))
                .optional()?;
            let unsynced = match unsynced {
                Some(seq) => Some(seq),
                None => conn
                    .prepare_cached("SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1")?
                    .query_row([acked], |r| r.get(0))
                    .optional()?,
            };
            let Some(seq) = unsynced else {
                return Ok(Room::None);
            };
            delete_event(conn, work, seq, Keep::Nothing)?;
            work.meta.lost_events_total += 1;
            let seq = to_u64(seq);
            work.lost = Some(match work.lost {
                None => LostRange {
                    first: seq,
                    last: seq,
                    count: 1,
                },
                Some(r) => LostRange {
                    first: r.first.min(seq),
                    last: r.last.max(seq),
                    count: r.count + 1,
                },
            });
        }
    }

    /// The oldest unconfirmed file of a synced event that is not being uploaded, or else the
    /// oldest being uploaded: `(sha256, bytes, last_seq)`.
    fn unconfirmed_victim(
        &self,
        conn: &Connection,
        acked: i64,
    ) -> rusqlite::Result<Option<(Vec<u8>, i64, i64)>> {
        // The lock is held until the choice is marked, so that an uploader's claim comes
        // either before (the file is passed by) or after (the uploader gives up).
        let mut pins = super::pins::lock(&self.pinned);
        let mut stmt = conn.prepare_cached(
            "SELECT sha256, bytes, last_seq FROM evidence
             WHERE present = 1 AND confirmed = 0 AND last_seq <= ?1
             ORDER BY last_seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![acked, pins.pinned() as i64 + 1], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?))
        })?;
        let mut uploading = None;
        let mut chosen = None;
        for row in rows {
            let row = row?;
            let Some(sha) = digest(&row.0) else { continue };
            if !pins.evictable(&sha) {
                continue;
            }
            if pins.uploading(&sha) {
                uploading.get_or_insert((sha, row));
                continue;
            }
            chosen = Some((sha, row));
            break;
        }
        let chosen = chosen.or(uploading);
        if let Some((sha, _)) = &chosen {
            pins.mark_evicting(*sha);
        }
        Ok(chosen.map(|(_, row)| row))
    }

    /// Commits the `device.data_loss` events reporting this transaction's losses, if any:
    /// unsynced events evicted, and evidence files gone before the hub confirmed them (named
    /// with the newest event naming each, [`LOST_FILES_PER_REPORT`] to an event). `reason`
    /// overrides the quota's (`quota` or `disk_full`).
    fn record_loss(
        &mut self,
        conn: &Connection,
        work: &mut Work,
        reason: Option<&'static str>,
    ) -> rusqlite::Result<()> {
        let reason = reason.unwrap_or(if self.disk_quota_bytes.is_some() {
            "disk_full"
        } else {
            "quota"
        });
        let files: Vec<LostFile> = std::mem::take(&mut work.lost_files);
        let mut chunks: Vec<&[LostFile]> = files.chunks(LOST_FILES_PER_REPORT).collect();
        if chunks.is_empty() && work.lost.is_some() {
            chunks.push(&[]);
        }
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut attributes = vec![
                ("reason", AttrValue::Text(reason.to_owned())),
                (
                    "lost_events_total",
                    AttrValue::Int(to_i64(work.meta.lost_events_total)),
                ),
                (
                    "lost_evidence_total",
                    AttrValue::Int(to_i64(work.meta.lost_evidence_total)),
                ),
            ];
            // The events go with the first report.
            let events = work.lost.filter(|_| i == 0);
            attributes.push((
                "lost_events",
                AttrValue::Int(events.map_or(0, |r| to_i64(r.count))),
            ));
            if let Some(r) = events {
                attributes.push(("first_lost_seq", AttrValue::Int(to_i64(r.first))));
                attributes.push(("last_lost_seq", AttrValue::Int(to_i64(r.last))));
            }
            if !chunk.is_empty() {
                attributes.push(("lost_evidence", AttrValue::Int(chunk.len() as i64)));
                let join = |f: &dyn Fn(&LostFile) -> String| {
                    chunk.iter().map(f).collect::<Vec<_>>().join(" ")
                };
                attributes.push((
                    "lost_evidence_sha256",
                    AttrValue::Text(join(&|l| l.sha256.to_hex())),
                ));
                attributes.push((
                    "lost_evidence_seqs",
                    AttrValue::Text(join(&|l| l.seq.to_string())),
                ));
            }
            let seq = self.insert_loss_event(conn, work, attributes)?;
            tracing::warn!(
                stage = "store",
                reason,
                count = events.map_or(0, |r| r.count),
                first_lost_seq = events.map(|r| r.first),
                last_lost_seq = events.map(|r| r.last),
                lost_evidence = chunk.len(),
                seq,
                "data lost on the box, data-loss event recorded"
            );
        }
        Ok(())
    }

    /// Inserts one `device.data_loss` event with `attributes`; returns its seq.
    fn insert_loss_event(
        &mut self,
        conn: &Connection,
        work: &mut Work,
        attributes: Vec<(&str, AttrValue)>,
    ) -> rusqlite::Result<u64> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let event = Event {
            id: EventId::v7(now_ms.max(0) as u64, random),
            seq: Seq(0),
            source: Source {
                kind: SourceKind::Box,
                id: self.loss_source.clone(),
            },
            category: self.loss_category.clone(),
            severity: self.loss_severity,
            observed_at: Timestamp::from_unix_millis(now_ms),
            location: self.location,
            grid: self.grid.clone(),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            evidence: Vec::new(),
        };
        let encoded = Encoded::new(&event).map_err(|e| {
            rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(e.to_string())))
        })?;
        let seq = work.meta.last_seq + 1;
        insert_event(conn, seq, &encoded)?;
        work.meta.last_seq = seq;
        work.meta.usage_bytes += encoded.stored_bytes();
        Ok(seq)
    }

    /// Marks files the hub confirmed it holds complete. A file no event names any more (its
    /// event was evicted or expired while the upload waited) is removed at once.
    fn confirm(
        &self,
        conn: &Connection,
        work: &mut Work,
        files: &[Digest],
    ) -> rusqlite::Result<u64> {
        let mut confirmed = 0;
        for sha in files {
            let changed = conn
                .prepare_cached(
                    "UPDATE evidence SET confirmed = 1 WHERE sha256 = ?1 AND confirmed = 0",
                )?
                .execute([&sha.0[..]])?;
            confirmed += changed as u64;
            let named = conn
                .prepare_cached("SELECT 1 FROM event_evidence WHERE sha256 = ?1 LIMIT 1")?
                .exists([&sha.0[..]])?;
            if changed > 0 && !named {
                forget_file(conn, work, &sha.0)?;
            }
        }
        Ok(confirmed)
    }

    /// Deletes synced events observed before `now - retention`.
    fn sweep(&self, conn: &Connection, work: &mut Work, now: Timestamp) -> rusqlite::Result<u64> {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.as_unix_millis().saturating_sub(retention_ms);
        let victims: Vec<i64> = conn
            .prepare_cached(
                "SELECT seq FROM events WHERE seq <= ?1 AND observed_at_ms < ?2 ORDER BY seq",
            )?
            .query_map(params![to_i64(work.meta.acked_seq), cutoff], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for &seq in &victims {
            delete_event(conn, work, seq, Keep::Unconfirmed)?;
        }
        work.meta.expired_events_total += victims.len() as u64;
        Ok(victims.len() as u64)
    }
}

fn insert_event(conn: &Connection, seq: u64, event: &Encoded) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (seq, id, observed_at_ms, category, stored_bytes, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        to_i64(seq),
        &event.id.as_uuid().as_bytes()[..],
        event.observed_at.as_unix_millis(),
        event.category.as_str(),
        to_i64(event.stored_bytes()),
        event.body,
    ])?;
    Ok(())
}

/// Which evidence files [`delete_event`] keeps when no other event names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Files the hub has not confirmed (the event was synced: its files still upload).
    Unconfirmed,
    /// None (the event itself is lost, so are its files).
    Nothing,
}

/// Deletes an event row, its evidence links, and evidence no other event names (except what
/// `keep` keeps).
fn delete_event(conn: &Connection, work: &mut Work, seq: i64, keep: Keep) -> rusqlite::Result<()> {
    let stored: i64 = conn
        .prepare_cached("DELETE FROM events WHERE seq = ?1 RETURNING stored_bytes")?
        .query_row([seq], |r| r.get(0))?;
    work.meta.usage_bytes = work.meta.usage_bytes.saturating_sub(to_u64(stored));
    let shas: Vec<Vec<u8>> = conn
        .prepare_cached("DELETE FROM event_evidence WHERE seq = ?1 RETURNING sha256")?
        .query_map([seq], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sha in shas {
        let still_named = conn
            .prepare_cached("SELECT 1 FROM event_evidence WHERE sha256 = ?1 LIMIT 1")?
            .exists([&sha])?;
        if still_named {
            continue;
        }
        if keep == Keep::Unconfirmed {
            let waiting = conn
                .prepare_cached(
                    "SELECT 1 FROM evidence WHERE sha256 = ?1 AND present = 1 AND confirmed = 0",
                )?
                .exists([&sha])?;
            if waiting {
                continue;
            }
        }
        forget_file(conn, work, &sha)?;
    }
    Ok(())
}

/// Deletes an evidence row; a file still present is unlinked after the commit.
fn forget_file(conn: &Connection, work: &mut Work, sha: &[u8]) -> rusqlite::Result<()> {
    let gone: Option<(i64, i64)> = conn
        .prepare_cached("DELETE FROM evidence WHERE sha256 = ?1 RETURNING present, bytes")?
        .query_row([sha], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((1, bytes)) = gone {
        work.meta.usage_bytes = work.meta.usage_bytes.saturating_sub(to_u64(bytes));
        if let Some(d) = digest(sha) {
            work.unlink.insert(d);
        }
    }
    Ok(())
}

/// Marks a present evidence file evicted (the row stays while events name it); the file is
/// unlinked after the commit. A row no event names is deleted.
fn evict_file(conn: &Connection, work: &mut Work, sha: &[u8], bytes: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE evidence SET present = 0 WHERE sha256 = ?1")?
        .execute([sha])?;
    work.meta.usage_bytes = work.meta.usage_bytes.saturating_sub(to_u64(bytes));
    if let Some(d) = digest(sha) {
        work.unlink.insert(d);
    }
    let named = conn
        .prepare_cached("SELECT 1 FROM event_evidence WHERE sha256 = ?1 LIMIT 1")?
        .exists([sha])?;
    if !named {
        conn.prepare_cached("DELETE FROM evidence WHERE sha256 = ?1")?
            .execute([sha])?;
    }
    Ok(())
}

/// Bytes kept free under the quota for the data-loss events this transaction will write.
fn loss_report_bytes(work: &Work) -> u64 {
    if work.lost.is_none() && work.lost_files.is_empty() {
        return 0;
    }
    LOSS_EVENT_RESERVE_BYTES + work.lost_files.len() as u64 * LOST_FILE_REPORT_BYTES
}

fn load_meta(conn: &Connection) -> rusqlite::Result<Meta> {
    let mut meta = Meta::default();
    let mut stmt = conn.prepare("SELECT key, value FROM meta")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (key, value) = row?;
        if let Some(field) = meta_field(&mut meta, &key) {
            *field = to_u64(value);
        }
    }
    Ok(meta)
}

/// Writes the counters that changed between `old` and `new`.
fn store_meta(conn: &Connection, old: &Meta, new: &Meta) -> rusqlite::Result<()> {
    let mut new_copy = *new;
    let mut old_copy = *old;
    for key in META_KEYS {
        let (Some(n), Some(o)) = (
            meta_field(&mut new_copy, key).map(|v| *v),
            meta_field(&mut old_copy, key).map(|v| *v),
        ) else {
            continue;
        };
        if n != o {
            conn.prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")?
                .execute(params![key, to_i64(n)])?;
        }
    }
    Ok(())
}

fn meta_field<'a>(meta: &'a mut Meta, key: &str) -> Option<&'a mut u64> {
    Some(match key {
        "last_seq" => &mut meta.last_seq,
        "acked_seq" => &mut meta.acked_seq,
        "usage_bytes" => &mut meta.usage_bytes,
        "lost_events_total" => &mut meta.lost_events_total,
        "evicted_events_total" => &mut meta.evicted_events_total,
        "evicted_evidence_total" => &mut meta.evicted_evidence_total,
        "expired_events_total" => &mut meta.expired_events_total,
        "lost_evidence_total" => &mut meta.lost_evidence_total,
        _ => return None,
    })
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn digest(bytes: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(bytes).ok().map(Digest)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Catalog key of the event that reports evicted unsynced events.
const LOSS_CATEGORY_KEY: &str = "device.data_loss";

/// Source id of events the store raises.
const LOSS_SOURCE_ID: &str = "store";

/// Room kept for the data-loss event once a transaction has evicted an unsynced event.
const LOSS_EVENT_RESERVE_BYTES: u64 = 1024;

/// Room a lost evidence file takes in its data-loss report (its hash in hex and a seq).
const LOST_FILE_REPORT_BYTES: u64 = 96;

/// Most lost evidence files one data-loss event names (more make more events).
const LOST_FILES_PER_REPORT: usize = 100;

/// Bounds of the WAL's checkpoint point in pages (SQLite's default is the upper one).
const WAL_MIN_CHECKPOINT_PAGES: i64 = 16;
const WAL_MAX_CHECKPOINT_PAGES: i64 = 1000;

const META_KEYS: [&str; 8] = [
    "last_seq",
    "acked_seq",
    "usage_bytes",
    "lost_events_total",
    "evicted_events_total",
    "evicted_evidence_total",
    "expired_events_total",
    "lost_evidence_total",
];
