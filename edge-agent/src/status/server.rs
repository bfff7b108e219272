//! The local HTTP server: the box page, its JSON API, thumbnails, evidence, and the admin sign-in.
//!
//! Routes (all under the `[local_api]` listen address):
//! - `GET /` the page (`page.html`, `page.css`, `page.js`, built into the binary);
//! - `GET /api/status` the [`StatusReport`];
//! - `GET /api/cameras/{id}/thumbnail.jpg` the camera's newest frame with zones and objects
//!   drawn (persons blurred while `events.evidence.privacy_blur` is on);
//! - `GET /api/evidence/{sha256}` an evidence JPEG the store holds;
//! - `GET|POST|DELETE /api/session` sign-in state, sign in with the admin password, sign out;
//! - `POST /api/cameras/{id}/reconnect` rebuild a camera's pipeline (signed in only).
//!
//! Reads go through [`Store`] readers on the blocking pool and the stages' shared counters; the
//! only write is the reconnect request, which sets a flag the camera thread consumes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use image::RgbImage;
use protocol::{Catalog, Digest, Seq};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::LocalApiError;
use super::report::{
    CameraReport, DetectorReport, EventCounts, EventReport, ExplanationReport, MqttReport, Problem,
    SensorReport, StatusReport, StoreReport, TrackReport, UplinkReport,
};
use crate::camera::{CameraState, CameraStats};
use crate::events::{EvidenceRenderer, Mark, PixelRect};
use crate::probes::Probes;
use crate::sensors::RuleKind;
use crate::uplink::UplinkMode;

/// The page's files.
const PAGE_HTML: &str = include_str!("page.html");
const PAGE_CSS: &str = include_str!("page.css");
const PAGE_JS: &str = include_str!("page.js");
const FAVICON_SVG: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>\
    <circle cx='8' cy='8' r='7' fill='#1c2430'/><circle cx='8' cy='8' r='3.5' fill='#4fc3f7'/></svg>";

/// Newest events listed.
const RECENT_EVENTS: u64 = 20;
/// How often frame and detection rates are sampled.
const RATE_TICK: Duration = Duration::from_secs(1);
/// Rates are averaged over this many ticks (smooth, yet a stopped camera shows soon).
const RATE_WINDOW: usize = 4;
/// Most sign-ins kept at once (the oldest goes first).
const MAX_SESSIONS: usize = 16;
/// Name of the sign-in cookie.
const SESSION_COOKIE: &str = "gs_box_session";
/// Quota and disk use from which the page warns.
const NEARLY_FULL: f64 = 0.9;
/// A failed sign-in answers only after this, to slow guessing.
const FAILED_SIGN_IN_DELAY: Duration = Duration::from_millis(500);

/// State shared by the handlers.
pub(super) struct ApiState {
    pub(super) settings: super::PageSettings,
    pub(super) sources: Probes,
    pub(super) started: Instant,
    pub(super) admin_password: Option<super::password::AdminPassword>,
    pub(super) renderer: EvidenceRenderer,
    pub(super) rates: Mutex<Rates>,
    pub(super) sessions: Mutex<HashMap<String, Instant>>,
}

/// Per-camera frame and detection rates, and the detector's recent mean time.
#[derive(Debug, Default)]
pub(super) struct Rates {
    /// The latest samples, oldest first, at most [`RATE_WINDOW`].
    samples: std::collections::VecDeque<Sample>,
    fps: HashMap<String, (f64, f64)>,
    inference_ms: Option<f64>,
}

/// The counters at one tick.
#[derive(Debug)]
struct Sample {
    at: Instant,
    /// (frames, detected) per camera.
    counts: Vec<(u64, u64)>,
    /// Frames the detector timed.
    timed: u64,
    /// Time spent detecting them.
    detect: Duration,
}

