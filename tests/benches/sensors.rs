//! Sensor ingestion throughput: N messages of ~100 bytes published through a real mosquitto,
//! consumed at the same time by the agent's sensor stage (MQTT + decode + rules) and by
//! `mosquitto_sub` (the anchor: the broker's own client writing to a pipe). Prints each
//! consumer's rate and the ratio agent / mosquitto_sub, for QoS 0 and 1.
//!
//! `GRIDSENSE_BENCH_MESSAGES` sets N (default 1,000,000).
//!
//! The publisher is `mosquitto_pub -l`, one process per [`CHUNK`] lines: in line mode
//! mosquitto_pub 2.0.11 ends early, with exit status 0, once more than 65,535 of its QoS 1
//! messages are outstanding (its message ids wrap and the ack of a reused id reads as the ack of
//! its last message): 100,000 lines delivered 34,473 messages, 200,000 delivered 68,949. A run
//! whose end marker was never published used to wait forever.
//!
//! A consumer that receives nothing for [`STALL`] before its end marker fails the run with what
//! every party had done by then, instead of waiting.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::mosquitto::Mosquitto;
use edge_agent::sensors::{SensorStage, SensorStats, SensorsConfig};
use protocol::{Crs, Location};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "zigbee2mqtt/bench_sensor";

/// Lines per `mosquitto_pub -l` process: well under its 65,535 outstanding message ids.
const CHUNK: usize = 50_000;

/// How long a consumer may receive nothing before the run is declared stalled.
const STALL: Duration = Duration::from_secs(20);

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("GRIDSENSE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let chunks = write_messages(dir.path(), n)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    println!("\nSensor ingestion: {n} messages of ~100 bytes through mosquitto (loopback)\n");
    println!("| QoS | consumer | messages | seconds | msg/s | ratio agent/mosquitto_sub |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for qos in [0u8, 1] {
        let r = runtime.block_on(run_once(&broker, &chunks, qos))?;
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
        for (who, got) in [
            ("mosquitto_sub", r.sub_messages),
            ("agent", r.agent_messages),
        ] {
            if got != n as u64 {
                notes.push(format!("QoS {qos}: {who} received {got} of {n} messages"));
            }
        }
        if r.agent_connections != 1 {
            notes.push(format!(
                "QoS {qos}: the agent connected {} times",
                r.agent_connections
            ));
        }
    }
    println!("\nGoal: ratio >= 0.9 at QoS 0 and 1.");
    for note in notes {
        println!("Note: {note}");
    }
    Ok(())
}

struct Run {
    agent_messages: u64,
    agent_secs: f64,
    agent_connections: u64,
    sub_messages: u64,
    sub_secs: f64,
}

