//! Sensor ingestion throughput: N messages of ~100 bytes published through a real mosquitto,
//! consumed at the same time by the agent's sensor stage (MQTT + decode + rules) and by
//! `mosquitto_sub` (the anchor: the broker's own client writing to a pipe). Prints each
//! consumer's rate and the ratio agent / mosquitto_sub, for QoS 0 and 1.
//!
//! `GRIDSENSE_BENCH_MESSAGES` sets N (default 1,000,000).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use e2e::mosquitto::Mosquitto;
use edge_agent::sensors::{SensorStage, SensorsConfig};
use protocol::{Crs, Location};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "zigbee2mqtt/bench_sensor";

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("GRIDSENSE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let lines = dir.path().join("messages.txt");
    write_messages(&lines, n)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    println!("\nSensor ingestion: {n} messages of ~100 bytes through mosquitto (loopback)\n");
    println!("| QoS | consumer | messages | seconds | msg/s | ratio agent/mosquitto_sub |");
    println!("|---|---|---:|---:|---:|---:|");
    for qos in [0u8, 1] {
        let r = runtime.block_on(run_once(&broker, &lines, qos))?;
        println!(
            "| {qos} | mosquitto_sub | {} | {:.2} | {:.0} | |",
            r.sub_messages,
            r.sub_secs,
            r.sub_messages as f64 / r.sub_secs
        );
        println!(
            "| {qos} | agent (decode + rules) | {} | {:.2} | {:.0} | {:.2} |",
            r.agent_messages,
            r.agent_secs,
            r.agent_messages as f64 / r.agent_secs,
            (r.agent_messages as f64 / r.agent_secs) / (r.sub_messages as f64 / r.sub_secs)
        );
    }
    println!("\nGoal: ratio >= 0.9 at QoS 0 and 1.");
    Ok(())
}

struct Run {
    agent_messages: u64,
    agent_secs: f64,
    sub_messages: u64,
    sub_secs: f64,
}

/// ~100-byte zigbee2mqtt climate reports, then one smoke alarm that marks the end for the agent.
fn write_messages(path: &std::path::Path, n: usize) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n.saturating_sub(1) {
        writeln!(
            out,
            r#"{{"temperature":{:.2},"humidity":{:.1},"battery":97,"linkquality":{},"last_seen":{}}}"#,
            18.0 + (i % 700) as f64 / 100.0,
            40.0 + (i % 300) as f64 / 10.0,
            60 + i % 120,
            1_764_057_600_000u64 + i as u64
        )?;
    }
    writeln!(out, r#"{{"smoke":true,"battery":97,"linkquality":120}}"#)?;
    out.flush()
}

async fn run_once(broker: &Mosquitto, lines: &std::path::Path, qos: u8) -> anyhow::Result<Run> {
    let cfg: SensorsConfig = toml::from_str(&format!(
        r#"
        [mqtt]
        port = {}
        client_id = "bench-agent-{qos}"
        qos = {qos}
        [[sensors]]
        id = "bench"
        device = "bench_sensor"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "too-hot"
        kind = "threshold"
        quantity = "temperature"
        above = 60.0
        hysteresis = 2.0
        category = "other.abnormal_temperature"
        [[sensors.rules]]
        name = "end"
        kind = "state"
        quantity = "smoke"
        category = "emergency.fire"
        "#,
        broker.port()
    ))?;
    let stage = SensorStage::from_config(
        &cfg,
        Location {
            lat: 31.3,
            lon: 120.6,
            crs: Crs::Wgs84,
        },
        None,
    )?;
    let stats = stage.stats();
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(stage.run(tx, cancel.clone()));
    while stats.lock().map(|s| s.link.subscribed).unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The anchor: mosquitto_sub printing every message to a pipe read by a thread.
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-q",
            &qos.to_string(),
            "-t",
            TOPIC,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = sub
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("mosquitto_sub has no stdout"))?;
    let (sub_tx, sub_rx) = std_mpsc::channel::<(Instant, u64)>();
    std::thread::spawn(move || {
        let mut count = 0u64;
        for line in BufReader::new(stdout).lines() {
            if line.is_err() {
                break;
            }
            count += 1;
            // Report the first line (subscription confirmed) and then the end of the batch.
            if count == 1 || line.as_deref().is_ok_and(|l| l.contains("smoke")) {
                let _ = sub_tx.send((Instant::now(), count));
            }
        }
    });
    // Warm up until mosquitto_sub sees messages (its subscription is in place).
    let warm = |payload: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port().to_string(),
                "-q",
                "1",
                "-t",
                TOPIC,
                "-m",
                payload,
            ])
            .status()
    };
    let mut warmups = 0u64;
    loop {
        warm(r#"{"linkquality":1}"#)?;
        warmups += 1;
        if sub_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            break;
        }
    }

    let start = Instant::now();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-q",
            &qos.to_string(),
            "-t",
            TOPIC,
            "-l",
        ])
        .stdin(std::fs::File::open(lines)?)
        .status()?;
    anyhow::ensure!(status.success(), "mosquitto_pub failed: {status}");

    let agent_end = tokio::time::timeout(Duration::from_secs(600), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("agent stopped"))?;
    let agent_secs = start.elapsed().as_secs_f64();
    drop(agent_end);
    let (sub_end, sub_count) = sub_rx.recv_timeout(Duration::from_secs(600))?;
    let sub_secs = sub_end.duration_since(start).as_secs_f64();
    let _ = sub.kill();
    let _ = sub.wait();
    cancel.cancel();
    task.await?;
    let agent_after = stats
        .lock()
        .map(|s| s.sensors.values().map(|c| c.messages).sum::<u64>())
        .unwrap_or(0);
    // Both consumers were subscribed before the warm-up messages, so each got all of them.
    Ok(Run {
        agent_messages: agent_after.saturating_sub(warmups),
        agent_secs,
        sub_messages: sub_count - warmups.min(sub_count),
        sub_secs,
    })
}
