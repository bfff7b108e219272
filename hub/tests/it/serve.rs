//! `hub::serve::run` from a configuration file's worth of settings, on 127.0.0.1:0.

use http_body_util::{BodyExt, Full};
use hub::config::HubConfig;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use crate::helpers::{CALENDAR, DUTIES};

#[tokio::test]
async fn serve_loads_its_files_answers_on_its_port_and_stops_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("grid.geojson"), hub::grid::sample::sample_city_geojson()).unwrap();
    std::fs::write(p("duties.csv"), DUTIES).unwrap();
    std::fs::write(p("calendar.toml"), CALENDAR).unwrap();
    let departments: String = crate::helpers::DEPARTMENTS
        .iter()
        .map(|d| format!("[[departments]]\nid = \"{d}\"\nname = \"{d}\"\n"))
        .collect();
    let text = format!(
        "api_listen_addr = \"127.0.0.1:0\"\ndatabase_path = {:?}\ngrid_path = {:?}\nduties_path = {:?}\ncalendar_path = {:?}\n{departments}\
         [[tokens]]\nname = \"desk\"\ntoken_sha256 = \"{}\"\nrole = \"dispatcher\"\nsubject = \"desk\"\n",
        p("hub.db"),
        p("grid.geojson"),
        p("duties.csv"),
        p("calendar.toml"),
        hub::api::hash_token("desk-token"),
    );
    let config = HubConfig::from_toml_str(&text).unwrap();
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(hub::serve::run(config, cancel.clone(), move |at| {
        let _ = tx.send(at.api);
    }));
    let addr = rx.await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    let req = hyper::Request::get(format!("http://{addr}/api/v1/cases"))
        .header("authorization", "Bearer desk-token")
        .body(Full::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"cases":[],"next":null}"#);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_answer_with_case_ingest_and_request_counts_after_activity() {
    let dir = tempfile::tempdir().unwrap();
    hub::registry::admin::init(
        dir.path(),
        "test hub",
        "127.0.0.1:0".parse().unwrap(),
        protocol::Timestamp::from_unix_millis(1_790_000_000_000),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("hub.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        + &format!(
            "\n[[open311.clients]]\nname = \"city-app\"\napi_key_sha256 = \"{}\"\n",
            hub::api::hash_token("k-city")
        );
    let config = HubConfig::from_toml_str(&text).unwrap();
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(hub::serve::run(config, cancel.clone(), move |listening| {
        let _ = tx.send(listening.api);
    }));
    let addr = rx.await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    // Activity: a citizen report opens a case.
    let form = "api_key=k-city&service_code=0102&lat=31.281&long=120.581&description=rubbish";
    let req = hyper::Request::post(format!("http://{addr}/open311/v2/requests.json"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(axum::body::Bytes::from(form)))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status().as_u16(), 201);
    let req = hyper::Request::get(format!("http://{addr}/metrics"))
        .body(Full::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for expected in [
        "hub_cases{state=\"",
        "hub_cases_overdue 0",
        "hub_cases_created_total 1",
        "hub_case_actions_total",
        "hub_ingest_events_total 0",
        "hub_ingest_connections 0",
        "hub_ingest_connections_accepted_total 0",
        "hub_webhook_delivered_total 0",
        "hub_api_requests_total{route=\"/open311/v2/requests.json\",method=\"POST\",status=\"2xx\"} 1",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}
