//! The HTTP API on 127.0.0.1:0: the whole loop with role checks, Open311, SSE, webhooks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hub::api::{self, AppState, TokenEntry, hash_token, webhooks};
use hub::cases::{Actor, CaseService, IngestOutcome, Role};
use hub::duties::DepartmentId;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use protocol::Timestamp;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    FRIDAY_4PM, box_id, cell_centre, event, off_runtime, sample_grid, service, wait_until,
};

struct TestApi {
    base: String,
    svc: Arc<CaseService>,
    now: Arc<AtomicI64>,
    client: Client<HttpConnector, Full<Bytes>>,
}

const TOKENS: [(&str, Role, &str); 7] = [
    ("t-admin", Role::Admin, "root"),
    ("t-dispatch", Role::Dispatcher, "desk-1"),
    ("t-traffic", Role::Department, "traffic-pj"),
    ("t-sanit", Role::Department, "sanitation-pj"),
    ("t-sanit-street", Role::Department, "sanitation-gusu"),
    ("t-zhang", Role::Worker, "w-zhang"),
    ("t-wang", Role::Worker, "w-wang"),
];

/// The Open311 client application of the tests.
const OPEN311_KEY: &str = "k-city-app";

/// Open311 as most tests want it: one client, limits out of the way, no moderation.
fn open311_section() -> hub::config::Open311Section {
    hub::config::Open311Section {
        clients: vec![hub::config::Open311Client {
            name: "city-app".into(),
            api_key_sha256: hash_token(OPEN311_KEY),
        }],
        posts_per_min_per_key: 10_000,
        posts_per_min_per_address: 10_000,
        moderation: false,
        ..Default::default()
    }
}

impl TestApi {
    async fn spawn() -> TestApi {
        TestApi::spawn_with(&open311_section()).await
    }

