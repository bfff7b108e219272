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

use super::auth::Caller;
use super::{ApiError, AppState, blocking};
use crate::assess;
use crate::cases::db::CasePageQuery;
use crate::cases::{Action, CaseId, CaseState, Role};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/cases", get(list))
        .route("/api/v1/cases/{id}", get(show))
        .route("/api/v1/cases/{id}/actions", post(act))
        .route("/api/v1/assessment", get(assessment))
        .route("/api/v1/changes", get(changes))
}

/// The most cases one page of `GET /api/v1/cases` holds, and the default page size.
const PAGE_MAX: usize = 1000;
const PAGE_DEFAULT: usize = 200;

/// Query of `GET /api/v1/cases`: `after` (the previous page's `next`), `limit` (1 to 1000,
/// default 200), `state` (comma-separated state names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    state: Option<String>,
}

/// One page of the cases the caller may see, oldest first; `next` is the cursor for the
/// following page, `null` on the last one. A worker's and a department's pages are narrowed in
/// the query itself, so their pages are full.
async fn list(
    State(state): State<AppState>,
    Caller(actor): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit: {limit} is outside 1..={PAGE_MAX}"
        )));
    }
    let mut states = Vec::new();
    for name in q.state.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let state = CaseState::parse(name).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "state: `{name}` is not one of {}",
                CaseState::ALL.map(CaseState::as_str).join(", ")
            ))
        })?;
        // each state once: a repeated name adds nothing to the query
        if !states.contains(&state) {
            states.push(state);
        }
    }
    let page = CasePageQuery {
        after: q.after.map(CaseId),
        limit,
        states,
        worker: (actor.role == Role::Worker).then(|| actor.subject.clone()),
        department: (actor.role == Role::Department).then(|| actor.subject.clone()),
    };
    let svc = state.cases.clone();
    let (cases, more) = blocking(move || svc.cases_page(&page)).await?;
    let next = if more {
        cases.last().map(|c| c.id.0)
    } else {
        None
    };
    let visible: Vec<_> = cases.into_iter().filter(|c| c.visible_to(&actor)).collect();
    Ok(Json(json!({ "cases": visible, "next": next })))
}

async fn show(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let svc = state.cases.clone();
    let now = (state.clock)();
    let found = blocking(move || {
        // a case the caller may not see answers exactly as one that does not exist
        let Some((case, transitions)) = svc
            .case(CaseId(id))?
            .filter(|(case, _)| case.visible_to(&actor))
        else {
            return Ok(None);
        };
        let events = svc.case_events(CaseId(id))?;
        let allowed = svc.allowed_actions(&case, &actor, now);
        Ok(Some((case, transitions, events, allowed)))
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("case {id} does not exist")))?;
    let (case, transitions, events, allowed) = found;
    // Files named by the case that their box reported lost, or that were deleted after the
    // case's retention: the console says so instead of waiting for them.
    let mut named: Vec<protocol::Digest> = events
        .iter()
        .flat_map(|(_, e)| e.evidence.iter().map(|r| r.sha256))
        .chain(
            transitions
                .iter()
                .filter(|t| t.evidence_from_hub())
                .flat_map(|t| t.evidence.iter())
                .filter_map(|hex| protocol::Digest::from_hex(hex).ok()),
        )
        .collect();
    // the report transition names its event's files too
    named.sort_unstable_by_key(|d| d.0);
    named.dedup();
    let (expired, lost): (Vec<_>, Vec<_>) = super::console::gone_evidence(&state, named)
        .await
        .into_iter()
        .partition(|(_, s)| *s == crate::ingest::EvidenceState::Expired);
    let hex = |gone: Vec<(protocol::Digest, _)>| -> Vec<String> {
        gone.iter().map(|(sha, _)| sha.to_hex()).collect()
    };
    let events: Vec<Value> = events
        .into_iter()
        .map(|(box_id, event)| json!({ "box_id": box_id, "event": event }))
        .collect();
    Ok(Json(json!({
        "case": case,
        "transitions": transitions,
        "events": events,
        "allowed_actions": allowed,
        "evidence_lost": hex(lost),
        "evidence_expired": hex(expired),
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
    let feedback = matches!(req.action, Action::Feedback);
    let svc = state.cases.clone();
    let now = (state.clock)();
    let case = blocking(move || {
        svc.act(
            CaseId(id),
            &req.action,
            &actor,
            &req.note,
            &req.evidence,
            now,
        )
    })
    .await?;
    if feedback && state.cases.settings().recheck_on_feedback && state.boxes.is_some() {
        tokio::spawn(super::console::recheck_after_feedback(state.clone(), id));
    }
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
            Ok(change) if change.case.visible_to(&actor) => {
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
