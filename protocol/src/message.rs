//! Every message a box and the hub exchange, and the [`Event`] they are about.
//!
//! Compatibility rules (see `docs/adr/0001-wire-codec.md`):
//! - fields are encoded by name; a decoder ignores fields it does not know;
//! - a field added in a later version is optional (`#[serde(default)]`), so an older peer's
//!   messages still decode;
//! - a message type a decoder does not know decodes as [`Message::Unknown`], which a peer skips;
//! - an enum value a decoder does not know decodes as that enum's `Unknown` variant where the
//!   enum has one.
//!
//! A conversation over one QUIC connection:
//! box → `Hello`; hub → `Welcome` (or `Bye` naming why not); box → `EventBatch`*;
//! hub → `Ack`* (only after its own commit); `EvidenceChunk` / `EvidenceAck` on their own streams;
//! box → `EvidenceQuery` (which files the hub already holds) and `EvidenceLost` (files it asked
//! for that the box no longer has); `Health` every few seconds; hub → `Command`, box →
//! `CommandResult`; either side → `Bye`.
//! Enrollment runs on its own connection before the box has a certificate:
//! box → `EnrollRequest`; hub → `EnrollResponse`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{
    BoxId, CameraId, CategoryCode, CommandId, Digest, EventId, GridCode, Seq, SourceId,
};
use crate::time::Timestamp;

/// One message on the wire. Encoded as a MessagePack map whose `type` field names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Message {
    /// Box → hub, first on every connection.
    Hello(Hello),
    /// Hub → box, the answer to an acceptable `Hello`.
    Welcome(Welcome),
    /// Box → hub: events in sequence order.
    EventBatch(EventBatch),
    /// Hub → box: everything up to a sequence number is committed on the hub.
    Ack(Ack),
    /// Box → hub: a piece of an evidence file.
    EvidenceChunk(EvidenceChunk),
    /// Hub → box: how much of an evidence file the hub holds.
    EvidenceAck(EvidenceAck),
    /// Box → hub: which of these files do you hold?
    EvidenceQuery(EvidenceQuery),
    /// Box → hub: these files are gone from the box and will never arrive.
    EvidenceLost(EvidenceLost),
    /// Box → hub: periodic health report.
    Health(Health),
    /// Hub → box: something for the box to do.
    Command(Command),
    /// Box → hub: what came of a command.
    CommandResult(CommandResult),
    /// Box → hub on an enrollment connection: a CSR and a one-time token.
    EnrollRequest(EnrollRequest),
    /// Hub → box: the signed certificate, or why not.
    EnrollResponse(EnrollResponse),
    /// Either side: the connection is about to close, and why.
    Bye(Bye),
    /// A message type this build does not know (sent by a newer peer). Skip it.
    #[serde(other)]
    Unknown,
}

impl Message {
    /// The wire name of this message's type, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::EventBatch(_) => "event_batch",
            Message::Ack(_) => "ack",
            Message::EvidenceChunk(_) => "evidence_chunk",
            Message::EvidenceAck(_) => "evidence_ack",
            Message::EvidenceQuery(_) => "evidence_query",
            Message::EvidenceLost(_) => "evidence_lost",
            Message::Health(_) => "health",
            Message::Command(_) => "command",
            Message::CommandResult(_) => "command_result",
            Message::EnrollRequest(_) => "enroll_request",
            Message::EnrollResponse(_) => "enroll_response",
            Message::Bye(_) => "bye",
            Message::Unknown => "unknown",
        }
    }
}

/// Opens a session: who is speaking which version, and where its backlog stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The newest protocol version the box speaks.
    pub protocol_version: u16,
    /// The oldest protocol version the box still speaks.
    pub min_protocol_version: u16,
    /// The agent's software version (e.g. `0.1.0`).
    pub agent_version: String,
    /// The highest sequence number the box has seen acknowledged, if any.
    #[serde(default)]
    pub last_acked_seq: Option<Seq>,
    /// The highest sequence number the box has committed, if any.
    #[serde(default)]
    pub last_committed_seq: Option<Seq>,
    /// The epoch of the box's event store: a random number made with the store. Sequence
    /// numbers count within an epoch, so the events of a wiped, replaced or re-created store
    /// are never taken for duplicates of the old one's. `None` (older agents, and stores made
    /// before epochs) is epoch 0.
    #[serde(default)]
    pub store_epoch: Option<u64>,
}

/// The hub's answer to an acceptable [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides speak from now on (see [`crate::version`]).
    pub protocol_version: u16,
    /// The hub's software version.
    pub hub_version: String,
    /// The box id the hub read from the box's certificate.
    pub box_id: BoxId,
    /// The highest sequence number of this box the hub has committed; the box resumes after it.
    #[serde(default)]
    pub last_committed_seq: Option<Seq>,
}

/// Events from one box, in ascending sequence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The events.
    pub events: Vec<Event>,
}

