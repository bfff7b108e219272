//! Open311 GeoReport v2: citizens' service requests become events and cases.
//!
//! `services.json` lists the catalog's city classes (device faults excluded). POST
//! `requests.json` (form-encoded, as the specification has it) files a report: it gets a number
//! of its own (its `service_request_id`) and opens a case or joins the open case of the same
//! thing nearby. GET lists the reports, each with the state of its case (`case_id` names it;
//! cases raised by cameras and sensors are not public otherwise). A reporter's contact details
//! are kept with the report for operators and never shown here.

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking};
use crate::cases::{Case, CitizenReport, Contact, IngestOutcome};

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
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    form: Result<Form<NewRequest>, axum::extract::rejection::FormRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Form(req) = form.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let svc = state.cases.clone();
    let now = (state.clock)();
    let report = CitizenReport {
        category: req.service_code,
        lat: req.lat,
        lon: req.long,
        description: req.description,
        contact: Contact {
            email: req.email,
            first_name: req.first_name,
            last_name: req.last_name,
            phone: req.phone,
        },
    };
    let receipt = blocking(move || svc.report(report, now)).await?;
    let notice = match receipt.outcome {
        IngestOutcome::Merged(id) => format!("joined case {id}, reported before"),
        IngestOutcome::Created(_) | IngestOutcome::Attached(_) => String::new(),
        // a report has a fresh id: this cannot happen, but must not pass for a success
        IngestOutcome::Duplicate => return Err(ApiError::Conflict("duplicate request".into())),
    };
    Ok((
        StatusCode::CREATED,
        Json(json!([{
            "service_request_id": receipt.number.to_string(),
            "service_notice": notice,
            "account_id": null,
        }])),
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
    let reports = blocking(move || svc.citizen_reports()).await?;
    let ids: Option<Vec<&str>> = q
        .service_request_id
        .as_deref()
        .map(|s| s.split(',').collect());
    let list: Vec<Value> = reports
        .iter()
        .filter(|(e, _)| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(&e.seq.0.to_string().as_str()))
        })
        .filter(|(e, _)| {
            q.service_code
                .as_ref()
                .is_none_or(|s| e.category.as_str() == s)
        })
        .filter(|(_, c)| q.status.as_ref().is_none_or(|s| status(c.as_ref()) == s))
        .map(|(e, c)| render(e, c.as_ref()))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn request(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let number: u64 = id
        .trim_end_matches(".json")
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no request {id}")))?;
    let svc = state.cases.clone();
    match blocking(move || svc.citizen_report(number)).await? {
        Some((event, case)) => Ok(Json(json!([render(&event, case.as_ref())]))),
        None => Err(ApiError::NotFound(format!("no request {id}"))),
    }
}

/// `closed` once its case is final; `open` while it is not (or the report opened no case).
fn status(case: Option<&Case>) -> &'static str {
    if case.is_some_and(|c| c.state.is_final()) {
        "closed"
    } else {
        "open"
    }
}

/// A report as Open311 shows it: its own number, words and place, and its case's progress.
fn render(report: &protocol::Event, case: Option<&Case>) -> Value {
    let name = protocol::Catalog::embedded()
        .by_code(&report.category)
        .map(|c| c.en.clone())
        .unwrap_or_default();
    let description = match report.attributes.get("description") {
        Some(protocol::AttrValue::Text(t)) => t.clone(),
        _ => String::new(),
    };
    json!({
        "service_request_id": report.seq.0.to_string(),
        "status": status(case),
        "status_notes": case.map(|c| c.state.as_str()),
        "service_name": name,
        "service_code": report.category.as_str(),
        "description": description,
        "agency_responsible": case.and_then(|c| c.department.as_ref()).map(|d| d.to_string()),
        "requested_datetime": report.observed_at.to_string(),
        "updated_datetime": case.map(|c| c.updated_at.to_string()),
        "expected_datetime": case.and_then(|c| c.deadline).map(|d| d.to_string()),
        "lat": report.location.lat,
        "long": report.location.lon,
        "case_id": case.map(|c| c.id.to_string()),
    })
}
