//! A whole hub for end-to-end tests: the data folder of `hub init` (CA, registry, sample city,
//! duties, calendar) served by `hub::serve::run` on 127.0.0.1:0 — REST API and QUIC ingest —
//! with the test's bearer tokens; boxes enrolled into it; and a plain HTTP/1.1 JSON call.
//!
//! Used by several test binaries, each of which uses only part of it.

#![allow(dead_code)]

#[path = "../boxes_support/mod.rs"]
pub(crate) mod boxes;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use edge_agent::uplink::IdentityPaths;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How long the hub may take to start or stop.
const T: Duration = Duration::from_secs(15);

/// The departments of the starter duty list.
const DEPARTMENTS: &str = "\
[[departments]]\nid = \"traffic-pj\"\nname = \"平江交警中队\"\n\n\
[[departments]]\nid = \"traffic-gusu\"\nname = \"姑苏交警大队\"\n\n\
[[departments]]\nid = \"sanitation-pj\"\nname = \"平江街道环卫所\"\n\n\
[[departments]]\nid = \"sanitation-gusu\"\nname = \"姑苏区环卫处\"\n\n\
[[departments]]\nid = \"city-management\"\nname = \"城市管理局\"\n\n";

/// A hub serving from a data folder; stopped by [`RunningHub::stop`].
pub(crate) struct RunningHub {
    /// The REST API's address.
    pub(crate) api: SocketAddr,
    /// The QUIC ingest's address.
    pub(crate) ingest: SocketAddr,
    /// The configuration it serves, as a file.
    pub(crate) config_path: std::path::PathBuf,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), hub::serve::ServeError>>,
}

impl RunningHub {
    /// `hub init` in `data` (when not done yet), then serves it with `tokens` as
    /// `(token, role, subject)`.
    pub(crate) async fn start(data: &Path, tokens: &[(&str, &str, &str)]) -> RunningHub {
        RunningHub::start_with(data, tokens, "", hub::api::system_clock()).await
    }

    /// [`RunningHub::start`] with more config sections (`extra`, TOML) and the hub's clock.
    pub(crate) async fn start_with(
        data: &Path,
        tokens: &[(&str, &str, &str)],
        extra: &str,
        clock: hub::api::Clock,
    ) -> RunningHub {
        if !data.join("ca.pem").exists() && !data.join("hub.db").exists() {
            hub::registry::admin::init(data, "test hub", "127.0.0.1:0".parse().unwrap(), now())
                .unwrap();
        }
        let tokens: String = tokens
            .iter()
            .map(|(token, role, subject)| {
                format!(
                    "[[tokens]]\nname = \"{token}\"\ntoken_sha256 = \"{}\"\nrole = \"{role}\"\nsubject = \"{subject}\"\n\n",
                    hub::api::hash_token(token)
                )
            })
            .collect();
        let p = |name: &str| data.join(name);
        let text = format!(
            "api_listen_addr = \"127.0.0.1:0\"\ndatabase_path = {:?}\ngrid_path = {:?}\n\
             duties_path = {:?}\ncalendar_path = {:?}\n\n\
             [ingest]\nlisten_addr = \"127.0.0.1:0\"\ndata_dir = {:?}\nrevocation_check_interval_secs = 1\n\n\
             {extra}\n{DEPARTMENTS}{tokens}",
            p("hub.db"),
            p("grid.geojson"),
            p("duties.csv"),
            p("calendar.toml"),
            data,
        );
        // written where an operator keeps it, so that tools reading the file (backup) see it
        let config_path = data.join("hub-test.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = hub::config::HubConfig::from_toml_str(&text).unwrap();
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(hub::serve::run_with_clock(
            config,
            cancel.clone(),
            move |at| {
                let _ = tx.send(at);
            },
            clock,
        ));
        let at = tokio::time::timeout(T, rx).await.unwrap().unwrap();
        RunningHub {
            api: at.api,
            ingest: at.ingest.unwrap(),
            config_path,
            cancel,
            task,
        }
    }

    /// Stops the hub and waits for it to finish cleanly.
    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(T, self.task)
            .await
            .expect("hub stops")
            .unwrap()
            .unwrap();
    }

    /// One API call with a bearer token: the status and the JSON answer (a string when the
    /// answer is not JSON).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        http_json(self.api, method, path, Some(token), body).await
    }

    /// Enrolls box `id` with a one-time token from the registry; its identity files land in
    /// `tls`.
    pub(crate) async fn enroll(&self, data: &Path, id: &str, tls: &Path) -> IdentityPaths {
        let token = boxes::add_box(data, id, Some("平江路 1 号杆"), now()).unwrap();
        boxes::enroll(&self.ingest.to_string(), &token, tls)
            .await
            .unwrap()
    }
}

/// A JSON request to the hub's API with a bearer token: the status and the JSON answer.
pub(crate) async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let answer = e2e::http::send(addr, method, path, &headers, body.as_bytes())
        .await
        .unwrap();
    (answer.status, answer.json())
}

pub(crate) use e2e::now;