pub(super) fn router(state: Arc<ApiState>) -> Router {
    let allowed = Arc::new(state.settings.local_api.allowed_hosts.clone());
    Router::new()
        .route("/", get(page))
        .route("/page.css", get(css))
        .route("/page.js", get(js))
        .route("/favicon.svg", get(favicon))
        .route("/api/status", get(status))
        .route("/api/cameras/{id}/thumbnail.jpg", get(thumbnail))
        .route("/api/cameras/{id}/reconnect", post(reconnect))
        .route("/api/evidence/{sha256}", get(evidence))
        .route("/api/session", get(session).post(sign_in).delete(sign_out))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(allowed, guard))
}

/// Samples the cameras' counters every [`RATE_TICK`] until `cancel`.
pub(super) async fn sample_rates(state: Arc<ApiState>, cancel: CancellationToken) {
    let Some(cameras) = state.sources.cameras.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(RATE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => sample(&state, &cameras),
        }
    }
}

fn sample(state: &ApiState, cameras: &CameraStats) {
    let now = Instant::now();
    let snapshot = cameras.snapshot();
    let counts: Vec<(u64, u64)> = snapshot.iter().map(|c| (c.frames, c.detected)).collect();
    let timing = cameras.timing();
    let mut guard = state.rates.lock().unwrap_or_else(|p| p.into_inner());
    // Through a plain reference the fields borrow apart.
    let rates: &mut Rates = &mut guard;
    if let Some(Sample {
        at: then,
        counts: before,
        timed: frames_before,
        detect: detect_before,
    }) = rates.samples.front()
    {
        let secs = now.saturating_duration_since(*then).as_secs_f64().max(1e-3);
        let fps: Vec<(String, (f64, f64))> = snapshot
            .iter()
            .zip(counts.iter().zip(before))
            .map(|(cam, ((f, d), (f0, d0)))| {
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                (cam.id.to_string(), (rate(*f, *f0), rate(*d, *d0)))
            })
            .collect();
        rates.fps = fps.into_iter().collect();
        let frames = timing.frames.saturating_sub(*frames_before);
        if frames > 0 {
            let spent = timing.detect.saturating_sub(*detect_before);
            rates.inference_ms = Some(spent.as_secs_f64() * 1000.0 / frames as f64);
        }
    }
    if rates.inference_ms.is_none() && timing.frames > 0 {
        rates.inference_ms = Some(timing.detect.as_secs_f64() * 1000.0 / timing.frames as f64);
    }
    if rates.samples.len() >= RATE_WINDOW {
        rates.samples.pop_front();
    }
    rates.samples.push_back(Sample {
        at: now,
        counts,
        timed: timing.frames,
        detect: timing.detect,
    });
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE_HTML,
    )
        .into_response()
}

/// Refuses a request naming a host the page does not answer to (DNS rebinding: a page of
/// `evil.example` resolving to the box's address), and adds the security headers to every
/// answer: nothing may come from anywhere but the box, and no other site may frame it.
pub(super) async fn guard(
    State(allowed): State<Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let mut response = match host {
        Some(host) if host_allowed(host, &allowed) => next.run(request).await,
        _ => error(
            StatusCode::MISDIRECTED_REQUEST,
            "this box does not answer to that host name (local_api.allowed_hosts)",
        ),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
             base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// An IP address (a name can be rebound, an address cannot), `localhost`, or a name in
/// `allowed`; with or without a port.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6] or [v6]:port
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
        .into_response()
}

async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], FAVICON_SVG).into_response()
}

async fn status(State(state): State<Arc<ApiState>>) -> Response {
    let st = Arc::clone(&state);
    match tokio::task::spawn_blocking(move || build_report(&st)).await {
        Ok(Ok(report)) => no_store(axum::Json(report).into_response()),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "status report failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event store cannot be read",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "status report task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "status report failed")
        }
    }
}

