//! Crash safety: a child process submits events as fast as it can (one at a time from three
//! threads, in bursts of up to eight from a fourth) and is killed with SIGKILL at a random
//! moment, cycle after cycle. After each restart every event whose submit returned must be
//! there, sequence numbers must have no gaps, and every evidence file must hash right.
//!
//! The child is this test binary itself, re-run with `GRIDSENSE_CRASH_CHILD_DIR` set so that
//! only `crash_child_entry` does anything. It prints `ok <seq> <id>` after each returned submit
//! (and `acked <seq>` after each returned ack); the parent kills it after a seeded random number
//! of such lines and then reads whatever else the child had printed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::{EventId, Seq};

use crate::helpers;

const CHILD_DIR_ENV: &str = "GRIDSENSE_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "GRIDSENSE_CRASH_CHILD_SEED";
const CHILD_BASE_ENV: &str = "GRIDSENSE_CRASH_CHILD_BASE";
/// A child that was not killed (a parent bug) stops by itself after this long.
const CHILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

#[test]
fn events_survive_sigkill_at_random_moments_over_50_cycles() {
    crash_cycles(50, 0x5eed_0001);
}

#[test]
#[ignore = "soak: GRIDSENSE_SOAK_CYCLES (default 1000) kill cycles; run with --ignored"]
fn events_survive_sigkill_at_random_moments_soak() {
    let cycles = std::env::var("GRIDSENSE_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    crash_cycles(cycles, 0x5eed_0002);
}

/// Not a test of its own: the body of the child process (a no-op in a normal run).
#[test]
fn crash_child_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let base: u64 = std::env::var(CHILD_BASE_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    run_child(Path::new(&dir), seed, base);
}

fn crash_cycles(cycles: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let exe = std::env::current_exe().unwrap();
    // seq → id of every event whose submit returned to the child
    let mut acknowledged: BTreeMap<u64, EventId> = BTreeMap::new();
    let mut acked_up_to = 0u64;
    let mut orphans_seen = 0;
    for cycle in 0..cycles {
        let kill_after = rng.u64(1..=300);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, (seed ^ (cycle << 20)).to_string())
            .env(CHILD_BASE_ENV, ((cycle + 1) * 10_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = stdout.lines();
        let mut seen = 0;
        let mut record = |line: &str, acknowledged: &mut BTreeMap<u64, EventId>| {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["ok", seq, id] => {
                    let id = EventId::from_uuid(id.parse().unwrap());
                    let seq: u64 = seq.parse().unwrap();
                    assert!(
                        acknowledged.insert(seq, id).is_none(),
                        "seq {seq} given twice"
                    );
                    true
                }
                ["acked", seq] => {
                    acked_up_to = acked_up_to.max(seq.parse().unwrap());
                    true
                }
                _ => false,
            }
        };
        for line in lines.by_ref() {
            if record(&line.unwrap(), &mut acknowledged) {
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines the child printed before it died are returned submits too. A line cut short
        // by the kill does not parse and is ignored (that only checks less).
        for line in lines.map_while(Result::ok) {
            record(&line, &mut acknowledged);
        }

        let store = helpers::open(dir.path());
        orphans_seen += store.open_report().orphans_removed + store.open_report().staged_removed;
        let stats = store.stats().unwrap();
        let events = store.events_from(Seq(1), usize::MAX).unwrap();
        assert_eq!(
            events.len() as u64,
            stats.last_seq,
            "cycle {cycle}: gap-free rows"
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq.0, i as u64 + 1, "cycle {cycle}: seq gap");
        }
        for (seq, id) in &acknowledged {
            let e = events
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged seq {seq} lost"));
            assert_eq!(e.id, *id, "cycle {cycle}: seq {seq} holds another event");
        }
        assert!(stats.acked_seq >= acked_up_to, "cycle {cycle}: ack lost");
        helpers::assert_evidence_intact(&store);
        let with_evidence = events.iter().filter(|e| !e.evidence.is_empty()).count() as u64;
        assert_eq!(stats.evidence_files, with_evidence, "cycle {cycle}");
    }
    assert!(
        acknowledged.len() as u64 >= cycles,
        "only {} events acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "{cycles} kill cycles: {} events acknowledged, {orphans_seen} leftover evidence files cleaned",
        acknowledged.len()
    );
}

fn run_child(dir: &Path, seed: u64, base: u64) -> ! {
    let started = std::time::Instant::now();
    let store = helpers::open(dir);
    // Event numbers (and so ids) are unique across cycles: each cycle has its own base.
    let counter = Arc::new(AtomicU64::new(base));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let print = move |out: &std::sync::Mutex<std::io::Stdout>, line: String| {
        // One write per line, so a line is never interleaved with another.
        let mut out = out.lock().unwrap();
        out.write_all(line.as_bytes()).unwrap();
        out.flush().unwrap();
    };
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let store = store.clone();
            let counter = Arc::clone(&counter);
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ w);
                while started.elapsed() < CHILD_DEADLINE {
                    let make = |rng: &mut fastrand::Rng| {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let salt = rng.u64(..);
                        let made = if rng.u8(..4) == 0 {
                            helpers::event_with_evidence(n, salt, rng.usize(1000..16_000))
                        } else {
                            (helpers::event(n, salt), Vec::new())
                        };
                        (n, made)
                    };
                    // The last worker submits bursts of events together.
                    if w == 3 {
                        let burst: Vec<_> =
                            (0..rng.usize(1..=8)).map(|_| make(&mut rng).1).collect();
                        for result in store.submit_many(burst) {
                            let committed = result.unwrap();
                            print(&out, format!("ok {} {}\n", committed.seq, committed.id));
                        }
                        continue;
                    }
                    let (n, (event, files)) = make(&mut rng);
                    let committed = store.submit(event, files).unwrap();
                    print(&out, format!("ok {} {}\n", committed.seq, committed.id));
                    if w == 0 && n.is_multiple_of(16) && committed.seq.0 > 8 {
                        let up_to = Seq(committed.seq.0 - 8);
                        store.ack(up_to).unwrap();
                        print(&out, format!("acked {up_to}\n"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    std::process::exit(2)
}
