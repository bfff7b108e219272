//! The box's durable event store: the outbox between the event builder and the uplink.
//!
//! An event is *accepted* when [`Store::submit`] returns `Ok`: by then its SQLite transaction has
//! committed with `synchronous=FULL` in WAL mode, and every evidence file it names was written,
//! fsynced and renamed into `evidence/` (with the folder fsynced) before that commit.
//!
//! Main types:
//! - [`Store`]: a cloneable handle. Writes go through one named writer thread (`store-writer`)
//!   over a bounded channel; the writer groups whatever is queued into one transaction (group
//!   commit) and assigns the per-box sequence number ([`Seq`]) in commit order, gap-free. Callers
//!   get their result only after the commit. [`Store::submit_many`] hands over a caller's burst
//!   as one request, so that it commits in one transaction (one sync) whoever else submits.
//!   Reads use separate read-only connections, which WAL never blocks behind the writer.
//! - [`StoreReader`]: a read-only connection for the uplink and the status page.
//! - [`EvidenceFile`]: a snapshot's bytes with their [`EvidenceRef`].
//!
//! Storage layout (see `schema.rs`): one row per event holding the columns the store queries
//! (`seq`, `id`, `observed_at_ms`, `category`, the accounted size) plus the whole [`Event`] as a
//! MessagePack body with named fields (`rmp_serde`). The body keeps the event exactly as submitted
//! — attributes, floats and fields added by later protocol versions included — without a schema
//! change per wire change; the columns exist only where SQL needs to filter or order. The `seq`
//! column is authoritative: the body is encoded before the sequence number is known and the read
//! path puts the column's value into the decoded event.
//!
//! Quota (logical bytes: each event's body plus [`ROW_OVERHEAD_BYTES`], plus evidence files on
//! disk). An acknowledgement covers an event, not its evidence files, which upload separately
//! when the hub asks for them; a file is *confirmed* once the hub says it holds it complete
//! ([`Store::confirm_evidence`]). When a commit would exceed the quota, the writer evicts, in this
//! order and within the same transaction: (1) confirmed files of synced events, oldest first;
//! (2) synced events, oldest first (those past retention are the oldest), keeping their files
//! that are not confirmed yet; (3) unconfirmed files of synced events, oldest first; (4) only
//! then unsynced events, oldest first. Each unconfirmed file (3) and unsynced event (4) evicted
//! is counted (`lost_evidence_total`, `lost_events_total`) and reported by a `device.data_loss`
//! event committed in that same transaction (naming the files and the events that named them),
//! so no loss is ever silent. A file found missing at start-up is reported the same way. A full disk lowers the
//! effective quota to below the usage at which the disk filled, so the same policy frees room.
//! Freeing room takes room (a WAL checkpoint, the eviction's transaction): the store holds a
//! disk reserve ([`RESERVE_FILE_NAME`], a sixty-fourth of the disk within 256 KiB..8 MiB) that
//! it gives back to relieve a full disk before its next write, and allocates again after.
//! [`Store::sweep_retention`] deletes synced events older than the retention time.
//!
//! This module must not talk to the network, decide what an event is (the event builder does)
//! or delete a database it cannot read: a corrupt or foreign file is reported by
//! [`StoreError::Corrupt`] / [`StoreError::Foreign`] and left exactly as found.

pub mod config;
mod evidence;
pub use evidence::{disk_free_bytes, disk_space};
mod pins;
pub use pins::EvidencePins;
mod reader;
mod reserve;
pub use reserve::RESERVE_FILE_NAME;
mod schema;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use protocol::{Digest, Event, EventId, EvidenceRef, GridCode, Location, Seq, Timestamp};
use sha2::{Digest as _, Sha256};

pub use reader::StoreReader;

use evidence::EvidenceDir;
use writer::{Encoded, Request, SubmitReply, Writer};

/// Bytes charged to the quota for each event row on top of its encoded body (the row's columns
/// and index entries).
pub const ROW_OVERHEAD_BYTES: u64 = 96;

/// File name of the database inside the data folder.
pub const DB_FILE_NAME: &str = "events.db";

/// Name of the evidence folder inside the data folder.
pub const EVIDENCE_DIR_NAME: &str = "evidence";

