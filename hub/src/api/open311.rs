//! Open311 GeoReport v2: citizens' service requests become events and cases.
//!
//! `services.json` lists the catalog's city classes (device faults excluded). `requests.json`
//! GET lists the cases that came in through Open311 (cases raised by cameras and sensors are
//! not public); POST (form-encoded, as the specification has it) files a report.

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking};
use crate::cases::{Case, CaseId, IngestOutcome};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/open311/v2/services.json", get(services))
        .route("/open311/v2/requests.json", get(requests).post(create))
        .route("/open311/v2/requests/{id}", get(request))
}

async fn services() -> Json<Value> {
    let catalog = protocol::Catalog::embedded();
    let list: Vec<Value> = catalog
        .categories()
        .filter(|c| c.code.major().as_str() != "90")
        .map(|c| {
            let group = catalog
                .major(&c.code.major())
                .map(|m| m.en.clone())
                .unwrap_or_default();
            json!({
                "service_code": c.code.as_str(),
                "service_name": c.en,
                "description": c.zh,
                "metadata": false,
                "type": "realtime",
                "keywords": c.key,
                "group": group,
            })
        })
        .collect();
    Json(Value::Array(list))
}

#[derive(Debug, Deserialize)]
struct NewRequest {
    service_code: String,
    lat: f64,
    long: f64,
    #[serde(default)]
    description: String,
}

async fn create(
    State(state): State<AppState>,
    form: Result<Form<NewRequest>, axum::extract::rejection::FormRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Form(req) = form.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let svc = state.cases.clone();
    let now = (state.clock)();
    let outcome =
        blocking(move || svc.report(&req.service_code, req.lat, req.long, &req.description, now))
            .await?;
    let id = match outcome {
        IngestOutcome::Created(id) | IngestOutcome::Merged(id) | IngestOutcome::Attached(id) => id,
        IngestOutcome::Duplicate => return Err(ApiError::Conflict("duplicate request".into())),
    };
    Ok((
        StatusCode::CREATED,
        Json(
            json!([{ "service_request_id": id.to_string(), "service_notice": "", "account_id": null }]),
        ),
    ))
}

#[derive(Debug, Deserialize)]
struct RequestQuery {
    #[serde(default)]
    service_request_id: Option<String>,
    #[serde(default)]
    service_code: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

async fn requests(
    State(state): State<AppState>,
    Query(q): Query<RequestQuery>,
) -> Result<Json<Value>, ApiError> {
    let svc = state.cases.clone();
    let cases = blocking(move || svc.cases()).await?;
    let ids: Option<Vec<&str>> = q
        .service_request_id
        .as_deref()
        .map(|s| s.split(',').collect());
    let list: Vec<Value> = cases
        .iter()
        .filter(|c| c.source == "open311")
        .filter(|c| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(&c.id.to_string().as_str()))
        })
        .filter(|c| {
            q.service_code
                .as_ref()
                .is_none_or(|s| c.category.as_str() == s)
        })
        .filter(|c| q.status.as_ref().is_none_or(|s| status(c) == s))
        .map(render)
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn request(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let number: i64 = id
        .trim_end_matches(".json")
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no request {id}")))?;
    let svc = state.cases.clone();
    match blocking(move || svc.case(CaseId(number))).await? {
        Some((case, _)) if case.source == "open311" => Ok(Json(json!([render(&case)]))),
        _ => Err(ApiError::NotFound(format!("no request {id}"))),
    }
}

fn status(case: &Case) -> &'static str {
    if case.state.is_final() {
        "closed"
    } else {
        "open"
    }
}

fn render(case: &Case) -> Value {
    let name = protocol::Catalog::embedded()
        .by_code(&case.category)
        .map(|c| c.en.clone())
        .unwrap_or_default();
    json!({
        "service_request_id": case.id.to_string(),
        "status": status(case),
        "status_notes": case.state.as_str(),
        "service_name": name,
        "service_code": case.category.as_str(),
        "description": case.description,
        "agency_responsible": case.department.as_ref().map(|d| d.to_string()),
        "requested_datetime": case.created_at.to_string(),
        "updated_datetime": case.updated_at.to_string(),
        "expected_datetime": case.deadline.map(|d| d.to_string()),
        "lat": case.lat,
        "long": case.lon,
    })
}
