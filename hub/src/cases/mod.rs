//! Cases: events become cases (or merge into an open one nearby), and cases move around the
//! closed loop report → register → dispatch → handle → feedback → verify → close.
//!
//! - [`workflow`]: the pure state machine: which action is allowed in which state and for which
//!   role, and what it changes. No clock, no storage;
//! - [`CaseService`]: ingest (grid match, duty routing, deadline, merge), actions, escalation,
//!   all committed through [`crate::cases::db`] and announced as [`CaseChange`]s.
//!
//! This module must not know about HTTP or QUIC: the API and the ingest call into it.

use std::fmt;

use protocol::{CategoryCode, GridCode, Timestamp};
use serde::{Deserialize, Serialize};

use crate::duties::DepartmentId;
use crate::grid::WorkerId;

pub mod db;
mod service;
mod sink;
pub mod workflow;

/// The box id the hub files citizens' (Open311) reports under; the registry reserves it.
pub const OPEN311_BOX: &str = "open311";

pub use service::{
    BOX_TIME_ATTRIBUTE, BoxAreas, CaseChange, CaseError, CaseService, CaseSettings, CaseStats,
    CitizenReport, Contact, IngestOutcome, OUTSIDE_AREA_ATTRIBUTE, OUTSIDE_AREA_FLAG, Relayed,
    ReportReceipt,
};
pub use workflow::{Action, WorkflowError};

/// A case number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CaseId(pub i64);

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    /// Reported, waiting for a dispatcher to register or reject it.
    Reported,
    /// Registered (立案), waiting to be dispatched.
    Registered,
    /// Rejected as invalid. Final.
    Rejected,
    /// Dispatched to a department.
    Dispatched,
    /// The department is handling it.
    Handling,
    /// The department reported it handled (feedback), waiting for verification.
    Handled,
    /// Verified as handled, waiting to be closed.
    Verified,
    /// Closed. Final.
    Closed,
}

impl CaseState {
    /// Every state, in the order of the loop.
    pub const ALL: [CaseState; 8] = [
        CaseState::Reported,
        CaseState::Registered,
        CaseState::Rejected,
        CaseState::Dispatched,
        CaseState::Handling,
        CaseState::Handled,
        CaseState::Verified,
        CaseState::Closed,
    ];

    /// A state from its name as stored and shown.
    pub fn parse(name: &str) -> Option<CaseState> {
        CaseState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Reported => "reported",
            CaseState::Registered => "registered",
            CaseState::Rejected => "rejected",
            CaseState::Dispatched => "dispatched",
            CaseState::Handling => "handling",
            CaseState::Handled => "handled",
            CaseState::Verified => "verified",
            CaseState::Closed => "closed",
        }
    }

    /// True for closed and rejected cases.
    pub fn is_final(self) -> bool {
        matches!(self, CaseState::Closed | CaseState::Rejected)
    }
}

/// Who acts on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Registers, rejects, dispatches, verifies and closes.
    Dispatcher,
    /// A department: accepts, handles, returns its own cases.
    Department,
    /// A grid worker: handles and verifies cases of their cells.
    Worker,
    /// The hub itself (auto-registration, escalation, camera re-checks).
    System,
}

/// An acting party: a role and who within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The role.
    pub role: Role,
    /// The user, department or worker id (`system` for the hub).
    pub subject: String,
}

impl Actor {
    /// The hub itself.
    pub fn system() -> Actor {
        Actor {
            role: Role::System,
            subject: "system".into(),
        }
    }
}

/// A case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Its number (0 until stored).
    pub id: CaseId,
    /// The event category.
    pub category: CategoryCode,
    /// Where it stands.
    pub state: CaseState,
    /// Latitude (WGS84) of the first event.
    pub lat: f64,
    /// Longitude (WGS84) of the first event.
    pub lon: f64,
    /// The cell the first event fell in.
    pub cell: Option<GridCode>,
    /// Other cells within the edge distance of the point.
    pub candidate_cells: Vec<GridCode>,
    /// The cell's grid worker.
    pub worker: Option<WorkerId>,
    /// The responsible department now.
    pub department: Option<DepartmentId>,
    /// 0 = community, 1 = street, 2 = district: the responsibility level after escalations.
    pub level: u8,
    /// When the first event was observed.
    pub observed_at: Timestamp,
    /// When the latest merged event was observed.
    pub last_observed_at: Timestamp,
    /// Events merged into this case (1 for a new case).
    pub event_count: u32,
    /// When the case must be closed, from the first observation on the work calendar.
    pub deadline: Option<Timestamp>,
    /// The next escalation is due at this instant (the deadline, then one more time limit
    /// after each escalation).
    pub escalate_at: Option<Timestamp>,
    /// A deadline warning was given.
    pub warned: bool,
    /// Times escalated.
    pub escalations: u32,
    /// Times sent back for rework after a failed verification.
    pub reworks: u32,
    /// Times returned by a department as wrongly routed.
    pub returns: u32,
    /// Where it came from: `box:<id>` or `open311`.
    pub source: String,
    /// A description (citizen reports).
    pub description: String,
    /// What an operator should know before trusting the case: `outside_box_area` (an event
    /// far from where its box was registered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Every department the case has been dispatched or escalated to, in order: each keeps
    /// seeing it (and its outcome) afterwards.
    #[serde(default)]
    pub dispatched_to: Vec<DepartmentId>,
    /// Who handed in the latest feedback: they may not verify it themselves.
    #[serde(default)]
    pub feedback_by: Option<Actor>,
    /// When it was created on the hub.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl Case {
    /// Whether `actor` may see this case (and so act on it as their role allows): admins,
    /// dispatchers and the hub see every case; a department the cases dispatched or escalated
    /// to it, from then on; a grid worker the cases of their cells.
    pub fn visible_to(&self, actor: &Actor) -> bool {
        match actor.role {
            Role::Admin | Role::Dispatcher | Role::System => true,
            Role::Department => {
                self.dispatched_to.iter().any(|d| d.as_str() == actor.subject)
                    // a case stored before the history was kept: its current department,
                    // once dispatched
                    || (self.dispatched_to.is_empty()
                        && !matches!(
                            self.state,
                            CaseState::Reported | CaseState::Registered | CaseState::Rejected
                        )
                        && self
                            .department
                            .as_ref()
                            .is_some_and(|d| d.as_str() == actor.subject))
            }
            Role::Worker => self
                .worker
                .as_ref()
                .is_some_and(|w| w.as_str() == actor.subject),
        }
    }
}

impl Transition {
    /// Whether its evidence came from the hub itself (a camera re-check's picture), not named
    /// by a user in their action: only such files, and those of the case's events, are served
    /// as the case's evidence, so naming a digest cannot fetch another case's picture.
    pub fn evidence_from_hub(&self) -> bool {
        self.actor.role == Role::System || self.action == RECHECK_TRANSITION
    }
}

/// The name of the transition that records a camera re-check of a case.
pub const RECHECK_TRANSITION: &str = "recheck";

/// One recorded transition (or merge, warning, escalation) of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The case.
    pub case_id: CaseId,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: Actor,
    /// What (`register`, `dispatch`, `verify_failed`, `escalate`, ...).
    pub action: String,
    /// State before.
    pub from: CaseState,
    /// State after.
    pub to: CaseState,
    /// A note.
    pub note: String,
    /// Evidence references (file hashes, URLs).
    pub evidence: Vec<String>,
}
