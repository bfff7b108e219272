//! The soak (`make soak`, not part of `make test`): the product as deployed — the `hub` and
//! `edge-agent` binaries, a private mosquitto, both test cameras over RTSP and the simulated
//! sensors — under faults for `SOAK_SECS` (default 1800): the agent and the hub SIGKILLed at
//! random moments, the box's link cut and made lossy by the UDP fault proxy. Then the event
//! sources stop, the backlog drains, and a report says what was raised, what reached the hub,
//! cases, evidence present or reported lost, duplicates, and memory and file-descriptor growth
//! of each process. It fails unless nothing was lost or duplicated, every picture is at the hub or
//! reported lost, and no process grew beyond the bounds below.
//!
//! `SOAK_SEED` replays a run's fault schedule (printed at the start); `SOAK_REPORT` names a file
//! for the report as well; `SOAK_KILLS_PERCENT` (default 67) is the share of the run in which
//! processes are killed (0: link faults only, one long life per process to measure growth).

// Harness code unwraps: a panic there is a broken fixture, which the soak should report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::fault_proxy::{FaultProxy, Faults};
use e2e::process::{Proc, free_udp_port, resources};
use e2e::{binary, wait_until};
use edge_agent::store::{Store, StoreOptions};
use hub::ingest::{EvidenceState, INGEST_FILE, IngestLog};
use protocol::{BoxId, Seq};

/// A process may grow this much resident memory between the end of its warm-up and its end.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;
/// ... and this many open file descriptors.
const FD_GROWTH_BOUND: i64 = 32;
/// Samples before this much uptime are warm-up (models loaded, caches filled).
const WARM_UP: Duration = Duration::from_secs(90);
/// Growth is judged on incarnations that lived at least this long after warm-up.
const MEASURED_LIFETIME: Duration = Duration::from_secs(240);
/// The site: cell 32050800100101 of the sample city.
const SITE: (f64, f64) = (31.281, 120.581);
const BOX: &str = "soak-box";

