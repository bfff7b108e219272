//! What the operator console needs besides the case API:
//!
//! - `GET /api/v1/console`: who is signed in, the departments, the category catalog and the map
//!   settings (one call after sign-in);
//! - `GET /api/v1/grid`: the cells as GeoJSON with their worker and the areas above them;
//! - `GET /api/v1/fleet`: every registered box with its last report (backlog, oldest unsynced,
//!   each camera's and sensor's health) — admins and dispatchers;
//! - `GET /api/v1/cases/{id}/evidence/{sha256}`: an evidence file named by the case's events or
//!   transitions, to whoever may see the case;
//! - `POST /api/v1/cases/{id}/recheck`: asks the box that raised the case for a fresh look
//!   through the same camera and records the answer on the case; the same is asked by itself
//!   after a department's feedback ([`recheck_after_feedback`]), and the box's answer then
//!   verifies the case in the case service.
//!
//! Handlers only gather and shape; decisions stay in the case service and the ingest.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocol::{
    BoxId, CommandAction, CommandOutcome, CommandResult, Digest, SourceKind, Timestamp,
};
use serde_json::{Value, json};

use super::auth::Caller;
use super::{ApiError, AppState, blocking};
use crate::cases::{Actor, CaseId, RECHECK_TRANSITION, Relayed, Role};
use crate::ingest::{CommandError, EvidenceState};

/// How long a box may take to answer a re-check.
const RECHECK_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/console", get(console))
        .route("/api/v1/grid", get(grid))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/cases/{id}/evidence/{sha256}", get(evidence))
        .route("/api/v1/cases/{id}/recheck", post(recheck))
}

async fn console(State(state): State<AppState>, Caller(actor): Caller) -> Json<Value> {
    let catalog = protocol::Catalog::embedded();
    let majors: Vec<Value> = catalog
        .majors()
        .map(|m| json!({"code": m.code, "key": m.key, "zh": m.zh, "en": m.en}))
        .collect();
    let categories: Vec<Value> = catalog
        .categories()
        .map(|c| json!({"code": c.code, "key": c.key, "zh": c.zh, "en": c.en}))
        .collect();
    let departments: Vec<Value> = state
        .departments
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    Json(json!({
        "me": actor,
        "departments": departments,
        "majors": majors,
        "categories": categories,
        "tile_url": state.console.tile_url,
        "tile_attribution": state.console.tile_attribution,
        "fleet": state.boxes.is_some(),
        "now_ms": (state.clock)().as_unix_millis(),
    }))
}

async fn grid(State(state): State<AppState>, Caller(_): Caller) -> Json<Value> {
    let grid = state.cases.grid();
    let features: Vec<Value> = grid
        .cells()
        .iter()
        .map(|cell| {
            let mut props = json!({
                "code": cell.code,
                "name": cell.name,
                "worker": cell.worker.as_str(),
            });
            for area in grid.chain(&cell.code) {
                props[area.level.as_str()] = json!({"code": area.code, "name": area.name});
            }
            let polygons: Vec<Value> = cell
                .shape
                .polygons
                .iter()
                .map(|p| {
                    let mut rings = vec![json!(p.exterior)];
                    rings.extend(p.holes.iter().map(|h| json!(h)));
                    Value::Array(rings)
                })
                .collect();
            json!({
                "type": "Feature",
                "properties": props,
                "geometry": {"type": "MultiPolygon", "coordinates": polygons},
            })
        })
        .collect();
    Json(json!({"type": "FeatureCollection", "features": features}))
}

async fn fleet(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> Result<Json<Value>, ApiError> {
    if !matches!(actor.role, Role::Admin | Role::Dispatcher) {
        return Err(ApiError::Forbidden(
            "the fleet is for admins and dispatchers".into(),
        ));
    }
    let Some(boxes) = state.boxes.clone() else {
        return Ok(Json(json!({"boxes": []})));
    };
    let connected = boxes.ingest.connected();
    let records = match boxes.ingest.registered().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %crate::telemetry::chain(&e), "fleet: registry failed");
            return Err(ApiError::Internal);
        }
    };
    let ids: Vec<BoxId> = records.iter().map(|r| r.id.clone()).collect();
    let health = boxes
        .ingest
        .with_log(move |log| {
            ids.iter()
                .map(|id| log.health(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %crate::telemetry::chain(&e), "fleet: ingest log failed");
            ApiError::Internal
        })?;
    let rows: Vec<Value> = records
        .iter()
        .zip(health)
        .map(|(r, h)| {
            json!({
                "id": r.id,
                "name": r.name,
                "grid": r.grid,
                "status": r.status.as_str(),
                "last_seen_at": r.last_seen_at,
                "connected": connected.contains(&r.id),
                "health_at": h.as_ref().map(|(at, _)| *at),
                "health": h.map(|(_, h)| h),
            })
        })
        .collect();
    Ok(Json(json!({"boxes": rows})))
}

