//! Sensors end to end: a real mosquitto, simulated zigbee2mqtt and Tasmota devices publishing
//! real payload shapes, and the agent's sensor stage turning them into observations.
//!
//! Each scenario ends with a marker message whose observation is awaited: MQTT delivers one
//! subscription's messages in order, so once the marker's observation is in, every earlier
//! message has been handled and "no other observation" is a real assertion.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use std::time::{Duration, Instant};

use e2e::mosquitto::Mosquitto;
use edge_agent::events::Observation;
use edge_agent::sensors::{SensorStage, SensorStats, SensorsConfig};
use hardware::sim::publisher::Publisher;
use hardware::sim::{SimMessage, TasmotaDevice, Zigbee2MqttDevice};
use protocol::{Crs, Location};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use e2e::WAIT;

struct Harness {
    broker: Mosquitto,
    publisher: Publisher,
    observations: mpsc::Receiver<Observation>,
    stats: std::sync::Arc<std::sync::Mutex<SensorStats>>,
    cancel: CancellationToken,
    stage: tokio::task::JoinHandle<()>,
}

fn sensors_toml(port: u16) -> String {
    format!(
        r#"
        [mqtt]
        port = {port}
        client_id = "agent-under-test"
        reconnect_min_ms = 50
        reconnect_max_ms = 500

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
        id = "drain-7"
        device = "drain_7"
        profile = {{ kind = "tasmota" }}
        [[sensors.rules]]
        name = "flooding"
        kind = "threshold"
        quantity = "distance"
        below = 20.0
        hysteresis = 5.0
        category = "emergency.road_flooding"

        [[sensors]]
        id = "door-301"
        device = "door_elderly_301"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "welfare"
        kind = "inactivity"
        quantity = "contact"
        active_value = false
        limit_secs = 2
        category = "other.welfare_check"

        [[sensors]]
        id = "hall-th"
        device = "hall_climate"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "offline"
        kind = "offline"
        expected_interval_secs = 1
        factor = 2.0
        category = "device.sensor_offline"

        [[sensors]]
        id = "smoke-2"
        device = "smoke_stairwell_2"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "fire"
        kind = "state"
        quantity = "smoke"
        category = "emergency.fire"
        [[sensors.rules]]
        name = "battery"
        kind = "low_battery"
        below_percent = 15.0
        category = "device.sensor_low_battery"
        "#
    )
}

impl Harness {
    async fn start() -> Harness {
        let broker = Mosquitto::start().expect("mosquitto starts");
        let cfg: SensorsConfig = toml::from_str(&sensors_toml(broker.port())).unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        let site = Location {
            lat: 39.9,
            lon: 116.4,
            crs: Crs::Wgs84,
        };
        let stage = SensorStage::from_config(&cfg, site, None).unwrap();
        let stats = stage.stats();
        let (tx, observations) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let stage = tokio::spawn(stage.run(tx, cancel.clone()));
        let publisher = Publisher::connect("simulated-devices", "127.0.0.1", broker.port());
        let h = Harness {
            broker,
            publisher,
            observations,
            stats,
            cancel,
            stage,
        };
        h.wait_subscribed(1).await;
        h
    }

    /// Waits until the stage's `n`th connection has all its subscriptions acknowledged.
    async fn wait_subscribed(&self, n: u64) {
        e2e::wait_until(
            WAIT,
            &format!("the stage's subscription (connection {n})"),
            || (self.stats.lock().unwrap().link.subscribed >= n).then_some(()),
        )
        .await
        .unwrap();
    }

    fn publish(&self, msg: SimMessage) {
        self.publisher
            .publish(&msg, WAIT)
            .expect("broker acknowledges");
    }

    async fn next(&mut self) -> Observation {
        tokio::time::timeout(WAIT, self.observations.recv())
            .await
            .expect("an observation in time")
            .expect("stage running")
    }

    /// Publishes a marker (smoke on the stairwell detector) and returns every observation up to
    /// and including the marker's.
    async fn until_marker(&mut self) -> Vec<Observation> {
        let smoke = Zigbee2MqttDevice::new("smoke_stairwell_2");
        self.publish(smoke.smoke(false));
        self.publish(smoke.smoke(true));
        let mut seen = Vec::new();
        loop {
            let o = self.next().await;
            let marker = o.rule == "fire";
            seen.push(o);
            if marker {
                return seen;
            }
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.stage)
            .await
            .expect("stage stops on cancel")
            .unwrap();
    }
}