async fn thumbnail(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !signed_in(&state, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "sign in to see the cameras' pictures",
        );
    }
    let Some(cameras) = state.sources.cameras.clone() else {
        return error(StatusCode::NOT_FOUND, "no cameras are configured");
    };
    let Some(camera) = state.settings.cameras.iter().find(|c| c.id.as_str() == id) else {
        return error(StatusCode::NOT_FOUND, "no such camera");
    };
    let Some(latest) = cameras.latest_frame(&id) else {
        return error(StatusCode::NOT_FOUND, "no frame from this camera yet");
    };
    let zones: Vec<Vec<[f32; 2]>> = camera.zones.iter().map(|z| z.polygon.clone()).collect();
    let scene = cameras.scene(&id).unwrap_or_default();
    let st = Arc::clone(&state);
    let rendered = tokio::task::spawn_blocking(move || {
        let image: RgbImage = (*latest.image).clone();
        let (w, h) = image.dimensions();
        let zones: Vec<Vec<(u32, u32)>> = zones
            .iter()
            .map(|z| z.iter().map(|p| to_pixels(p[0], p[1], w, h)).collect())
            .collect();
        let marks: Vec<Mark> = scene
            .detections
            .iter()
            .map(|d| {
                let (x1, y1) = to_pixels(d.bbox.x1, d.bbox.y1, w, h);
                let (x2, y2) = to_pixels(d.bbox.x2, d.bbox.y2, w, h);
                Mark {
                    rect: PixelRect {
                        x: x1,
                        y: y1,
                        width: x2.saturating_sub(x1).max(1),
                        height: y2.saturating_sub(y1).max(1),
                    },
                    label: d.label.clone(),
                    score: d.score,
                    private: d.label == "person",
                }
            })
            .collect();
        st.renderer.render_overview(image, &zones, &marks)
    })
    .await;
    match rendered {
        Ok(Ok(jpeg)) => no_store(([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response()),
        Ok(Err(e)) => {
            tracing::warn!(camera = %id, error = %crate::telemetry::chain(&e), "thumbnail encoding failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "thumbnail encoding failed",
            )
        }
        Err(e) => {
            tracing::warn!(camera = %id, error = %e, "thumbnail task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "thumbnail failed")
        }
    }
}

async fn evidence(
    State(state): State<Arc<ApiState>>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !signed_in(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "sign in to see evidence");
    }
    let Ok(digest) = Digest::from_hex(&sha256) else {
        return error(StatusCode::BAD_REQUEST, "expected 64 hex digits");
    };
    let store = state.sources.store.clone();
    let read = tokio::task::spawn_blocking(move || -> Option<Vec<u8>> {
        if !store.has_evidence(&digest).ok()? {
            return None;
        }
        std::fs::read(store.evidence_path(&digest)).ok()
    })
    .await;
    match read {
        Ok(Some(bytes)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "the box does not hold this evidence"),
        Err(e) => {
            tracing::warn!(error = %e, "evidence read task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "evidence read failed")
        }
    }
}

#[derive(Deserialize)]
struct SignIn {
    password: String,
}

async fn session(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    no_store(
        axum::Json(serde_json::json!({
            "sign_in_available": state.admin_password.is_some(),
            "signed_in": signed_in(&state, &headers),
        }))
        .into_response(),
    )
}

async fn sign_in(
    State(state): State<Arc<ApiState>>,
    axum::Json(body): axum::Json<SignIn>,
) -> Response {
    let Some(expected) = state.admin_password.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no admin password is configured (local_api.admin_password_path)",
        );
    };
    // argon2id is slow by design: off the executor
    let ok = tokio::task::spawn_blocking(move || expected.verify(&body.password))
        .await
        .unwrap_or(false);
    if !ok {
        tracing::warn!(stage = "local_api", "failed sign-in on the box page");
        tokio::time::sleep(FAILED_SIGN_IN_DELAY).await;
        return error(StatusCode::UNAUTHORIZED, "wrong password");
    }
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "no randomness for a session token");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "sign-in failed");
        }
    };
    {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, at| now.saturating_duration_since(*at) < state.config_session());
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(token.clone(), now);
    }
    tracing::info!(stage = "local_api", "technician signed in on the box page");
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        state.config_session().as_secs()
    );
    let mut response =
        no_store(axum::Json(serde_json::json!({ "signed_in": true })).into_response());
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn sign_out(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        state
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
    let mut response =
        no_store(axum::Json(serde_json::json!({ "signed_in": false })).into_response());
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gs_box_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn reconnect(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !signed_in(&state, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "sign in with the box's admin password first",
        );
    }
    let requested = state
        .sources
        .cameras
        .as_ref()
        .is_some_and(|c| c.request_reconnect(&id));
    if !requested {
        return error(StatusCode::NOT_FOUND, "no such camera");
    }
    tracing::info!(camera = %id, "camera reconnect requested on the box page");
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "reconnecting": id })),
    )
        .into_response()
}

