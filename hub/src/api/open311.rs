//! Open311 GeoReport v2: citizens' service requests become events and cases.
//!
//! `services.json` lists the catalog's city classes (device faults excluded). POST
//! `requests.json` (form-encoded, as the specification has it) files a report: it gets a number
//! of its own (its `service_request_id`) and opens a case or joins the open case of the same
//! thing nearby. GET lists the reports, each with the state of its case (`case_id` names it;
//! cases raised by cameras and sensors are not public otherwise). A reporter's contact details
//! are kept with the report for operators and never shown here.
//!
//! POST is for the client applications of `[open311] clients`, by their `api_key` (Open311's
//! own mechanism), rate-limited per key and per network address; a description longer than
//! `max_description_chars` or a point outside the grid is refused. Citizens' reports wait for
//! an operator's acceptance (`moderation`) unless their category is unmoderated. Errors are in
//! the specification's form: `[{"code": 400, "description": "..."}]`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use protocol::CategoryCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking};
use crate::cases::{Case, CitizenReport, Contact, IngestOutcome};
use crate::rate::RateBucket;

/// Who may file reports and how fast: the keys of `[open311] clients` and the rate buckets.
#[derive(Debug)]
pub struct Intake {
    /// SHA-256 (hex) of an `api_key` → the client's name.
    clients: HashMap<String, String>,
    per_key: Mutex<HashMap<String, RateBucket>>,
    per_address: Mutex<HashMap<IpAddr, RateBucket>>,
    per_key_per_min: f64,
    per_address_per_min: f64,
    max_description_chars: usize,
    moderation: bool,
    unmoderated: HashSet<CategoryCode>,
}

/// Addresses tracked for the per-address limit before idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 4096;

impl Intake {
    /// The intake `section` describes.
    pub fn new(section: &Open311Section) -> Intake {
        let catalog = protocol::Catalog::embedded();
        Intake {
            clients: section
                .clients
                .iter()
                .map(|c| (c.api_key_sha256.to_ascii_lowercase(), c.name.clone()))
                .collect(),
            per_key: Mutex::new(HashMap::new()),
            per_address: Mutex::new(HashMap::new()),
            per_key_per_min: f64::from(section.posts_per_min_per_key.max(1)),
            per_address_per_min: f64::from(section.posts_per_min_per_address.max(1)),
            max_description_chars: section.max_description_chars,
            moderation: section.moderation,
            unmoderated: section
                .unmoderated_categories
                .iter()
                .filter_map(|c| catalog.resolve(c).map(|c| c.code.clone()))
                .collect(),
        }
    }

    /// The client an `api_key` belongs to.
    fn client(&self, api_key: &str) -> Option<&str> {
        self.clients
            .get(&super::hash_token(api_key))
            .map(String::as_str)
    }

    /// Takes one report from the key's and the address's budgets; false when either is spent.
    fn admit(&self, client: &str, address: Option<IpAddr>, now: Instant) -> bool {
        let mut keys = lock(&self.per_key);
        let key = keys
            .entry(client.to_owned())
            .or_insert_with(|| RateBucket::new(self.per_key_per_min / 60.0, self.per_key_per_min));
        if !key.try_take(1.0, now) {
            return false;
        }
        let Some(address) = address else {
            return true;
        };
        let mut addresses = lock(&self.per_address);
        if addresses.len() >= MAX_TRACKED_ADDRESSES && !addresses.contains_key(&address) {
            // a bucket full again is a client that has been quiet for a minute
            let rate = self.per_address_per_min;
            addresses.retain(|_, b| !b.is_full(now, rate));
            if addresses.len() >= MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        addresses
            .entry(address)
            .or_insert_with(|| {
                RateBucket::new(self.per_address_per_min / 60.0, self.per_address_per_min)
            })
            .try_take(1.0, now)
    }
}

/// An error in the Open311 form: `[{"code", "description"}]` with the code as the status.
struct Open311Error(StatusCode, String);

impl IntoResponse for Open311Error {
    fn into_response(self) -> Response {
        let body = json!([{ "code": self.0.as_u16(), "description": self.1 }]);
        (self.0, Json(body)).into_response()
    }
}

impl From<ApiError> for Open311Error {
    fn from(e: ApiError) -> Open311Error {
        let status = e.status();
        Open311Error(status, e.to_string())
    }
}

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

/// A citizen's report as the body of an Open311 `POST requests` gives it
/// (`application/x-www-form-urlencoded`, GeoReport v2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportForm {
    /// The service (category) code.
    pub service_code: String,
    /// Latitude (WGS84).
    pub lat: f64,
    /// Longitude (WGS84).
    pub long: f64,
    /// What the citizen says.
    #[serde(default)]
    pub description: String,
    /// Contact fields: kept for operators, never shown in `GET requests`.
    #[serde(default)]
    pub email: Option<String>,
    /// See `email`.
    #[serde(default)]
    pub first_name: Option<String>,
    /// See `email`.
    #[serde(default)]
    pub last_name: Option<String>,
    /// See `email`.
    #[serde(default)]
    pub phone: Option<String>,
    /// The client application's key.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// Reads an Open311 POST body into its fields (what they say is checked by
/// [`ReportForm::check`]). Never panics, whatever the bytes.
///
/// # Errors
/// A sentence naming what does not decode, for the spec's `[{code, description}]` answer.
pub fn parse_report_form(body: &[u8]) -> Result<ReportForm, String> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| format!("the request body is not a valid report form: {e}"))
}