fn rules(obs: &[Observation]) -> Vec<&str> {
    obs.iter().map(|o| o.rule.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_water_leak_makes_exactly_one_observation() {
    let mut h = Harness::start().await;
    let leak = Zigbee2MqttDevice::new("kitchen_leak_301");
    h.publish(leak.water_leak(false));
    h.publish(leak.water_leak(true));
    h.publish(leak.water_leak(true));
    let obs = h.until_marker().await;
    assert_eq!(rules(&obs), vec!["leak", "fire"]);
    assert_eq!(obs[0].category.as_str(), "0602");
    assert_eq!(obs[0].source.id.as_str(), "leak-301");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_flapping_inside_the_hysteresis_band_raise_nothing() {
    let mut h = Harness::start().await;
    let drain = TasmotaDevice::new("drain_7");
    // Threshold 20 cm, hysteresis 5: one excursion below 20 fires; 20..25 is the band.
    for cm in [40.0, 30.0, 19.0, 22.0, 19.5, 24.0, 18.0, 21.0] {
        h.publish(drain.distance(cm));
    }
    let obs = h.until_marker().await;
    assert_eq!(
        rules(&obs),
        vec!["flooding", "fire"],
        "one event for one excursion"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_goes_offline_once_and_recovers_once() {
    let mut h = Harness::start().await;
    let climate = Zigbee2MqttDevice::new("hall_climate");
    h.publish(climate.climate(21.0, 40.0));
    // The door sensor's inactivity rule fires too in this time (it never opens): skip it.
    let offline = loop {
        let o = h.next().await;
        if o.rule == "offline" {
            break o;
        }
    };
    assert_eq!(offline.category.as_str(), "9003");
    h.publish(climate.climate(21.5, 41.0));
    let recovered = loop {
        let o = h.next().await;
        if o.rule == "offline" {
            break o;
        }
    };
    assert_eq!(recovered.category.as_str(), "9009");
    let obs = h.until_marker().await;
    assert!(
        !rules(&obs).contains(&"offline"),
        "no second offline or recovery: {:?}",
        rules(&obs)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_never_opened_past_the_limit_raises_one_welfare_check() {
    let mut h = Harness::start().await;
    let door = Zigbee2MqttDevice::new("door_elderly_301");
    h.publish(door.contact(false)); // opened
    h.publish(door.contact(true)); // and shut, for good
    let welfare = loop {
        let o = h.next().await;
        if o.rule == "welfare" {
            break o;
        }
    };
    assert_eq!(welfare.category.as_str(), "0601");
    h.publish(door.contact(true));
    let obs = h.until_marker().await;
    assert!(!rules(&obs).contains(&"welfare"), "{:?}", rules(&obs));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_battery_raises_one_event() {
    let mut h = Harness::start().await;
    let smoke = Zigbee2MqttDevice::new("smoke_stairwell_2").with_battery(12);
    h.publish(smoke.smoke(false));
    h.publish(smoke.smoke(false));
    let obs = h.until_marker().await;
    let battery: Vec<_> = obs.iter().filter(|o| o.rule == "battery").collect();
    assert_eq!(battery.len(), 1, "{:?}", rules(&obs));
    assert_eq!(battery[0].category.as_str(), "9004");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_reconnects_and_resubscribes_after_the_broker_restarts() {
    let mut h = Harness::start().await;
    h.broker.restart().expect("mosquitto restarts");
    // The restarted broker has no session for us (persistence off): only a resubscription
    // makes later messages arrive.
    h.wait_subscribed(2).await;
    assert!(h.stats.lock().unwrap().link.failures >= 1);
    let leak = Zigbee2MqttDevice::new("kitchen_leak_301");
    h.publish(leak.water_leak(true));
    let obs = h.until_marker().await;
    assert!(rules(&obs).contains(&"leak"), "{:?}", rules(&obs));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_counted_and_do_not_disturb_other_sensors() {
    let mut h = Harness::start().await;
    let garbage = |payload: &[u8]| SimMessage {
        topic: "zigbee2mqtt/kitchen_leak_301".into(),
        payload: payload.to_vec(),
        retain: false,
    };
    h.publish(garbage(b"\xff\xfe not json"));
    h.publish(garbage(br#"{"water_leak":"very"}"#));
    h.publish(garbage(&vec![b'['; 70_000]));
    let drain = TasmotaDevice::new("drain_7");
    h.publish(drain.distance(10.0));
    let obs = h.until_marker().await;
    assert_eq!(rules(&obs), vec!["flooding", "fire"]);
    // The counters are published to the stats handle at least once a second.
    let id = "leak-301".parse().unwrap();
    let deadline = Instant::now() + WAIT;
    let leak = loop {
        let stats = h.stats.lock().unwrap().clone();
        let leak = stats.sensors[&id].clone();
        if leak.messages >= 3 || Instant::now() > deadline {
            break leak;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(leak.bad_input.get("not_json"), Some(&1), "{leak:?}");
    assert_eq!(leak.bad_input.get("wrong_type"), Some(&1), "{leak:?}");
    assert_eq!(leak.bad_input.get("too_large"), Some(&1), "{leak:?}");
    assert_eq!(
        h.stats.lock().unwrap().link.failures,
        0,
        "bad input does not cost the connection"
    );
    h.stop().await;
}

/// A backlog of QoS 1 messages that the broker queued for the agent's persistent session while
/// the agent was down, far more than the agent reads within one keep-alive interval: once the
/// agent is back, every message is consumed exactly once, on one connection. (The broker writes
/// its answer to the agent's keep-alive ping behind whatever it has in flight to the agent; a
/// ping that times out behind the backlog drops the connection, and the broker then sends the
/// whole backlog again — the stall seen in the QoS 1 benchmark.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_queued_while_the_agent_was_down_is_consumed_once_on_one_connection() {
    const BACKLOG: usize = 120_000;
    let broker = Mosquitto::start().expect("mosquitto starts");
    let text = sensors_toml(broker.port()).replace(
        "reconnect_min_ms = 50",
        "reconnect_min_ms = 50\n        keep_alive_secs = 1",
    );
    let cfg: SensorsConfig = toml::from_str(&text).unwrap();
    let site = Location {
        lat: 39.9,
        lon: 116.4,
        crs: Crs::Wgs84,
    };
    let run = |cfg: &SensorsConfig| {
        let stage = SensorStage::from_config(cfg, site, None).unwrap();
        let stats = stage.stats();
        let (tx, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(stage.run(tx, cancel.clone()));
        (stats, rx, cancel, task)
    };

    // First run: the broker learns the agent's persistent session and its subscriptions.
    let (stats, _rx, cancel, task) = run(&cfg);
    e2e::wait_until(WAIT, "the stage's subscription", || {
        (stats.lock().unwrap().link.subscribed > 0).then_some(())
    })
    .await
    .unwrap();
    cancel.cancel();
    task.await.unwrap();

    // While the agent is down: the backlog (in files of 40,000 lines: mosquitto_pub's line mode
    // loses messages beyond 65,535 outstanding ids), then the marker.
    let dir = tempfile::tempdir().unwrap();
    for part in 0..BACKLOG / 40_000 {
        let path = dir.path().join(format!("backlog-{part}.txt"));
        let lines: String = (0..40_000)
            .map(|i| {
                format!(
                    "{{\"water_leak\":false,\"battery\":97,\"linkquality\":{}}}\n",
                    i % 255
                )
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-q", "1", "-t", "zigbee2mqtt/kitchen_leak_301", "-l"])
            .stdin(std::fs::File::open(&path).unwrap())
            .status()
            .expect("mosquitto_pub runs (mosquitto-clients, see scripts/setup)");
        assert!(status.success(), "mosquitto_pub: {status}");
    }
    let publisher = Publisher::connect("simulated-devices", "127.0.0.1", broker.port());
    publisher
        .publish(
            &Zigbee2MqttDevice::new("smoke_stairwell_2").smoke(true),
            WAIT,
        )
        .expect("broker acknowledges");

    // Second run: the backlog drains, then the marker arrives.
    let (stats, mut rx, cancel, task) = run(&cfg);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let obs = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the marker did not arrive; stats: {:?}",
                    stats.lock().unwrap().clone()
                )
            })
            .expect("stage running");
        if obs.rule == "fire" {
            break;
        }
    }
    cancel.cancel();
    task.await.unwrap();
    let stats = stats.lock().unwrap().clone();
    let leak = &stats.sensors[&"leak-301".parse().unwrap()];
    assert_eq!(leak.messages, BACKLOG as u64, "{stats:?}");
    assert_eq!(
        (stats.link.connections, stats.link.failures),
        (1, 0),
        "the backlog must not cost the connection: {stats:?}"
    );
}