async fn evidence(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path((id, sha)): Path<(i64, String)>,
) -> Result<Response, ApiError> {
    let digest = Digest::from_hex(&sha)
        .map_err(|_| ApiError::Unprocessable(format!("`{sha}` is not a sha256")))?;
    let svc = state.cases.clone();
    let hex = digest.to_hex();
    let named = blocking(move || {
        let Some((_, transitions)) = svc
            .case(CaseId(id))?
            .filter(|(case, _)| case.visible_to(&actor))
        else {
            return Ok(Err(ApiError::NotFound(format!("case {id} does not exist"))));
        };
        let named = transitions
            .iter()
            .any(|t| t.evidence_from_hub() && t.evidence.contains(&hex))
            || svc
                .case_events(CaseId(id))?
                .iter()
                .any(|(_, e)| e.evidence.iter().any(|r| r.sha256 == digest));
        if !named {
            return Ok(Err(ApiError::NotFound(format!(
                "case {id} has no evidence {hex}"
            ))));
        }
        Ok(Ok(()))
    })
    .await?;
    named?;
    let found = match state.boxes.as_ref() {
        Some(boxes) => boxes.ingest.evidence(digest).await.map_err(|e| {
            tracing::error!(error = %crate::telemetry::chain(&e), "evidence unreadable");
            ApiError::Internal
        })?,
        None => None,
    };
    let Some(bytes) = found else {
        match gone_evidence(&state, vec![digest]).await.first() {
            Some((_, EvidenceState::Expired)) => {
                return Err(ApiError::Gone(format!(
                    "evidence {sha} was deleted after the retention period of its finished case ([retention] evidence_days)"
                )));
            }
            Some((_, EvidenceState::Refused)) => {
                return Err(ApiError::Gone(format!(
                    "evidence {sha} was refused: larger than the hub takes ([ingest] max_evidence_bytes)"
                )));
            }
            Some(_) => {
                return Err(ApiError::Gone(format!(
                    "evidence {sha} was lost on the box before it was uploaded: it will not arrive"
                )));
            }
            None => {}
        }
        return Err(ApiError::NotFound(format!(
            "evidence {sha} has not arrived from the box yet"
        )));
    };
    let media = if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        "image/png"
    } else {
        "image/jpeg"
    };
    Ok((
        [
            (header::CONTENT_TYPE, media),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        bytes,
    )
        .into_response())
}

async fn recheck(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if !matches!(actor.role, Role::Admin | Role::Dispatcher | Role::Worker) {
        return Err(ApiError::Forbidden(
            "re-checks are for admins, dispatchers and grid workers".into(),
        ));
    }
    let Some(boxes) = state.boxes.clone() else {
        return Err(ApiError::Conflict("this hub serves no boxes".into()));
    };
    let target = recheck_target(&state, id, Some(actor.clone()))
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("case {id} was not raised by a camera")))?;
    let result = command_box(
        &state,
        &boxes,
        &target.box_id,
        target.action,
        RECHECK_TIMEOUT,
    )
    .await
    .map_err(ApiError::Conflict)?;
    let evidence: Vec<String> = result.evidence.iter().map(|r| r.sha256.to_hex()).collect();
    let note = match &result.outcome {
        CommandOutcome::Done => "camera re-check done".to_owned(),
        other => format!("camera re-check: {other:?}"),
    };
    let svc = state.cases.clone();
    let now = (state.clock)();
    let case = blocking(move || {
        svc.annotate(
            CaseId(id),
            RECHECK_TRANSITION,
            &actor,
            &note,
            &evidence,
            now,
        )
    })
    .await?;
    Ok(Json(json!({"case": case, "result": result})))
}

/// Sends a command to a box and waits up to `timeout` for its result: through this process's
/// connection to it, or, on a database other hub processes share, through the database to the
/// process that holds the box's connection (which sends it and records the answer). Errors are
/// sentences for the operator.
async fn command_box(
    state: &AppState,
    boxes: &super::Boxes,
    box_id: &BoxId,
    action: CommandAction,
    timeout: Duration,
) -> Result<CommandResult, String> {
    let relayed = action.clone();
    match boxes.ingest.command(box_id, action, timeout).await {
        Err(CommandError::NotConnected(_)) if state.cases.shared_database() => {}
        other => return other.map_err(|e| e.to_string()),
    }
    let (svc, id_box, now) = (state.cases.clone(), box_id.clone(), (state.clock)());
    let until = Timestamp::from_unix_millis(
        now.as_unix_millis()
            .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
    );
    let id = blocking(move || svc.relay_command(&id_box, &relayed, now, until))
        .await
        .map_err(|e| e.to_string())?;
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RELAY_POLL).await;
        let (svc, id) = (state.cases.clone(), id.clone());
        let state_now = blocking(move || svc.relayed_state(&id))
            .await
            .map_err(|e| e.to_string())?;
        match state_now {
            Some(Relayed::Answered(answer)) => return answer,
            // nobody holds the box's connection: say so soon, as for a box here
            Some(Relayed::Waiting) | None if started.elapsed() >= RELAY_UNTAKEN => {
                return Err(format!(
                    "box `{box_id}` is not connected to any hub process"
                ));
            }
            _ if started.elapsed() >= timeout => {
                return Err(format!("box `{box_id}` did not answer"));
            }
            _ => {}
        }
    }
}