/// The hub has committed every event of this box up to and including `up_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The highest committed sequence number.
    pub up_to: Seq,
}

/// A piece of an evidence file, addressed by content hash and offset so an upload can resume
/// where the hub's [`EvidenceAck`] says it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceChunk {
    /// SHA-256 of the whole file.
    pub sha256: Digest,
    /// Where `data` starts within the file.
    pub offset: u64,
    /// The whole file's length.
    pub total_bytes: u64,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// How much of an evidence file the hub holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceAck {
    /// SHA-256 of the file.
    pub sha256: Digest,
    /// Bytes held contiguously from the start; the box resumes here.
    pub received_bytes: u64,
    /// The file is complete and its hash verified.
    pub complete: bool,
}

/// Which of these evidence files does the hub hold complete? The hub answers with an
/// [`EvidenceAck`] (`complete: true`) for each one it holds from this box and says nothing of
/// the others (it asks for the files it wants by itself). A box asks this for files it has not
/// heard confirmed, e.g. when the connection dropped before the confirmation arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceQuery {
    /// The files, by SHA-256.
    pub sha256s: Vec<Digest>,
}

/// Evidence files the hub asked for that the box no longer holds (evicted before upload, or
/// missing on its disk): the hub stops asking and marks them lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLost {
    /// The files, by SHA-256.
    pub sha256s: Vec<Digest>,
}

/// A box's periodic report on itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// When the report was made.
    pub at: Timestamp,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Events committed but not yet acknowledged.
    pub backlog_events: u64,
    /// When the oldest unacknowledged event was observed.
    #[serde(default)]
    pub oldest_unsynced_at: Option<Timestamp>,
    /// Bytes used by the box's store (database and evidence).
    #[serde(default)]
    pub store_bytes: u64,
    /// Bytes free on the data disk.
    #[serde(default)]
    pub disk_free_bytes: u64,
    /// Cameras, sensors and other components.
    #[serde(default)]
    pub components: Vec<ComponentHealth>,
}

/// The state of one camera, sensor or other component of a box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// Which component.
    pub source: Source,
    /// Its state.
    pub state: ComponentState,
    /// When it last produced something (a frame, a message).
    #[serde(default)]
    pub last_seen: Option<Timestamp>,
    /// A short human-readable detail ("rtsp connection refused").
    #[serde(default)]
    pub detail: Option<String>,
}

/// Coarse health of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// Working.
    Ok,
    /// Working, but not as configured (low fps, slow inference, stale readings).
    Degraded,
    /// Not working.
    Offline,
    /// A state this build does not know.
    #[serde(other)]
    Unknown,
}

/// Something the hub asks a box to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Echoed in the [`CommandResult`].
    pub id: CommandId,
    /// What to do.
    pub action: CommandAction,
}

/// The actions a hub can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CommandAction {
    /// Take a fresh frame from a camera, run the detector, and answer with the detections and a
    /// snapshot, to verify a case.
    Recheck {
        /// The camera to look through.
        camera: CameraId,
        /// The hub's reference (a case number), echoed in logs.
        reference: String,
        /// Look for these category codes' objects (empty: report everything).
        #[serde(default)]
        categories: Vec<CategoryCode>,
    },
    /// An action this build does not know: answer [`CommandOutcome::Unsupported`].
    #[serde(other)]
    Unknown,
}

/// What came of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: CommandId,
    /// How it went.
    pub outcome: CommandOutcome,
    /// When the box finished it.
    pub at: Timestamp,
    /// Evidence produced (uploaded as evidence chunks like any other).
    #[serde(default)]
    pub evidence: Vec<EvidenceRef>,
    /// Result details of actions without a typed answer.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrValue>,
    /// A camera re-check's answer (outcome [`CommandOutcome::Done`] of a
    /// [`CommandAction::Recheck`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<RecheckAnswer>,
}

impl CommandResult {
    /// A result with no evidence and no details.
    pub fn new(id: CommandId, outcome: CommandOutcome, at: Timestamp) -> CommandResult {
        CommandResult {
            id,
            outcome,
            at,
            evidence: Vec::new(),
            attributes: BTreeMap::new(),
            recheck: None,
        }
    }
}

/// What a camera re-check found. The look is also recorded as an event of the box that names
/// the same reference ([`Event::RECHECK_REFERENCE`]), so the hub learns it durably even when
/// this answer is lost with the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecheckAnswer {
    /// The hub's reference from the command, echoed.
    pub reference: String,
    /// Objects that match the asked categories' rules (all objects when none were asked).
    pub matching: u32,
    /// Objects seen, by detector label.
    #[serde(default)]
    pub counts: BTreeMap<String, u32>,
    /// The event the look was recorded as.
    pub event_id: EventId,
    /// Its sequence number in the box's store.
    pub seq: Seq,
}

