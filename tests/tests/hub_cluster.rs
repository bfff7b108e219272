//! Two `hub serve` processes on one PostgreSQL database (a private cluster: cases, the box
//! registry, the ingest log and the evidence), each with its own QUIC and HTTP listeners and
//! its own data folder (the second a `hub backup` of the first for the CA, as on two
//! machines): a box enrolled through either is known to both, a picture uploaded to one is
//! shown by the other, a revocation made through one cuts the box off
//! the other, events for one spot that reach both at once make one case, and an overdue case is
//! escalated once although both check deadlines. And a smaller fleet's fault run: fifty boxes, one hub process killed and the
//! database server restarted mid-run, nothing lost, doubled or escalated twice.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

#[path = "cluster_support/mod.rs"]
mod cluster;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cluster::{HubProcess, TOKEN, TestBox, garbage, hub_data};
use e2e::binaries::binary;
use e2e::postgres::Postgres;
use e2e::{WAIT, wait_for};
use edge_agent::uplink::UplinkMode;
use hub::registry::HubData;
use hub::storage::DatabaseUrl;
use protocol::{Crs, Event, Location};
use tokio_util::sync::CancellationToken;

/// Boxes of the fault run, in pairs that see the same spots.
const FLEET: usize = 50;

/// Events per box in the fault run, half before the faults and half during them.
const PER_BOX: usize = 16;

/// Spots of the fault run: each pair of boxes shares [`PER_BOX`].
const FLEET_SPOTS: usize = FLEET / 2 * PER_BOX;

/// Spots (5 × 4 in the sample city, a few hundred metres apart: beyond the merge radius).
const SPOTS: usize = 20;

/// Spot `i` of the fault run's [`FLEET_SPOTS`]: 40 × 10 spots about 100 m apart.
fn fleet_spot(i: usize) -> Location {
    Location {
        lat: 31.2805 + 0.0015 * (i / 40) as f64,
        lon: 120.5805 + 0.00095 * (i % 40) as f64,
        crs: Crs::Wgs84,
    }
}

/// Spot `i` of [`SPOTS`], inside the sample city.
fn spot(i: usize) -> Location {
    Location {
        lat: 31.2815 + 0.004 * (i / 5) as f64,
        lon: 120.5815 + 0.007 * (i % 5) as f64,
        crs: Crs::Wgs84,
    }
}

/// Exposed garbage seen by `camera` at spot `i`, now.
fn garbage_at(i: usize, camera: &str) -> Event {
    garbage(spot(i), camera)
}