impl ReportForm {
    /// A finite position on the globe, a service code of sane length and a description of at
    /// most `max_description_chars` (whether the point is in the grid and the code a service is
    /// for the hub to say).
    ///
    /// # Errors
    /// A sentence naming the field.
    pub fn check(&self, max_description_chars: usize) -> Result<(), String> {
        // A range check is false for NaN and the infinities too.
        let in_range = (-90.0..=90.0).contains(&self.lat) && (-180.0..=180.0).contains(&self.long);
        if !in_range {
            return Err(format!(
                "lat/long {},{} is not a position on the globe",
                self.lat, self.long
            ));
        }
        if self.description.chars().count() > max_description_chars {
            return Err(format!(
                "description is longer than {max_description_chars} characters"
            ));
        }
        if self.service_code.is_empty() || self.service_code.len() > 64 {
            return Err("service_code is empty or longer than 64 bytes".into());
        }
        Ok(())
    }
}

async fn create(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), Open311Error> {
    let bad = |why: String| Open311Error(StatusCode::BAD_REQUEST, why);
    let form_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_type {
        return Err(Open311Error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a report is posted as application/x-www-form-urlencoded".into(),
        ));
    }
    let req = parse_report_form(&body).map_err(bad)?;
    let intake = &state.open311;
    let Some(client) = req.api_key.as_deref().and_then(|k| intake.client(k)) else {
        return Err(Open311Error(
            StatusCode::FORBIDDEN,
            "api_key is missing or not one of this hub's client applications".into(),
        ));
    };
    let address = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !intake.admit(client, address, Instant::now()) {
        tracing::warn!(client, ?address, "open311 report over the rate refused");
        return Err(Open311Error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this client or address: try again in a minute".into(),
        ));
    }
    req.check(intake.max_description_chars).map_err(bad)?;
    if state.cases.grid().locate(req.lat, req.long).is_none() {
        return Err(bad(format!(
            "lat/long {},{} is outside the area this hub serves",
            req.lat, req.long
        )));
    }
    let category = protocol::Catalog::embedded()
        .resolve(&req.service_code)
        .map(|c| c.code.clone())
        .ok_or_else(|| {
            bad(format!(
                "service_code `{}` is not a service",
                req.service_code
            ))
        })?;
    let moderated = intake.moderation && !intake.unmoderated.contains(&category);
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
        moderated,
    };
    let receipt = match blocking(move || svc.report(report, now)).await {
        Ok(r) => r,
        Err(ApiError::Unprocessable(why)) => return Err(bad(why)),
        Err(e) => return Err(e.into()),
    };
    let notice = match receipt.outcome {
        IngestOutcome::Merged(id) => format!("joined case {id}, reported before"),
        IngestOutcome::Created(_) | IngestOutcome::Attached(_) => String::new(),
        // a report has a fresh id: this cannot happen, but must not pass for a success
        IngestOutcome::Duplicate => {
            return Err(Open311Error(
                StatusCode::CONFLICT,
                "duplicate request".into(),
            ));
        }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // the buckets stay consistent across a panic: each change is one update
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `[open311]`: who may file citizens' reports, how fast, and what happens to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Open311Section {
    /// The client applications that may POST reports, each with its `api_key` stored as a
    /// SHA-256 hash (`hub token-hash`). Default none: POST is refused.
    pub clients: Vec<Open311Client>,
    /// Reports one client may file per minute (a minute's worth at once). Default 60.
    pub posts_per_min_per_key: u32,
    /// Reports one network address may file per minute. Default 10.
    pub posts_per_min_per_address: u32,
    /// The longest description taken, in characters (the specification's 4000). Default 4000.
    pub max_description_chars: usize,
    /// Citizens' reports wait in `reported` for an operator to accept (register) them, even in
    /// categories the duty list registers by itself. Default true.
    pub moderation: bool,
    /// Categories (codes or keys) whose reports skip moderation. Default none.
    pub unmoderated_categories: Vec<String>,
}

impl Default for Open311Section {
    fn default() -> Self {
        Open311Section {
            clients: Vec::new(),
            posts_per_min_per_key: 60,
            posts_per_min_per_address: 10,
            max_description_chars: 4000,
            moderation: true,
            unmoderated_categories: Vec::new(),
        }
    }
}

/// `[[open311.clients]]`: an application that files reports for citizens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open311Client {
    /// Its name (logs, metrics).
    pub name: String,
    /// SHA-256 (hex) of its `api_key`.
    pub api_key_sha256: String,
}