fn duration() -> Duration {
    Duration::from_secs(
        std::env::var("SOAK_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    )
}

fn cli(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn free_tcp_port() -> u16 {
    e2e::mosquitto::free_port().unwrap()
}

/// Resource samples of one process incarnation.
#[derive(Debug, Clone)]
struct Life {
    name: &'static str,
    pid: u32,
    started: Instant,
    /// (uptime, RSS KiB, fds)
    samples: Vec<(Duration, u64, u64)>,
    killed: bool,
}

#[derive(Default)]
struct Lives(Vec<Life>);

impl Lives {
    fn born(&mut self, name: &'static str, pid: u32) {
        self.0.push(Life {
            name,
            pid,
            started: Instant::now(),
            samples: Vec::new(),
            killed: false,
        });
    }

    fn killed(&mut self, pid: u32) {
        if let Some(l) = self.0.iter_mut().find(|l| l.pid == pid) {
            l.killed = true;
        }
    }

    fn sample(&mut self) {
        for life in self.0.iter_mut().filter(|l| !l.killed) {
            if let Some((rss, fds)) = resources(life.pid) {
                life.samples.push((life.started.elapsed(), rss, fds));
            }
        }
    }
}

/// Growth of one incarnation after warm-up: (measured span, RSS growth KiB, fd growth, max RSS).
fn growth(life: &Life) -> Option<(Duration, i64, i64, u64)> {
    let warm = life.samples.iter().find(|s| s.0 >= WARM_UP)?;
    let last = life.samples.last()?;
    let span = last.0.saturating_sub(warm.0);
    let max_rss = life.samples.iter().map(|s| s.1).max()?;
    Some((
        span,
        last.1 as i64 - warm.1 as i64,
        last.2 as i64 - warm.2 as i64,
        max_rss,
    ))
}

/// The agent's `/metrics` exposition, or `None` while it does not answer.
async fn agent_metrics(addr: SocketAddr) -> Option<String> {
    let answer = e2e::http::send(addr, "GET", "/metrics", &[], &[])
        .await
        .ok()?;
    (answer.status == 200).then(|| answer.text())
}

struct Hub {
    bin: PathBuf,
    config: PathBuf,
    proc: Option<Proc>,
}

impl Hub {
    async fn start(&mut self, lives: &Arc<Mutex<Lives>>) {
        let proc = Proc::spawn(
            Command::new(&self.bin)
                .arg("serve")
                .arg("--config")
                .arg(&self.config),
        )
        .unwrap();
        lives.lock().unwrap().born("hub", proc.pid());
        let up = wait_until(Duration::from_secs(120), "the hub's ingest", || {
            proc.log_contains("ingest listening").then_some(())
        })
        .await;
        assert!(up.is_ok(), "the hub did not come up:\n{}", proc.log());
        self.proc = Some(proc);
    }

    fn kill(&mut self, lives: &Arc<Mutex<Lives>>) {
        if let Some(p) = self.proc.take() {
            lives.lock().unwrap().killed(p.pid());
            p.kill();
        }
    }
}

struct Agent {
    bin: PathBuf,
    config: PathBuf,
    proc: Option<Proc>,
}

impl Agent {
    fn start(&mut self, lives: &Arc<Mutex<Lives>>) {
        let proc = Proc::spawn(
            Command::new(&self.bin)
                .arg("run")
                .arg("--config")
                .arg(&self.config)
                // as edge-agent.service runs it
                .env("MALLOC_ARENA_MAX", "2"),
        )
        .unwrap();
        lives.lock().unwrap().born("edge-agent", proc.pid());
        self.proc = Some(proc);
    }

    fn kill(&mut self, lives: &Arc<Mutex<Lives>>) {
        if let Some(p) = self.proc.take() {
            lives.lock().unwrap().killed(p.pid());
            p.kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 30-minute soak: run by `make soak`"]
async fn soak_under_kills_and_link_faults_loses_and_duplicates_nothing() {
    let length = duration();
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!(
        "soak: {} s, seed {seed} (SOAK_SEED={seed} replays the fault schedule)",
        length.as_secs()
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let hub_bin = binary("hub");
    let agent_bin = binary("edge-agent");
    let work = tempfile::tempdir().unwrap();
    let hub_dir = work.path().join("hub");
    let box_dir = work.path().join("box");

    // The hub: sample city, a duty list registering every category the soak raises.
    let ingest_port = free_udp_port();
    let api_port = free_tcp_port();
    let hub_addr: SocketAddr = format!("127.0.0.1:{ingest_port}").parse().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    cli(
        &hub_bin,
        &[
            "init",
            "--data",
            hub_dir.to_str().unwrap(),
            "--name",
            "soak hub",
            "--ingest-listen",
            &hub_addr.to_string(),
        ],
    );
    std::fs::write(
        hub_dir.join("duties.csv"),
        "category,community_department,street_department,district_department,time_limit,registration
street_order.illegal_nonmotor_parking,traffic-pj,traffic-gusu,city-management,4h,auto
street_order.intrusion,traffic-pj,traffic-gusu,city-management,4h,auto
emergency.road_flooding,city-management,city-management,city-management,90m,auto
other.water_leak,sanitation-pj,sanitation-gusu,city-management,4h,auto
device.camera_offline,city-management,city-management,city-management,1d,auto
",
    )
    .unwrap();
    let token = format!("soak-{:032x}", rng.u128(..));
    let hash = cli(&hub_bin, &["token-hash", &token]);
    let config_path = hub_dir.join("hub.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config = config
        .lines()
        .map(|l| {
            if l.starts_with("api_listen_addr") {
                format!("api_listen_addr = \"{api}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    writeln!(
        config,
        "\n[[tokens]]\nname = \"soak\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\nsubject = \"admin\"",
        hash.trim()
    )
    .unwrap();
    std::fs::write(&config_path, config).unwrap();
    let lives = Arc::new(Mutex::new(Lives::default()));
    let mut hub = Hub {
        bin: hub_bin.clone(),
        config: config_path,
        proc: None,
    };
    hub.start(&lives).await;
    let enroll = cli(
        &hub_bin,
        &[
            "box",
            "add",
            BOX,
            "--data",
            hub_dir.to_str().unwrap(),
            "--name",
            "soak box",
            "--grid",
            "32050800100101",
        ],
    );
    let tls = box_dir.join("tls");
    cli(
        &agent_bin,
        &[
            "enroll",
            "--hub",
            &hub_addr.to_string(),
            "--token",
            enroll.trim(),
            "--tls-dir",
            tls.to_str().unwrap(),
        ],
    );

    // The box's link goes through the fault proxy; its sources: two cameras, the sensor scenario.
    let proxy = FaultProxy::start(hub_addr, seed).await.unwrap();
    let mosquitto = e2e::mosquitto::Mosquitto::start().unwrap();
    let street = hardware::sim::rtsp::TestCamera::start(hardware::sim::rtsp::TestMedia::Clip {
        path: e2e::media::media("sample.mp4").unwrap(),
    })
    .unwrap();
    let kerb = e2e::media::motorcycle_camera(25).unwrap();
    let metrics_port = free_tcp_port();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let data = box_dir.join("data");
    let agent_config = box_dir.join("edge-agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            r#"[site]
lat = {lat}
lon = {lon}
grid = "32050800100101"

[store]
data_dir = "{data}"

[events]
cooldown_secs = 10

[mqtt]
port = {mqtt}
client_id = "soak-box"
reconnect_min_ms = 100

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
debounce_secs = 1
category = "emergency.road_flooding"

[[sensors]]
id = "leak-301"
device = "kitchen_leak_301"
profile = {{ kind = "zigbee2mqtt" }}
[[sensors.rules]]
name = "leak"
kind = "state"
quantity = "water_leak"
category = "other.water_leak"

[[cameras]]
id = "street-cam"
detect_fps = 2
source = {{ kind = "rtsp", url = "{street}" }}
[[cameras.zones]]
id = "street"
polygon = [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]
classes = ["person"]
[[cameras.rules]]
id = "people-in-street"
kind = "intrusion"
zone = "street"
category = "street_order.intrusion"
{kerb}
[uplink]
hub_addr = "{proxy}"
ca_path = "{tls}/ca.pem"
cert_path = "{tls}/box.pem"
key_path = "{tls}/box.key"
backoff_initial_ms = 200
backoff_max_ms = 5000
idle_timeout_ms = 3000
keep_alive_interval_ms = 500

[metrics]
listen_addr = "{metrics}"
"#,
            lat = SITE.0,
            lon = SITE.1,
            data = data.display(),
            mqtt = mosquitto.port(),
            street = street.url(),
            kerb = e2e::media::kerb_camera_toml(&kerb.url(), 2, 5),
            proxy = proxy.addr(),
            tls = tls.display(),
        ),
    )
    .unwrap();
    let mut agent = Agent {
        bin: agent_bin,
        config: agent_config,
        proc: None,
    };
    agent.start(&lives);
    let sensors = Proc::spawn(Command::new(env!("CARGO_BIN_EXE_gridsense-sim")).args([
        "sensors",
        "--port",
        &mosquitto.port().to_string(),
        "--repeat-secs",
        "30",
    ]))
    .unwrap();

    let sampler = {
        let lives = lives.clone();
        tokio::spawn(async move {
            loop {
                lives.lock().unwrap().sample();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };

    // Faults. The last third has no kills, so that each process has a long life to measure
    // (`SOAK_KILLS_PERCENT`, default 67: the share of the run with kills; 0 measures one life).
    let start = Instant::now();
    let kills_percent: u32 = std::env::var("SOAK_KILLS_PERCENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(67);
    let kills_end = length * kills_percent.min(100) / 100;
    let mut next_agent_kill = Duration::from_secs(rng.u64(60..240));
    let mut next_hub_kill = Duration::from_secs(rng.u64(90..300));
    let mut next_link = Duration::from_secs(rng.u64(20..90));
    let mut link_restore: Option<Duration> = None;
    let mut log = Vec::<String>::new();
    let (mut agent_kills, mut hub_kills, mut outages, mut lossy) = (0, 0, 0, 0);
    while start.elapsed() < length {
        let now = start.elapsed();
        if link_restore.is_some_and(|at| now >= at) {
            proxy.set(Faults::default());
            link_restore = None;
        }
        if now >= next_link && link_restore.is_none() {
            let hold = Duration::from_secs(rng.u64(5..60));
            if rng.u8(0..3) == 0 {
                proxy.set(Faults {
                    drop_percent: 10,
                    reorder_percent: 5,
                    duplicate_percent: 5,
                    ..Faults::default()
                });
                lossy += 1;
                log.push(format!(
                    "{:>5} s link lossy for {} s",
                    now.as_secs(),
                    hold.as_secs()
                ));
            } else {
                proxy.set(Faults {
                    blackhole: true,
                    ..Faults::default()
                });
                outages += 1;
                log.push(format!(
                    "{:>5} s link cut for {} s",
                    now.as_secs(),
                    hold.as_secs()
                ));
            }
            link_restore = Some(now + hold);
            next_link = now + hold + Duration::from_secs(rng.u64(20..150));
        }
        if now >= next_agent_kill && now < kills_end {
            agent.kill(&lives);
            agent_kills += 1;
            let down = Duration::from_millis(rng.u64(0..5000));
            log.push(format!(
                "{:>5} s agent SIGKILL, down {} ms",
                now.as_secs(),
                down.as_millis()
            ));
            tokio::time::sleep(down).await;
            agent.start(&lives);
            next_agent_kill = start.elapsed() + Duration::from_secs(rng.u64(60..300));
        }
        if now >= next_hub_kill && now < kills_end {
            hub.kill(&lives);
            hub_kills += 1;
            let down = Duration::from_millis(rng.u64(0..5000));
            log.push(format!(
                "{:>5} s hub SIGKILL, down {} ms",
                now.as_secs(),
                down.as_millis()
            ));
            tokio::time::sleep(down).await;
            hub.start(&lives).await;
            next_hub_kill = start.elapsed() + Duration::from_secs(rng.u64(90..360));
        }
        for (name, p) in [("agent", agent.proc.as_mut()), ("hub", hub.proc.as_mut())] {
            let p = p.unwrap();
            assert!(p.running(), "the {name} died by itself:\n{}", p.log());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    proxy.set(Faults::default());

    // Drain: the sources stop, then the box's backlog and pictures must all reach the hub.
    sensors.kill();
    drop(street);
    drop(kerb);
    let box_id = BoxId::parse(BOX).unwrap();
    let ingest = hub_dir.join(INGEST_FILE);
    let drained_at = Instant::now();
    let mut quiet = 0;
    let mut last = (0.0, 0.0);
    let drained = loop {
        if drained_at.elapsed() > Duration::from_secs(600) {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(m) = agent_metrics(metrics).await else {
            continue;
        };
        let (Some(last_seq), Some(acked)) = (
            e2e::metric_value(&m, "edge_agent_store_last_seq"),
            e2e::metric_value(&m, "edge_agent_uplink_acked_seq"),
        ) else {
            continue;
        };
        let wanted = IngestLog::open(&ingest)
            .and_then(|l| l.wanted_evidence(&box_id))
            .map_or(usize::MAX, |w| w.len());
        if last_seq == acked && wanted == 0 && (last_seq, acked) == last {
            quiet += 1;
            if quiet >= 3 {
                break true;
            }
        } else {
            quiet = 0;
        }
        last = (last_seq, acked);
    };
    let drain_secs = drained_at.elapsed().as_secs();

    // Cases, while the hub still answers.
    let auth = format!("Bearer {token}");
    let mut cases = 0u64;
    let mut case_events = 0u64;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/cases?limit=1000&after={a}"),
            None => "/api/v1/cases?limit=1000".to_owned(),
        };
        let page = e2e::http::send(api, "GET", &path, &[("Authorization", &auth)], &[])
            .await
            .unwrap();
        assert_eq!(page.status, 200, "{}", page.text());
        let body = page.json();
        for c in body["cases"].as_array().unwrap() {
            cases += 1;
            case_events += c["event_count"].as_u64().unwrap_or(0);
        }
        match body["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    lives.lock().unwrap().sample();
    sampler.abort();
    let agent_clean = agent
        .proc
        .take()
        .unwrap()
        .terminate(Duration::from_secs(30));
    let hub_clean = hub.proc.take().unwrap().terminate(Duration::from_secs(30));

    // Both sides' records.
    let store = Store::open(StoreOptions::new(&data, location())).unwrap();
    let stats = store.stats().unwrap();
    let box_events = store.events_from(Seq(1), usize::MAX >> 1).unwrap();
    store.close();
    let log_db = IngestLog::open(&ingest).unwrap();
    let hub_events = log_db.events_of(&box_id).unwrap();
    let (held, unhanded) = log_db.counts().unwrap();
    let hub_ids: HashSet<_> = hub_events.iter().map(|e| e.id).collect();
    let duplicates = hub_events.len() - hub_ids.len();
    let acked: Vec<_> = box_events
        .iter()
        .filter(|e| e.seq.0 <= stats.acked_seq)
        .collect();
    let lost = acked.iter().filter(|e| !hub_ids.contains(&e.id)).count();
    let unsynced = box_events.len() - acked.len();
    let mut evidence: BTreeMap<&str, u64> = BTreeMap::new();
    let mut pictures = 0;
    for e in &hub_events {
        for r in &e.evidence {
            pictures += 1;
            let state = match log_db.evidence_state(&r.sha256).unwrap() {
                Some((_, _, EvidenceState::Complete)) => "present",
                Some((_, _, EvidenceState::Lost)) => "reported lost",
                Some((_, _, EvidenceState::Wanted)) => "still wanted",
                Some((_, _, EvidenceState::Refused)) => "refused (too large)",
                Some((_, _, EvidenceState::Expired)) => "expired",
                None => "unknown to the hub",
            };
            *evidence.entry(state).or_default() += 1;
        }
    }
    let evidence_files_on_disk = walk_files(&hub_dir.join("evidence"));
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    for e in &box_events {
        *by_source.entry(format!("{:?}", e.source.kind)).or_default() += 1;
    }

    // The report.
    let mut r = String::new();
    writeln!(
        r,
        "soak report: {} s under faults, seed {seed}",
        length.as_secs()
    )
    .unwrap();
    writeln!(
        r,
        "faults: {agent_kills} agent SIGKILLs, {hub_kills} hub SIGKILLs, {outages} link cuts, {lossy} lossy periods (proxy: {:?})",
        proxy.stats()
    )
    .unwrap();
    writeln!(
        r,
        "drain: {} in {drain_secs} s; shutdown by SIGTERM: agent {}, hub {}",
        if drained { "complete" } else { "INCOMPLETE" },
        if agent_clean { "clean" } else { "killed" },
        if hub_clean { "clean" } else { "killed" }
    )
    .unwrap();
    writeln!(
        r,
        "events raised on the box:   {} (seq 1..={}; by source {by_source:?}; evicted {}, expired {})",
        box_events.len(),
        stats.last_seq,
        stats.evicted_events_total,
        stats.expired_events_total
    )
    .unwrap();
    writeln!(r, "events acked by the hub:    {}", acked.len()).unwrap();
    writeln!(
        r,
        "events at the hub:          {} ({held} held in all, {unhanded} not yet handed to cases)",
        hub_events.len()
    )
    .unwrap();
    writeln!(r, "events lost:                {lost}").unwrap();
    writeln!(r, "events still queued on box: {unsynced}").unwrap();
    writeln!(r, "duplicates at the hub:      {duplicates}").unwrap();
    writeln!(
        r,
        "cases:                      {cases} (holding {case_events} events)"
    )
    .unwrap();
    writeln!(
        r,
        "pictures named by events:   {pictures} {evidence:?}; files in the hub's evidence folder: {evidence_files_on_disk}; box: {} lost before upload",
        stats.lost_evidence_total
    )
    .unwrap();
    writeln!(
        r,
        "process growth after {} s warm-up (bounds: {} MiB RSS, {FD_GROWTH_BOUND} fds; judged on lives of at least {} s):",
        WARM_UP.as_secs(),
        RSS_GROWTH_BOUND_KIB / 1024,
        MEASURED_LIFETIME.as_secs()
    )
    .unwrap();
    let lives = lives.lock().unwrap().0.clone();
    let mut over_bound = Vec::new();
    for life in &lives {
        let lived = life.samples.last().map_or(Duration::ZERO, |s| s.0);
        match growth(life) {
            Some((span, rss, fds, max_rss)) => {
                let judged = span >= MEASURED_LIFETIME;
                writeln!(
                    r,
                    "  {:<10} pid {:<7} lived {:>5} s: RSS {:+} KiB over {} s (max {} MiB), fds {:+}{}",
                    life.name,
                    life.pid,
                    lived.as_secs(),
                    rss,
                    span.as_secs(),
                    max_rss / 1024,
                    fds,
                    if judged { "" } else { " (too short to judge)" }
                )
                .unwrap();
                if judged && (rss > RSS_GROWTH_BOUND_KIB as i64 || fds > FD_GROWTH_BOUND) {
                    over_bound.push(format!("{} pid {}", life.name, life.pid));
                }
            }
            None => writeln!(
                r,
                "  {:<10} pid {:<7} lived {:>5} s: killed during warm-up",
                life.name,
                life.pid,
                lived.as_secs()
            )
            .unwrap(),
        }
    }
    writeln!(r, "fault log:").unwrap();
    for line in &log {
        writeln!(r, "  {line}").unwrap();
    }
    eprintln!("\n{r}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(path, &r).unwrap();
    }

    assert!(drained, "the backlog did not drain within 600 s");
    assert_eq!(lost, 0, "events acked by the hub are missing there");
    assert_eq!(
        unsynced, 0,
        "events are still queued on the box after the drain"
    );
    assert_eq!(duplicates, 0, "events are held twice at the hub");
    assert_eq!(hub_events.len(), box_events.len(), "box and hub disagree");
    assert_eq!(
        pictures,
        evidence.get("present").copied().unwrap_or(0)
            + evidence.get("reported lost").copied().unwrap_or(0),
        "pictures neither at the hub nor reported lost"
    );
    assert_eq!(unhanded, 0, "events at the hub not handed to cases");
    assert!(
        over_bound.is_empty(),
        "grew beyond the bounds: {over_bound:?}"
    );
    drop(mosquitto);
}

fn location() -> protocol::Location {
    protocol::Location {
        lat: SITE.0,
        lon: SITE.1,
        crs: protocol::Crs::Wgs84,
    }
}

fn walk_files(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_files(&p) } else { 1 }
        })
        .sum()
}
