//! The whole agent, in-process and as the `edge-agent run` binary: sensor messages through a
//! real mosquitto become durable events in the real SQLite store, and shutdown drains in order.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::mosquitto::Mosquitto;
use edge_agent::agent::Agent;
use edge_agent::config::Config;
use hardware::sim::Zigbee2MqttDevice;
use hardware::sim::publisher::Publisher;
use protocol::{AttrValue, SourceKind};
use tokio_util::sync::CancellationToken;

use e2e::WAIT;

fn config_text(port: u16, data_dir: &std::path::Path) -> String {
    format!(
        r#"
        {site}
        grid = "32050800100101"

        [store]
        data_dir = "{}"

        [mqtt]
        port = {port}
        client_id = "agent-e2e"
        reconnect_min_ms = 50

        [[sensors]]
        id = "leak-301"
        device = "kitchen_leak_301"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "leak"
        kind = "state"
        quantity = "water_leak"
        category = "other.water_leak"

        [[sensors]]
        id = "smoke-2"
        device = "smoke_stairwell_2"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "fire"
        kind = "state"
        quantity = "smoke"
        category = "emergency.fire"
        "#,
        data_dir.display(),
        site = e2e::site_toml()
    )
}

async fn wait_for_events(agent: &Agent, n: u64) {
    let store = agent.store();
    e2e::wait_until(WAIT, &format!("{n} events stored"), || {
        (store.stats().unwrap().last_seq >= n).then_some(())
    })
    .await
    .unwrap();
}

async fn wait_subscribed(agent: &Agent) {
    let stats = agent.sensor_stats().expect("sensors configured");
    e2e::wait_until(WAIT, "the agent's subscription", || {
        (stats.lock().unwrap().link.subscribed > 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_messages_become_durable_events_with_gap_free_sequence_numbers() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(&config_text(broker.port(), dir.path()), "test").unwrap();
    let agent = Agent::start(config, CancellationToken::new())
        .await
        .unwrap();
    wait_subscribed(&agent).await;

    let publisher = Publisher::connect("devices", "127.0.0.1", broker.port());
    let leak = Zigbee2MqttDevice::new("kitchen_leak_301");
    let smoke = Zigbee2MqttDevice::new("smoke_stairwell_2");
    for msg in [
        leak.water_leak(true),
        leak.water_leak(true),
        smoke.smoke(true),
    ] {
        publisher.publish(&msg, WAIT).unwrap();
    }
    wait_for_events(&agent, 2).await;
    let events = agent.store().pending(10).unwrap();
    assert_eq!(
        events.len(),
        2,
        "the repeated leak report is latched by its rule"
    );
    assert_eq!(
        events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let leak_event = &events[0];
    assert_eq!(leak_event.category.as_str(), "0602");
    assert_eq!(
        (leak_event.source.kind, leak_event.source.id.as_str()),
        (SourceKind::Sensor, "leak-301")
    );
    assert_eq!(leak_event.grid.as_ref().unwrap().as_str(), "32050800100101");
    assert_eq!(
        leak_event.attributes["device"],
        AttrValue::Text("kitchen_leak_301".into())
    );
    assert_eq!(events[1].category.as_str(), "0506");
    agent.shutdown().await;

    // The events are durable: a new store on the same folder sees them.
    let dir_path = dir.path().to_owned();
    let config = Config::from_toml_str(&config_text(broker.port(), &dir_path), "test").unwrap();
    let again = Agent::start(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again.store().stats().unwrap().last_seq, 2);
    again.shutdown().await;
}

#[test]
fn the_agent_binary_runs_until_sigterm_and_exits_cleanly() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-agent.toml");
    std::fs::write(
        &config,
        config_text(broker.port(), &dir.path().join("data")),
    )
    .unwrap();
    let mut child = Command::new(e2e::binary("edge-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent announces itself on its availability topic once connected.
    let deadline = Instant::now() + WAIT;
    while !dir.path().join("data/events.db").exists() {
        assert!(Instant::now() < deadline, "agent did not open its store");
        assert!(child.try_wait().unwrap().is_none(), "agent exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent stopped"));
}

#[test]
fn a_config_with_problems_is_refused_naming_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[site]\nlat = 95.0\nlon = 120.0\n[store]\ndata_dir = \"relative\"\n[[sensors]]\nid = \"s\"\ndevice = \"d\"\nprofile = { kind = \"tasmota\" }\n[[sensors.rules]]\nname = \"r\"\nkind = \"state\"\nquantity = \"smoke\"\ncategory = \"nope\"\n",
    )
    .unwrap();
    let out = Command::new(e2e::binary("edge-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["site.lat", "store.data_dir", "sensors[0].rules[0].category"] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

/// Build, then run: a stage that cannot be built (here the cameras' model) fails the start
/// before anything is spawned, so the sensors configured beside it are not left running.
#[test]
fn a_stage_that_cannot_be_built_leaves_nothing_running() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A broker port nobody listens on: the sensor stage, once running, keeps retrying.
    let port = e2e::mosquitto::free_port().unwrap();
    let text = format!(
        "{}\n[detector]\nmodel = \"{}\"\n\n[[cameras]]\nid = \"cam\"\nsource = {{ kind = \"rtsp\", url = \"rtsp://127.0.0.1:1/none\" }}\n",
        config_text(port, dir.path()),
        dir.path().join("no-such-model.onnx").display()
    );
    let config = Config::from_toml_str(&text, "test").unwrap();
    runtime.block_on(async {
        let before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let started = Agent::start(config, CancellationToken::new()).await;
        assert!(started.is_err(), "the model does not exist");
        let after = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(after, before, "tasks left running after a failed start");
    });
}