    async fn spawn_with(open311: &hub::config::Open311Section) -> TestApi {
        let svc = Arc::new(service());
        let now = Arc::new(AtomicI64::new(FRIDAY_4PM));
        let clock_now = now.clone();
        let tokens: Vec<TokenEntry> = TOKENS
            .iter()
            .map(|(t, role, subject)| TokenEntry {
                name: (*t).into(),
                token_sha256: hash_token(t),
                actor: Actor {
                    role: *role,
                    subject: (*subject).into(),
                },
            })
            .collect();
        let state = AppState::new(
            svc.clone(),
            &tokens,
            Arc::new(move || Timestamp::from_unix_millis(clock_now.load(Ordering::SeqCst))),
        )
        .with_open311(open311);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestApi {
            base: format!("http://{addr}"),
            svc,
            now,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self.client.request(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn act(&self, id: i64, token: &str, body: Value) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/api/v1/cases/{id}/actions"),
            Some(token),
            Some(body),
        )
        .await
    }

    fn ingest(&self, seq: u64, category: &str) -> i64 {
        // the centre of cell 32050800100101 (worker w-zhang)
        self.ingest_at(seq, category, (31.281, 120.581), FRIDAY_4PM)
    }

    fn ingest_at(&self, seq: u64, category: &str, (lat, lon): (f64, f64), at: i64) -> i64 {
        let ingested = off_runtime(|| {
            self.svc.ingest(
                &box_id(),
                &event(seq, category, lat, lon, at),
                Timestamp::from_unix_millis(at),
            )
        });
        match ingested.unwrap() {
            IngestOutcome::Created(id) => id.0,
            other => panic!("{other:?}"),
        }
    }

    /// Follows `next` through every page of `GET /api/v1/cases?{query}`: the ids per page.
    async fn pages(&self, token: &str, query: &str) -> Vec<Vec<i64>> {
        let mut pages = Vec::new();
        let mut after = String::new();
        loop {
            let path = format!("/api/v1/cases?{query}{after}");
            let (status, body) = self.call("GET", &path, Some(token), None).await;
            assert_eq!(status, 200, "{path}: {body}");
            let ids = body["cases"].as_array().unwrap().iter();
            pages.push(ids.map(|c| c["id"].as_i64().unwrap()).collect());
            match body["next"].as_i64() {
                Some(next) => after = format!("&after={next}"),
                None => return pages,
            }
            assert!(pages.len() < 100, "paging does not end");
        }
    }
}

#[tokio::test]
async fn the_whole_loop_runs_through_the_api_with_role_checks_return_and_rework() {
    let api = TestApi::spawn().await;
    let id = api.ingest(1, "0404"); // illegal parking: waits for review, routed to traffic-pj
    let path = format!("/api/v1/cases/{id}");

    assert_eq!(api.call("GET", &path, None, None).await.0, 401);
    // another cell's worker: the case does not exist for them, exactly as one that does not
    let (status, hidden) = api.call("GET", &path, Some("t-wang"), None).await;
    let (missing_status, missing) = api
        .call("GET", "/api/v1/cases/999999", Some("t-wang"), None)
        .await;
    assert_eq!((status, missing_status), (404, 404));
    assert_eq!(
        hidden["error"]
            .as_str()
            .unwrap()
            .replace(&id.to_string(), "N"),
        missing["error"].as_str().unwrap().replace("999999", "N")
    );
    assert_eq!(
        api.act(id, "t-wang", json!({"action": "feedback"})).await.0,
        404
    );
    let (status, listed) = api.call("GET", "/api/v1/cases", Some("t-wang"), None).await;
    assert_eq!(
        (status, listed["cases"].as_array().unwrap().len()),
        (200, 0)
    );
    assert_eq!(api.call("GET", &path, Some("t-zhang"), None).await.0, 200);
    assert_eq!(
        api.act(id, "t-zhang", json!({"action": "register"}))
            .await
            .0,
        403,
        "workers do not register"
    );

    assert_eq!(
        api.act(
            id,
            "t-dispatch",
            json!({"action": "register", "note": "valid"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.act(id, "t-dispatch", json!({"action": "close"}))
            .await
            .0,
        409,
        "not verified yet"
    );
    assert_eq!(
        api.act(id, "t-dispatch", json!({"action": "dispatch"}))
            .await
            .0,
        200
    );
    // traffic says it is not theirs: returned, re-dispatched to sanitation
    let (s, body) = api
        .act(
            id,
            "t-traffic",
            json!({"action": "return", "note": "not parking"}),
        )
        .await;
    assert_eq!(
        (s, body["case"]["state"].as_str()),
        (200, Some("registered"))
    );
    assert_eq!(
        api.act(
            id,
            "t-dispatch",
            json!({"action": "dispatch", "department": "nobody"})
        )
        .await
        .0,
        422
    );
    assert_eq!(
        api.act(
            id,
            "t-dispatch",
            json!({"action": "dispatch", "department": "sanitation-pj"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.act(id, "t-traffic", json!({"action": "accept"}))
            .await
            .0,
        403,
        "no longer traffic's"
    );
    assert_eq!(
        api.act(id, "t-sanit", json!({"action": "accept"})).await.0,
        200
    );
    assert_eq!(
        api.act(
            id,
            "t-sanit",
            json!({"action": "feedback", "evidence": ["sha256:01"]})
        )
        .await
        .0,
        200
    );
    // the worker finds it not done: rework
    let (s, body) = api
        .act(id, "t-zhang", json!({"action": "verify", "passed": false}))
        .await;
    assert_eq!(
        (s, body["case"]["state"].as_str()),
        (200, Some("dispatched"))
    );
    assert_eq!(
        api.act(id, "t-sanit", json!({"action": "accept"})).await.0,
        200
    );
    assert_eq!(
        api.act(id, "t-sanit", json!({"action": "feedback"}))
            .await
            .0,
        200
    );
    assert_eq!(
        api.act(id, "t-zhang", json!({"action": "verify", "passed": true}))
            .await
            .0,
        200
    );
    let (s, body) = api.act(id, "t-dispatch", json!({"action": "close"})).await;
    assert_eq!((s, body["case"]["state"].as_str()), (200, Some("closed")));

    let (_, shown) = api.call("GET", &path, Some("t-admin"), None).await;
    let actions: Vec<&str> = shown["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "report",
            "register",
            "dispatch",
            "return",
            "dispatch",
            "accept",
            "feedback",
            "verify_failed",
            "accept",
            "feedback",
            "verify",
            "close"
        ]
    );
    assert_eq!(shown["case"]["reworks"], 1);
    assert_eq!(shown["case"]["returns"], 1);
    assert_eq!(shown["transitions"][3]["actor"]["subject"], "traffic-pj");

    let (s, csv) = api
        .call(
            "GET",
            &format!(
                "/api/v1/assessment?from_ms=0&to_ms={}&format=csv",
                FRIDAY_4PM + 86_400_000 * 30
            ),
            Some("t-dispatch"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        csv.as_str()
            .unwrap()
            .starts_with("dimension,key,registered"),
        "{csv}"
    );
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/assessment?from_ms=0&to_ms=1",
            Some("t-zhang"),
            None
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn an_overdue_case_escalates_and_the_street_department_then_sees_it() {
    let api = TestApi::spawn().await;
    let id = api.ingest(1, "0102"); // auto-dispatched to sanitation-pj, 4 working hours
    let path = format!("/api/v1/cases/{id}");
    assert_eq!(
        api.call("GET", &path, Some("t-sanit-street"), None).await.0,
        404,
        "not the street department's before it is escalated there"
    );
    let (_, shown) = api.call("GET", &path, Some("t-sanit"), None).await;
    let deadline = shown["case"]["deadline"].as_i64().unwrap();
    api.now.store(deadline + 1, Ordering::SeqCst);
    off_runtime(|| {
        api.svc
            .check_deadlines(Timestamp::from_unix_millis(deadline + 1))
    })
    .unwrap();
    let (s, shown) = api.call("GET", &path, Some("t-sanit-street"), None).await;
    assert_eq!(s, 200);
    assert_eq!(shown["case"]["escalations"], 1);
    assert_eq!(shown["case"]["department"], "sanitation-gusu");
    // the community department it was first dispatched to still sees it, but acts no more
    assert_eq!(api.call("GET", &path, Some("t-sanit"), None).await.0, 200);
    let (s, listed) = api
        .call("GET", "/api/v1/cases", Some("t-sanit"), None)
        .await;
    assert_eq!((s, listed["cases"][0]["id"].as_i64()), (200, Some(id)));
    assert_eq!(
        api.act(id, "t-sanit", json!({"action": "accept"})).await.0,
        403
    );
    assert_eq!(
        api.act(id, "t-sanit-street", json!({"action": "accept"}))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_digest_named_in_an_action_does_not_make_its_file_the_cases_evidence() {
    let api = TestApi::spawn().await;
    let id = api.ingest(1, "0102"); // auto-dispatched to sanitation-pj
    let elsewhere = "cd".repeat(32); // say, the picture of a case sanitation may not see
    assert_eq!(
        api.act(id, "t-sanit", json!({"action": "accept"})).await.0,
        200
    );
    let (s, _) = api
        .act(
            id,
            "t-sanit",
            json!({"action": "feedback", "evidence": [elsewhere]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = api
        .call(
            "GET",
            &format!("/api/v1/cases/{id}/evidence/{elsewhere}"),
            Some("t-zhang"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert!(
        body["error"].as_str().unwrap().contains("has no evidence"),
        "{body}"
    );
}

#[tokio::test]
async fn an_open311_post_creates_a_case_that_appears_in_open311_get() {
    let api = TestApi::spawn().await;
    let (s, services) = api
        .call("GET", "/open311/v2/services.json", None, None)
        .await;
    assert_eq!(s, 200);
    assert!(
        services
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["service_code"] == "0102")
    );
    let form = format!(
        "api_key={OPEN311_KEY}&service_code=0102&lat=31.281&long=120.581&description=rubbish+by+the+gate"
    );
    let req = hyper::Request::post(format!("{}/open311/v2/requests.json", api.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let resp = api.client.request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let rid = created[0]["service_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, list) = api
        .call("GET", "/open311/v2/requests.json", None, None)
        .await;
    assert_eq!(s, 200);
    let found = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service_request_id"] == rid.as_str())
        .expect("listed");
    assert_eq!(found["status"], "open");
    assert_eq!(found["description"], "rubbish by the gate");
    assert_eq!(found["agency_responsible"], "sanitation-pj");
    let (s, one) = api
        .call(
            "GET",
            &format!("/open311/v2/requests/{rid}.json"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, one[0]["service_request_id"].as_str()),
        (200, Some(rid.as_str()))
    );
    // the case is a real case: the worker of the cell sees it
    let (_, mine) = api
        .call("GET", "/api/v1/cases", Some("t-zhang"), None)
        .await;
    assert_eq!(mine["cases"][0]["source"], "open311");
    let (status, answer) = api
        .post_form(&format!(
            "api_key={OPEN311_KEY}&service_code=9999&lat=31.281&long=120.581"
        ))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer[0]["code"], 400,
        "the specification's error form: {answer}"
    );
}

impl TestApi {
    /// An Open311 POST (form-encoded) with the test client's key: the status and the answer.
    async fn post_report(&self, form: &str) -> (u16, Value) {
        self.post_form(&format!("api_key={OPEN311_KEY}&{form}"))
            .await
    }

    /// An Open311 POST of exactly `form`.
    async fn post_form(&self, form: &str) -> (u16, Value) {
        let req = hyper::Request::post(format!("{}/open311/v2/requests.json", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.to_owned())))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }
}

/// Reports sent at the same moment are each stored with a number of their own (the numbers
/// were read in one transaction and used in another, so two reports could get the same one and
/// the second was dropped as a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open311_reports_sent_at_once_are_each_stored_and_answerable() {
    let api = Arc::new(TestApi::spawn().await);
    let n = 48;
    let posts: Vec<_> = (0..n)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                // each 100 m from the others: a case each
                let lat = 31.2805 + f64::from(i % 6) * 0.0009;
                let lon = 120.5805 + f64::from(i / 6) * 0.0011;
                api.post_report(&format!(
                    "service_code=0102&lat={lat}&long={lon}&description=report+{i}"
                ))
                .await
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for post in posts {
        let (status, answer) = post.await.unwrap();
        assert_eq!(status, 201, "{answer}");
        ids.insert(answer[0]["service_request_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), n as usize, "every report its own id");
    for id in &ids {
        let (s, one) = api
            .call(
                "GET",
                &format!("/open311/v2/requests/{id}.json"),
                None,
                None,
            )
            .await;
        assert_eq!(s, 200, "{id}: {one}");
    }
    let (_, list) = api
        .call("GET", "/open311/v2/requests.json", None, None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), n as usize);
}

/// A report of something already reported joins that case: its description and contact stay
/// with the case (for the operators), its own number answers GET and names the case it joined,
/// and the contact is never shown in Open311 answers.
#[tokio::test]
async fn a_report_merged_into_a_case_keeps_its_words_and_its_own_answerable_number() {
    let api = TestApi::spawn().await;
    let (s, first) = api
        .post_report("service_code=0102&lat=31.281&long=120.581&description=rubbish+by+the+gate")
        .await;
    assert_eq!(s, 201);
    let first = first[0]["service_request_id"].as_str().unwrap().to_owned();
    let (s, second) = api
        .post_report(
            "service_code=0102&lat=31.28101&long=120.58101&description=still+there&email=li%40example.cn&first_name=Li&phone=13800000000",
        )
        .await;
    assert_eq!(s, 201);
    let second = second[0]["service_request_id"].as_str().unwrap().to_owned();
    assert_ne!(first, second);

    let (s, one) = api
        .call(
            "GET",
            &format!("/open311/v2/requests/{second}.json"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{one}");
    let (_, firsts) = api
        .call(
            "GET",
            &format!("/open311/v2/requests/{first}.json"),
            None,
            None,
        )
        .await;
    assert_eq!(one[0]["service_request_id"], second.as_str());
    assert_eq!(one[0]["description"], "still there");
    assert_eq!(
        one[0]["case_id"], firsts[0]["case_id"],
        "joined the first one's case"
    );
    let text = one.to_string();
    for private in ["li@example.cn", "13800000000", "Li\""] {
        assert!(!text.contains(private), "{private} shown in {text}");
    }
    let (_, list) = api
        .call("GET", "/open311/v2/requests.json", None, None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("13800000000"));

    // The operators see both reports' words and the contact on the one case.
    let case = one[0]["case_id"].as_str().unwrap();
    let (s, shown) = api
        .call(
            "GET",
            &format!("/api/v1/cases/{case}"),
            Some("t-admin"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let attrs: Vec<&Value> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event"]["attributes"])
        .collect();
    assert_eq!(attrs.len(), 2);
    assert_eq!(attrs[1]["description"], "still there");
    assert_eq!(attrs[1]["contact_email"], "li@example.cn");
    assert_eq!(attrs[1]["contact_phone"], "13800000000");
}

#[tokio::test]
async fn case_changes_stream_as_server_sent_events_to_those_who_may_see_them() {
    let api = TestApi::spawn().await;
    let req = hyper::Request::get(format!("{}/api/v1/changes", api.base))
        .header("authorization", "Bearer t-zhang")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = api.client.request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body();
    // the subscription exists once the response head is back
    let id = api.ingest(1, "0102");
    let mut seen = String::new();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
                if seen.contains("event: case") && seen.contains(&format!("\"id\":{id}")) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "{seen}");
}

/// What a webhook receiver of the tests saw: each request's headers and body.
type Seen = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Bytes)>>>;

/// A receiver at `/hook` that answers `answer()` and records what it got.
async fn webhook_receiver(
    answer: impl Fn() -> axum::http::StatusCode + Clone + Send + Sync + 'static,
) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let (s, answer) = (s.clone(), answer.clone());
            async move {
                s.lock().unwrap().push((headers, body));
                answer()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    (format!("http://{addr}/hook"), seen)
}

fn policy() -> webhooks::WebhookPolicy {
    webhooks::WebhookPolicy {
        max_attempts: 0,
        first_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(200),
    }
}

fn header<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The Standard Webhooks check a receiver makes: the signature over id, timestamp and body
/// (computed here on its own, from the specification), and a recent timestamp.
fn verify_standard_webhook(key: &[u8], headers: &axum::http::HeaderMap, body: &[u8]) {
    use base64::Engine as _;
    let id = header(headers, "webhook-id");
    let ts: i64 = header(headers, "webhook-timestamp").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 60, "stale timestamp {ts}");
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let expected =
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256::HMAC::mac(&signed, key));
    let given: Vec<&str> = header(headers, "webhook-signature").split(' ').collect();
    assert!(
        given.contains(&format!("v1,{expected}").as_str()),
        "signature {given:?} is not v1,{expected}"
    );
}

#[tokio::test]
async fn webhooks_are_signed_the_standard_way_and_retried_until_the_department_accepts() {
    let api = TestApi::spawn().await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    // the first delivery fails: the hub must retry, with the same id
    let (url, seen) = webhook_receiver(move || {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            axum::http::StatusCode::OK
        }
    })
    .await;
    let key = b"s3cret".to_vec();
    let targets = HashMap::from([(
        DepartmentId::parse("sanitation-pj").unwrap(),
        webhooks::WebhookTarget {
            url: url.parse().unwrap(),
            key: key.clone(),
        },
    )]);
    let stats = Arc::new(webhooks::WebhookStats::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(webhooks::run(
        api.svc.clone(),
        webhooks::client(None).unwrap(),
        targets,
        policy(),
        stats.clone(),
        cancel.clone(),
    ));
    // the worker starts at the newest change: wait until it has its cursor
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.ingest(1, "0102"); // created and auto-dispatched to sanitation-pj
    assert!(
        wait_until(Duration::from_secs(5), || stats
            .delivered_total
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    assert_eq!(stats.retries_total.load(Ordering::SeqCst), 1);
    assert_eq!(stats.attempts_total.load(Ordering::SeqCst), 2);
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(
        header(&got[0].0, "webhook-id"),
        header(&got[1].0, "webhook-id"),
        "a retry is the same message"
    );
    let (headers, body) = &got[1];
    verify_standard_webhook(&key, headers, body);
    let change: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(change["action"], "created");
    assert_eq!(
        header(headers, "webhook-id"),
        format!("change_{}", change["id"])
    );
    cancel.cancel();
    task.await.unwrap();
}

/// One department's endpoint is down: the other's changes still arrive at once. The hub stops
/// and starts again (a new service on the same database file): the waiting changes are
/// delivered then, each once and in order, and nothing is sent twice to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_delays_only_its_department_and_a_restart_loses_nothing() {
    use crate::helpers::service_with;
    use hub::db::Db;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = alive.clone();
    let (dead_url, dead_seen) = webhook_receiver(move || {
        if a.load(Ordering::SeqCst) {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        }
    })
    .await;
    let (ok_url, ok_seen) = webhook_receiver(|| axum::http::StatusCode::OK).await;
    let targets = || {
        HashMap::from([
            (
                DepartmentId::parse("sanitation-pj").unwrap(),
                webhooks::WebhookTarget {
                    url: dead_url.parse().unwrap(),
                    key: b"k1".to_vec(),
                },
            ),
            (
                DepartmentId::parse("traffic-pj").unwrap(),
                webhooks::WebhookTarget {
                    url: ok_url.parse().unwrap(),
                    key: b"k2".to_vec(),
                },
            ),
        ])
    };
    let start = |svc: Arc<CaseService>, stats: Arc<webhooks::WebhookStats>| {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(webhooks::run(
            svc,
            webhooks::client(None).unwrap(),
            targets(),
            policy(),
            stats,
            cancel.clone(),
        ));
        (cancel, task)
    };

    let svc = Arc::new(service_with(Db::open(&path).unwrap()));
    let stats = Arc::new(webhooks::WebhookStats::default());
    let (cancel, task) = start(svc.clone(), stats.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = Timestamp::from_unix_millis(FRIDAY_4PM);
    for i in 0..3u64 {
        // garbage (sanitation-pj, dead) and parking (traffic-pj, waits for review), 300 m apart
        let lat = 31.2805 + 0.0027 * i as f64;
        for (seq, code) in [(10 + i, "0102"), (20 + i, "0404")] {
            svc.ingest(&box_id(), &event(seq, code, lat, 120.5805, FRIDAY_4PM), at)
                .unwrap();
        }
    }
    assert!(
        wait_until(Duration::from_secs(5), || ok_seen.lock().unwrap().len()
            == 3)
        .await,
        "the live department's changes wait for the dead one's"
    );
    assert!(
        !dead_seen.lock().unwrap().is_empty(),
        "the dead one was tried"
    );
    assert_eq!(stats.failed_total.load(Ordering::SeqCst), 0);
    cancel.cancel();
    task.await.unwrap();
    drop(svc);

    alive.store(true, Ordering::SeqCst);
    let tried_before = dead_seen.lock().unwrap().len();
    let svc = Arc::new(service_with(Db::open(&path).unwrap()));
    let stats = Arc::new(webhooks::WebhookStats::default());
    let (cancel, task) = start(svc, stats.clone());
    assert!(
        wait_until(Duration::from_secs(5), || stats
            .delivered_total
            .load(Ordering::SeqCst)
            == 3)
        .await,
        "the waiting changes after the restart"
    );
    let delivered: Vec<String> = dead_seen.lock().unwrap()[tried_before..]
        .iter()
        .map(|(h, _)| header(h, "webhook-id").to_owned())
        .collect();
    let mut ids: Vec<i64> = delivered
        .iter()
        .map(|id| id.trim_start_matches("change_").parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{delivered:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 3);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ok_seen.lock().unwrap().len(), 3, "nothing sent twice");
    cancel.cancel();
    task.await.unwrap();
}

/// An `https://` webhook with the city's own CA (given as `ca_path`) is delivered; without the
/// CA the hub does not trust it.
#[tokio::test]
async fn a_webhook_over_https_is_delivered_with_the_configured_ca() {
    let api = TestApi::spawn().await;
    let (url, ca_pem, seen) = https_receiver().await;
    let stats = Arc::new(webhooks::WebhookStats::default());
    let cancel = CancellationToken::new();
    let targets = HashMap::from([(
        DepartmentId::parse("sanitation-pj").unwrap(),
        webhooks::WebhookTarget {
            url: url.parse().unwrap(),
            key: b"k".to_vec(),
        },
    )]);
    let task = tokio::spawn(webhooks::run(
        api.svc.clone(),
        webhooks::client(Some(ca_pem.as_bytes())).unwrap(),
        targets,
        policy(),
        stats.clone(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.ingest(1, "0102");
    assert!(
        wait_until(Duration::from_secs(5), || stats
            .delivered_total
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "{:?}",
        stats
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    cancel.cancel();
    task.await.unwrap();

    // the system's roots alone do not know the test CA: no delivery
    let untrusting = webhooks::client(None).unwrap();
    assert!(untrusting.post(&url).body("{}").send().await.is_err());
}

/// An HTTPS server (rustls, a certificate for 127.0.0.1 from a throwaway CA) answering 200 at
/// `/hook`: its URL, the CA's PEM, and how many requests it has had.
async fn https_receiver() -> (String, String, Arc<AtomicU32>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    s.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://{addr}/hook"), ca.pem(), seen)
}

#[tokio::test]
async fn the_openapi_document_lists_routes_that_answer() {
    let api = TestApi::spawn().await;
    let (s, doc) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in doc["paths"].as_object().unwrap().keys() {
        if path == "/api/v1/changes" {
            continue; // a stream: covered by its own test
        }
        let concrete = path
            .replace("{id}", "1")
            .replace("{sha256}", &"ab".repeat(32));
        let (status, _) = api.call("GET", &concrete, Some("t-admin"), None).await;
        if path.ends_with("/actions") || path.ends_with("/recheck") {
            assert_eq!(status, 405, "{path} is POST only");
        } else {
            assert!(
                status == 200 || status == 404 || status == 422,
                "{path}: {status}"
            );
        }
    }
}

#[tokio::test]
async fn the_console_gets_its_bootstrap_the_grid_and_only_the_actions_the_role_may_take() {
    let api = TestApi::spawn().await;
    let (s, boot) = api
        .call("GET", "/api/v1/console", Some("t-zhang"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(boot["me"]["role"], "worker");
    assert!(boot["categories"].as_array().unwrap().len() > 10);
    assert_eq!(api.call("GET", "/api/v1/console", None, None).await.0, 401);

    let (s, grid) = api.call("GET", "/api/v1/grid", Some("t-zhang"), None).await;
    assert_eq!(s, 200);
    let cells = grid["features"].as_array().unwrap();
    assert_eq!(cells.len(), 32);
    assert_eq!(cells[0]["geometry"]["type"], "MultiPolygon");
    assert!(cells[0]["properties"]["community"]["name"].is_string());

    // Reported, waiting for review: the dispatcher may register or reject, nobody else acts.
    let id = api.ingest(1, "0404");
    let path = format!("/api/v1/cases/{id}");
    let (_, desk) = api.call("GET", &path, Some("t-dispatch"), None).await;
    assert_eq!(desk["allowed_actions"], json!(["register", "reject"]));
    assert_eq!(desk["events"].as_array().unwrap().len(), 1);
    let (_, worker) = api.call("GET", &path, Some("t-zhang"), None).await;
    assert_eq!(worker["allowed_actions"], json!([]));
    // Each offered action is one the API then accepts.
    assert_eq!(
        api.act(id, "t-dispatch", json!({"action": "register"}))
            .await
            .0,
        200
    );
    let (_, desk) = api.call("GET", &path, Some("t-dispatch"), None).await;
    assert_eq!(desk["allowed_actions"], json!(["dispatch"]));

    // Evidence of another cell's case answers as if the case did not exist; evidence the case
    // does not name is not served.
    let evidence = format!("{path}/evidence/{}", "ab".repeat(32));
    assert_eq!(
        api.call("GET", &evidence, Some("t-wang"), None).await.0,
        404
    );
    assert_eq!(
        api.call("GET", &evidence, Some("t-zhang"), None).await.0,
        404
    );
    assert_eq!(
        api.call("GET", &format!("{path}/evidence/zz"), Some("t-zhang"), None)
            .await
            .0,
        422
    );
    // The fleet is for the desk, and empty without an ingest.
    assert_eq!(
        api.call("GET", "/api/v1/fleet", Some("t-zhang"), None)
            .await
            .0,
        403
    );
    let (s, fleet) = api
        .call("GET", "/api/v1/fleet", Some("t-dispatch"), None)
        .await;
    assert_eq!((s, fleet), (200, json!({"boxes": []})));
}

#[tokio::test]
async fn the_case_list_pages_by_cursor_and_narrows_by_role_and_state() {
    let api = TestApi::spawn().await;
    let grid = sample_grid();
    let wang_cell = grid
        .cells()
        .iter()
        .find(|c| c.worker.as_str() == "w-wang")
        .unwrap();
    let (mut zhang, mut wang) = (Vec::new(), Vec::new());
    for k in 0..5u64 {
        // 11 minutes apart, beyond the merge window: each event is its own case
        let at = FRIDAY_4PM + k as i64 * 11 * 60_000;
        zhang.push(api.ingest_at(2 * k + 1, "0404", (31.281, 120.581), at));
        wang.push(api.ingest_at(2 * k + 2, "0404", cell_centre(wang_cell), at));
    }
    let mut all: Vec<i64> = zhang.iter().chain(&wang).copied().collect();
    all.sort_unstable();

    let pages = api.pages("t-dispatch", "limit=3").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
    assert_eq!(pages.concat(), all, "every case once, oldest first");

    // a worker's pages are narrowed in the query, so they are full and hold only theirs
    let pages = api.pages("t-wang", "limit=2").await;
    assert_eq!(pages, [&wang[0..2], &wang[2..4], &wang[4..5]]);

    assert_eq!(
        api.act(zhang[2], "t-dispatch", json!({"action": "register"}))
            .await
            .0,
        200
    );
    assert_eq!(
        api.pages("t-dispatch", "state=registered").await,
        [[zhang[2]]]
    );
    assert_eq!(
        api.pages("t-dispatch", "state=reported,%20registered&limit=1000")
            .await
            .concat(),
        all
    );
    assert_eq!(
        api.pages("t-zhang", "state=reported").await.concat(),
        [zhang[0], zhang[1], zhang[3], zhang[4]]
    );

    for (query, names) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("state=open", "state"),
        ("page=2", "page"),
        ("after=x", "after"),
    ] {
        let (status, body) = api
            .call(
                "GET",
                &format!("/api/v1/cases?{query}"),
                Some("t-admin"),
                None,
            )
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body.to_string().contains(names), "{query}: {body}");
    }
}

/// Open311 POST is for the hub's client applications (their api_key), at a bounded rate per
/// key and per address; a description too long, a point outside the grid or an unknown service
/// is refused; every refusal is in the specification's form.
#[tokio::test]
async fn open311_posts_need_a_client_key_a_sane_rate_and_sane_input() {
    let mut section = open311_section();
    section.posts_per_min_per_address = 3;
    let api = TestApi::spawn_with(&section).await;
    let ok = "service_code=0102&lat=31.281&long=120.581&description=x";
    let spec_error = |(status, answer): (u16, Value), code: u16| {
        assert_eq!(status, code, "{answer}");
        assert_eq!(answer[0]["code"], code, "{answer}");
        assert!(
            answer[0]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    };
    spec_error(api.post_form(ok).await, 403);
    spec_error(api.post_form(&format!("api_key=guess&{ok}")).await, 403);
    let long = "x".repeat(4001);
    spec_error(
        api.post_report(&format!(
            "service_code=0102&lat=31.281&long=120.581&description={long}"
        ))
        .await,
        400,
    );
    // Beijing: not this hub's city
    spec_error(
        api.post_report("service_code=0102&lat=39.9042&long=116.4074")
            .await,
        400,
    );
    spec_error(
        api.post_report("service_code=0102&lat=NaN&long=120.581")
            .await,
        400,
    );
    // the address's three a minute (the refusals above counted too, after the key check)
    let (status, _) = api.post_report(ok).await;
    assert_eq!(status, 429, "the fourth from this address in a minute");
    let (_, list) = api
        .call("GET", "/open311/v2/requests.json", None, None)
        .await;
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "nothing refused was stored"
    );
}

/// A citizen's report waits for an operator to accept it before it is dispatched (moderation),
/// unless its category is configured to go straight through.
#[tokio::test]
async fn a_citizen_report_waits_for_an_operator_unless_its_category_is_unmoderated() {
    let mut section = open311_section();
    section.moderation = true;
    let api = TestApi::spawn_with(&section).await;
    let (s, r) = api
        .post_report("service_code=0102&lat=31.281&long=120.581&description=rubbish")
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r[0]["service_request_id"].as_str().unwrap().to_owned();
    let (_, one) = api
        .call(
            "GET",
            &format!("/open311/v2/requests/{id}.json"),
            None,
            None,
        )
        .await;
    assert_eq!(
        one[0]["status_notes"], "reported",
        "held for an operator: {one}"
    );
    let case = one[0]["case_id"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/cases/{case}/actions"),
            Some("t-dispatch"),
            Some(json!({"action": "register"})),
        )
        .await;
    assert_eq!(s, 200);

    section.unmoderated_categories = vec!["0102".into()];
    let api = TestApi::spawn_with(&section).await;
    let (_, r) = api
        .post_report("service_code=0102&lat=31.281&long=120.581&description=rubbish")
        .await;
    let id = r[0]["service_request_id"].as_str().unwrap().to_owned();
    let (_, one) = api
        .call(
            "GET",
            &format!("/open311/v2/requests/{id}.json"),
            None,
            None,
        )
        .await;
    assert_eq!(one[0]["status_notes"], "dispatched", "{one}");
}