impl ApiState {
    fn config_session(&self) -> Duration {
        self.settings.local_api.session
    }
}

fn signed_in(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(token) = session_token(headers) else {
        return false;
    };
    let sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
    sessions
        .get(token)
        .is_some_and(|at| at.elapsed() < state.config_session())
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// 32 random bytes from the kernel, as hex.
/// A session token: 256 bits from the OS random source.
fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn to_pixels(x: f32, y: f32, w: u32, h: u32) -> (u32, u32) {
    (
        (x.clamp(0.0, 1.0) * w as f32) as u32,
        (y.clamp(0.0, 1.0) * h as f32) as u32,
    )
}

/// Builds the report (blocking: reads the store and the file system).
fn build_report(state: &ApiState) -> Result<StatusReport, crate::store::StoreError> {
    let now = crate::clock::now().as_unix_millis();
    let uptime = state.started.elapsed();
    let store = &state.sources.store;
    let stats = store.stats()?;
    let oldest = store
        .pending(1)?
        .first()
        .map(|e| e.observed_at.as_unix_millis());
    let from = stats.last_seq.saturating_sub(RECENT_EVENTS - 1).max(1);
    let mut recent = store.events_from(Seq(from), RECENT_EVENTS as usize)?;
    recent.reverse();
    let catalog = Catalog::embedded();
    let recent_events = recent
        .iter()
        .map(|e| {
            let category = catalog.by_code(&e.category);
            EventReport {
                seq: e.seq.0,
                id: e.id.to_string(),
                category: e.category.to_string(),
                category_key: category.map(|c| c.key.clone()),
                name_en: category.map(|c| c.en.clone()),
                name_zh: category.map(|c| c.zh.clone()),
                severity: word(&e.severity),
                source_kind: word(&e.source.kind),
                source_id: e.source.id.to_string(),
                observed_at_ms: e.observed_at.as_unix_millis(),
                synced: e.seq.0 <= stats.acked_seq,
                evidence: e.evidence.iter().map(|r| r.sha256.to_hex()).collect(),
            }
        })
        .collect();

    let mut problems = Vec::new();
    let cameras = camera_reports(state, &mut problems);
    let (mqtt, sensors) = sensor_reports(state, now, uptime, &mut problems);
    if let Some(m) = &mqtt
        && !m.connected
    {
        problems.push(problem("mqtt_down", "mqtt", None));
    }
    let uplink = uplink_report(state, &stats, oldest, now);
    match uplink.mode {
        UplinkMode::Offline => problems.push(problem(
            "uplink_offline",
            "uplink",
            uplink.last_error.clone(),
        )),
        UplinkMode::Revoked => problems.push(problem("uplink_revoked", "uplink", None)),
        UplinkMode::Disabled | UplinkMode::CatchingUp | UplinkMode::Connected => {}
    }
    let (disk_free, disk_total) = crate::store::disk_space(&state.settings.store.data_dir).unzip();
    let quota = state.settings.store.quota_bytes;
    if quota > 0 && stats.usage_bytes as f64 >= NEARLY_FULL * quota as f64 {
        problems.push(problem(
            "store_nearly_full",
            "store",
            Some(format!(
                "{:.0} %",
                100.0 * stats.usage_bytes as f64 / quota as f64
            )),
        ));
    }
    // The disk matters when it cannot hold what the quota still allows the store to grow by.
    let headroom = quota.saturating_sub(stats.usage_bytes);
    if let Some(free) = disk_free
        && free < headroom
    {
        problems.push(problem(
            "disk_nearly_full",
            "disk",
            Some(format!(
                "{} MiB free, less than the {} MiB the store may still grow by",
                free / (1024 * 1024),
                headroom / (1024 * 1024)
            )),
        ));
    }
    if stats.lost_events_total > 0 {
        problems.push(problem(
            "events_lost",
            "store",
            Some(stats.lost_events_total.to_string()),
        ));
    }
    let ev = &state.sources.events;
    let rates = state.rates.lock().unwrap_or_else(|p| p.into_inner());
    let detector = DetectorReport {
        inference_ms: rates.inference_ms,
        queue_len: state
            .sources
            .cameras
            .as_ref()
            .map_or(0, CameraStats::queue_len),
    };
    drop(rates);
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        generated_at_ms: now,
        uptime_secs: uptime.as_secs(),
        sign_in_available: state.admin_password.is_some(),
        cameras,
        detector,
        mqtt,
        sensors,
        uplink,
        store: StoreReport {
            data_dir: state.settings.store.data_dir.display().to_string(),
            usage_bytes: stats.usage_bytes,
            quota_bytes: quota,
            events: stats.events,
            unsynced_events: stats.unsynced_events,
            evidence_files: stats.evidence_files,
            lost_events_total: stats.lost_events_total,
            evicted_events_total: stats.evicted_events_total,
            disk_free_bytes: disk_free,
            disk_total_bytes: disk_total,
        },
        events: EventCounts {
            observations: ev.observations.load(Ordering::Relaxed),
            committed: ev.committed.load(Ordering::Relaxed),
            suppressed: ev.suppressed.load(Ordering::Relaxed),
            build_errors: ev.build_errors.load(Ordering::Relaxed),
            store_errors: ev.store_errors.load(Ordering::Relaxed),
        },
        recent_events,
        problems,
    })
}

