//! `hub::serve::run` from a configuration file's worth of settings, on 127.0.0.1:0.

use http_body_util::{BodyExt, Full};
use hub::config::HubConfig;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use crate::helpers::{CALENDAR, DUTIES};

/// The text of a minimal hub config over the files it writes to `dir`, listening on `api`.
fn minimal_config(dir: &std::path::Path, api: &str) -> String {
    let p = |name: &str| dir.join(name);
    std::fs::write(p("grid.geojson"), hub::grid::sample::sample_city_geojson()).unwrap();
    std::fs::write(p("duties.csv"), DUTIES).unwrap();
    std::fs::write(p("calendar.toml"), CALENDAR).unwrap();
    let departments: String = crate::helpers::DEPARTMENTS
        .iter()
        .map(|d| format!("[[departments]]\nid = \"{d}\"\nname = \"{d}\"\n"))
        .collect();
    format!(
        "api_listen_addr = \"{api}\"\ndatabase_path = {:?}\ngrid_path = {:?}\nduties_path = {:?}\ncalendar_path = {:?}\n{departments}\
         [[tokens]]\nname = \"desk\"\ntoken_sha256 = \"{}\"\nrole = \"dispatcher\"\nsubject = \"desk\"\n",
        p("hub.db"),
        p("grid.geojson"),
        p("duties.csv"),
        p("calendar.toml"),
        hub::api::hash_token("desk-token"),
    )
}

#[tokio::test]
async fn serve_loads_its_files_answers_on_its_port_and_stops_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig::from_toml_str(&minimal_config(dir.path(), "127.0.0.1:0")).unwrap();
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

/// Build, then run: a listener that cannot be bound fails `hub serve` before any of its tasks
/// (webhooks, deadline checks) is spawned, so nothing is left running.
#[test]
fn a_taken_api_port_fails_the_start_and_leaves_nothing_running() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = taken.local_addr().unwrap().to_string();
        let config = HubConfig::from_toml_str(&minimal_config(dir.path(), &api)).unwrap();
        let before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let served = hub::serve::run(config, CancellationToken::new(), |_| {}).await;
        assert!(served.is_err(), "the port is taken");
        let after = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(after, before, "tasks left running after a failed start");
    });
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

/// A hub served from `extra` settings on top of a minimal configuration; its API address and a
/// handle to stop it.
async fn hub_with(
    dir: &std::path::Path,
    extra: &str,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), hub::serve::ServeError>>,
) {
    let p = |name: &str| dir.join(name);
    std::fs::write(p("grid.geojson"), hub::grid::sample::sample_city_geojson()).unwrap();
    std::fs::write(p("duties.csv"), DUTIES).unwrap();
    std::fs::write(p("calendar.toml"), CALENDAR).unwrap();
    let departments: String = crate::helpers::DEPARTMENTS
        .iter()
        .map(|d| format!("[[departments]]\nid = \"{d}\"\nname = \"{d}\"\n"))
        .collect();
    let text = format!(
        "api_listen_addr = \"127.0.0.1:0\"\ndatabase_path = {:?}\ngrid_path = {:?}\nduties_path = {:?}\ncalendar_path = {:?}\n{extra}\n{departments}",
        p("hub.db"),
        p("grid.geojson"),
        p("duties.csv"),
        p("calendar.toml"),
    );
    let config = HubConfig::from_toml_str(&text).unwrap();
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(hub::serve::run(config, cancel.clone(), move |at| {
        let _ = tx.send(at.api);
    }));
    (rx.await.unwrap(), cancel, task)
}

/// Reads until the peer closes the connection (true) or `within` passes (false).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn every_answer_carries_a_strict_policy_and_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cancel, task) = hub_with(
        dir.path(),
        "[console]\ntile_url = \"https://tiles.example.cn/{z}/{x}/{y}.png\"",
    )
    .await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    for path in [
        "/",
        "/api/v1/cases",
        "/no/such/thing",
        "/open311/v2/services.json",
    ] {
        let req = hyper::Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(
            csp.contains("https://tiles.example.cn"),
            "{path}: the tiles may load: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// A client that opens connections and never finishes a request (slow loris) is cut off after
/// the header timeout; connections over the limit are closed at once and counted; a made-up
/// method is counted as `other`, not as a series of its own.
#[tokio::test]
async fn slow_and_surplus_connections_are_cut_off_and_counted() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (addr, cancel, task) = hub_with(
        dir.path(),
        "[http]\nmax_connections = 2\nheader_read_timeout_ms = 300",
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/v1/cases HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    // both slots taken: the third is closed on arrival
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut third, std::time::Duration::from_secs(5)).await);
    assert!(
        closed_within(&mut slow, std::time::Duration::from_secs(5)).await,
        "the slow request is cut off"
    );
    assert!(closed_within(&mut idle, std::time::Duration::from_secs(5)).await);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    let req = hyper::Request::builder()
        .method("BREW")
        .uri(format!("http://{addr}/api/v1/cases"))
        .body(Full::default())
        .unwrap();
    client.request(req).await.unwrap();
    let req = hyper::Request::get(format!("http://{addr}/metrics"))
        .body(Full::default())
        .unwrap();
    let text = String::from_utf8(
        client
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("hub_http_connections_refused_total 1"),
        "{text}"
    );
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(!text.contains("BREW"), "{text}");
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// With a certificate and key in its configuration the hub serves its API over HTTPS itself.
#[tokio::test]
async fn the_api_serves_https_with_the_configured_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.path().join("api.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("api.key"), key.serialize_pem()).unwrap();
    let (addr, cancel, task) = hub_with(
        dir.path(),
        &format!(
            "api_tls_cert_path = {:?}\napi_tls_key_path = {:?}",
            dir.path().join("api.pem"),
            dir.path().join("api.key")
        ),
    )
    .await;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://{addr}/open311/v2/services.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // plain HTTP on the same port is not served
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/open311/v2/services.json"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    cancel.cancel();
    task.await.unwrap().unwrap();
}
