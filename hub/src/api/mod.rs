//! The hub's HTTP API (axum): cases and their actions with role checks, assessment, an OpenAPI
//! document, Open311 GeoReport v2, and server-sent events for case changes.
//!
//! - `auth`: bearer tokens, stored as SHA-256 hashes, map to an [`Actor`]: admin and dispatcher
//!   see every case, a department only cases routed to it, a worker only cases of their cells;
//! - `cases`: `/api/v1/cases…`, `/api/v1/assessment`, `/api/v1/changes` (SSE);
//! - `console`: what the web console needs besides: `/api/v1/console` (who is signed in,
//!   departments, categories, map settings), `/api/v1/grid` (GeoJSON), `/api/v1/fleet`, a case's
//!   evidence files and camera re-checks;
//! - `open311`: `/open311/v2/services.json`, `/open311/v2/requests.json` (GET, POST);
//! - [`webhooks`]: signed deliveries of case changes to departments, with retries;
//! - [`metrics`]: `/metrics` for Prometheus, and the request-counting middleware.
//!
//! Handlers are thin: they authenticate, call [`CaseService`] on the blocking pool (SQLite) and
//! map errors through [`ApiError`]. No workflow rules live here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::cases::{Actor, CaseError, CaseService, WorkflowError};
use crate::duties::DepartmentId;
use crate::ingest::IngestHandle;

mod auth;
mod cases;
mod console;
pub mod metrics;
pub mod open311;
mod openapi;
pub mod server;
pub mod webhooks;

pub use crate::clock::{Clock, system_clock};
pub use auth::{TokenEntry, hash_token};
pub use console::ConsoleSection;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The case service.
    pub cases: Arc<CaseService>,
    /// Token hash (hex) → who it belongs to.
    pub tokens: Arc<HashMap<String, Actor>>,
    /// The clock.
    pub clock: Clock,
    /// Departments by id with display names (dispatch choices in the console).
    pub departments: Arc<Vec<(DepartmentId, String)>>,
    /// The boxes: the ingest (live connections, health, commands) and its data folder
    /// (registry, evidence files). None when the hub serves no boxes.
    pub boxes: Option<Boxes>,
    /// Console settings (map tiles).
    pub console: Arc<ConsoleSection>,
    /// Who may file Open311 reports, and how fast.
    pub open311: Arc<open311::Intake>,
}

/// The hub's side of its boxes, for the console's fleet page, evidence and re-checks.
#[derive(Clone)]
pub struct Boxes {
    /// The running ingest.
    pub ingest: IngestHandle,
    /// Its data folder (`registry.db`, `evidence/`).
    pub data_dir: PathBuf,
}

impl AppState {
    /// State from a service, token entries and a clock.
    pub fn new(cases: Arc<CaseService>, tokens: &[TokenEntry], clock: Clock) -> AppState {
        AppState {
            cases,
            tokens: Arc::new(
                tokens
                    .iter()
                    .map(|t| (t.token_sha256.to_ascii_lowercase(), t.actor.clone()))
                    .collect(),
            ),
            clock,
            departments: Arc::new(Vec::new()),
            boxes: None,
            console: Arc::new(ConsoleSection::default()),
            open311: Arc::new(open311::Intake::new(&open311::Open311Section::default())),
        }
    }

    /// The same state taking Open311 reports as `section` says.
    pub fn with_open311(mut self, section: &open311::Open311Section) -> AppState {
        self.open311 = Arc::new(open311::Intake::new(section));
        self
    }

    /// The same state with departments' display names for the console.
    pub fn with_departments(mut self, departments: Vec<(DepartmentId, String)>) -> AppState {
        self.departments = Arc::new(departments);
        self
    }

    /// The same state serving the fleet, evidence and re-checks of the ingest's boxes.
    pub fn with_boxes(mut self, boxes: Boxes) -> AppState {
        self.boxes = Some(boxes);
        self
    }

    /// The same state with console settings.
    pub fn with_console(mut self, console: ConsoleSection) -> AppState {
        self.console = Arc::new(console);
        self
    }
}

/// The whole API, and the web console at `/`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(cases::router())
        .merge(console::router())
        .merge(open311::router())
        .merge(openapi::router())
        .with_state(state)
        .merge(crate::web::router())
}

/// An API failure, rendered as a status and a JSON body `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown bearer token.
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// The caller may not see or do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// It existed and never will again (evidence lost on the box before it was uploaded).
    #[error("{0}")]
    Gone(String),
    /// The request conflicts with the case's state.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or names unknown things.
    #[error("{0}")]
    Unprocessable(String),
    /// Something broke inside; details are logged, not returned.
    #[error("internal error")]
    Internal,
    /// Not now (too slow, too busy): try again.
    #[error("{0}")]
    Unavailable(String),
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> ApiError {
        match e {
            CaseError::NotFound(id) => ApiError::NotFound(format!("case {id} does not exist")),
            CaseError::Workflow(
                w @ (WorkflowError::Forbidden { .. }
                | WorkflowError::NotTheirs { .. }
                | WorkflowError::OwnWork),
            ) => ApiError::Forbidden(w.to_string()),
            CaseError::Workflow(w @ WorkflowError::WrongState { .. }) => {
                ApiError::Conflict(w.to_string())
            }
            CaseError::Workflow(w) => ApiError::Unprocessable(w.to_string()),
            e @ (CaseError::BadLocation
            | CaseError::NonFinite { .. }
            | CaseError::UnknownDepartment(_)
            | CaseError::UnknownCategory(_)) => ApiError::Unprocessable(e.to_string()),
            e => {
                tracing::error!(error = %crate::telemetry::chain(&e), "case operation failed");
                ApiError::Internal
            }
        }
    }
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// Runs blocking case work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaseError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            Err(ApiError::Internal)
        }
    }
}
