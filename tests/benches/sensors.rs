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
//! A third run measures what used to stall: at QoS 1, both consumers' persistent sessions are
//! away while the broker queues all but the last chunk and the end marker; then both come back
//! together and drain that backlog as fast as each can read, with no publisher setting the pace.
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
/// The warm-up messages' own sensor topic: both consumers subscribe to it too, so a warm-up
/// message that arrives after the measure has begun is not counted as measured.
const WARMUP_TOPIC: &str = "zigbee2mqtt/bench_warmup";
/// The warm-up message: mosquitto_sub prints payloads only, and no measured message is this.
const WARMUP_MESSAGE: &str = r#"{"linkquality":1,"warmup":true}"#;

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
    // The backlog: every full chunk but the last (the broker queues at most 1,000,000 per
    // client), then the end marker.
    let backlog = &chunks[..chunks.len().saturating_sub(1)];
    let backlog_n = (backlog.len() * CHUNK + 1) as u64;
    for (label, expected) in [("0", n as u64), ("1", n as u64), ("1, backlog", backlog_n)] {
        let r = runtime.block_on(async {
            match label {
                "0" => run_once(&broker, &chunks, 0).await,
                "1" => run_once(&broker, &chunks, 1).await,
                _ => run_backlog(&broker, backlog).await,
            }
        })?;
        println!(
            "| {label} | mosquitto_sub | {} | {:.2} | {:.0} | |",
            r.sub_messages,
            r.sub_secs,
            r.sub_messages as f64 / r.sub_secs
        );
        println!(
            "| {label} | agent (decode + rules) | {} | {:.2} | {:.0} | {:.2} |",
            r.agent_messages,
            r.agent_secs,
            r.agent_messages as f64 / r.agent_secs,
            (r.agent_messages as f64 / r.agent_secs) / (r.sub_messages as f64 / r.sub_secs)
        );
        for (who, got) in [
            ("mosquitto_sub", r.sub_messages),
            ("agent", r.agent_messages),
        ] {
            if got != expected {
                notes.push(format!(
                    "QoS {label}: {who} received {got} of {expected} messages"
                ));
            }
        }
        if r.agent_connections != 1 {
            notes.push(format!(
                "QoS {label}: the agent connected {} times",
                r.agent_connections
            ));
        }
    }
    println!(
        "\nGoal: ratio >= 0.9 at QoS 0 and 1. In the first two rows both consumers are paced by \
         one publisher (a ratio near 1 says the agent keeps up with it); in the backlog both \
         drain a queue as fast as they read, which compares their speed."
    );
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
    /// Warm-up messages (counted apart by mosquitto_sub's reader).
    warmups: AtomicU64,
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

