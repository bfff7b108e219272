//! The operator web console: static files (`hub/web/`) built into the binary and served at `/`
//! and `/console/…`, so the hub needs no web server beside it and the browser no internet.
//!
//! The console is a single page that signs in with an API token and then speaks only the REST
//! API, `/api/v1/changes` (server-sent events) included; Leaflet (from npm, vendored under
//! `hub/web/vendor/leaflet/`) draws the grid. This module serves bytes; it must not hold any
//! API logic.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Every file of the console: (name under `/console/`, media type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/app.css"),
    ),
    (
        "leaflet.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/leaflet/leaflet.js"),
    ),
    (
        "leaflet.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/vendor/leaflet/leaflet.css"),
    ),
];

const INDEX: &[u8] = include_bytes!("../../web/index.html");

/// `/` and `/console/{file}`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(file))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, media, bytes)) => (
            [
                (header::CONTENT_TYPE, *media),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}