fn camera_reports(state: &ApiState, problems: &mut Vec<Problem>) -> Vec<CameraReport> {
    let Some(stats) = &state.sources.cameras else {
        return Vec::new();
    };
    let rates = state.rates.lock().unwrap_or_else(|p| p.into_inner());
    stats
        .snapshot()
        .into_iter()
        .zip(&state.settings.cameras)
        .map(|(s, cfg)| {
            let id = s.id.to_string();
            match s.state {
                CameraState::Offline => {
                    problems.push(problem("camera_offline", &id, s.last_error.clone()));
                }
                CameraState::Stalled => {
                    problems.push(problem("camera_stalled", &id, s.last_error.clone()));
                }
                _ => {}
            }
            // A camera that does not stream has no frame rate, whatever the window still holds.
            let (fps, detect_fps) = match s.state {
                CameraState::Streaming => rates.fps.get(&id).copied().unwrap_or((0.0, 0.0)),
                _ => (0.0, 0.0),
            };
            let scene = stats.scene(&id).unwrap_or_default();
            let drops = [
                ("motion_gated", s.gated),
                ("superseded", s.dropped_superseded),
                ("bad_frame", s.bad_frames),
                ("detect_error", s.detect_errors),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            CameraReport {
                state: s.state,
                last_error: s.last_error,
                fps: round2(fps),
                detect_fps: round2(detect_fps),
                configured_fps: f64::from(cfg.detect_fps.get()),
                frames: s.frames,
                detected: s.detected,
                drops,
                reconnects: s.reconnects,
                observations: s.observations,
                last_frame_ms: stats.latest_frame(&id).map(|l| l.wall.as_unix_millis()),
                zones: cfg.zones.iter().map(|z| z.id.clone()).collect(),
                tracks: scene
                    .tracks
                    .into_iter()
                    .map(|t| TrackReport {
                        id: t.id,
                        label: t.label,
                        score: t.score,
                        age_secs: round2(t.age.as_secs_f64()),
                        stationary: t.stationary,
                        explanations: t
                            .explanations
                            .into_iter()
                            .map(|e| ExplanationReport {
                                rule: e.rule,
                                fired: e.fired,
                                reason: e.reason,
                            })
                            .collect(),
                    })
                    .collect(),
                id,
            }
        })
        .collect()
}

fn sensor_reports(
    state: &ApiState,
    now_ms: i64,
    uptime: Duration,
    problems: &mut Vec<Problem>,
) -> (Option<MqttReport>, Vec<SensorReport>) {
    let Some(stats) = &state.sources.sensors else {
        return (None, Vec::new());
    };
    let stats = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let default_stale = state.settings.local_api.sensor_stale;
    let mqtt = MqttReport {
        connected: stats.link.connected,
        connections: stats.link.connections,
        failures: stats.link.failures,
        unrouted_messages: stats.unrouted_messages,
    };
    let sensors = state
        .settings
        .sensors
        .iter()
        .map(|cfg| {
            let c = stats.sensors.get(&cfg.id).cloned().unwrap_or_default();
            let stale_after = cfg
                .rules
                .iter()
                .find_map(|r| match &r.kind {
                    RuleKind::Offline {
                        expected_interval,
                        factor,
                    } => Some(expected_interval.mul_f64(factor.max(0.0))),
                    _ => None,
                })
                .unwrap_or(default_stale);
            let silent = match c.last_seen {
                Some(seen) => Duration::from_millis(
                    u64::try_from(now_ms.saturating_sub(seen.as_unix_millis())).unwrap_or(0),
                ),
                None => uptime,
            };
            let stale = c.online == Some(false) || silent >= stale_after;
            let id = cfg.id.to_string();
            if stale {
                let detail = match c.last_seen {
                    Some(_) => format!("silent for {} s", silent.as_secs()),
                    None => "never heard from".to_owned(),
                };
                problems.push(problem("sensor_stale", &id, Some(detail)));
            }
            SensorReport {
                battery_percent: c.last_values.get("battery").copied(),
                values: c.last_values,
                last_seen_ms: c.last_seen.map(|t| t.as_unix_millis()),
                online: c.online,
                stale,
                stale_after_secs: stale_after.as_secs(),
                messages: c.messages,
                readings: c.readings,
                bad_input: c
                    .bad_input
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
                triggers: c.triggers,
                device: cfg.device.clone(),
                id,
            }
        })
        .collect();
    (Some(mqtt), sensors)
}

fn uplink_report(
    state: &ApiState,
    stats: &crate::store::StoreStats,
    oldest_ms: Option<i64>,
    now_ms: i64,
) -> UplinkReport {
    let age = oldest_ms.map(|t| u64::try_from(now_ms.saturating_sub(t) / 1000).unwrap_or(0));
    let Some(rx) = &state.sources.uplink else {
        return UplinkReport {
            mode: UplinkMode::Disabled,
            rtt_ms: None,
            backlog_events: stats.unsynced_events,
            oldest_unsynced_ms: oldest_ms,
            oldest_unsynced_age_secs: age,
            acked_seq: stats.acked_seq,
            sessions_total: 0,
            last_error: None,
        };
    };
    let s = rx.borrow().clone();
    UplinkReport {
        mode: s.mode,
        rtt_ms: s.rtt.map(|d| round2(d.as_secs_f64() * 1000.0)),
        backlog_events: stats.unsynced_events,
        oldest_unsynced_ms: oldest_ms,
        oldest_unsynced_age_secs: age,
        acked_seq: stats.acked_seq,
        sessions_total: s.sessions_total,
        last_error: s.last_error,
    }
}

fn problem(kind: &str, subject: &str, detail: Option<String>) -> Problem {
    Problem {
        kind: kind.to_owned(),
        subject: subject.to_owned(),
        detail,
    }
}

/// The serde name of a unit enum value (`camera`, `high`).
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Binds the listener.
pub(super) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, LocalApiError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LocalApiError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("lang=zh; gs_box_session=abc123; other=1"),
        );
        assert_eq!(session_token(&headers), Some("abc123"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("gs_box_sessionx=1"),
        );
        assert_eq!(session_token(&headers), None);
    }

    #[test]
    fn only_addresses_localhost_and_the_allowed_names_are_answered() {
        let allowed = vec!["box-12.local".to_owned()];
        for ok in [
            "127.0.0.1:8089",
            "192.168.1.20",
            "[::1]:8089",
            "localhost:8089",
            "BOX-12.local:8089",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8089",
            "box-12.local.evil.example",
            "[zz]",
            "",
        ] {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
    }
}
