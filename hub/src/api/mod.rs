//! The hub's HTTP API (axum): cases and their actions with role checks, assessment, an OpenAPI
//! document, Open311 GeoReport v2, and server-sent events for case changes.
//!
//! - `auth`: bearer tokens, stored as SHA-256 hashes, map to an [`Actor`]: admin and dispatcher
//!   see every case, a department only cases routed to it, a worker only cases of their cells;
//! - `cases`: `/api/v1/cases…`, `/api/v1/assessment`, `/api/v1/changes` (SSE);
//! - `open311`: `/open311/v2/services.json`, `/open311/v2/requests.json` (GET, POST);
//! - [`webhooks`]: signed deliveries of case changes to departments, with retries;
//! - [`metrics`]: `/metrics` for Prometheus, and the request-counting middleware.
//!
//! Handlers are thin: they authenticate, call [`CaseService`] on the blocking pool (SQLite) and
//! map errors through [`ApiError`]. No workflow rules live here.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::Timestamp;
use serde_json::json;

use crate::cases::{Actor, CaseError, CaseService, WorkflowError};

mod auth;
mod cases;
pub mod metrics;
mod open311;
mod openapi;
pub mod webhooks;

pub use auth::{TokenEntry, hash_token};

/// A clock returning the current time (injected so tests control it).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The case service.
    pub cases: Arc<CaseService>,
    /// Token hash (hex) → who it belongs to.
    pub tokens: Arc<HashMap<String, Actor>>,
    /// The clock.
    pub clock: Clock,
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
        }
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(cases::router())
        .merge(open311::router())
        .merge(openapi::router())
        .with_state(state)
}

/// The clock of a real hub: the system time.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Timestamp::from_unix_millis(millis)
    })
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
    /// The request conflicts with the case's state.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or names unknown things.
    #[error("{0}")]
    Unprocessable(String),
    /// Something broke inside; details are logged, not returned.
    #[error("internal error")]
    Internal,
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> ApiError {
        match e {
            CaseError::NotFound(id) => ApiError::NotFound(format!("case {id} does not exist")),
            CaseError::Workflow(w @ WorkflowError::Forbidden { .. }) => {
                ApiError::Forbidden(w.to_string())
            }
            CaseError::Workflow(w @ WorkflowError::WrongState { .. }) => {
                ApiError::Conflict(w.to_string())
            }
            CaseError::Workflow(w) => ApiError::Unprocessable(w.to_string()),
            e @ (CaseError::BadLocation
            | CaseError::UnknownDepartment(_)
            | CaseError::UnknownCategory(_)) => ApiError::Unprocessable(e.to_string()),
            e => {
                tracing::error!(error = %crate::telemetry::chain(&e), "case operation failed");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
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
