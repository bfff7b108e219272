//! `hub doctor`: what an operator checks before (or instead of) reading logs — the
//! configuration, each database (reachable, its schema version against this hub's, SQLite's
//! quick check; on PostgreSQL the clock against the server's), the CA (loads, how long it stays valid), and the free space beside the data.
//! One line a check with what to do about a failure; the hub may be running meanwhile.
//!
//! This module must not change anything: it opens the databases only to read them.

use std::fmt::Write as _;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::config::HubConfig;
use crate::registry::{CA_CERT_FILE, HubCa, REGISTRY_FILE};
use crate::storage::{DatabaseUrl, Engine, PoolSettings, Sql, StorageError};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Broken: the hub cannot run as configured.
    Fail,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do (empty when fine).
    pub fix: String,
}

/// Every check of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorReport {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    fn push(&mut self, name: &str, status: Status, detail: String, fix: &str) {
        self.checks.push(Check {
            name: name.to_owned(),
            status,
            detail,
            fix: fix.to_owned(),
        });
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The report as text: one line a check, its fix indented below a failure or warning.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let word = match c.status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(out, "{word:<5} {:<18} {}", c.name, c.detail);
            if c.status != Status::Ok && !c.fix.is_empty() {
                let _ = writeln!(out, "      → {}", c.fix);
            }
        }
        out
    }
}

/// More than this between this machine's clock and the database server's fails the clock
/// check: deadlines would fire early or late by as much on one process.
const MAX_CLOCK_SKEW_MS: i64 = 2_000;
/// Below this much free space beside a database, a warning.
const LOW_DISK_BYTES: u64 = 1 << 30;
/// A CA valid for less than this long, a warning (boxes' certificates cannot outlive it).
const CA_WARN_MS: i64 = 365 * 86_400_000;

/// Checks the hub that the configuration file at `path` describes, at `now`.
pub fn run(path: &Path, now: protocol::Timestamp) -> DoctorReport {
    let mut report = DoctorReport::default();
    let check = crate::checks::check_config_file(path);
    // A configuration that parses is checked further even with problems (a missing file it
    // names is one): the rest of the report says what else is wrong.
    if check.is_valid() {
        report.push(
            "configuration",
            Status::Ok,
            format!("{} is valid", path.display()),
            "",
        );
    } else {
        for problem in &check.problems {
            report.push(
                "configuration",
                Status::Fail,
                format!("{}: {problem}", path.display()),
                "run `hub check-config` on it for every problem",
            );
        }
    }
    let Some(config) = check.config.as_ref() else {
        return report;
    };
    check_databases(config, now, &mut report);
    if let Some(ingest) = &config.ingest {
        check_ca(&ingest.data_dir, now, &mut report);
    }
    let disk = config
        .sqlite_path()
        .or_else(|| config.ingest.as_ref().map(|i| i.data_dir.join("ingest.db")))
        .unwrap_or_else(|| path.to_owned());
    check_disk(&disk, &mut report);
    report
}

fn check_databases(config: &HubConfig, now: protocol::Timestamp, report: &mut DoctorReport) {
    // (name, file, the schema this hub writes, made only when `hub serve` first starts)
    let mut databases = Vec::new();
    match config.database_url() {
        DatabaseUrl::Sqlite(path) => databases.push((
            "case database",
            path,
            crate::cases::db::SCHEMA_VERSION,
            false,
        )),
        DatabaseUrl::Postgres(url) => check_postgres(&url, config, now, report),
    }
    if let Some(ingest) = &config.ingest {
        // on PostgreSQL the registry and the ingest log are in the database (checked with it)
        if config.sqlite_path().is_some() {
            databases.push((
                "box registry",
                ingest.data_dir.join(REGISTRY_FILE),
                crate::registry::SCHEMA_VERSION,
                false,
            ));
            databases.push((
                "ingest log",
                ingest.data_dir.join(crate::ingest::INGEST_FILE),
                crate::ingest::SCHEMA_VERSION,
                true,
            ));
        }
    }
    for (name, path, supported, made_at_first_serve) in databases {
        if made_at_first_serve && !path.exists() {
            report.push(
                name,
                Status::Warn,
                format!("{}: not there yet", path.display()),
                "made when `hub serve` first starts; if it ran before, the file was lost: restore it",
            );
            continue;
        }
        let (status, detail, fix) = match database(&path) {
            Err(e) => (
                Status::Fail,
                format!("{}: {e}", path.display()),
                "check the path in hub.toml and that the hub's user may read it (`hub init` makes a new hub)",
            ),
            Ok((version, _)) if version > supported => (
                Status::Fail,
                format!(
                    "{}: schema {version}, newer than this hub's {supported}",
                    path.display()
                ),
                "run the hub version that wrote it (or a newer one)",
            ),
            Ok((_, Some(problem))) => (
                Status::Fail,
                format!("{}: quick check: {problem}", path.display()),
                "restore it from the last `hub backup`",
            ),
            Ok((version, None)) => (
                Status::Ok,
                format!(
                    "{}: schema {version} (this hub: {supported}), quick check ok",
                    path.display()
                ),
                "",
            ),
        };
        report.push(name, status, detail, fix);
    }
}

