//! The case service: ingest, actions and escalation, each one SQLite transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::{
    AttrValue, BoxId, Crs, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::OPEN311_BOX;
use super::workflow::{self, Action, WorkflowError};
use super::{Actor, Case, CaseId, CaseState, Transition};
use crate::cases::db::{CasePageQuery, Db, DbError, RelayedState};
use crate::duties::{DepartmentId, DutyList, Registration, WorkCalendar};
use crate::grid::geometry::METRES_PER_DEGREE;
use crate::grid::{Grid, crs};

/// Merging and warning parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaseSettings {
    /// Events of the same category within this distance of an open case join it.
    pub merge_radius_m: f64,
    /// ... and within this time of its latest observation.
    pub merge_window_ms: i64,
    /// Warn this long (wall-clock) before the escalation time.
    pub warn_before_ms: i64,
    /// A camera re-check answering a handled case verifies it: passed with no matching object
    /// left, failed (rework) otherwise.
    pub verify_by_recheck: bool,
    /// After a department's feedback on a case a camera raised, ask that camera for a re-check
    /// (the API does this when the hub serves boxes).
    pub recheck_on_feedback: bool,
    /// An event observed further than this after its arrival (a box clock running ahead) is
    /// given its arrival time, and flagged.
    pub max_future_ms: i64,
    /// An event observed longer than this before its arrival is given its arrival time, and
    /// flagged: longer than a box holds events while offline, so a clock reset (to 1970, say).
    pub max_past_ms: i64,
    /// An event further than this from the area its box was registered in flags its case
    /// `outside_box_area` (a box moved, or its events' positions are wrong); 0 turns it off.
    pub box_area_margin_m: f64,
}

impl Default for CaseSettings {
    fn default() -> Self {
        CaseSettings {
            merge_radius_m: 50.0,
            merge_window_ms: 30 * 60_000,
            warn_before_ms: 60 * 60_000,
            verify_by_recheck: true,
            recheck_on_feedback: true,
            max_future_ms: 86_400_000,
            max_past_ms: 30 * 86_400_000,
            box_area_margin_m: 1000.0,
        }
    }
}

/// The attribute that keeps a box's own time of an event whose time the hub replaced.
pub const BOX_TIME_ATTRIBUTE: &str = "box_observed_at_ms";

/// The re-check request a box's event answers ([`Event::recheck_reference`]), which the box
/// echoes from the hub's command (see [`CaseService::ask_recheck`]).
fn recheck_of(event: &Event) -> Option<&str> {
    event.recheck_reference()
}

/// What became of an ingested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "case_id", rename_all = "snake_case")]
pub enum IngestOutcome {
    /// Seen before (same box and sequence number, or same event id): nothing changed.
    Duplicate,
    /// Merged into this open case.
    Merged(CaseId),
    /// Opened this case.
    Created(CaseId),
    /// The box's answer to a camera re-check of this case: attached as evidence, the case
    /// neither merged nor opened.
    Attached(CaseId),
}

/// A change to a case, recorded in the change outbox in the transaction that makes it, and
/// announced after commit (live updates; webhooks deliver it from the outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseChange {
    /// Its number in the outbox (increasing; 0 until recorded).
    #[serde(default)]
    pub id: i64,
    /// What happened (`created`, `merged`, or a transition's action).
    pub action: String,
    /// The case after the change.
    pub case: Case,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct CaseStats {
    /// Events accepted.
    pub events_total: AtomicU64,
    /// Events ignored as duplicates.
    pub duplicates_total: AtomicU64,
    /// Cases opened.
    pub cases_created_total: AtomicU64,
    /// Events merged into an open case.
    pub merged_total: AtomicU64,
    /// Deadline warnings.
    pub warnings_total: AtomicU64,
    /// Escalations.
    pub escalations_total: AtomicU64,
    /// Workflow actions applied.
    pub actions_total: AtomicU64,
    /// Camera re-check answers attached to their cases.
    pub rechecks_total: AtomicU64,
    /// Handled cases verified (passed or failed) by a camera re-check's answer.
    pub recheck_verdicts_total: AtomicU64,
    /// Re-checks asked for after feedback that the box could not answer (offline, no frame).
    pub recheck_unavailable_total: AtomicU64,
    /// Re-check answers refused: for a request the hub did not issue, from a box it did not
    /// ask, or a second answer to one request.
    pub recheck_refused_total: AtomicU64,
    /// Events refused for a value that cannot be stored (a NaN or infinite number, an invalid
    /// location).
    pub refused_total: AtomicU64,
    /// Events whose time was outside the window and was replaced by their arrival time.
    pub clamped_times_total: AtomicU64,
    /// Deadline checks completed (by this process; escalations are made once across all).
    pub deadline_checks_total: AtomicU64,
    /// 1 while this process leads the fleet-wide timers (see [`CaseService::leads`]).
    pub leading: AtomicU64,
}

/// A case operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// Storage failed (retry later).
    #[error("case storage failed")]
    Db(#[from] DbError),
    /// The action does not apply.
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    /// No such case.
    #[error("case {0} does not exist")]
    NotFound(CaseId),
    /// The event's location is not a valid coordinate.
    #[error("event location is invalid")]
    BadLocation,
    /// A re-check answer for a request the hub did not issue, from a box it did not ask, or
    /// answered already.
    #[error("re-check answer refused: {reason}")]
    RecheckRefused {
        /// Which of those.
        reason: String,
    },
    /// An attribute holds a NaN or infinite number, which cannot be stored faithfully.
    #[error("event attribute `{key}` is not a finite number")]
    NonFinite {
        /// The attribute.
        key: String,
    },
    /// Dispatch to a department the hub does not know.
    #[error("unknown department `{0}`")]
    UnknownDepartment(String),
    /// A report's category is not in the catalog.
    #[error("unknown category `{0}`")]
    UnknownCategory(String),
}

/// A citizen's report, as Open311 POST brings it.
#[derive(Debug, Clone, PartialEq)]
pub struct CitizenReport {
    /// A category code or key of the catalog.
    pub category: String,
    /// Where (WGS84).
    pub lat: f64,
    /// Where (WGS84).
    pub lon: f64,
    /// What the citizen wrote.
    pub description: String,
    /// How to reach them (kept for operators, never shown in Open311 answers).
    pub contact: Contact,
    /// The case waits in `reported` for an operator to accept it (register), whatever the
    /// duty list says of its category.
    pub moderated: bool,
}

