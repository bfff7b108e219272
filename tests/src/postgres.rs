//! A private PostgreSQL cluster for tests: `initdb` in a temporary folder, `pg_ctl start` on a
//! free loopback port with its socket in that folder, stopped (fast) when dropped. Nothing of
//! the system's own clusters is touched.
//!
//! The server refuses to run as root: when the tests run as root, the cluster's commands run as
//! the `postgres` system user (created by Debian's package), which owns the folder. The cluster
//! trusts local connections from the loopback address only; its superuser is [`SUPERUSER`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::mosquitto::free_port;

/// The cluster's superuser.
pub const SUPERUSER: &str = "gridsense";

/// A running private cluster.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as when the tests are root.
    run_as: Option<String>,
    running: bool,
}

impl Postgres {
    /// Makes a cluster in a temporary folder and starts it on a free port of 127.0.0.1; waits
    /// until it accepts connections.
    ///
    /// # Errors
    /// When PostgreSQL is not installed (run `scripts/setup`), or the cluster does not start
    /// (the error carries the server's log).
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir().context("PostgreSQL is not installed (run scripts/setup)")?;
        let dir = tempfile::Builder::new().prefix("gridsense-pg").tempdir()?;
        let run_as = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            chown(dir.path(), user)?;
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port()?,
            run_as,
            running: false,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "--pgdata",
                &data.display().to_string(),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.start_server()?;
        Ok(pg)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name`.
    ///
    /// # Errors
    /// When `createdb` fails.
    pub fn create_db(&self, name: &str) -> anyhow::Result<()> {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, name],
        )?;
        Ok(())
    }

    /// Runs `sql` in database `db` with `psql` and returns what it printed (unaligned, tuples
    /// only: one row a line, `|` between columns).
    ///
    /// # Errors
    /// When the statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-A",
                "-t",
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `pg_dump` or `pg_restore` (or another client tool of the cluster's version) with
    /// `args`, as the README tells an operator to, connecting to this cluster as its
    /// superuser; files are best named inside [`Postgres::scratch`] (writable by the server's
    /// user when the tests are root). Returns what it printed.
    ///
    /// # Errors
    /// When the tool fails.
    pub fn tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER];
        all.extend_from_slice(args);
        let out = self.run(tool, &all)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A folder beside the cluster for dump files.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Stops the server (immediately: like a crash) and starts it again on the same port.
    ///
    /// # Errors
    /// As [`Postgres::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop("immediate")?;
        self.start_server()
    }

    /// Stops the server, `mode` as `pg_ctl stop -m` takes it (`fast`, `immediate`).
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        let data = self.data_dir().display().to_string();
        self.run("pg_ctl", &["stop", "--pgdata", &data, "-m", mode, "-w"])?;
        self.running = false;
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let data = self.data_dir().display().to_string();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let started = self.run(
            "pg_ctl",
            &[
                "start",
                "--pgdata",
                &data,
                "--log",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
            ],
        );
        if let Err(e) = started {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\nserver log:\n{log}");
        }
        self.running = true;
        // `pg_ctl -w` waited for the socket; a first query proves the port answers.
        crate::wait_blocking(Duration::from_secs(30), "PostgreSQL answering", || {
            self.psql("postgres", "SELECT 1").ok()
        })?;
        Ok(())
    }

    /// Runs one of the cluster's commands (as the cluster's owner when the tests are root).
    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<Output> {
        let program = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop("fast");
    }
}

/// The newest installed PostgreSQL's `bin` folder (Debian: `/usr/lib/postgresql/<major>/bin`).
fn bin_dir() -> Option<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown(path: &Path, user: &str) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!("chown {user} {} failed", path.display());
    }
    Ok(())
}
