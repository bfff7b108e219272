//! The closed loop with a real camera: a parked motorcycle streamed over RTSP raises an
//! illegal-parking event on a real agent (GStreamer, COCO-SSD), which syncs over QUIC to a real
//! hub (`hub::serve::run`) where it becomes a case. People register, dispatch, accept and report
//! it handled through the REST API; the hub then asks the camera to look again by itself, and
//! the box's answer — the motorcycle is still there — fails the verification and sends the case
//! back to the department, with the "after" picture in the audit trail.

// Harness code unwraps: a panic there is a broken fixture, which the test should report.
#![allow(clippy::unwrap_used)]

mod hub_support;

use std::time::Duration;

use hub_support::RunningHub;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKENS: [(&str, &str, &str); 2] = [
    ("t-desk", "dispatcher", "desk-1"),
    ("t-traffic", "department", "traffic-pj"),
];

/// Non-motor vehicles parked where they must not be: reviewed by a person, then the street's
/// traffic squad.
const DUTIES: &str = "\
category,community_department,street_department,district_department,time_limit,registration
street_order.illegal_nonmotor_parking,traffic-pj,traffic-gusu,city-management,1d,review
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_on_a_camera_case_brings_a_recheck_whose_answer_decides_verification() {
    let camera = e2e::media::motorcycle_camera(25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("duties.csv"), DUTIES).unwrap();
    let hub = RunningHub::start(&data, &TOKENS).await;
    let paths = hub.enroll(&data, "box-kerb", &dir.path().join("tls")).await;

    // The box stands in cell 32050800100101 of the sample city; the zone surrounds the
    // motorcycle (COCO-SSD finds it at (91,53)-(694,461) of 741x500).
    let box_data = dir.path().join("box");
    let config = edge_agent::config::Config::from_toml_str(
        &format!(
            r#"[site]
lat = 31.281
lon = 120.581

[store]
data_dir = "{data}"

{camera}

[uplink]
hub_addr = "{hub}"
ca_path = "{ca}"
cert_path = "{cert}"
key_path = "{key}"
"#,
            data = box_data.display(),
            camera = e2e::media::kerb_camera_toml(&camera.url(), 2, 1),
            hub = hub.ingest,
            ca = paths.ca_path.display(),
            cert = paths.cert_path.display(),
            key = paths.key_path.display(),
        ),
        "test",
    )
    .unwrap();
    let agent = edge_agent::agent::Agent::start(config, CancellationToken::new())
        .await
        .unwrap();

    // The camera's event becomes a case waiting for review.
    let h = &hub;
    let case_id = e2e::wait_for(
        Duration::from_secs(60),
        "the camera's case",
        || async move {
            let (status, body) = h.call("GET", "/api/v1/cases", "t-desk", None).await;
            assert_eq!(status, 200, "{body}");
            body["cases"].as_array().unwrap().first()?["id"].as_i64()
        },
    )
    .await
    .unwrap();
    let case_path = format!("/api/v1/cases/{case_id}");
    let path = case_path.as_str();
    let act = |token: &'static str, action: Value| async move {
        let (status, body) = h
            .call("POST", &format!("{path}/actions"), token, Some(action))
            .await;
        assert_eq!(status, 200, "{body}");
        body["case"]["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        act("t-desk", json!({"action": "register"})).await,
        "registered"
    );
    assert_eq!(
        act("t-desk", json!({"action": "dispatch"})).await,
        "dispatched"
    );
    assert_eq!(
        act("t-traffic", json!({"action": "accept"})).await,
        "handling"
    );
    assert_eq!(
        act(
            "t-traffic",
            json!({"action": "feedback", "note": "owner asked to move it"})
        )
        .await,
        "handled"
    );

    // Nobody verifies: the hub asks the camera, which still sees the motorcycle.
    let shown = e2e::wait_for(
        Duration::from_secs(60),
        "the re-check's verdict",
        || async move {
            let (status, body) = h.call("GET", path, "t-desk", None).await;
            assert_eq!(status, 200, "{body}");
            (body["case"]["state"] == "dispatched").then_some(body)
        },
    )
    .await
    .unwrap();
    assert_eq!(shown["case"]["reworks"], 1, "{shown}");
    let transitions = shown["transitions"].as_array().unwrap();
    let after_feedback: Vec<&Value> = transitions
        .iter()
        .skip_while(|t| t["action"] != "feedback")
        .skip(1)
        .collect();
    let find = |action: &str| {
        after_feedback
            .iter()
            .find(|t| t["action"] == action)
            .unwrap_or_else(|| panic!("no {action} after the feedback: {shown}"))
    };
    let verdict = find("verify_failed");
    assert_eq!(verdict["actor"]["role"], "system", "{verdict}");
    assert!(
        verdict["note"].as_str().unwrap().contains("1 matching"),
        "{verdict}"
    );
    let picture = find("recheck_evidence")["evidence"][0]
        .as_str()
        .unwrap()
        .to_owned();
    // the "after" picture reaches the hub by the box's durable path
    let evidence = format!("{path}/evidence/{picture}");
    let evidence = evidence.as_str();
    e2e::wait_for(
        Duration::from_secs(30),
        "the after picture",
        || async move {
            let (status, _) = h.call("GET", evidence, "t-desk", None).await;
            (status == 200).then_some(())
        },
    )
    .await
    .unwrap();

    agent.shutdown().await;
    hub.stop().await;
    drop(camera);
}