/// How often a relayed command's state is looked at.
const RELAY_POLL: Duration = Duration::from_millis(100);

/// A relayed command no process took within this is for a box connected nowhere (processes
/// look for commands every [`RELAY_POLL`]).
const RELAY_UNTAKEN: Duration = Duration::from_secs(3);

/// The box and camera to ask about a case, and the command to send them.
struct RecheckTarget {
    box_id: BoxId,
    action: CommandAction,
}

/// The camera that raised case `id` (its first camera event), or `None` when no camera did,
/// with a re-check request issued to its box (see [`crate::cases::CaseService::ask_recheck`]).
/// With `asker`, a case the asker may not see is refused.
async fn recheck_target(
    state: &AppState,
    id: i64,
    asker: Option<Actor>,
) -> Result<Option<RecheckTarget>, ApiError> {
    let svc = state.cases.clone();
    let now = (state.clock)();
    let target = blocking(move || {
        let Some((case, _)) = svc
            .case(CaseId(id))?
            .filter(|(case, _)| asker.as_ref().is_none_or(|who| case.visible_to(who)))
        else {
            return Ok(Err(ApiError::NotFound(format!("case {id} does not exist"))));
        };
        let camera = svc.case_events(CaseId(id))?.into_iter().find_map(|(b, e)| {
            (e.source.kind == SourceKind::Camera).then(|| (b, e.source.id, case.category.clone()))
        });
        let Some((box_id, camera, category)) = camera else {
            return Ok(Ok(None));
        };
        let (Ok(box_id), Ok(camera)) = (
            BoxId::parse(box_id),
            protocol::CameraId::parse(camera.as_str()),
        ) else {
            return Ok(Err(ApiError::Internal));
        };
        let reference = svc.ask_recheck(CaseId(id), &box_id, now)?;
        Ok(Ok(Some(RecheckTarget {
            box_id,
            action: CommandAction::Recheck {
                camera,
                reference,
                categories: vec![category],
            },
        })))
    })
    .await??;
    Ok(target)
}

/// After a department's feedback: asks the camera that raised case `id` to look again, so that
/// its answer (ingested like any event, see the case service) verifies the case. A box that
/// cannot answer leaves a note on the case for a person to verify, and is counted. Cases no
/// camera raised are left to people.
pub(super) async fn recheck_after_feedback(state: AppState, id: i64) {
    let Some(boxes) = state.boxes.clone() else {
        return;
    };
    let target = match recheck_target(&state, id, None).await {
        Ok(Some(target)) => target,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(case = id, error = %e, "re-check after feedback: case not readable");
            return;
        }
    };
    let box_id = target.box_id.clone();
    let (what, note, evidence) = match command_box(
        &state,
        &boxes,
        &target.box_id,
        target.action,
        RECHECK_TIMEOUT,
    )
    .await
    {
        // The answer's picture and count reach the case as the box's event (durably, and that
        // is what verifies): this records only that the system asked.
        Ok(result) if matches!(result.outcome, CommandOutcome::Done) => (
            RECHECK_TRANSITION,
            format!("camera re-check after feedback asked of {box_id}"),
            Vec::new(),
        ),
        failed => {
            let why = match failed {
                Ok(result) => format!("{:?}", result.outcome),
                Err(e) => e,
            };
            state
                .cases
                .stats()
                .recheck_unavailable_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(case = id, box_id = %box_id, why = %why, "re-check after feedback not possible");
            (
                "recheck_unavailable",
                format!("camera re-check after feedback not possible ({why}): verify in person"),
                Vec::new(),
            )
        }
    };
    let svc = state.cases.clone();
    let now = (state.clock)();
    let system = Actor::system();
    let done = blocking(move || svc.annotate(CaseId(id), what, &system, &note, &evidence, now));
    if let Err(e) = done.await {
        tracing::warn!(case = id, error = %e, "re-check after feedback: note not recorded");
    }
}

/// Which of `files` will never arrive (again): reported lost by their box before upload,
/// refused for their size, or deleted after their retention (none on a hub that serves no boxes, or when the ingest log cannot be read:
/// the answer is then "not arrived").
pub(super) async fn gone_evidence(
    state: &AppState,
    files: Vec<Digest>,
) -> Vec<(Digest, EvidenceState)> {
    let Some(boxes) = state.boxes.as_ref() else {
        return Vec::new();
    };
    boxes
        .ingest
        .with_log(move |log| {
            let mut gone = Vec::new();
            for sha in files {
                if let Some((
                    _,
                    _,
                    s @ (EvidenceState::Lost | EvidenceState::Refused | EvidenceState::Expired),
                )) = log.evidence_state(&sha)?
                {
                    gone.push((sha, s));
                }
            }
            Ok(gone)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %crate::telemetry::chain(&e), "evidence state unreadable");
            Vec::new()
        })
}

/// `[console]`: the operator web console served at `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// A map tile URL template (`http://tiles.local/{z}/{x}/{y}.png`) drawn under the grid.
    /// Default none: the console draws the grid alone and needs no tile server.
    pub tile_url: Option<String>,
    /// Attribution shown with the tiles. Default empty.
    pub tile_attribution: String,
}