/// The agent's sensor stage as the bench runs it.
struct Agent {
    stats: Arc<std::sync::Mutex<SensorStats>>,
    observations: mpsc::Receiver<edge_agent::events::Observation>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Starts the stage as `client_id` (a persistent session); with `wait`, waits for its
    /// subscription.
    async fn start(port: u16, client_id: &str, qos: u8, wait: bool) -> anyhow::Result<Agent> {
        let cfg: SensorsConfig = toml::from_str(&format!(
            r#"
            [mqtt]
            port = {port}
            client_id = "{client_id}"
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
            [[sensors]]
            id = "warmup"
            device = "bench_warmup"
            profile = {{ kind = "zigbee2mqtt" }}
            "#
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
        let (tx, observations) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(stage.run(tx, cancel.clone()));
        let deadline = Instant::now() + STALL;
        while wait && stats.lock().map(|s| s.link.subscribed).unwrap_or(0) == 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{client_id}: the agent did not subscribe within {STALL:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Agent {
            stats,
            observations,
            cancel,
            task,
        })
    }

    /// Measured messages received so far (the counters are refreshed once a second).
    fn received(&self) -> u64 {
        messages(&self.stats, "bench")
    }

    /// Warm-up messages received so far (refreshed once a second too).
    fn warmups(&self) -> u64 {
        messages(&self.stats, "warmup")
    }

    fn link(&self) -> edge_agent::sensors::LinkStats {
        self.stats
            .lock()
            .map(|s| s.link.clone())
            .unwrap_or_default()
    }

    /// Stops the stage; its final counters are then in place.
    async fn stop(self) -> anyhow::Result<Arc<std::sync::Mutex<SensorStats>>> {
        self.cancel.cancel();
        self.task.await?;
        Ok(self.stats)
    }
}

/// Messages the stage has counted for sensor `id`.
fn messages(stats: &std::sync::Mutex<SensorStats>, id: &str) -> u64 {
    stats
        .lock()
        .map(|s| {
            s.sensors
                .iter()
                .filter(|(sensor, _)| sensor.as_str() == id)
                .map(|(_, c)| c.messages)
                .sum()
        })
        .unwrap_or(0)
}

/// The anchor: mosquitto_sub printing every message to a pipe read by a thread, which counts
/// them, warm-ups apart, and times the end marker from the moment set in `start`.
struct Sub {
    child: std::process::Child,
    progress: Arc<Progress>,
    start: Arc<std::sync::OnceLock<Instant>>,
}

impl Sub {
    /// `session`: a client id for a persistent session; none for a clean one.
    fn spawn(port: u16, qos: u8, session: Option<&str>) -> anyhow::Result<Sub> {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-q", &qos.to_string(), "-t", TOPIC, "-t", WARMUP_TOPIC]);
        if let Some(id) = session {
            cmd.args(["-c", "-i", id]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("mosquitto_sub has no stdout"))?;
        let progress = Arc::new(Progress::default());
        let start = Arc::new(std::sync::OnceLock::<Instant>::new());
        {
            let (progress, start) = (Arc::clone(&progress), Arc::clone(&start));
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line == WARMUP_MESSAGE {
                        progress.warmups.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    progress.received.fetch_add(1, Ordering::SeqCst);
                    if line.contains("smoke")
                        && let Some(start) = start.get()
                    {
                        progress.end_at(*start);
                    }
                }
            });
        }
        Ok(Sub {
            child,
            progress,
            start,
        })
    }

    fn received(&self) -> u64 {
        self.progress.received.load(Ordering::SeqCst)
    }

    fn warmups(&self) -> u64 {
        self.progress.warmups.load(Ordering::SeqCst)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `message` once to `topic` at QoS 1 and waits for the broker's acknowledgement.
fn publish_one(port: u16, topic: &str, message: &str) -> anyhow::Result<()> {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-t", topic, "-m", message])
        .status()?;
    anyhow::ensure!(status.success(), "mosquitto_pub failed: {status}");
    Ok(())
}

/// Publishes the chunk files in order, one mosquitto_pub each, counting finished chunks.
fn publish_chunks(
    port: u16,
    qos: u8,
    chunks: Vec<PathBuf>,
    published: Arc<AtomicU64>,
) -> anyhow::Result<()> {
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
}

/// Waits until both consumers have seen the end marker; fails when one of them receives
/// nothing for [`STALL`] before it, or the publisher fails. Returns the agent's progress.
async fn until_both_end(
    label: &str,
    agent: &mut Agent,
    sub: &Sub,
    start: Instant,
    mut publisher: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    published: &AtomicU64,
    chunks: usize,
) -> anyhow::Result<Progress> {
    let agent_progress = Progress::default();
    let mut watch = [(0u64, Instant::now()); 2];
    loop {
        tokio::select! {
            got = agent.observations.recv() => match got {
                Some(_) => agent_progress.end_at(start),
                None => anyhow::bail!("{label}: the agent's stage stopped"),
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        agent_progress
            .received
            .store(agent.received(), Ordering::SeqCst);
        if publisher.as_ref().is_some_and(|p| p.is_finished())
            && let Some(p) = publisher.take()
        {
            join(p)?;
        }
        if agent_progress.ended().is_some() && sub.progress.ended().is_some() {
            if let Some(p) = publisher {
                join(p)?;
            }
            return Ok(agent_progress);
        }
        for (i, (who, p)) in [
            ("agent", &agent_progress),
            ("mosquitto_sub", &*sub.progress),
        ]
        .into_iter()
        .enumerate()
        {
            let now = p.received.load(Ordering::SeqCst);
            if now != watch[i].0 {
                watch[i] = (now, Instant::now());
            } else if p.ended().is_none() && watch[i].1.elapsed() > STALL {
                let link = agent.link();
                anyhow::bail!(
                    "{label}: {who} received nothing for {STALL:?} before the end marker; after \
                     {:.1} s: {} of {chunks} chunk(s) of {CHUNK} published; agent received {} \
                     (connections {}, connection failures {}); mosquitto_sub received {}",
                    start.elapsed().as_secs_f64(),
                    published.load(Ordering::SeqCst),
                    agent_progress.received.load(Ordering::SeqCst),
                    link.connections,
                    link.failures,
                    sub.received(),
                );
            }
        }
    }
}

/// Both consumers connected while the messages are published.
async fn run_once(broker: &Mosquitto, chunks: &[PathBuf], qos: u8) -> anyhow::Result<Run> {
    let port = broker.port();
    let label = format!("QoS {qos}");
    let mut agent = Agent::start(port, &format!("bench-agent-{qos}"), qos, true).await?;
    let sub = Sub::spawn(port, qos, None)?;
    // Warm up until both consumers have seen a message (mosquitto_sub's subscription is in
    // place); these are not counted.
    let deadline = Instant::now() + STALL;
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label}: warm-up messages did not reach both consumers within {STALL:?}"
        );
        publish_one(port, WARMUP_TOPIC, WARMUP_MESSAGE)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sub.warmups() > 0 && agent.warmups() > 0 {
            break;
        }
    }

    let start = Instant::now();
    let _ = sub.start.set(start);
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (chunks, published) = (chunks.to_vec(), Arc::clone(&published));
        std::thread::spawn(move || publish_chunks(port, qos, chunks, published))
    };
    let outcome = until_both_end(
        &label,
        &mut agent,
        &sub,
        start,
        Some(publisher),
        &published,
        chunks.len(),
    )
    .await;
    let sub_messages = sub.received();
    let sub_secs = sub.progress.ended();
    sub.stop();
    let stats = agent.stop().await?;
    let agent_progress = outcome?;
    Ok(Run::new(&stats, &agent_progress, sub_messages, sub_secs))
}

/// QoS 1, the case that used to stall: both consumers' persistent sessions are away while the
/// broker queues the first `chunks` and the end marker; then both come back at once and drain
/// the backlog as fast as they can read (the broker is not waiting on a publisher).
async fn run_backlog(broker: &Mosquitto, chunks: &[PathBuf]) -> anyhow::Result<Run> {
    let port = broker.port();
    let label = "QoS 1 backlog";
    // Register both sessions, then take both consumers away.
    let sub = Sub::spawn(port, 1, Some("bench-sub-backlog"))?;
    let deadline = Instant::now() + STALL;
    while sub.warmups() == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label}: mosquitto_sub did not subscribe within {STALL:?}"
        );
        publish_one(port, WARMUP_TOPIC, WARMUP_MESSAGE)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sub.stop();
    Agent::start(port, "bench-agent-backlog", 1, true)
        .await?
        .stop()
        .await?;
    let published = Arc::new(AtomicU64::new(0));
    publish_chunks(port, 1, chunks.to_vec(), Arc::clone(&published))?;
    publish_one(
        port,
        TOPIC,
        r#"{"smoke":true,"battery":97,"linkquality":120}"#,
    )?;

    let start = Instant::now();
    let sub = Sub::spawn(port, 1, Some("bench-sub-backlog"))?;
    let _ = sub.start.set(start);
    // The subscriptions' acknowledgements queue behind the backlog: no waiting for them.
    let mut agent = Agent::start(port, "bench-agent-backlog", 1, false).await?;
    let outcome = until_both_end(
        label,
        &mut agent,
        &sub,
        start,
        None,
        &published,
        chunks.len(),
    )
    .await;
    let sub_messages = sub.received();
    let sub_secs = sub.progress.ended();
    sub.stop();
    let stats = agent.stop().await?;
    let agent_progress = outcome?;
    Ok(Run::new(&stats, &agent_progress, sub_messages, sub_secs))
}

impl Run {
    fn new(
        stats: &std::sync::Mutex<SensorStats>,
        agent: &Progress,
        sub_messages: u64,
        sub_secs: Option<f64>,
    ) -> Run {
        let agent_connections = stats.lock().map(|s| s.link.connections).unwrap_or(0);
        Run {
            agent_messages: messages(stats, "bench"),
            agent_secs: agent.ended().unwrap_or(f64::NAN),
            agent_connections,
            sub_messages,
            sub_secs: sub_secs.unwrap_or(f64::NAN),
        }
    }
}

fn join(publisher: std::thread::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher thread panicked"))?
}
