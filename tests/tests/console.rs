//! The hub's operator console in a real headless Chromium, against a real hub (`hub::serve::run`
//! with its QUIC ingest) fed by a real enrolled box store and uplink: sign in, the sample city's
//! cells on the map, a case raised by an ingested event appearing without a reload, the loop
//! register → dispatch → accept → feedback → verify → close by the roles allowed to, a grid
//! worker of another cell kept out, the fleet page — and not one request off 127.0.0.1.
//!
//! Screenshots land in `target/test-artifacts/browser/console/`.

// Harness code unwraps: a panic there is a broken fixture, which the test should report.
#![allow(clippy::unwrap_used)]

mod hub_support;

use std::path::Path;
use std::time::Duration;

use e2e::browser::Browser;
use edge_agent::store::{EvidenceFile, Store, StoreOptions};
use edge_agent::uplink::{Uplink, UplinkConfig};
use hub::grid::{Grid, ImportOptions};
use hub_support::{RunningHub, now};
use protocol::{Crs, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(15);

const TOKENS: [(&str, &str, &str); 4] = [
    ("t-desk", "dispatcher", "desk-1"),
    ("t-traffic", "department", "traffic-pj"),
    // the worker of the case's cell and of another cell are filled in from the grid
    ("t-own-worker", "worker", ""),
    ("t-other-worker", "worker", ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_follows_an_ingested_case_around_the_loop_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    hub::registry::admin::init(
        data,
        "console test hub",
        "127.0.0.1:0".parse().unwrap(),
        now(),
    )
    .unwrap();
    let grid = Grid::from_geojson(
        &std::fs::read_to_string(data.join("grid.geojson")).unwrap(),
        &ImportOptions::default(),
        &mut |_, _| {},
    )
    .unwrap()
    .0;
    let cell = &grid.cells()[5];
    let other = grid
        .cells()
        .iter()
        .find(|c| c.worker != cell.worker)
        .unwrap();
    let (lat, lon) = (
        (cell.shape.min[1] + cell.shape.max[1]) / 2.0,
        (cell.shape.min[0] + cell.shape.max[0]) / 2.0,
    );
    let hub = start_hub(data, cell.worker.as_str(), other.worker.as_str()).await;
    let base = format!("http://{}", hub.api);

    let browser = Browser::launch("console").await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();

    // Sign in as the dispatcher desk; the map draws every cell of the sample city.
    sign_in(&browser, "t-desk").await;
    browser
        .wait_for(
            "the 32 cells on the map",
            T,
            "document.querySelectorAll('#map path.cell').length === 32",
        )
        .await
        .unwrap();
    let who = browser.text("#who", T).await.unwrap();
    assert!(who.contains("调度员") && who.contains("desk-1"), "{who}");
    browser
        .eval("window.__notReloaded = true; return null;", vec![])
        .await
        .unwrap();

    // A box enrolls and delivers an illegal-parking event (reviewed, not auto-dispatched) with
    // a photo; the case appears in the queue and on the map without a reload.
    let edge = Edge::enroll(&hub, data, "box-0001").await;
    let photo = std::fs::read(e2e::media::media("chelsea.png").unwrap()).unwrap();
    let evidence = EvidenceFile::new(photo, "image/png");
    let mut event = camera_event(lat, lon);
    event.evidence = vec![evidence.reference.clone()];
    edge.store.submit(event, vec![evidence]).unwrap();

    let row = "#queue tr[data-case-id]";
    browser
        .wait_for(
            "the ingested case in the queue",
            T,
            &format!("document.querySelector('{row}')"),
        )
        .await
        .unwrap();
    let case_id: i64 = browser
        .eval(
            &format!("return Number(document.querySelector('{row}').dataset.caseId);"),
            vec![],
        )
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert_eq!(
        browser
            .eval("return window.__notReloaded === true;", vec![])
            .await
            .unwrap(),
        true,
        "the page reloaded"
    );
    let queue = browser.text("#queue tbody", T).await.unwrap();
    assert!(
        queue.contains("机动车乱停放") && queue.contains("待立案"),
        "{queue}"
    );
    browser
        .wait_for(
            "the case's cell coloured and its marker drawn",
            T,
            &format!(
                "document.querySelector('#map path.cell[data-cell=\"{}\"][data-open=\"1\"]') && \
                 document.querySelector('#map path.case-marker[data-case-id=\"{case_id}\"]')",
                cell.code
            ),
        )
        .await
        .unwrap();
    look(&browser, "map-with-live-case").await;

    // Open it: the evidence photo arrives from the box, the timeline starts with the report.
    browser
        .click(&format!("{row}[data-case-id=\"{case_id}\"]"), T)
        .await
        .unwrap();
    state_is(&browser, "待立案").await;
    browser
        .wait_for(
            "the evidence photo",
            T,
            "document.querySelector('.evidence .before img')",
        )
        .await
        .unwrap();
    act(&browser, "register", "待派遣").await;
    browser
        .eval(
            "document.getElementById('dispatch-department').value = 'traffic-pj'; return null;",
            vec![],
        )
        .await
        .unwrap();
    act(&browser, "dispatch", "已派遣").await;

    // The department accepts and reports it handled; the worker of another cell sees nothing.
    sign_out_and_in(&browser, "t-traffic").await;
    open_case(&browser, &base, case_id).await;
    act(&browser, "accept", "处置中").await;
    browser
        .type_into("#action-note", "车辆已拖离", T)
        .await
        .unwrap();
    act(&browser, "feedback", "待核查").await;

    sign_out_and_in(&browser, "t-other-worker").await;
    browser
        .wait_for(
            "the queue to load",
            T,
            "document.querySelector('#queue tbody tr')",
        )
        .await
        .unwrap();
    assert_eq!(
        browser
            .eval(
                "return document.querySelectorAll('#queue tr[data-case-id]').length;",
                vec![]
            )
            .await
            .unwrap(),
        0,
        "a worker of another cell sees the case in the queue"
    );
    browser
        .goto(&format!("{base}/#/case/{case_id}"))
        .await
        .unwrap();
    // not theirs: to them it does not exist at all
    let refused = browser.text("#case-error", T).await.unwrap();
    assert!(
        refused.contains(&format!("case {case_id} does not exist")),
        "{refused}"
    );

    // After the feedback the hub asked the box's camera to look again; this box runs no camera
    // pipeline, so the case says a person must verify. The dispatcher does, and closes it; the
    // timeline holds every step.
    sign_out_and_in(&browser, "t-desk").await;
    open_case(&browser, &base, case_id).await;
    browser
        .wait_for(
            "the note that the camera could not re-check",
            T,
            "document.querySelector('#timeline li[data-action=\"recheck_unavailable\"]')",
        )
        .await
        .unwrap();
    act(&browser, "verify", "待结案").await;
    act(&browser, "close", "已结案").await;
    let steps: Vec<String> = serde_json::from_value(
        browser
            .eval(
                "return [...document.querySelectorAll('#timeline li')].map(li => li.dataset.action);",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        steps,
        [
            "report",
            "register",
            "dispatch",
            "accept",
            "feedback",
            "recheck_unavailable",
            "verify",
            "close"
        ]
    );
    look(&browser, "case-closed").await;

    // The fleet page shows the box, connected, with its health report.
    browser.goto(&format!("{base}/#/fleet")).await.unwrap();
    browser
        .wait_for(
            "the box with a health report",
            T,
            "document.querySelector('#fleet tr[data-box=\"box-0001\"]') && \
             !document.querySelector('#fleet tr[data-box=\"box-0001\"]').textContent.includes('尚无健康报告')",
        )
        .await
        .unwrap();
    look(&browser, "fleet").await;

    // The assessment counts the closed case for its street, with a chart.
    browser.goto(&format!("{base}/#/assessment")).await.unwrap();
    browser
        .wait_for(
            "the assessment table and chart",
            T,
            "document.querySelector('#assessment tbody tr') && document.querySelector('svg.chart rect')",
        )
        .await
        .unwrap();
    look(&browser, "assessment").await;

    // English labels too.
    browser.click("#lang-toggle", T).await.unwrap();
    browser.goto(&format!("{base}/#/cases")).await.unwrap();
    browser
        .wait_for(
            "English labels",
            T,
            "document.querySelector('#nav a').textContent === 'Cases'",
        )
        .await
        .unwrap();
    browser
        .wait_for(
            "the map",
            T,
            "document.querySelectorAll('#map path.cell').length === 32",
        )
        .await
        .unwrap();
    look(&browser, "map-english").await;

    let checked = browser.assert_offline().await.unwrap();
    assert!(checked > 10, "only {checked} requests were seen");
    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.quit().await;
    edge.stop().await;
    hub.stop().await;
}

/// The hub of `hub init` in `data`, on 127.0.0.1:0, with the test's tokens.
async fn start_hub(data: &Path, own_worker: &str, other_worker: &str) -> RunningHub {
    let tokens: Vec<(&str, &str, &str)> = TOKENS
        .iter()
        .map(|&(token, role, subject)| match token {
            "t-own-worker" => (token, role, own_worker),
            "t-other-worker" => (token, role, other_worker),
            _ => (token, role, subject),
        })
        .collect();
    RunningHub::start(data, &tokens).await
}

/// An enrolled box: its store and a running uplink to the hub.
struct Edge {
    store: Store,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Edge {
    async fn enroll(hub: &RunningHub, hub_data: &Path, id: &str) -> Edge {
        let tls = tempfile::tempdir().unwrap();
        hub.enroll(hub_data, id, tls.path()).await;
        let ingest = hub.ingest;
        let data = tempfile::tempdir().unwrap();
        let location = Location {
            lat: 31.3,
            lon: 120.6,
            crs: Crs::Wgs84,
        };
        let store = Store::open(StoreOptions::new(data.path(), location)).unwrap();
        let mut config = UplinkConfig::new(ingest.to_string(), tls.path());
        config.poll_interval_ms = 20;
        config.backoff_initial_ms = 50;
        config.health_interval_secs = 1;
        let uplink = Uplink::from_config(&config, store.clone());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move { uplink.run(c).await.unwrap() });
        Edge {
            store,
            cancel,
            task,
            _dirs: (tls, data),
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("uplink stops")
            .unwrap();
    }
}

fn camera_event(lat: f64, lon: f64) -> Event {
    let at = now();
    Event {
        id: EventId::v7(at.as_unix_millis() as u64, [7; 10]),
        seq: Seq(0),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-north").unwrap(),
        },
        category: protocol::Catalog::embedded()
            .resolve("street_order.illegal_parking")
            .unwrap()
            .code
            .clone(),
        severity: Severity::Medium,
        observed_at: at,
        location: Location {
            lat,
            lon,
            crs: Crs::Wgs84,
        },
        grid: None,
        attributes: Default::default(),
        evidence: vec![],
    }
}

async fn sign_in(browser: &Browser, token: &str) {
    browser.type_into("#token", token, T).await.unwrap();
    browser.click("#signin-btn", T).await.unwrap();
    browser
        .wait_for(
            "the signed-in console",
            T,
            "document.body.dataset.ready === 'cases'",
        )
        .await
        .unwrap();
}

async fn sign_out_and_in(browser: &Browser, token: &str) {
    browser.click("#signout", T).await.unwrap();
    browser
        .wait_for(
            "the sign-in form",
            T,
            "document.body.dataset.ready === 'signin'",
        )
        .await
        .unwrap();
    sign_in(browser, token).await;
}

async fn open_case(browser: &Browser, base: &str, id: i64) {
    browser.goto(&format!("{base}/#/case/{id}")).await.unwrap();
    browser
        .wait_for("the case page", T, "document.getElementById('case-state')")
        .await
        .unwrap();
}

async fn state_is(browser: &Browser, label: &str) {
    browser
        .wait_for(
            &format!("the case to be {label}"),
            T,
            &format!("document.getElementById('case-state')?.textContent === '{label}'"),
        )
        .await
        .unwrap();
}

/// Clicks an action's button and waits for the state it leads to.
async fn act(browser: &Browser, action: &str, then: &str) {
    browser
        .click(&format!("#actions button[data-action=\"{action}\"]"), T)
        .await
        .unwrap();
    state_is(browser, then).await;
    let error = browser
        .eval(
            "return document.getElementById('action-error')?.textContent || '';",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(error, "", "{action} failed");
}

/// Saves a screenshot to look at.
async fn look(browser: &Browser, name: &str) {
    let path = browser.screenshot(name).await.unwrap();
    eprintln!("screenshot: {}", path.display());
}
