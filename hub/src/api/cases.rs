//! `/api/v1/cases`, `/api/v1/assessment` and `/api/v1/changes`.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::{Caller, may_see};
use super::{ApiError, AppState, blocking};
use crate::assess;
use crate::cases::{Action, CaseId, Role};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/cases", get(list))
        .route("/api/v1/cases/{id}", get(show))
        .route("/api/v1/cases/{id}/actions", post(act))
        .route("/api/v1/assessment", get(assessment))
        .route("/api/v1/changes", get(changes))
}

async fn list(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> Result<Json<Value>, ApiError> {
    let svc = state.cases.clone();
    let cases = blocking(move || svc.cases()).await?;
    let visible: Vec<_> = cases.into_iter().filter(|c| may_see(&actor, c)).collect();
    Ok(Json(json!({ "cases": visible })))
}

async fn show(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let svc = state.cases.clone();
    let now = (state.clock)();
    let found = blocking(move || {
        let Some((case, transitions)) = svc.case(CaseId(id))? else {
            return Ok(None);
        };
        if !may_see(&actor, &case) {
            return Ok(Some(Err(ApiError::Forbidden(format!(
                "case {id} is not yours"
            )))));
        }
        let events = svc.case_events(CaseId(id))?;
        let allowed = svc.allowed_actions(&case, &actor, now);
        Ok(Some(Ok((case, transitions, events, allowed))))
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("case {id} does not exist")))?;
    let (case, transitions, events, allowed) = found?;
    let events: Vec<Value> = events
        .into_iter()
        .map(|(box_id, event)| json!({ "box_id": box_id, "event": event }))
        .collect();
    Ok(Json(json!({
        "case": case,
        "transitions": transitions,
        "events": events,
        "allowed_actions": allowed,
    })))
}

/// Body of `POST /api/v1/cases/{id}/actions`. (`deny_unknown_fields` does not combine with
/// `flatten` in serde, so unknown fields are ignored here.)
#[derive(Debug, Deserialize)]
struct ActionRequest {
    #[serde(flatten)]
    action: Action,
    #[serde(default)]
    note: String,
    #[serde(default)]
    evidence: Vec<String>,
}

async fn act(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<i64>,
    body: Result<Json<ActionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let svc = state.cases.clone();
    let now = (state.clock)();
    let case = blocking(move || {
        let Some((case, _)) = svc.case(CaseId(id))? else {
            return Err(crate::cases::CaseError::NotFound(CaseId(id)));
        };
        if !may_see(&actor, &case) {
            return Ok(Err(ApiError::Forbidden(format!("case {id} is not yours"))));
        }
        svc.act(
            CaseId(id),
            &req.action,
            &actor,
            &req.note,
            &req.evidence,
            now,
        )
        .map(Ok)
    })
    .await??;
    Ok(Json(json!({ "case": case })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodQuery {
    from_ms: i64,
    to_ms: i64,
    #[serde(default)]
    format: Option<String>,
}

async fn assessment(
    State(state): State<AppState>,
    Caller(actor): Caller,
    query: Result<Query<PeriodQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    if !matches!(actor.role, Role::Admin | Role::Dispatcher) {
        return Err(ApiError::Forbidden(
            "assessment is for admins and dispatchers".into(),
        ));
    }
    let svc = state.cases.clone();
    let (cases, transitions) = blocking(move || svc.history()).await?;
    let rows = assess::assess(
        &cases,
        &transitions,
        Timestamp::from_unix_millis(q.from_ms),
        Timestamp::from_unix_millis(q.to_ms),
    );
    Ok(match q.format.as_deref() {
        Some("csv") => (
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            assess::to_csv(&rows),
        )
            .into_response(),
        _ => Json(json!({ "rows": rows })).into_response(),
    })
}

async fn changes(State(state): State<AppState>, Caller(actor): Caller) -> impl IntoResponse {
    let stream = BroadcastStream::new(state.cases.subscribe()).filter_map(move |item| {
        let event = match item {
            Ok(change) if may_see(&actor, &change.case) => {
                SseEvent::default().event("case").json_data(&change).ok()?
            }
            Ok(_) => return None,
            // a slow listener missed changes: say so, it can re-read the list
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(n.to_string())
            }
        };
        Some(Ok::<_, Infallible>(event))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