/// How a command went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Done.
    Done,
    /// Tried and failed.
    Failed {
        /// Why, for a human.
        reason: String,
    },
    /// This box does not know or cannot do the action.
    Unsupported,
}

/// A box asks to be enrolled: a one-time token from `hub box add` and a CSR for a key made on
/// the box (the key never leaves it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The secret part of the enrollment token.
    pub token: String,
    /// PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
    /// The agent's software version.
    pub agent_version: String,
}

/// The hub's answer to an [`EnrollRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum EnrollResponse {
    /// Enrolled.
    Accepted {
        /// The id the certificate is bound to.
        box_id: BoxId,
        /// The box's certificate, PEM.
        certificate_pem: String,
        /// The hub CA's certificate, PEM.
        ca_pem: String,
        /// When the certificate expires (it renews before then).
        not_after: Timestamp,
    },
    /// Refused.
    Refused {
        /// Why, as a code the box can act on.
        reason: EnrollRefusal,
        /// Why, for the installer.
        message: String,
    },
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollRefusal {
    /// No such token.
    UnknownToken,
    /// The token has expired.
    ExpiredToken,
    /// The token was used already.
    UsedToken,
    /// The box was revoked.
    Revoked,
    /// The CSR is malformed or its key unacceptable.
    BadCsr,
    /// A reason this build does not know.
    #[serde(other)]
    Unknown,
}

/// The sender is closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    /// Why.
    pub reason: ByeReason,
    /// Detail for a human.
    #[serde(default)]
    pub message: Option<String>,
}

/// Why a connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    /// Orderly shutdown; reconnect later.
    Shutdown,
    /// No protocol version in common (see [`crate::version`]).
    UnsupportedVersion,
    /// The box is revoked; do not reconnect with this certificate.
    Revoked,
    /// The peer broke the protocol (malformed frame, out-of-order sequence, ...).
    ProtocolError,
    /// A reason this build does not know.
    #[serde(other)]
    Unknown,
}

impl Event {
    /// The attribute of an event that records a camera re-check: the hub's reference from the
    /// command ([`RecheckAnswer::reference`]), as text.
    pub const RECHECK_REFERENCE: &'static str = "recheck_reference";

    /// The re-check request this event answers, if it records one.
    pub fn recheck_reference(&self) -> Option<&str> {
        match self.attributes.get(Self::RECHECK_REFERENCE) {
            Some(AttrValue::Text(reference)) => Some(reference),
            _ => None,
        }
    }
}

/// Something a box observed, durable on the box once committed and delivered to the hub exactly
/// once in effect (the hub is idempotent on `(box, seq)` and on `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUIDv7, made on the box.
    pub id: EventId,
    /// Per-box sequence number, gap-free in commit order.
    pub seq: Seq,
    /// What raised it.
    pub source: Source,
    /// A minor-class code of the category catalog.
    pub category: CategoryCode,
    /// How urgent.
    pub severity: Severity,
    /// When it was observed (box clock, UTC).
    pub observed_at: Timestamp,
    /// Where.
    pub location: Location,
    /// A grid code stamped at the source (from the box's or the zone's configuration).
    #[serde(default)]
    pub grid: Option<GridCode>,
    /// Rule-specific details (label, score, track id, zone, reading, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrValue>,
    /// Evidence files, uploaded separately by hash.
    #[serde(default)]
    pub evidence: Vec<EvidenceRef>,
}

/// What raised an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// Camera, sensor or the box itself.
    pub kind: SourceKind,
    /// The camera's, sensor's or component's id on the box.
    pub id: SourceId,
}

/// The kind of an event source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A camera (vision rules).
    Camera,
    /// A sensor (MQTT rules).
    Sensor,
    /// The box itself (storage, clock, data loss).
    Box,
    /// A kind this build does not know.
    #[serde(other)]
    Unknown,
}

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine (e.g. a low battery).
    Low,
    /// Needs handling within the normal time limit.
    Medium,
    /// Needs prompt handling.
    High,
    /// Danger to people (fire, gas, flooding).
    Critical,
}

/// A point with the coordinate system it is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// The coordinate system of `lat`/`lon`.
    #[serde(default)]
    pub crs: Crs,
}

impl Location {
    /// True when both coordinates are finite and in range.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// Coordinate systems in use in China.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crs {
    /// WGS84, as GPS reports it.
    #[default]
    Wgs84,
    /// GCJ-02, the obfuscated system of Chinese web maps.
    Gcj02,
    /// BD-09, Baidu's system.
    Bd09,
}

/// A reference to an evidence file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EvidenceRef {
    /// SHA-256 of the file (its name in the box's evidence folder).
    pub sha256: Digest,
    /// Its length.
    pub bytes: u64,
    /// Its media type (`image/jpeg`).
    pub media_type: String,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// A flag.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// Text.
    Text(String),
}