/// The PostgreSQL case database: reachable, its schema against this hub's, and this machine's
/// clock against the server's (hub processes on several machines compare deadlines and
/// leadership through it: each must be within [`MAX_CLOCK_SKEW_MS`] of the server).
fn check_postgres(
    url: &str,
    config: &HubConfig,
    now: protocol::Timestamp,
    report: &mut DoctorReport,
) {
    let shown = crate::storage::redact(url);
    let settings = PoolSettings {
        size: 1,
        ..config.pool_settings()
    };
    let engine = match Engine::connect_postgres(url, settings) {
        Ok(engine) => engine,
        Err(e) => {
            report.push(
                "case database",
                Status::Fail,
                format!("{shown}: {}", crate::telemetry::chain(&e)),
                "check that the server runs and the URL, user and password in [database] url",
            );
            return;
        }
    };
    let mut stores = vec![(
        "case database",
        crate::cases::db::STORE,
        crate::cases::db::POSTGRES_SCHEMA_VERSION,
    )];
    if config.ingest.is_some() {
        stores.push((
            "box registry",
            crate::registry::STORE,
            crate::registry::POSTGRES_SCHEMA_VERSION,
        ));
        stores.push((
            "ingest log",
            crate::ingest::STORE,
            crate::ingest::POSTGRES_SCHEMA_VERSION,
        ));
    }
    for (name, store, supported) in stores {
        check_store(&engine, &shown, name, store, supported, report);
    }
    match engine.leader("timers") {
        Ok(Some(who)) => report.push(
            "leadership",
            Status::Ok,
            format!("deadline checks and webhooks run in {who}"),
            "",
        ),
        Ok(None) => report.push(
            "leadership",
            Status::Warn,
            "no hub process runs the deadline checks and webhooks".to_owned(),
            "start `hub serve` (a process takes the lead within one deadline check interval)",
        ),
        Err(e) => report.push(
            "leadership",
            Status::Warn,
            format!("could not be read: {}", crate::telemetry::chain(&e)),
            "check the database user may read pg_locks and pg_stat_activity",
        ),
    }
    check_served_files(&engine, config, now, report);
    let server_ms = engine.atomically(|tx| -> Result<Option<i64>, StorageError> {
        tx.query_first(
            &Sql::each(
                "SELECT 0",
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT",
            ),
            &[],
            |r| r.int(0),
        )
    });
    match server_ms {
        Ok(Some(server)) => {
            let skew = now.as_unix_millis() - server;
            let status = if skew.abs() > MAX_CLOCK_SKEW_MS {
                Status::Fail
            } else {
                Status::Ok
            };
            report.push(
                "clock",
                status,
                format!("this machine is {skew} ms off the database server's clock"),
                "run NTP (chrony, systemd-timesyncd) on every hub machine and the database server",
            );
        }
        Ok(None) | Err(_) => report.push(
            "clock",
            Status::Warn,
            "the database server's clock could not be read".to_owned(),
            "check the database connection",
        ),
    }
}