/// What `hub doctor` reports for the configuration at `config`.
fn doctor(config: &Path) -> String {
    let out = Command::new(binary("hub"))
        .arg("doctor")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Which of two hub processes leads the timers, once exactly one says it does.
async fn leader_of(hubs: &[HubProcess; 2]) -> usize {
    wait_for(WAIT, "one leader", || async {
        let a = hubs[0].metric("hub_leader").await;
        let b = hubs[1].metric("hub_leader").await;
        match (a == 1.0, b == 1.0) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    })
    .await
    .unwrap()
}

/// Escalations recorded in the audit trail.
fn escalations(pg: &Postgres) -> i64 {
    count(
        pg,
        "SELECT count(*) FROM transitions WHERE body::jsonb->>'action' = 'escalate'",
    )
}

/// Counts the escalations that the API at `api` streams as live changes (`GET
/// /api/v1/changes`, server-sent events), on a thread of its own until the stream ends.
fn watch_escalations(api: SocketAddr) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::io::{BufRead, Write};
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let mut stream = std::net::TcpStream::connect(api).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /api/v1/changes HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut lines = std::io::BufReader::new(stream).lines();
    // the answer's head has come once the stream is open: changes from now on are told
    for line in lines.by_ref() {
        if line.unwrap().is_empty() {
            break;
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.starts_with("data:") && line.contains("\"action\":\"escalate\"") {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    seen
}

/// `psql`'s single value as a number.
fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.psql("hub", sql).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hub_processes_on_one_database_make_one_case_per_spot_and_escalate_once() {
    let pg = Postgres::start().unwrap();
    pg.create_db("hub").unwrap();
    let database = pg.url("hub");
    let (_dir, data) = hub_data();
    let first = HubProcess::start(&data, &database, "first").await;
    // The second machine: a copy of the CA (`hub backup`), the registry in the shared database.
    let copy = tempfile::tempdir().unwrap();
    let backup = Command::new(binary("hub"))
        .arg("backup")
        .arg("--config")
        .arg(data.join("first.toml"))
        .arg("--to")
        .arg(copy.path().join("second"))
        .output()
        .unwrap();
    assert!(backup.status.success(), "{backup:?}");
    let second_data = copy.path().join("second").join("data");
    let second = HubProcess::start_on(&second_data, &data, &database, "second").await;
    let shared = |dir: &Path| HubData {
        dir: dir.to_owned(),
        database: Some(DatabaseUrl::Postgres(database.clone())),
    };
    // each box registered and enrolled through a process of its own: one registry
    let east = TestBox::enroll(&shared(&data), &first, "box-east").await;
    let west = TestBox::enroll(&shared(&second_data), &second, "box-west").await;

    // One box per process; each sees the same twenty spots at the same time. The east box's
    // first event carries a picture (several upload chunks), uploaded to the first process.
    let picture_bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let picture = edge_agent::store::EvidenceFile::new(picture_bytes.clone(), "image/jpeg");
    let picture_sha = picture.reference.sha256;
    let mut pictured = Some(picture);
    for i in 0..SPOTS {
        let mut event = garbage_at(i, "cam-east");
        let evidence: Vec<_> = pictured.take().into_iter().collect();
        event.evidence = evidence.iter().map(|f| f.reference.clone()).collect();
        east.store.submit(event, evidence).unwrap();
        west.store
            .submit(garbage_at(i, "cam-west"), vec![])
            .unwrap();
    }
    let cancel = CancellationToken::new();
    let (west_uplink, mut west_status) = west.start_watched(&cancel);
    let uplinks = [east.start_uplink(&cancel), west_uplink];
    let all = 2 * SPOTS as i64;
    wait_for(WAIT, "every event stored", || async {
        (count(&pg, "SELECT count(*) FROM events WHERE case_id IS NOT NULL") == all).then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nfirst:\n{}\nsecond:\n{}",
            first.proc.log(),
            second.proc.log()
        )
    });
    assert_eq!(
        count(&pg, "SELECT count(*) FROM cases"),
        SPOTS as i64,
        "one case per spot: {}",
        pg.psql(
            "hub",
            "SELECT id, lat, lon, body->>'event_count' FROM cases ORDER BY lat, lon"
        )
        .unwrap()
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM cases WHERE (body->>'event_count')::INT = 2"
        ),
        SPOTS as i64,
        "each case has both boxes' events"
    );
    let created = first.metric("hub_cases_created_total").await
        + second.metric("hub_cases_created_total").await;
    assert_eq!(
        created, SPOTS as f64,
        "cases created, both processes together"
    );

    // The picture the first process took is shown by the second: the evidence is in the
    // database, not in the first machine's folder.
    let case_of_picture = count(
        &pg,
        "SELECT case_id FROM events WHERE box_id = 'box-east' AND seq = 1",
    );
    let path = format!(
        "/api/v1/cases/{case_of_picture}/evidence/{}",
        picture_sha.to_hex()
    );
    let auth = format!("Bearer {TOKEN}");
    let shown = wait_for(WAIT, "the picture through the second process", || async {
        let answer = e2e::http::send(second.api, "GET", &path, &[("Authorization", &auth)], b"")
            .await
            .ok()?;
        (answer.status == 200).then_some(answer.body)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nfirst:\n{}", first.proc.log()));
    assert!(shown == picture_bytes, "the picture, byte for byte");

    // A re-check asked through the process that does not hold the box's connection reaches
    // the box through the database (this test box has no camera pipeline, and says so).
    let asked = pg
        .psql(
            "hub",
            "SELECT box_id FROM events WHERE case_id = 1 ORDER BY received_at, box_id, seq LIMIT 1",
        )
        .unwrap();
    let elsewhere = if asked == "box-east" { &second } else { &first };
    let answer = e2e::http::send(
        elsewhere.api,
        "POST",
        "/api/v1/cases/1/recheck",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{asked}: {}", answer.text());
    assert!(
        answer
            .text()
            .contains("no camera pipeline runs on this agent"),
        "{}",
        answer.text()
    );

    // Revoked through the first process's configuration, the box that the second serves is
    // cut off: both read the one registry.
    let revoked = Command::new(binary("hub"))
        .args(["box", "revoke", "box-west", "--config"])
        .arg(data.join("first.toml"))
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    tokio::time::timeout(
        WAIT,
        west_status.wait_for(|s| s.mode == UplinkMode::Revoked),
    )
    .await
    .expect("the second process cuts the revoked box off")
    .unwrap();

    // One process leads the timers; the other stands by.
    let hubs = [first, second];
    let leading = leader_of(&hubs).await;
    let (leader, follower) = (&hubs[leading], &hubs[1 - leading]);

    // An operator watches the follower's live changes; the leader's escalations reach them.
    let seen = watch_escalations(follower.api);

    // Every case overdue at once; both processes would check deadlines every second.
    let checks_before = (
        leader.metric("hub_deadline_checks_total").await,
        follower.metric("hub_deadline_checks_total").await,
    );
    pg.psql(
        "hub",
        "UPDATE cases SET escalate_at = 1, body = jsonb_set(body, '{escalate_at}', '1')",
    )
    .unwrap();
    wait_for(WAIT, "two more deadline checks by the leader", || async {
        (leader.metric("hub_deadline_checks_total").await >= checks_before.0 + 2.0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        follower.metric("hub_deadline_checks_total").await,
        checks_before.1,
        "the follower checks no deadlines"
    );
    assert_eq!(
        escalations(&pg),
        SPOTS as i64,
        "one escalation per overdue case"
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM cases WHERE (body->>'escalations')::INT = 1"
        ),
        SPOTS as i64
    );
    let escalated = leader.metric("hub_case_escalations_total").await
        + follower.metric("hub_case_escalations_total").await;
    assert_eq!(
        escalated, SPOTS as f64,
        "escalations, both processes together"
    );

    wait_for(
        WAIT,
        "the escalations as live changes on the follower",
        || async { (seen.load(std::sync::atomic::Ordering::SeqCst) >= SPOTS).then_some(()) },
    )
    .await
    .unwrap();

    // The leader dies: the other process takes the lead, and `hub doctor` names it.
    let follower_checks = follower.metric("hub_deadline_checks_total").await;
    let [first, second] = hubs;
    let (leader, survivor) = if leading == 0 {
        (first, second)
    } else {
        (second, first)
    };
    leader.proc.kill();
    wait_for(WAIT, "the survivor leads and checks deadlines", || async {
        (survivor.metric("hub_leader").await == 1.0
            && survivor.metric("hub_deadline_checks_total").await > follower_checks)
            .then_some(())
    })
    .await
    .unwrap();
    let report = doctor(&survivor.config);
    assert!(
        report.contains(&format!("gridsense-hub pid {}", survivor.proc.pid())),
        "{report}"
    );
    // both processes recorded the grid, duty list and calendar they route by: the same
    assert!(report.contains("process(es) serve one grid"), "{report}");
    // a duty list edited on this machine but not yet served is pointed out
    let duties = data.join("duties.csv");
    let served = std::fs::read_to_string(&duties).unwrap();
    let edited = served.replace(",1d,review", ",2d,review");
    assert_ne!(edited, served, "the starter duty list gives parking a day");
    std::fs::write(&duties, edited).unwrap();
    let report = doctor(&survivor.config);
    assert!(
        report.contains("the processes serve duties")
            && report.contains("this configuration's file is"),
        "{report}"
    );

    cancel.cancel();
    for u in uplinks {
        u.await.unwrap();
    }
    assert!(
        survivor.proc.terminate(Duration::from_secs(15)),
        "a hub process stops on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_boxes_lose_nothing_when_a_hub_process_dies_and_the_database_restarts() {
    let mut pg = Postgres::start().unwrap();
    pg.create_db("hub").unwrap();
    let database = pg.url("hub");
    // one machine: both processes share the data folder (registry, ingest log)
    let (_dir, data) = hub_data();
    let hubs = [
        HubProcess::start(&data, &database, "first").await,
        HubProcess::start(&data, &database, "second").await,
    ];
    let registry = HubData {
        dir: data.clone(),
        database: Some(DatabaseUrl::Postgres(database.clone())),
    };
    let mut boxes = Vec::new();
    for b in 0..FLEET {
        let (home, other) = (&hubs[b % 2], &hubs[1 - b % 2]);
        let mut one = TestBox::enroll(&registry, home, &format!("box-{b:02}")).await;
        one.config.hubs = vec![other.ingest.to_string()];
        boxes.push(one);
    }
    // box 2k and 2k+1 see the same PER_BOX spots
    let submit = |boxes: &[TestBox], events: std::ops::Range<usize>| -> Vec<String> {
        let mut ids = Vec::new();
        for (b, one) in boxes.iter().enumerate() {
            for j in events.clone() {
                let e = garbage(fleet_spot(b / 2 * PER_BOX + j), "cam-1");
                ids.push(e.id.to_string());
                one.store.submit(e, vec![]).unwrap();
            }
        }
        ids
    };
    let mut ids = submit(&boxes, 0..PER_BOX / 2);
    let cancel = CancellationToken::new();
    let uplinks: Vec<_> = boxes.iter().map(|b| b.start_uplink(&cancel)).collect();
    let stored = |pg: &Postgres| count(pg, "SELECT count(*) FROM events WHERE case_id IS NOT NULL");
    let half = FLEET * PER_BOX / 2;
    wait_for(WAIT * 3, "the first half of the events", || async {
        (stored(&pg) == half as i64).then_some(())
    })
    .await
    .unwrap();

    // the first half's cases fall overdue; the leader escalates each once
    pg.psql(
        "hub",
        "UPDATE cases SET escalate_at = 1, body = jsonb_set(body, '{escalate_at}', '1')",
    )
    .unwrap();
    let first_cases = (FLEET_SPOTS / 2) as i64;
    wait_for(WAIT, "the overdue cases escalated", || async {
        (escalations(&pg) == first_cases).then_some(())
    })
    .await
    .unwrap();

    // kill -9 the leader, then restart the database server (immediately: a crash) while the
    // second half flows
    let leading = leader_of(&hubs).await;
    let [first, second] = hubs;
    let (dead, survivor) = if leading == 0 {
        (first, second)
    } else {
        (second, first)
    };
    dead.proc.kill();
    ids.extend(submit(&boxes, PER_BOX / 2..PER_BOX));
    wait_for(WAIT * 3, "some of the second half", || async {
        (count(&pg, "SELECT count(*) FROM events") > half as i64).then_some(())
    })
    .await
    .unwrap();
    pg.restart().unwrap();

    let all = FLEET * PER_BOX;
    wait_for(WAIT * 6, "every event, after the faults", || async {
        (stored(&pg) == all as i64).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nsurvivor:\n{}", survivor.proc.log()));
    for (b, one) in boxes.iter().enumerate() {
        wait_for(WAIT, "every box acknowledged", || async {
            (one.store.stats().unwrap().acked_seq == PER_BOX as u64).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("box-{b:02}: {e:#}"));
    }
    // nothing lost or doubled: exactly the boxes' events, one case per spot with both events
    let listed = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(count(&pg, "SELECT count(*) FROM events"), all as i64);
    assert_eq!(
        count(
            &pg,
            &format!("SELECT count(*) FROM events WHERE event_id IN ({listed})")
        ),
        all as i64,
        "every event of the box stores, once"
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM cases"), FLEET_SPOTS as i64);
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM cases WHERE (body->>'event_count')::INT = 2"
        ),
        FLEET_SPOTS as i64,
        "each spot's case holds its two events once"
    );
    // the survivor leads; nobody escalated a case twice
    wait_for(WAIT, "the survivor leads", || async {
        (survivor.metric("hub_leader").await == 1.0).then_some(())
    })
    .await
    .unwrap();
    let checks = survivor.metric("hub_deadline_checks_total").await;
    wait_for(WAIT, "two more deadline checks", || async {
        (survivor.metric("hub_deadline_checks_total").await >= checks + 2.0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        escalations(&pg),
        first_cases,
        "each overdue case escalated once"
    );

    cancel.cancel();
    for u in uplinks {
        u.await.unwrap();
    }
    assert!(survivor.proc.terminate(Duration::from_secs(15)));
}