/// What the store needs to open. Built from the `[store]` section by [`StoreOptions::from_section`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Folder for `events.db` and `evidence/` (created if missing).
    pub data_dir: PathBuf,
    /// Hard limit on accounted bytes.
    pub quota_bytes: u64,
    /// How long synced events stay.
    pub retention: Duration,
    /// Submissions that may queue for the writer before `submit` blocks.
    pub queue_capacity: usize,
    /// Most requests committed in one transaction.
    pub max_batch: usize,
    /// How long a connection waits on a lock.
    pub busy_timeout: Duration,
    /// Location stamped on events the store raises itself (`device.data_loss`).
    pub location: Location,
    /// Grid code stamped on those events.
    pub grid: Option<GridCode>,
}

impl StoreOptions {
    /// Options with the config defaults for a data folder and site.
    pub fn new(data_dir: impl Into<PathBuf>, location: Location) -> Self {
        let defaults = config::StoreConfig::default();
        StoreOptions {
            data_dir: data_dir.into(),
            quota_bytes: defaults.quota_bytes,
            retention: defaults.retention,
            queue_capacity: defaults.queue_capacity.get() as usize,
            max_batch: defaults.max_batch.get() as usize,
            busy_timeout: defaults.busy_timeout,
            location,
            grid: None,
        }
    }

    /// The options a validated `[store]` section asks for; `location` and `grid` (the site's)
    /// are stamped on the events the store raises itself.
    pub fn from_section(
        section: &config::StoreConfig,
        location: Location,
        grid: Option<GridCode>,
    ) -> Self {
        StoreOptions {
            data_dir: section.data_dir.clone(),
            quota_bytes: section.quota_bytes,
            retention: section.retention,
            queue_capacity: section.queue_capacity.get() as usize,
            max_batch: section.max_batch.get() as usize,
            busy_timeout: section.busy_timeout,
            location,
            grid,
        }
    }
}

/// An evidence file to commit with an event: its bytes and the reference the event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceFile {
    /// Hash, length and media type of `bytes`.
    pub reference: EvidenceRef,
    /// The file's content.
    pub bytes: Vec<u8>,
}

impl EvidenceFile {
    /// Hashes `bytes` and wraps them.
    pub fn new(bytes: Vec<u8>, media_type: impl Into<String>) -> Self {
        let sha256 = Digest(Sha256::digest(&bytes).into());
        EvidenceFile {
            reference: EvidenceRef {
                sha256,
                bytes: bytes.len() as u64,
                media_type: media_type.into(),
            },
            bytes,
        }
    }
}

/// An accepted event: durable from the moment this is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The sequence number the store assigned.
    pub seq: Seq,
    /// The event's id.
    pub id: EventId,
}

/// Counters and positions of the store, read in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// The highest sequence number committed (0 before the first event).
    pub last_seq: u64,
    /// The highest sequence number the hub has acknowledged (0 before the first ack).
    pub acked_seq: u64,
    /// Event rows held.
    pub events: u64,
    /// Event rows not yet acknowledged.
    pub unsynced_events: u64,
    /// Evidence files held.
    pub evidence_files: u64,
    /// Accounted bytes (event rows plus evidence files), compared with the quota.
    pub usage_bytes: u64,
    /// Unsynced events evicted under quota pressure, ever (each reported by a data-loss event).
    pub lost_events_total: u64,
    /// Synced events evicted under quota pressure, ever.
    pub evicted_events_total: u64,
    /// Evidence files evicted under quota pressure, ever.
    pub evicted_evidence_total: u64,
    /// Synced events deleted for being older than the retention time, ever.
    pub expired_events_total: u64,
    /// Evidence files evicted (or found missing) before the hub confirmed them, ever (each
    /// reported by a data-loss event).
    pub lost_evidence_total: u64,
}

/// What the start-up checks found and repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenReport {
    /// Half-written evidence files (from a crash before their rename) removed.
    pub staged_removed: u64,
    /// Evidence files no committed event names (a crash between rename and commit, or between
    /// an eviction's commit and its unlink) removed.
    pub orphans_removed: u64,
    /// Evidence files the database names that were missing on disk; marked absent.
    pub missing_evidence: u64,
}

/// The largest an event may encode to (its evidence files apart): half the hub's default frame
/// limit, the most the uplink puts in one batch. A stored event the uplink could not send would
/// hold up every later one at its sequence number for good.
pub const MAX_EVENT_BYTES: usize = protocol::DEFAULT_MAX_FRAME_BYTES as usize / 2;

