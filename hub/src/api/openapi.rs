//! The OpenAPI 3.1 document of this API, served at `/api/v1/openapi.json`. Written by hand next
//! to the handlers; a test checks that every route it lists answers.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}

/// The document.
pub(crate) fn document() -> Value {
    let bearer = json!([{ "bearer": [] }]);
    let err = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let id =
        json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }]);
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Gridsense hub API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] },
                "Action": { "type": "object", "required": ["action"], "properties": {
                    "action": { "type": "string", "enum": ["register", "reject", "dispatch", "accept", "feedback", "verify", "close", "return"] },
                    "department": { "type": "string", "description": "dispatch: the department" },
                    "passed": { "type": "boolean", "description": "verify: whether the problem is gone" },
                    "note": { "type": "string" },
                    "evidence": { "type": "array", "items": { "type": "string" } } } }
            }
        },
        "paths": {
            "/api/v1/cases": { "get": { "summary": "One page of the cases the caller may see, oldest first", "security": bearer,
                "parameters": [
                    { "name": "after", "in": "query", "description": "the previous page's `next`", "schema": { "type": "integer" } },
                    { "name": "limit", "in": "query", "description": "1 to 1000, default 200", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
                    { "name": "state", "in": "query", "description": "comma-separated states", "schema": { "type": "string" } }
                ],
                "responses": { "200": { "description": "{cases: [...], next: id or null}" }, "401": err, "422": err } } },
            "/api/v1/cases/{id}": { "get": { "summary": "A case, its transitions, its merged events and the actions the caller may take", "security": bearer, "parameters": id,
                "responses": { "200": { "description": "{case, transitions, events, allowed_actions, evidence_lost, evidence_expired}" }, "404": err } } },
            "/api/v1/cases/{id}/evidence/{sha256}": { "get": { "summary": "An evidence file named by the case's events or the hub's camera re-checks", "security": bearer,
                "parameters": [id[0].clone(), { "name": "sha256", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "image/jpeg or image/png" }, "404": err, "410": err, "422": err } } },
            "/api/v1/cases/{id}/recheck": { "post": { "summary": "Ask the box that raised the case for a fresh look through the same camera", "security": bearer, "parameters": id,
                "responses": { "200": { "description": "{case, result}" }, "403": err, "404": err, "409": err } } },
            "/api/v1/console": { "get": { "summary": "For the web console: the caller, departments, categories, map settings", "security": bearer,
                "responses": { "200": { "description": "{me, departments, majors, categories, tile_url, ...}" }, "401": err } } },
            "/api/v1/grid": { "get": { "summary": "The grid cells as GeoJSON, with workers and the areas above them", "security": bearer,
                "responses": { "200": { "description": "FeatureCollection" }, "401": err } } },
            "/api/v1/fleet": { "get": { "summary": "Registered boxes with their link and latest health report", "security": bearer,
                "responses": { "200": { "description": "{boxes: [...]}" }, "403": err } } },
            "/api/v1/cases/{id}/actions": { "post": { "summary": "Act on a case", "security": bearer, "parameters": id,
                "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Action" } } } },
                "responses": { "200": { "description": "{case}" }, "403": err, "404": err, "409": err, "422": err } } },
            "/api/v1/assessment": { "get": { "summary": "Assessment of a period (JSON or CSV)", "security": bearer,
                "parameters": [
                    { "name": "from_ms", "in": "query", "required": true, "schema": { "type": "integer" } },
                    { "name": "to_ms", "in": "query", "required": true, "schema": { "type": "integer" } },
                    { "name": "format", "in": "query", "schema": { "type": "string", "enum": ["json", "csv"] } }],
                "responses": { "200": { "description": "rows" }, "403": err } } },
            "/api/v1/changes": { "get": { "summary": "Server-sent events: `case` for every change the caller may see", "security": bearer,
                "responses": { "200": { "description": "text/event-stream" } } } },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI" } } } },
            "/open311/v2/services.json": { "get": { "summary": "Open311: service list", "responses": { "200": { "description": "services" } } } },
            "/open311/v2/requests.json": {
                "get": { "summary": "Open311: requests filed through Open311, each with the state of the case it opened or joined (case_id)", "responses": { "200": { "description": "requests" } } },
                "post": { "summary": "Open311: file a request (form: service_code, lat, long, description, email, first_name, last_name, phone; the contact is never shown)",
                    "responses": { "201": { "description": "[{service_request_id}]" }, "422": err } } },
            "/open311/v2/requests/{id}.json": { "get": { "summary": "Open311: one request", "responses": { "200": { "description": "[request]" }, "404": err } } }
        }
    })
}