/// ~100-byte zigbee2mqtt climate reports, then one smoke alarm that marks the end for both
/// consumers; written as files of [`CHUNK`] lines, in publishing order.
fn write_messages(dir: &Path, n: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut chunks = Vec::new();
    let mut out: Option<std::io::BufWriter<std::fs::File>> = None;
    for i in 0..n {
        if i % CHUNK == 0 {
            if let Some(mut full) = out.take() {
                full.flush()?;
            }
            let path = dir.join(format!("messages-{:04}.txt", chunks.len()));
            out = Some(std::io::BufWriter::new(std::fs::File::create(&path)?));
            chunks.push(path);
        }
        let Some(w) = out.as_mut() else {
            unreachable!("a chunk file is open from the first line on")
        };
        if i + 1 == n {
            writeln!(w, r#"{{"smoke":true,"battery":97,"linkquality":120}}"#)?;
        } else {
            writeln!(
                w,
                r#"{{"temperature":{:.2},"humidity":{:.1},"battery":97,"linkquality":{},"last_seen":{}}}"#,
                18.0 + (i % 700) as f64 / 100.0,
                40.0 + (i % 300) as f64 / 10.0,
                60 + i % 120,
                1_764_057_600_000u64 + i as u64
            )?;
        }
    }
    if let Some(mut last) = out {
        last.flush()?;
    }
    Ok(chunks)
}

/// What one consumer has received so far, and when it saw the end marker.
#[derive(Default)]
struct Progress {
    received: AtomicU64,
    /// Milliseconds after the start of publishing, plus one (0: not yet).
    ended_ms: AtomicU64,
}

impl Progress {
    fn end_at(&self, start: Instant) {
        let ms = start.elapsed().as_millis() as u64;
        let _ = self
            .ended_ms
            .compare_exchange(0, ms + 1, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn ended(&self) -> Option<f64> {
        match self.ended_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some((ms - 1) as f64 / 1000.0),
        }
    }
}

async fn run_once(broker: &Mosquitto, chunks: &[PathBuf], qos: u8) -> anyhow::Result<Run> {
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
    let deadline = Instant::now() + STALL;
    while stats.lock().map(|s| s.link.subscribed).unwrap_or(0) == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "QoS {qos}: the agent did not subscribe within {STALL:?}"
        );
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
    let sub_progress = Arc::new(Progress::default());
    // Set once publishing starts; the reader thread times the end marker from it.
    let start_cell = Arc::new(std::sync::OnceLock::<Instant>::new());
    {
        let (progress, start) = (Arc::clone(&sub_progress), Arc::clone(&start_cell));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                progress.received.fetch_add(1, Ordering::SeqCst);
                if line.contains("smoke")
                    && let Some(start) = start.get()
                {
                    progress.end_at(*start);
                }
            }
        });
    }
    // Warm up until both consumers have seen a message (mosquitto_sub's subscription is in
    // place); these are not counted.
    let warm = || {
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
                r#"{"linkquality":1}"#,
            ])
            .status()
    };
    let agent_received = |stats: &std::sync::Mutex<SensorStats>| {
        stats
            .lock()
            .map(|s| s.sensors.values().map(|c| c.messages).sum::<u64>())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + STALL;
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "QoS {qos}: warm-up messages did not reach both consumers within {STALL:?}"
        );
        warm()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sub_progress.received.load(Ordering::SeqCst) > 0 && agent_received(&stats) > 0 {
            break;
        }
    }
    // The agent's counters are refreshed once a second: wait for the warm-up to settle.
    let sub_warmups = sub_progress.received.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let agent_warmups = agent_received(&stats);
    let sub_warmups = sub_warmups.max(sub_progress.received.load(Ordering::SeqCst));

    let start = Instant::now();
    let _ = start_cell.set(start);
    let published = Arc::new(AtomicU64::new(0));
    let mut publisher = Some({
        let (chunks, published, port) = (chunks.to_vec(), Arc::clone(&published), broker.port());
        std::thread::spawn(move || -> anyhow::Result<()> {
            for chunk in chunks {
                let status = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .args(["-q", &qos.to_string(), "-t", TOPIC, "-l"])
                    .stdin(std::fs::File::open(&chunk)?)
                    .status()?;
                anyhow::ensure!(status.success(), "mosquitto_pub failed: {status}");
                published.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    });

    let agent_progress = Progress::default();
    let mut watch = [(0u64, Instant::now()); 2];
    let outcome = loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(_) => agent_progress.end_at(start),
                None => break Err(anyhow::anyhow!("QoS {qos}: the agent's stage stopped")),
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        agent_progress
            .received
            .store(agent_received(&stats), Ordering::SeqCst);
        if publisher.as_ref().is_some_and(|p| p.is_finished())
            && let Some(Err(e)) = publisher.take().map(join)
        {
            break Err(e);
        }
        if agent_progress.ended().is_some() && sub_progress.ended().is_some() {
            break Ok(());
        }
        let mut stalled = None;
        for (i, (who, p)) in [
            ("agent", &agent_progress),
            ("mosquitto_sub", &*sub_progress),
        ]
        .into_iter()
        .enumerate()
        {
            let now = p.received.load(Ordering::SeqCst);
            if now != watch[i].0 {
                watch[i] = (now, Instant::now());
            } else if p.ended().is_none() && watch[i].1.elapsed() > STALL {
                stalled = Some(who);
            }
        }
        if let Some(who) = stalled {
            let link = stats.lock().map(|s| s.link.clone()).unwrap_or_default();
            break Err(anyhow::anyhow!(
                "QoS {qos}: {who} received nothing for {STALL:?} before the end marker; after {:.1} s: \
                 {} of {} chunk(s) of {CHUNK} published; agent received {} (connections {}, \
                 connection failures {}); mosquitto_sub received {}",
                start.elapsed().as_secs_f64(),
                published.load(Ordering::SeqCst),
                chunks.len(),
                agent_progress.received.load(Ordering::SeqCst) - agent_warmups,
                link.connections,
                link.failures,
                sub_progress.received.load(Ordering::SeqCst) - sub_warmups,
            ));
        }
    };
    let _ = sub.kill();
    let _ = sub.wait();
    cancel.cancel();
    task.await?;
    outcome?;
    if let Some(p) = publisher {
        join(p)?;
    }
    let (agent_total, connections) = stats
        .lock()
        .map(|s| {
            (
                s.sensors.values().map(|c| c.messages).sum::<u64>(),
                s.link.connections,
            )
        })
        .unwrap_or((0, 0));
    Ok(Run {
        agent_messages: agent_total.saturating_sub(agent_warmups),
        agent_secs: agent_progress.ended().unwrap_or(f64::NAN),
        agent_connections: connections,
        sub_messages: sub_progress
            .received
            .load(Ordering::SeqCst)
            .saturating_sub(sub_warmups),
        sub_secs: sub_progress.ended().unwrap_or(f64::NAN),
    })
}

fn join(publisher: std::thread::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher thread panicked"))?
}