/// Everything that can go wrong in the store. Recovery: [`StoreError::DiskFull`] and
/// [`StoreError::Sqlite`] are worth a retry; [`StoreError::TooLarge`],
/// [`StoreError::EventTooLarge`],
/// [`StoreError::EvidenceMismatch`] and [`StoreError::DuplicateId`] reject one submission (skip
/// it); the start-up errors and [`StoreError::Closed`] stop the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data folder or a file in it could not be created, read or written.
    #[error("failed to {op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database file exists but is not a readable SQLite database, or fails its integrity
    /// check. It was left untouched: move it aside (keep it for analysis) to start a new store.
    #[error(
        "event database `{}` is corrupt or unreadable ({detail}); it was left untouched: \
         move it aside to start a new store",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The database belongs to some other application. It was left untouched.
    #[error("`{}` is an SQLite database of another application; it was left untouched", path.display())]
    Foreign {
        /// The database file.
        path: PathBuf,
    },
    /// The database was written by a newer agent.
    #[error(
        "event database `{}` has schema version {found}, newer than this agent's {supported}",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The disk holding the data folder is full. The store lowered its effective quota and
    /// evicts per policy; retry.
    #[error("the data disk is full")]
    DiskFull,
    /// One event (with its evidence) is larger than the whole quota.
    #[error("event of {bytes} bytes cannot fit in the store quota of {quota_bytes} bytes")]
    TooLarge {
        /// Accounted size of the event and its evidence.
        bytes: u64,
        /// The effective quota.
        quota_bytes: u64,
    },
    /// The event itself encodes to more than [`MAX_EVENT_BYTES`]: it could never be sent.
    #[error("event `{id}` encodes to {bytes} bytes, more than the {max_bytes} an event may have")]
    EventTooLarge {
        /// The event.
        id: EventId,
        /// Its encoded size.
        bytes: usize,
        /// [`MAX_EVENT_BYTES`].
        max_bytes: usize,
    },
    /// The event's `evidence` list does not name exactly the evidence files submitted with it.
    #[error("event `{id}` names evidence that was not submitted with it, or vice versa")]
    EvidenceMismatch {
        /// The event.
        id: EventId,
    },
    /// An event with this id is already stored.
    #[error("event `{id}` is already stored")]
    DuplicateId {
        /// The event.
        id: EventId,
    },
    /// An acknowledgement for events that were never committed.
    #[error("ack up to seq {up_to} is beyond the last committed seq {last_seq}")]
    AckBeyondCommitted {
        /// What was acknowledged.
        up_to: Seq,
        /// What was committed.
        last_seq: u64,
    },
    /// A stored event body does not decode.
    #[error("stored event seq {seq} does not decode")]
    Decode {
        /// Its sequence number.
        seq: u64,
        /// Why.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// An event could not be encoded.
    #[error("event `{id}` does not encode")]
    Encode {
        /// The event.
        id: EventId,
        /// Why.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// An SQLite operation failed.
    #[error("sqlite failed to {op}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// Why (shared by every submission of a failed group commit).
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The writer thread is gone (the store was closed, or the writer panicked).
    #[error("the event store is closed")]
    Closed,
}

/// A handle to the event store. Cheap to clone; the writer thread stops when the last handle
/// is dropped or [`Store::close`] is called on it.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// Requests to the writer. Bounded: a full queue blocks submitters (backpressure). Taken (and
    /// so closed) on drop, which lets the writer drain and exit.
    requests_tx: Option<SyncSender<Request>>,
    /// Joined on drop so that the last commit finishes before the handle is gone.
    writer: Option<JoinHandle<()>>,
    evidence: EvidenceDir,
    db_path: PathBuf,
    busy_timeout: Duration,
    /// The handle's own reader for the convenience read methods.
    reader: Mutex<StoreReader>,
    report: OpenReport,
    /// The store's epoch (see [`Store::epoch`]).
    epoch: u64,
    /// Files being uploaded (see [`EvidencePins`]).
    pinned: pins::Pins,
    /// Published by the writer.
    disk: Arc<DiskCounters>,
}