/// One store's schema in a PostgreSQL database against this hub's.
/// The grid, duty list and calendar each hub process serving the database routes by (as
/// they record at start, and say every deadline check interval that they still serve):
/// processes that serve different texts route alike events differently, and a process that
/// serves another text than the files this configuration names was not restarted after an
/// edit (or the file was changed by mistake).
fn check_served_files(
    engine: &Engine,
    config: &HubConfig,
    now: protocol::Timestamp,
    report: &mut DoctorReport,
) {
    const NAME: &str = "served files";
    // three missed check intervals (a minute at least) and a process counts as gone
    let quiet_ms = (config.cases.deadline_check_interval_secs.max(20) * 3 * 1000) as i64;
    let since = protocol::Timestamp::from_unix_millis(now.as_unix_millis() - quiet_ms);
    let processes = match crate::cases::db::serving_processes(engine, since) {
        Ok(p) => p,
        Err(e) => {
            report.push(
                NAME,
                Status::Warn,
                format!("could not be read: {}", crate::telemetry::chain(&e)),
                "start `hub serve` once with this version (it records what it serves)",
            );
            return;
        }
    };
    if processes.is_empty() {
        report.push(
            NAME,
            Status::Warn,
            format!(
                "no hub process has served in the last {} s",
                quiet_ms / 1000
            ),
            "start `hub serve`",
        );
        return;
    }
    let here: Vec<(&str, Option<String>)> = [
        ("grid", &config.grid_path),
        ("duties", &config.duties_path),
        ("calendar", &config.calendar_path),
    ]
    .into_iter()
    .map(|(kind, path)| {
        let sha = std::fs::read(path)
            .ok()
            .map(|b| crate::cases::db::file_sha256(&b));
        (kind, sha)
    })
    .collect();
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    let mut problems = Vec::new();
    for (kind, file_sha) in &here {
        let served: std::collections::BTreeSet<&str> = processes
            .iter()
            .filter_map(|p| p.files.get(*kind).map(String::as_str))
            .collect();
        if served.len() > 1 {
            let who: Vec<String> = processes
                .iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p.process,
                        p.files.get(*kind).map_or("?".into(), |s| short(s))
                    )
                })
                .collect();
            problems.push(format!(
                "the processes serve different {kind} ({})",
                who.join(", ")
            ));
        } else if let (Some(file), Some(one)) = (file_sha, served.first())
            && file != one
        {
            problems.push(format!(
                "the processes serve {kind} {} but this configuration's file is {}",
                short(one),
                short(file)
            ));
        }
    }
    if problems.is_empty() {
        let first = &processes[0].files;
        report.push(
            NAME,
            Status::Ok,
            format!(
                "{} process(es) serve one grid ({}), duty list ({}) and calendar ({}), as the files here",
                processes.len(),
                first.get("grid").map_or("?".into(), |s| short(s)),
                first.get("duties").map_or("?".into(), |s| short(s)),
                first.get("calendar").map_or("?".into(), |s| short(s)),
            ),
            "",
        );
    } else {
        report.push(
            NAME,
            Status::Warn,
            problems.join("; "),
            "give every hub machine the same grid, duty and calendar files, then restart the processes that serve others (every text served is kept in the database's file_versions)",
        );
    }
}

fn check_store(
    engine: &Engine,
    shown: &str,
    name: &str,
    store: &str,
    supported: i64,
    report: &mut DoctorReport,
) {
    match engine.schema_version(store) {
        Err(e) => report.push(
            name,
            Status::Fail,
            format!("{shown}: {}", crate::telemetry::chain(&e)),
            "check that the database user may read the hub's tables",
        ),
        Ok(version) if version > supported => report.push(
            name,
            Status::Fail,
            format!("{shown}: schema {version}, newer than this hub's {supported}"),
            "run the hub version that wrote it (or a newer one)",
        ),
        Ok(0) => report.push(
            name,
            Status::Warn,
            format!("{shown}: reachable, no hub schema yet"),
            "made when `hub serve` first starts",
        ),
        Ok(version) => report.push(
            name,
            Status::Ok,
            format!("{shown}: reachable, schema {version} (this hub: {supported})"),
            "",
        ),
    }
}

/// A database's schema version and the first problem SQLite's quick check finds.
fn database(path: &Path) -> Result<(i64, Option<String>), String> {
    if !path.exists() {
        return Err("missing".to_owned());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| e.to_string())?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    Ok((version, (check != "ok").then_some(check)))
}

fn check_ca(data: &Path, now: protocol::Timestamp, report: &mut DoctorReport) {
    if let Err(e) = HubCa::load(data) {
        report.push(
            "certificate authority",
            Status::Fail,
            format!("{}: {}", data.display(), crate::telemetry::chain(&e)),
            "restore ca.pem and ca.key from a backup; a new CA means enrolling every box again",
        );
        return;
    }
    let not_after = std::fs::read_to_string(data.join(CA_CERT_FILE))
        .ok()
        .and_then(|pem| crate::registry::first_cert_der(&pem).ok())
        .and_then(|der| {
            x509_parser::parse_x509_certificate(&der)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp().saturating_mul(1000))
        });
    match not_after {
        Some(ms) if ms <= now.as_unix_millis() => report.push(
            "certificate authority",
            Status::Fail,
            "expired".to_owned(),
            "no box can connect: a new CA means enrolling every box again",
        ),
        Some(ms) => {
            let days = (ms - now.as_unix_millis()) / 86_400_000;
            let status = if ms - now.as_unix_millis() < CA_WARN_MS {
                Status::Warn
            } else {
                Status::Ok
            };
            report.push(
                "certificate authority",
                status,
                format!("loads; valid for {days} more days"),
                "plan a new CA and re-enrollment before it expires",
            );
        }
        None => report.push(
            "certificate authority",
            Status::Warn,
            "loads, but its validity could not be read".to_owned(),
            "check ca.pem",
        ),
    }
}

fn check_disk(database: &Path, report: &mut DoctorReport) {
    let dir = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let status = if free < LOW_DISK_BYTES {
                Status::Warn
            } else {
                Status::Ok
            };
            report.push(
                "disk",
                status,
                format!("{} MiB free beside {}", free >> 20, database.display()),
                "free space or set [retention] evidence_days / ingest_log_days",
            );
        }
        Err(e) => report.push("disk", Status::Warn, format!("{}: {e}", dir.display()), ""),
    }
}