/// What the cases take with an event besides itself.
#[derive(Debug, Clone, Default)]
struct Intake {
    /// A new case's description.
    description: String,
    /// A new case is not registered and dispatched by itself.
    moderated: bool,
    /// The event's row is stored already (with the rest of its batch, in one statement).
    stored: bool,
}

/// A reporter's contact details (each optional, as in Open311).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contact {
    /// E-mail address.
    pub email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Telephone number.
    pub phone: Option<String>,
}

impl Contact {
    /// The fields given, by name.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("email", &self.email),
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("phone", &self.phone),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (k, v)))
    }
}

/// A filed citizen report: its number (the Open311 `service_request_id`) and what it became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportReceipt {
    /// The report's number.
    pub number: u64,
    /// The case it opened or joined.
    pub outcome: IngestOutcome,
}

/// Where each box was registered: its grid code, or `None` (see
/// [`CaseService::with_box_areas`]).
pub type BoxAreas = Arc<dyn Fn(&BoxId) -> Option<protocol::GridCode> + Send + Sync>;

/// The attribute that says how far an event lay outside its box's registered area.
pub const OUTSIDE_AREA_ATTRIBUTE: &str = "outside_box_area_m";

/// The case flag of an event far outside its box's registered area.
pub const OUTSIDE_AREA_FLAG: &str = "outside_box_area";

/// Where a relayed command stands (see [`CaseService::relay_command`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Relayed<R> {
    /// No hub process took it yet (none holds the box's connection, so far).
    Waiting,
    /// The process holding the box's connection sent it.
    Taken,
    /// The box's result, or why there is none.
    Answered(Result<R, String>),
}

/// The lock under which a citizen report takes the next number.
const CITIZEN_REPORTS_LOCK: &str = "gridsense cases: citizen report numbers";

/// Ingest, actions and escalation over one database.
pub struct CaseService {
    db: Db,
    /// Whether this process runs the fleet-wide timers (deadlines, webhooks).
    leadership: std::sync::Mutex<crate::storage::Leadership>,
    grid: Arc<Grid>,
    duties: DutyList,
    calendar: WorkCalendar,
    departments: std::collections::HashSet<DepartmentId>,
    settings: CaseSettings,
    changes: broadcast::Sender<CaseChange>,
    /// On a database shared by several processes: the thread that tells this process's
    /// listeners every change, made here or elsewhere, in the order they committed.
    follower: Option<Follower>,
    stats: CaseStats,
    box_areas: Option<BoxAreas>,
}

impl std::fmt::Debug for CaseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaseService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CaseService {
    /// A service over an opened database. `change_capacity` bounds the live-update channel
    /// (a listener that falls further behind misses changes and is told so).
    pub fn new(
        db: Db,
        grid: Arc<Grid>,
        duties: DutyList,
        calendar: WorkCalendar,
        departments: std::collections::HashSet<DepartmentId>,
        settings: CaseSettings,
        change_capacity: usize,
    ) -> CaseService {
        let changes = broadcast::channel(change_capacity.max(1)).0;
        let follower = db
            .shared()
            .map(|shared| Follower::start(shared, changes.clone()));
        CaseService {
            leadership: std::sync::Mutex::new(db.leadership("timers")),
            follower,
            db,
            grid,
            duties,
            calendar,
            departments,
            settings,
            changes,
            stats: CaseStats::default(),
            box_areas: None,
        }
    }

    /// Looks up where each box was registered (the registry's grid code), so that an event far
    /// outside that area flags its case.
    #[must_use]
    pub fn with_box_areas(mut self, areas: BoxAreas) -> CaseService {
        self.box_areas = Some(areas);
        self
    }

    /// The case database under the service.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether this process leads the timers that must run once across every hub process on
    /// the database (deadline checks, webhook delivery), taking the lead when nobody holds it.
    /// Always true on SQLite. Blocking (a database round trip on PostgreSQL).
    pub fn leads(&self) -> bool {
        let mut leadership = self
            .leadership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let leads = leadership.check();
        self.stats
            .leading
            .store(u64::from(leads), Ordering::Relaxed);
        leads
    }

    /// Tells this process's listeners about a committed change — unless a follower does (a
    /// shared database), which tells them every change of every process in commit order.
    fn announce(&self, change: CaseChange) {
        if self.follower.is_none() {
            let _ = self.changes.send(change);
        }
    }

    /// Subscribes to case changes.
    pub fn subscribe(&self) -> broadcast::Receiver<CaseChange> {
        self.changes.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> &CaseStats {
        &self.stats
    }

    /// The grid in use.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Takes one event from a box: matched to a cell, routed by the duty list, merged into an
    /// open case nearby or opened as a new case, all in one commit. Idempotent on `(box, seq)`
    /// and on the event id, so the QUIC ingest can acknowledge after this returns.
    ///
    /// # Errors
    /// [`CaseError::Db`] (retry), [`CaseError::BadLocation`] (skip).
    pub fn ingest(
        &self,
        box_id: &BoxId,
        event: &Event,
        now: Timestamp,
    ) -> Result<IngestOutcome, CaseError> {
        self.ingest_with(box_id, event, now, Intake::default())
    }

    fn ingest_with(
        &self,
        box_id: &BoxId,
        event: &Event,
        now: Timestamp,
        intake: Intake,
    ) -> Result<IngestOutcome, CaseError> {
        if let Err(e) = check_values(event) {
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device_id = %box_id, event_id = %event.id, error = %e, "event refused");
            return Err(e);
        }
        let event = self.in_window(box_id, event, now);
        let db = &self.db;
        let taken = db.atomically(|tx| self.take_event(tx, box_id, &event, now, intake))?;
        Ok(self.after_commit(taken))
    }