/// What the writer publishes about the data disk.
#[derive(Debug, Default)]
struct DiskCounters {
    /// Times the writer relieved a full disk.
    reliefs: AtomicU64,
    /// Bytes of the disk reserve allocated now (0 while released).
    reserve_bytes: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store in `options.data_dir`: creates the folder, checks
    /// the database (integrity, owner, schema version), migrates it, removes half-written and
    /// orphan evidence files, then starts the writer thread.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the folder cannot be prepared, [`StoreError::Corrupt`],
    /// [`StoreError::Foreign`] or [`StoreError::SchemaTooNew`] when the database cannot be used
    /// (the file is then left untouched), [`StoreError::Sqlite`] for other SQLite failures.
    pub fn open(options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| StoreError::Io {
            op: "create data folder",
            path: options.data_dir.clone(),
            source,
        })?;
        let db_path = options.data_dir.join(DB_FILE_NAME);
        let conn = schema::open_writer(&db_path, options.busy_timeout)?;
        let epoch = schema::epoch(&conn)?;
        let evidence = EvidenceDir::create(&options.data_dir.join(EVIDENCE_DIR_NAME))?;
        let disk = Arc::new(DiskCounters::default());
        let pinned = pins::Pins::default();
        let (writer, report) = Writer::start_up(
            conn,
            evidence.clone(),
            &options,
            Arc::clone(&disk),
            Arc::clone(&pinned),
        )?;
        let reader = StoreReader::open_at(&db_path, options.busy_timeout)?;
        let (requests_tx, requests_rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let handle = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer.run(requests_rx))
            .map_err(|source| StoreError::Io {
                op: "spawn the writer thread for",
                path: db_path.clone(),
                source,
            })?;
        Ok(Store {
            shared: Arc::new(Shared {
                requests_tx: Some(requests_tx),
                writer: Some(handle),
                evidence,
                db_path,
                busy_timeout: options.busy_timeout,
                reader: Mutex::new(reader),
                report,
                epoch,
                pinned,
                disk,
            }),
        })
    }

    /// What the start-up checks found.
    pub fn open_report(&self) -> OpenReport {
        self.shared.report
    }

    /// The store's epoch: a random number made with the store (0 for a store made before
    /// epochs existed). Sequence numbers count within it; the uplink sends it in `Hello`, so
    /// the hub never takes a new store's events for duplicates of an old one's.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Commits `event` with its evidence files and returns the assigned sequence number. The
    /// `seq` in `event` is ignored: the store assigns it in commit order. `event.evidence` must
    /// list exactly the references of `evidence`, in order.
    ///
    /// Blocks until the commit (or while the writer's queue is full).
    ///
    /// # Errors
    /// See [`StoreError`]: a per-submission rejection, [`StoreError::DiskFull`],
    /// [`StoreError::Sqlite`] for a failed commit, [`StoreError::Closed`].
    pub fn submit(
        &self,
        event: Event,
        evidence: Vec<EvidenceFile>,
    ) -> Result<Committed, StoreError> {
        self.submit_many(vec![(event, evidence)])
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    /// Commits several events, each with its evidence files, in one transaction (one sync for
    /// all of them: what a caller holding a burst of events should use rather than one
    /// [`Store::submit`] each). They get consecutive sequence numbers in the given order. Each
    /// event is accepted or refused on its own, as by [`Store::submit`]; a failed commit fails
    /// all of them. Returns one result per event, in order.
    ///
    /// Blocks until the commit (or while the writer's queue is full).
    pub fn submit_many(
        &self,
        events: Vec<(Event, Vec<EvidenceFile>)>,
    ) -> Vec<Result<Committed, StoreError>> {
        let n = events.len();
        // Submissions refused before reaching the writer keep their place in the answer.
        let mut results: Vec<Option<Result<Committed, StoreError>>> = Vec::with_capacity(n);
        let mut items = Vec::with_capacity(n);
        for (event, evidence) in events {
            match self.prepare(&event, evidence) {
                Ok(item) => {
                    items.push(item);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut committed = if items.is_empty() {
            Vec::new().into_iter()
        } else {
            let (reply_tx, reply_rx) = mpsc::sync_channel(1);
            let sent = self.send(Request::Submit {
                items,
                reply: SubmitReply::Blocking(reply_tx),
            });
            // A writer that is gone took the request with it (its staged files are removed at
            // the next start-up); every submission that reached it reads `Closed` below.
            match sent.and_then(|()| reply_rx.recv().map_err(|_| StoreError::Closed)) {
                Ok(r) => r.into_iter(),
                Err(_) => Vec::new().into_iter(),
            }
        };
        results
            .into_iter()
            .map(|r| match r {
                Some(refused) => refused,
                None => committed.next().unwrap_or(Err(StoreError::Closed)),
            })
            .collect()
    }

    /// [`Store::submit`] for a task: waits for the commit without holding a thread.
    ///
    /// Encoding runs on the calling task; writing and syncing evidence files, and waiting for
    /// room in a full writer queue, run on the blocking pool. Dropping the future does not
    /// withdraw a submission that has started: it is committed, unanswered.
    ///
    /// # Errors
    /// As [`Store::submit`].
    pub async fn submit_async(
        &self,
        event: Event,
        evidence: Vec<EvidenceFile>,
    ) -> Result<Committed, StoreError> {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let reply = SubmitReply::Async(reply_tx);
        // A blocking closure runs to its end even when this future is dropped, so staged files
        // always reach the writer with their request.
        if evidence.is_empty() {
            let item = self.prepare(&event, evidence)?;
            let request = Request::Submit {
                items: vec![item],
                reply,
            };
            match self.sender()?.try_send(request) {
                Ok(()) => {}
                Err(TrySendError::Full(request)) => {
                    let store = self.clone();
                    on_blocking_pool(move || store.send(request)).await?;
                }
                Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            }
        } else {
            let store = self.clone();
            on_blocking_pool(move || {
                let item = store.prepare(&event, evidence)?;
                store.send(Request::Submit {
                    items: vec![item],
                    reply,
                })
            })
            .await?;
        }
        reply_rx
            .await
            .ok()
            .and_then(|mut results| results.pop())
            .unwrap_or(Err(StoreError::Closed))
    }

    /// Records that the hub committed every event up to and including `up_to`. Acks never move
    /// backwards: an older ack is a no-op.
    ///
    /// # Errors
    /// [`StoreError::AckBeyondCommitted`], [`StoreError::Sqlite`], [`StoreError::Closed`].
    pub fn ack(&self, up_to: Seq) -> Result<(), StoreError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.send(Request::Ack {
            up_to,
            reply: reply_tx,
        })?;
        reply_rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Whether the writer thread answers within `within` (it is not stuck in a commit, an fsync
    /// or a full disk, and its queue is not full): the service watchdog's probe. Blocks up to
    /// `within`.
    pub fn ping(&self, within: std::time::Duration) -> bool {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.sender()
            .is_ok_and(|tx| tx.try_send(Request::Ping(reply_tx)).is_ok())
            && reply_rx.recv_timeout(within).is_ok()
    }

    /// Records that the hub holds these evidence files complete, so they may be evicted freely.
    /// Returns how many were not confirmed before (unknown files are ignored).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Closed`].
    pub fn confirm_evidence(&self, files: Vec<Digest>) -> Result<u64, StoreError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.send(Request::Confirm {
            files,
            reply: reply_tx,
        })?;
        reply_rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// The pins of an uploader (see [`EvidencePins`]): eviction takes a file being uploaded only
    /// when no other unconfirmed file can go, and never one whose last chunk is on its way.
    pub fn evidence_pins(&self) -> EvidencePins {
        EvidencePins {
            pins: Arc::clone(&self.shared.pinned),
            mine: Mutex::new(HashSet::new()),
        }
    }

    /// Up to `limit` evidence files of synced events that the box holds and the hub has not
    /// confirmed, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn unconfirmed_evidence(&self, limit: usize) -> Result<Vec<Digest>, StoreError> {
        self.with_reader(|r| r.unconfirmed_evidence(limit))
    }

    /// Deletes synced events observed before `now - retention` (and evidence only they named).
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Closed`].
    pub fn sweep_retention(&self, now: Timestamp) -> Result<u64, StoreError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.send(Request::Sweep {
            now,
            reply: reply_tx,
        })?;
        reply_rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Up to `limit` unsynced events in sequence order (what the uplink sends next).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Decode`].
    pub fn pending(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.with_reader(|r| r.pending(limit))
    }

    /// Up to `limit` events (synced or not) with `seq >= from`, in sequence order.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Decode`].
    pub fn events_from(&self, from: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.with_reader(|r| r.events_from(from, limit))
    }

    /// Counters and positions.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        self.with_reader(StoreReader::stats)
    }

    /// Whether the evidence file named by `sha256` is held on the box.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn has_evidence(&self, sha256: &Digest) -> Result<bool, StoreError> {
        self.with_reader(|r| r.has_evidence(sha256))
    }

    /// Where the evidence file named by `sha256` lives (whether or not it is held).
    pub fn evidence_path(&self, sha256: &Digest) -> PathBuf {
        self.shared.evidence.path_of(sha256)
    }

    /// Bytes still free on the data disk (`None` when the file system cannot say).
    pub fn disk_free_bytes(&self) -> Option<u64> {
        self.shared.evidence.free_bytes()
    }

    /// Times the store found its data disk full and freed room, since it was opened.
    pub fn disk_full_total(&self) -> u64 {
        self.shared.disk.reliefs.load(Ordering::Relaxed)
    }

    /// Bytes of the disk reserve held now: 0 while it is given back (the disk is full and the
    /// store found nothing more to evict), else its size.
    pub fn disk_reserve_bytes(&self) -> u64 {
        self.shared.disk.reserve_bytes.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.shared.db_path
    }

    /// A new read-only connection, for a task that reads on its own (uplink, status page).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open_at(&self.shared.db_path, self.shared.busy_timeout)
    }

    /// Stops the writer after it has committed everything already queued, if this is the last
    /// handle; otherwise just drops this handle.
    pub fn close(self) {
        drop(self);
    }

    fn sender(&self) -> Result<&SyncSender<Request>, StoreError> {
        self.shared.requests_tx.as_ref().ok_or(StoreError::Closed)
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        let tx = self.sender()?;
        match tx.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(request)) => tx.send(request).map_err(|_| StoreError::Closed),
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
        }
    }

    /// Checks, encodes and stages one submission (in the caller's thread, so that several
    /// submitters encode and write evidence in parallel).
    fn prepare(
        &self,
        event: &Event,
        evidence: Vec<EvidenceFile>,
    ) -> Result<(Encoded, Vec<evidence::Staged>), StoreError> {
        if event.evidence.len() != evidence.len()
            || event
                .evidence
                .iter()
                .zip(&evidence)
                .any(|(named, file)| *named != file.reference)
        {
            return Err(StoreError::EvidenceMismatch { id: event.id });
        }
        let encoded = Encoded::new(event)?;
        // Read before staging: a relief after this point has made room this submission did
        // not see, and a report of a full disk from it is then old news.
        let reliefs = self.shared.disk.reliefs.load(Ordering::Relaxed);
        if encoded.body.len() > MAX_EVENT_BYTES {
            return Err(StoreError::EventTooLarge {
                id: event.id,
                bytes: encoded.body.len(),
                max_bytes: MAX_EVENT_BYTES,
            });
        }
        let mut staged = Vec::with_capacity(evidence.len());
        for file in evidence {
            match self.shared.evidence.stage(&file) {
                Ok(s) => staged.push(s),
                Err(e) => {
                    for s in staged {
                        self.shared.evidence.discard(s);
                    }
                    if matches!(e, StoreError::DiskFull) {
                        // Let the writer free room; a full queue already has it busy.
                        let _ = self.sender()?.try_send(Request::DiskPressure { reliefs });
                    }
                    return Err(e);
                }
            }
        }
        Ok((encoded, staged))
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut StoreReader) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while reading leaves the connection usable: SQLite statements are reset on drop.
        let mut reader = self
            .shared
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut reader)
    }
}

/// Runs `work` on tokio's blocking pool (a panic in it reads as [`StoreError::Closed`]).
async fn on_blocking_pool(
    work: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
) -> Result<(), StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StoreError::Closed)?
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db_path", &self.shared.db_path)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        drop(self.requests_tx.take());
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(stage = "store", "store writer thread panicked");
        }
    }
}

/// Maps an SQLite error to the store's error, recognising a full disk.
fn sqlite_error(op: &'static str, source: rusqlite::Error) -> StoreError {
    if is_disk_full(&source) {
        return StoreError::DiskFull;
    }
    StoreError::Sqlite {
        op,
        source: Arc::new(source),
    }
}

fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
    )
}