    /// Takes events in one transaction — one commit for all, in order — and returns the outcome
    /// of each. Used by the ingest's hand-off, where a burst of events (a box catching up after
    /// an outage) would otherwise cost one disk sync each.
    ///
    /// # Errors
    /// Any error of [`CaseService::ingest`]; then nothing was committed, and the caller takes
    /// the events one at a time to find the one at fault.
    pub fn ingest_many(
        &self,
        events: &[(BoxId, Event)],
        now: Timestamp,
    ) -> Result<Vec<IngestOutcome>, CaseError> {
        // One at a time (the caller's fallback) refuses and counts the one at fault.
        if let Some(e) = events.iter().find_map(|(_, e)| check_values(e).err()) {
            return Err(e);
        }
        let events: Vec<(&BoxId, std::borrow::Cow<'_, Event>)> = events
            .iter()
            .map(|(box_id, event)| (box_id, self.in_window(box_id, event, now)))
            .collect();
        let db = &self.db;
        let taken = db.atomically(|tx| {
            // every neighbourhood the batch may open a case in, locked at once in one order
            // (one at a time, two batches could each hold one and wait for the other's)
            let spans: Vec<_> = events
                .iter()
                .map(|(_, event)| {
                    let (lat, lon) =
                        crs::to_wgs84(event.location.lat, event.location.lon, event.location.crs);
                    let (lat_span, lon_span) = self.merge_span(lat, lon);
                    (&event.category, lat_span, lon_span)
                })
                .collect();
            tx.lock_neighbourhoods(&spans)?;
            // the batch's event rows in one statement (one round trip instead of one each);
            // an event stored before, or twice in the batch, is a duplicate
            let mut new = tx.insert_events(
                &events
                    .iter()
                    .map(|(box_id, event)| (*box_id, event.as_ref()))
                    .collect::<Vec<_>>(),
                now,
            )?;
            events
                .iter()
                .map(|(box_id, event)| {
                    if !new.remove(&event.id.to_string()) {
                        return Ok((IngestOutcome::Duplicate, None));
                    }
                    let intake = Intake {
                        stored: true,
                        ..Intake::default()
                    };
                    self.take_event(tx, box_id, event, now, intake)
                })
                .collect::<Result<Vec<_>, CaseError>>()
        })?;
        Ok(taken.into_iter().map(|t| self.after_commit(t)).collect())
    }

    /// The box around the merge radius of a position (with a margin; haversine decides inside
    /// it): latitude and longitude spans in degrees.
    fn merge_span(&self, lat: f64, lon: f64) -> ((f64, f64), (f64, f64)) {
        let r = self.settings.merge_radius_m.max(0.0) * 1.01 + 1.0;
        let dlat = r / METRES_PER_DEGREE;
        let dlon = r / (METRES_PER_DEGREE * lat.to_radians().cos().max(0.01));
        ((lat - dlat, lat + dlat), (lon - dlon, lon + dlon))
    }

    /// One event inside a transaction: recorded (or known already), then attached to the case
    /// it re-checks, merged into an open case nearby, or a new case.
    fn take_event(
        &self,
        tx: &crate::cases::db::Tx<'_, '_>,
        box_id: &BoxId,
        event: &Event,
        now: Timestamp,
        intake: Intake,
    ) -> Result<(IngestOutcome, Option<CaseChange>), CaseError> {
        let (outcome, mut change) = self.place_event(tx, box_id, event, now, intake)?;
        if let Some(change) = &mut change {
            tx.record_change(change, now)?;
        }
        Ok((outcome, change))
    }

    /// [`CaseService::take_event`] before its change is recorded.
    fn place_event(
        &self,
        tx: &crate::cases::db::Tx<'_, '_>,
        box_id: &BoxId,
        event: &Event,
        now: Timestamp,
        intake: Intake,
    ) -> Result<(IngestOutcome, Option<CaseChange>), CaseError> {
        let (lat, lon) = crs::to_wgs84(event.location.lat, event.location.lon, event.location.crs);
        if !intake.stored && !tx.insert_event(box_id, event, now)? {
            return Ok((IngestOutcome::Duplicate, None));
        }
        if let Some(reference) = recheck_of(event) {
            let request = self.answered_request(tx, box_id, reference)?;
            let case = tx
                .case_to_change(request.case)?
                .ok_or(CaseError::NotFound(request.case))?;
            tx.answer_recheck(reference, now)?;
            tx.link_event(&event.id, case.id)?;
            let (case, action) =
                self.take_recheck(tx, case, box_id, event, Some(request.asked_at), now)?;
            return Ok((
                IngestOutcome::Attached(request.case),
                Some(CaseChange {
                    id: 0,
                    action,
                    case,
                }),
            ));
        }
        let since = Timestamp::from_unix_millis(
            event
                .observed_at
                .as_unix_millis()
                .saturating_sub(self.settings.merge_window_ms),
        );
        let (lat_span, lon_span) = self.merge_span(lat, lon);
        // no other hub process may open a case here between the look and the insert
        tx.lock_neighbourhoods(&[(&event.category, lat_span, lon_span)])?;
        let near = tx
            .open_cases_near(&event.category, since, lat_span, lon_span)?
            .into_iter()
            .filter(|c| {
                c.last_observed_at
                    .millis_since(event.observed_at)
                    .saturating_abs()
                    <= self.settings.merge_window_ms
            })
            .map(|c| (haversine_m(lat, lon, c.lat, c.lon), c))
            .filter(|(d, _)| *d <= self.settings.merge_radius_m)
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, mut case)) = near {
            if event.attributes.contains_key(OUTSIDE_AREA_ATTRIBUTE)
                && !case.flags.iter().any(|f| f == OUTSIDE_AREA_FLAG)
            {
                case.flags.push(OUTSIDE_AREA_FLAG.to_owned());
            }
            case.event_count += 1;
            case.last_observed_at = case.last_observed_at.max(event.observed_at);
            case.updated_at = now;
            tx.update_case(&case)?;
            tx.link_event(&event.id, case.id)?;
            return Ok((
                IngestOutcome::Merged(case.id),
                Some(CaseChange {
                    id: 0,
                    action: "merged".into(),
                    case,
                }),
            ));
        }
        let (mut case, auto) = self.new_case(box_id, event, lat, lon, now, intake.description);
        let auto = auto && !intake.moderated;
        let mut transitions = vec![Transition {
            case_id: case.id,
            at: now,
            actor: Actor::system(),
            action: "report".into(),
            from: CaseState::Reported,
            to: CaseState::Reported,
            note: format!("event {} from {}", event.id, box_id),
            evidence: event.evidence.iter().map(|e| e.sha256.to_hex()).collect(),
        }];
        if auto {
            // registered and dispatched before it is stored: one write of the case
            for action in [Action::Register, Action::Dispatch { department: None }] {
                let (next, t) =
                    workflow::apply(&case, &action, &Actor::system(), "automatic", &[], now)?;
                transitions.push(t);
                case = next;
            }
        }
        let id = tx.insert_case_for(&case, &event.id)?;
        case.id = id;
        for t in &mut transitions {
            t.case_id = id;
        }
        tx.add_transitions(&transitions)?;
        Ok((
            IngestOutcome::Created(id),
            Some(CaseChange {
                id: 0,
                action: "created".into(),
                case,
            }),
        ))
    }

    /// `event` as the cases take it: a time outside the window around its arrival `now` is
    /// replaced by `now`, and the box's own time kept in [`BOX_TIME_ATTRIBUTE`] (deadlines,
    /// merge windows and escalations never see a time a box clock made up).
    fn in_window<'e>(
        &self,
        box_id: &BoxId,
        event: &'e Event,
        now: Timestamp,
    ) -> std::borrow::Cow<'e, Event> {
        let mut event = std::borrow::Cow::Borrowed(event);
        if let Some(outside) = self.outside_box_area(box_id, &event) {
            event.to_mut().attributes.insert(
                OUTSIDE_AREA_ATTRIBUTE.to_owned(),
                AttrValue::Int(outside.round() as i64),
            );
        }
        let ahead = event.observed_at.millis_since(now);
        let behind = now.millis_since(event.observed_at);
        if ahead <= self.settings.max_future_ms && behind <= self.settings.max_past_ms {
            return event;
        }
        self.stats
            .clamped_times_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            device_id = %box_id,
            event_id = %event.id,
            observed_at_ms = event.observed_at.as_unix_millis(),
            "event time outside the window; the arrival time is used"
        );
        let owned = event.to_mut();
        owned.attributes.insert(
            BOX_TIME_ATTRIBUTE.to_owned(),
            AttrValue::Int(owned.observed_at.as_unix_millis()),
        );
        owned.observed_at = now;
        event
    }

    /// How far (m) `event` lies outside the area its box was registered in, when further than
    /// the margin; `None` for a box with no registered area or an event inside or near it.
    fn outside_box_area(&self, box_id: &BoxId, event: &Event) -> Option<f64> {
        let margin = self.settings.box_area_margin_m;
        if margin <= 0.0 {
            return None;
        }
        let code = (self.box_areas.as_ref()?)(box_id)?;
        let shape = match self.grid.cell(&code) {
            Some(cell) => &cell.shape,
            None => &self.grid.area(code.as_str())?.shape,
        };
        let (lat, lon) = crs::to_wgs84(event.location.lat, event.location.lon, event.location.crs);
        let p: crate::grid::geometry::Position = [lon, lat];
        if shape.contains(p) {
            return None;
        }
        let distance = shape.boundary_distance_m(p);
        (distance > margin).then_some(distance)
    }

    /// Counts a committed event and tells listeners about the case it changed.
    fn after_commit(
        &self,
        (outcome, change): (IngestOutcome, Option<CaseChange>),
    ) -> IngestOutcome {
        self.stats.events_total.fetch_add(1, Ordering::Relaxed);
        match outcome {
            IngestOutcome::Duplicate => self.stats.duplicates_total.fetch_add(1, Ordering::Relaxed),
            IngestOutcome::Merged(_) => self.stats.merged_total.fetch_add(1, Ordering::Relaxed),
            IngestOutcome::Created(_) => self
                .stats
                .cases_created_total
                .fetch_add(1, Ordering::Relaxed),
            IngestOutcome::Attached(_) => self.stats.rechecks_total.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(change) = change {
            if matches!(outcome, IngestOutcome::Attached(_)) && change.action != "recheck_evidence"
            {
                // a re-check's answer that verified the case or failed it (counted here, once
                // committed: a batch rolled back and taken again one by one counts it once)
                self.stats
                    .recheck_verdicts_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            // no listener is fine: changes are also in the database
            self.announce(change);
        }
        outcome
    }

    /// A citizen report (Open311): becomes an event of the `open311` source, numbered in the
    /// transaction that stores it (so reports filed at once, by one hub process or several,
    /// each get their own number), then a case or a part of the open case it reports again.
    /// Its words and contact stay in the event's attributes (`description`, `contact_*`), so
    /// a report merged into a case keeps them; the number answers Open311 GET.
    ///
    /// # Errors
    /// [`CaseError::UnknownCategory`], [`CaseError::BadLocation`], [`CaseError::Db`].
    pub fn report(
        &self,
        report: CitizenReport,
        now: Timestamp,
    ) -> Result<ReportReceipt, CaseError> {
        let category = protocol::Catalog::embedded()
            .resolve(&report.category)
            .ok_or_else(|| CaseError::UnknownCategory(report.category.clone()))?;
        // invariant: the constant is a valid box id.
        let box_id = BoxId::parse(OPEN311_BOX).map_err(|_| CaseError::BadLocation)?;
        let mut attributes = std::collections::BTreeMap::new();
        if !report.description.is_empty() {
            attributes.insert(
                "description".to_owned(),
                AttrValue::Text(report.description.clone()),
            );
        }
        for (key, value) in report.contact.fields() {
            attributes.insert(format!("contact_{key}"), AttrValue::Text(value.to_owned()));
        }
        let mut event = Event {
            id: EventId::v7(
                now.as_unix_millis().max(0) as u64,
                std::array::from_fn(|_| fastrand::u8(..)),
            ),
            seq: Seq(0),
            source: Source {
                kind: SourceKind::Unknown,
                id: SourceId::parse("citizen").map_err(|_| CaseError::BadLocation)?,
            },
            category: category.code.clone(),
            severity: Severity::Medium,
            observed_at: now,
            location: Location {
                lat: report.lat,
                lon: report.lon,
                crs: Crs::Wgs84,
            },
            grid: None,
            attributes,
            evidence: vec![],
        };
        check_values(&event)?;
        let db = &self.db;
        let (number, taken) = db.atomically(|tx| {
            // numbers are read and then used: one report at a time, across hub processes
            tx.lock_name(CITIZEN_REPORTS_LOCK)?;
            event.seq = tx.last_seq(&box_id)?.map_or(Seq(1), Seq::next);
            let intake = Intake {
                description: report.description,
                moderated: report.moderated,
                stored: false,
            };
            let taken = self.take_event(tx, &box_id, &event, now, intake)?;
            Ok::<_, CaseError>((event.seq.0, taken))
        })?;
        Ok(ReportReceipt {
            number,
            outcome: self.after_commit(taken),
        })
    }

    /// One citizen report by its number, with the case it opened or joined (none when it was
    /// refused at hand-off).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn citizen_report(&self, number: u64) -> Result<Option<(Event, Option<Case>)>, CaseError> {
        Ok(self.db.atomically(|tx| -> Result<_, DbError> {
            let Some((event, case)) = tx.box_event(OPEN311_BOX, Seq(number))? else {
                return Ok(None);
            };
            let case = match case {
                Some(id) => tx.case(id)?,
                None => None,
            };
            Ok(Some((event, case)))
        })?)
    }

    /// Every citizen report in number order, with its case.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn citizen_reports(&self) -> Result<Vec<(Event, Option<Case>)>, CaseError> {
        Ok(self.db.atomically(|tx| -> Result<_, DbError> {
            let mut out = Vec::new();
            for (event, case) in tx.box_events(OPEN311_BOX)? {
                let case = match case {
                    Some(id) => tx.case(id)?,
                    None => None,
                };
                out.push((event, case));
            }
            Ok(out)
        })?)
    }

    /// Issues a camera re-check of `case` to `box_id`: a random request id (from the OS random
    /// source) that the box echoes in its answer, stored with the case, the box and the time of
    /// asking. Only an answer naming it, from that box, once, is taken.
    ///
    /// # Errors
    /// [`CaseError::Db`]; [`CaseError::RecheckRefused`] when the OS gives no randomness.
    pub fn ask_recheck(
        &self,
        case: CaseId,
        box_id: &BoxId,
        now: Timestamp,
    ) -> Result<String, CaseError> {
        let random = crate::random::bytes::<16>().map_err(|e| CaseError::RecheckRefused {
            reason: format!("no randomness for a request id: {e}"),
        })?;
        let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let request = format!("rc-{id}");
        self.db
            .atomically(|tx| tx.insert_recheck(&request, case, box_id, now))?;
        Ok(request)
    }

    /// The issued, unanswered request `reference` of `box_id`; any other answer is refused
    /// (and counted).
    fn answered_request(
        &self,
        tx: &crate::cases::db::Tx<'_, '_>,
        box_id: &BoxId,
        reference: &str,
    ) -> Result<crate::cases::db::RecheckRequest, CaseError> {
        let refuse = |reason: String| {
            self.stats
                .recheck_refused_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device_id = %box_id, %reason, "re-check answer refused");
            CaseError::RecheckRefused { reason }
        };
        match tx.recheck(reference)? {
            None => Err(refuse(format!("no re-check `{reference}` was asked"))),
            Some(r) if r.box_id != box_id.as_str() => Err(refuse(format!(
                "re-check `{reference}` was asked of {}, not {box_id}",
                r.box_id
            ))),
            Some(r) if r.answered => Err(refuse(format!(
                "re-check `{reference}` was answered already"
            ))),
            Some(r) => Ok(r),
        }
    }

    /// Records a camera re-check's answer on its case: the "after" picture and the matching
    /// count as a `recheck_evidence` transition and, when the case waits for verification after
    /// the department's feedback and the re-check was asked since that feedback, the
    /// verification itself — passed when the camera sees no matching object any more, failed
    /// (back to the department for rework) when it still does. An answer without a count, to a
    /// re-check asked before the feedback (its picture may show the place before the work) or
    /// not saying when it was asked, or for a case in another state, only adds the evidence.
    fn take_recheck(
        &self,
        tx: &crate::cases::db::Tx<'_, '_>,
        mut case: Case,
        box_id: &BoxId,
        event: &Event,
        asked_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(Case, String), CaseError> {
        let matching = match event.attributes.get("matching") {
            Some(AttrValue::Int(n)) => Some(*n),
            _ => None,
        };
        let seen = matching.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let mut note = format!(
            "camera {} of {box_id} re-checked: {seen} matching object(s)",
            event.source.id
        );
        let mut verdict = self.settings.verify_by_recheck && case.state == CaseState::Handled;
        if verdict {
            // since the latest feedback: the latest move into `handled` from another state
            let handled_since = tx
                .transitions(case.id)?
                .iter()
                .rev()
                .find(|t| t.to == CaseState::Handled && t.from != CaseState::Handled)
                .map(|t| t.at);
            // (The time is the hub's own, echoed by an enrolled box, which could as well
            // misreport its count: a box is trusted with its answers either way.)
            let asked_since_feedback =
                matches!((asked_at, handled_since), (Some(a), Some(h)) if a >= h);
            if !asked_since_feedback {
                verdict = false;
                note.push_str(
                    " (asked before the department's feedback or not said when: not a verification)",
                );
            }
        }
        let evidence: Vec<String> = event.evidence.iter().map(|e| e.sha256.to_hex()).collect();
        case.updated_at = now;
        tx.add_transition(&Transition {
            case_id: case.id,
            at: now,
            actor: Actor::system(),
            action: "recheck_evidence".into(),
            from: case.state,
            to: case.state,
            note: note.clone(),
            evidence: evidence.clone(),
        })?;
        let mut action = "recheck_evidence".to_owned();
        if verdict && let Some(n) = matching {
            let verify = Action::Verify { passed: n == 0 };
            let (next, t) =
                workflow::apply(&case, &verify, &Actor::system(), &note, &evidence, now)?;
            tx.add_transition(&t)?;
            action = verify.name().to_owned();
            case = next;
        }
        tx.update_case(&case)?;
        Ok((case, action))
    }

    /// The settings the service runs with.
    pub fn settings(&self) -> &CaseSettings {
        &self.settings
    }

    /// Applies an action by `actor` to a case.
    ///
    /// # Errors
    /// [`CaseError::NotFound`], [`CaseError::Workflow`], [`CaseError::UnknownDepartment`],
    /// [`CaseError::Db`].
    pub fn act(
        &self,
        id: CaseId,
        action: &Action,
        actor: &Actor,
        note: &str,
        evidence: &[String],
        now: Timestamp,
    ) -> Result<Case, CaseError> {
        if let Action::Dispatch {
            department: Some(d),
        } = action
            && !self.departments.contains(d)
        {
            return Err(CaseError::UnknownDepartment(d.to_string()));
        }
        let change = self.db.atomically(|tx| -> Result<CaseChange, CaseError> {
            // a case the actor may not see does not exist for them
            let case = tx
                .case_to_change(id)?
                .filter(|c| c.visible_to(actor))
                .ok_or(CaseError::NotFound(id))?;
            let (next, t) = workflow::apply(&case, action, actor, note, evidence, now)?;
            tx.update_case(&next)?;
            tx.add_transition(&t)?;
            let mut change = CaseChange {
                id: 0,
                action: action.name().into(),
                case: next,
            };
            tx.record_change(&mut change, now)?;
            Ok(change)
        })?;
        self.stats.actions_total.fetch_add(1, Ordering::Relaxed);
        let case = change.case.clone();
        self.announce(change);
        Ok(case)
    }

    /// Records something learnt about a case without moving it (a camera re-check and its
    /// evidence): a transition named `what` from its state to the same state.
    ///
    /// # Errors
    /// [`CaseError::NotFound`], [`CaseError::Db`].
    pub fn annotate(
        &self,
        id: CaseId,
        what: &str,
        actor: &Actor,
        note: &str,
        evidence: &[String],
        now: Timestamp,
    ) -> Result<Case, CaseError> {
        let change = self.db.atomically(|tx| -> Result<CaseChange, CaseError> {
            let mut case = tx.case_to_change(id)?.ok_or(CaseError::NotFound(id))?;
            case.updated_at = now;
            tx.update_case(&case)?;
            tx.add_transition(&Transition {
                case_id: id,
                at: now,
                actor: actor.clone(),
                action: what.to_owned(),
                from: case.state,
                to: case.state,
                note: note.to_owned(),
                evidence: evidence.to_vec(),
            })?;
            let mut change = CaseChange {
                id: 0,
                action: what.to_owned(),
                case,
            };
            tx.record_change(&mut change, now)?;
            Ok(change)
        })?;
        let case = change.case.clone();
        self.announce(change);
        Ok(case)
    }

    /// Warns about cases whose escalation time is near and escalates those past it (to the
    /// next level's department from the duty list). Returns the escalated cases.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn check_deadlines(&self, now: Timestamp) -> Result<Vec<CaseId>, CaseError> {
        let horizon =
            Timestamp::from_unix_millis(now.as_unix_millis() + self.settings.warn_before_ms);
        let mut changes = Vec::new();
        let mut escalated = Vec::new();
        self.db.atomically(|tx| -> Result<(), CaseError> {
            for case in tx.cases_to_escalate(horizon)? {
                let Some(at) = case.escalate_at else { continue };
                let action = if at <= now {
                    let Some(duty) = self.duties.for_category(&case.category) else {
                        continue;
                    };
                    let level = usize::from((case.level + 1).min(2));
                    let limit = duty.time_limit.working_ms(self.calendar.working_day_ms());
                    Action::Escalate {
                        department: duty.departments[level].clone(),
                        next_escalation_at: if case.level >= 1 {
                            None
                        } else {
                            self.calendar.add_working_time(now, limit)
                        },
                    }
                } else if !case.warned {
                    Action::Warn
                } else {
                    continue;
                };
                let (next, t) =
                    workflow::apply(&case, &action, &Actor::system(), "deadline", &[], now)?;
                tx.update_case(&next)?;
                tx.add_transition(&t)?;
                if matches!(action, Action::Escalate { .. }) {
                    escalated.push(next.id);
                    self.stats.escalations_total.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.warnings_total.fetch_add(1, Ordering::Relaxed);
                }
                let mut change = CaseChange {
                    id: 0,
                    action: action.name().into(),
                    case: next,
                };
                tx.record_change(&mut change, now)?;
                changes.push(change);
            }
            Ok(())
        })?;
        self.stats
            .deadline_checks_total
            .fetch_add(1, Ordering::Relaxed);
        for c in changes {
            self.announce(c);
        }
        Ok(escalated)
    }

    /// Where the webhook of `department` stands in the change outbox: the id of the last
    /// change done. A department seen for the first time starts at the newest change (a new
    /// webhook is not sent the history).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn webhook_cursor(&self, department: &DepartmentId) -> Result<i64, CaseError> {
        Ok(self.db.atomically(|tx| -> Result<i64, DbError> {
            if let Some(done) = tx.webhook_cursor(department.as_str())? {
                return Ok(done);
            }
            let newest = tx.last_change_id()?;
            tx.set_webhook_cursor(department.as_str(), newest)?;
            Ok(newest)
        })?)
    }

    /// Up to `limit` recorded changes of `department`'s cases after change `after`, oldest
    /// first, as `(id, JSON body)`.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn changes_after(
        &self,
        department: &DepartmentId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, CaseError> {
        Ok(self
            .db
            .atomically(|tx| tx.changes_after(department.as_str(), after, limit))?)
    }

    /// Records that `department`'s webhook is done with change `id`: delivered, or given up on
    /// after `failure = Some((attempts, last error))` (kept for operators).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn webhook_done(
        &self,
        department: &DepartmentId,
        id: i64,
        failure: Option<(u32, &str)>,
        now: Timestamp,
    ) -> Result<(), CaseError> {
        Ok(self.db.atomically(|tx| -> Result<(), DbError> {
            if let Some((attempts, error)) = failure {
                tx.record_webhook_failure(department.as_str(), id, now, attempts, error)?;
            }
            tx.set_webhook_cursor(department.as_str(), id)
        })?)
    }

    /// Deletes recorded changes older than `before` that every webhook is done with.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn prune_changes(&self, before: Timestamp) -> Result<u64, CaseError> {
        Ok(self.db.atomically(|tx| {
            // relayed commands are wanted for seconds: gone with the outbox's old changes
            tx.prune_relayed(before)?;
            tx.prune_changes(before)
        })?)
    }

    /// Whether other hub processes may share this database (PostgreSQL): then a command for a
    /// box connected elsewhere is relayed through it ([`CaseService::relay_command`]).
    pub fn shared_database(&self) -> bool {
        self.db.engine() == crate::storage::EngineKind::Postgres
    }

    /// Leaves a command for `box_id` in the database, for whichever hub process holds its
    /// connection, valid until `expires_at`; returns its id.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn relay_command(
        &self,
        box_id: &BoxId,
        action: &protocol::CommandAction,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<String, CaseError> {
        let id = uuid::Uuid::now_v7().to_string();
        let action = serde_json::to_string(action).map_err(DbError::from)?;
        self.db
            .atomically(|tx| tx.relay_command(&id, box_id, &action, now, expires_at))?;
        Ok(id)
    }

    /// Where the relayed command `id` stands; an answer comes decoded.
    ///
    /// # Errors
    /// [`CaseError::Db`] (a stored result that does not decode too).
    pub fn relayed_state(
        &self,
        id: &str,
    ) -> Result<Option<Relayed<protocol::CommandResult>>, CaseError> {
        let state = self.db.atomically(|tx| tx.relayed_state(id))?;
        Ok(match state {
            None => None,
            Some(RelayedState::Waiting) => Some(Relayed::Waiting),
            Some(RelayedState::Taken) => Some(Relayed::Taken),
            Some(RelayedState::Answered(Ok(json))) => Some(Relayed::Answered(Ok(
                serde_json::from_str(&json).map_err(DbError::from)?,
            ))),
            Some(RelayedState::Answered(Err(why))) => Some(Relayed::Answered(Err(why))),
        })
    }

    /// Takes the commands relayed for any of `boxes` (connected to this process) that nobody
    /// took yet: `(id, box, action, until when it is wanted)`. One that does not decode is
    /// answered as failed here.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn take_relayed(
        &self,
        boxes: &[BoxId],
        now: Timestamp,
    ) -> Result<Vec<(String, BoxId, protocol::CommandAction)>, CaseError> {
        let taken = self.db.atomically(|tx| tx.take_relayed(boxes, now))?;
        let mut out = Vec::new();
        for (id, box_id, action) in taken {
            match (BoxId::parse(box_id), serde_json::from_str(&action)) {
                (Ok(box_id), Ok(action)) => out.push((id, box_id, action)),
                _ => self.answer_relayed(&id, Err("the relayed command does not decode"), now)?,
            }
        }
        Ok(out)
    }

    /// Records what came of a relayed command this process sent.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn answer_relayed(
        &self,
        id: &str,
        outcome: Result<&protocol::CommandResult, &str>,
        now: Timestamp,
    ) -> Result<(), CaseError> {
        let json;
        let outcome = match outcome {
            Ok(result) => {
                json = serde_json::to_string(result).map_err(DbError::from)?;
                Ok(json.as_str())
            }
            Err(why) => Err(why),
        };
        Ok(self
            .db
            .atomically(|tx| tx.answer_relayed(id, outcome, now))?)
    }

    /// A case and its transitions.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn case(&self, id: CaseId) -> Result<Option<(Case, Vec<Transition>)>, CaseError> {
        Ok(self.db.atomically(|tx| -> Result<_, DbError> {
            Ok(match tx.case(id)? {
                Some(c) => Some((c, tx.transitions(id)?)),
                None => None,
            })
        })?)
    }

    /// The events merged into a case (box id as stored, event), oldest first.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn case_events(&self, id: CaseId) -> Result<Vec<(String, Event)>, CaseError> {
        Ok(self.db.atomically(|tx| tx.case_events(id))?)
    }

    /// The actions `actor` may take on `case` now, by name (`register`, `dispatch`, `verify`,
    /// `verify_failed`, ...), decided by the workflow itself so that the console never offers
    /// what the API would refuse.
    pub fn allowed_actions(&self, case: &Case, actor: &Actor, now: Timestamp) -> Vec<&'static str> {
        let department = case
            .department
            .clone()
            .or_else(|| self.departments.iter().next().cloned());
        [
            Action::Register,
            Action::Reject,
            Action::Dispatch { department },
            Action::Accept,
            Action::Feedback,
            Action::Verify { passed: true },
            Action::Verify { passed: false },
            Action::Close,
            Action::Return,
        ]
        .into_iter()
        .filter(|a| workflow::apply(case, a, actor, "", &[], now).is_ok())
        .map(|a| a.name())
        .collect()
    }

    /// Every case.
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn cases(&self) -> Result<Vec<Case>, CaseError> {
        Ok(self.db.atomically(|tx| tx.cases())?)
    }

    /// One page of cases in id order and whether more follow (see [`CasePageQuery`]).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn cases_page(&self, query: &CasePageQuery) -> Result<(Vec<Case>, bool), CaseError> {
        Ok(self.db.atomically(|tx| tx.cases_page(query))?)
    }

    /// Cases per state and open cases past their deadline at `now` (metrics).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn case_counts(&self, now: Timestamp) -> Result<(Vec<(String, u64)>, u64), CaseError> {
        Ok(self.db.atomically(|tx| tx.case_counts(now))?)
    }

    /// Up to `limit` cases closed or rejected before `before` whose evidence was not deleted
    /// yet, each with the files it names that the hub serves: its events' and its camera
    /// re-checks' (a file belongs to one event, so to one case).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn evidence_past_retention(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(CaseId, Vec<protocol::Digest>)>, CaseError> {
        Ok(self.db.atomically(|tx| -> Result<_, DbError> {
            let mut out = Vec::new();
            for id in tx.finished_unexpired(before, limit)? {
                let mut files: Vec<protocol::Digest> = tx
                    .case_events(id)?
                    .iter()
                    .flat_map(|(_, e)| e.evidence.iter().map(|r| r.sha256))
                    .collect();
                for t in tx.transitions(id)? {
                    if t.evidence_from_hub() {
                        files.extend(
                            t.evidence
                                .iter()
                                .filter_map(|hex| protocol::Digest::from_hex(hex).ok()),
                        );
                    }
                }
                files.sort_unstable_by_key(|d| d.0);
                files.dedup();
                out.push((id, files));
            }
            Ok(out)
        })?)
    }

    /// Records that the evidence of case `id` was deleted (`files` files, `bytes` bytes).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn evidence_expired(
        &self,
        id: CaseId,
        files: u64,
        bytes: u64,
        now: Timestamp,
    ) -> Result<(), CaseError> {
        Ok(self
            .db
            .atomically(|tx| tx.evidence_expired(id, now, files, bytes))?)
    }

    /// Whether the database takes a write transaction (the service watchdog's probe).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn ping(&self) -> Result<(), CaseError> {
        Ok(self.db.atomically(|tx| tx.ping())?)
    }

    /// Every case with its transitions (assessment).
    ///
    /// # Errors
    /// [`CaseError::Db`].
    pub fn history(&self) -> Result<(Vec<Case>, Vec<Transition>), CaseError> {
        Ok(self
            .db
            .atomically(|tx| -> Result<_, DbError> { Ok((tx.cases()?, tx.all_transitions()?)) })?)
    }

    /// True when the hub knows this department.
    pub fn has_department(&self, d: &DepartmentId) -> bool {
        self.departments.contains(d)
    }

    fn new_case(
        &self,
        box_id: &BoxId,
        event: &Event,
        lat: f64,
        lon: f64,
        now: Timestamp,
        description: String,
    ) -> (Case, bool) {
        let located = self.grid.locate(lat, lon);
        let duty = self.duties.for_category(&event.category);
        let deadline = duty.and_then(|d| {
            self.calendar.add_working_time(
                event.observed_at,
                d.time_limit.working_ms(self.calendar.working_day_ms()),
            )
        });
        let case = Case {
            id: CaseId(0),
            category: event.category.clone(),
            state: CaseState::Reported,
            lat,
            lon,
            cell: located.as_ref().map(|l| l.cell.code.clone()),
            candidate_cells: located
                .as_ref()
                .map(|l| l.candidates.iter().map(|c| c.code.clone()).collect())
                .unwrap_or_default(),
            worker: located.as_ref().map(|l| l.cell.worker.clone()),
            department: duty.map(|d| d.departments[0].clone()),
            level: 0,
            observed_at: event.observed_at,
            last_observed_at: event.observed_at,
            event_count: 1,
            deadline,
            escalate_at: deadline,
            warned: false,
            escalations: 0,
            reworks: 0,
            returns: 0,
            source: if box_id.as_str() == OPEN311_BOX {
                OPEN311_BOX.into()
            } else {
                format!("box:{box_id}")
            },
            description,
            flags: if event.attributes.contains_key(OUTSIDE_AREA_ATTRIBUTE) {
                vec![OUTSIDE_AREA_FLAG.to_owned()]
            } else {
                Vec::new()
            },
            dispatched_to: Vec::new(),
            feedback_by: None,
            created_at: now,
            updated_at: now,
        };
        (
            case,
            duty.is_some_and(|d| d.registration == Registration::Auto),
        )
    }
}

/// The thread following the change outbox of a shared database: woken by the notification
/// every hub process sends as it commits a change, and every [`FOLLOW_EVERY`] regardless, it
/// reads the changes after the last one it told and tells them to this process's listeners
/// (SSE, webhook workers). Stopped when the service is dropped.
struct Follower {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// How often the follower reads the outbox without a notification (one lost with a broken
/// connection, say).
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Changes read at a time.
const FOLLOW_BATCH: usize = 256;

impl Follower {
    /// Starts the thread, and returns once it knows where the outbox stands (a change
    /// committed after this returns is told).
    fn start(db: Db, changes: broadcast::Sender<CaseChange>) -> Follower {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopping = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("case-changes".into())
            .spawn(move || follow(&db, &changes, &stopping, &ready_tx));
        match spawned {
            Ok(_) => {
                let _ = ready_rx.recv();
            }
            Err(e) => {
                tracing::error!(error = %e, "live case changes from other hub processes are not followed")
            }
        }
        Follower { stop }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn follow(
    db: &Db,
    changes: &broadcast::Sender<CaseChange>,
    stop: &std::sync::atomic::AtomicBool,
    ready: &std::sync::mpsc::Sender<()>,
) {
    let mut listener = db.listen_changes().ok().flatten();
    let mut after = db
        .atomically(|tx| tx.last_change_id())
        .unwrap_or_else(|e| {
            tracing::warn!(error = %crate::telemetry::chain(&e), "the change outbox could not be read; following from its start");
            0
        });
    let _ = ready.send(());
    let mut last_read = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // woken by a notification, or a broken connection (one may have been lost meanwhile)
        let woken = match listener.as_mut() {
            Some(l) => l.wait(FOLLOW_EVERY / 4).unwrap_or_else(|e| {
                tracing::warn!(error = %crate::telemetry::chain(&e), "listening for case changes failed; listening again");
                listener = None;
                true
            }),
            None => {
                std::thread::sleep(FOLLOW_EVERY / 4);
                listener = db.listen_changes().ok().flatten();
                true
            }
        };
        if woken || last_read.elapsed() >= FOLLOW_EVERY {
            tell_changes(db, changes, &mut after);
            last_read = std::time::Instant::now();
        }
    }
}

/// Tells `changes` every change recorded after `after`, in order, and moves `after` on.
fn tell_changes(db: &Db, changes: &broadcast::Sender<CaseChange>, after: &mut i64) {
    loop {
        match db.atomically(|tx| tx.changes_since(*after, FOLLOW_BATCH)) {
            Ok(batch) => {
                let full = batch.len() == FOLLOW_BATCH;
                for change in batch {
                    *after = change.id;
                    let _ = changes.send(change);
                }
                if !full {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "reading the change outbox failed");
                return;
            }
        }
    }
}

/// Great-circle distance in metres.
pub(crate) fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().asin()
}

/// Refuses values that cannot be stored faithfully: an invalid location, a NaN or infinite
/// attribute (JSON has no such numbers; stored as `null` it would no longer read back).
fn check_values(event: &Event) -> Result<(), CaseError> {
    if !event.location.is_valid() {
        return Err(CaseError::BadLocation);
    }
    match event
        .attributes
        .iter()
        .find(|(_, v)| matches!(v, AttrValue::Float(f) if !f.is_finite()))
    {
        Some((key, _)) => Err(CaseError::NonFinite { key: key.clone() }),
        None => Ok(()),
    }
}
