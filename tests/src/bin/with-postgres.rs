//! `with-postgres COMMAND [ARGS...]`: runs a command with a private PostgreSQL cluster beside
//! it, named by `GRIDSENSE_TEST_POSTGRES` (a URL of the cluster's `postgres` database as its
//! superuser), and stops the cluster when the command ends. `make test` runs the hub's test
//! suite through it, so the same tests run on PostgreSQL as on SQLite.
//!
//! Exits with the command's status (1 when it could not run, 2 on a usage error).
//!
//! A test tool: production code must not use it.

use std::process::{Command, ExitCode};

use e2e::postgres::Postgres;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-postgres COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("with-postgres: the cluster did not start: {e:#}");
            return ExitCode::from(1);
        }
    };
    let url = pg.url("postgres");
    eprintln!("with-postgres: cluster on port {} ({url})", pg.port());
    let status = Command::new(&program)
        .args(args)
        .env("GRIDSENSE_TEST_POSTGRES", &url)
        .status();
    drop(pg);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!(
                "with-postgres: {} ended with {s}",
                program.to_string_lossy()
            );
            ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1).max(1))
        }
        Err(e) => {
            eprintln!(
                "with-postgres: {} did not run: {e}",
                program.to_string_lossy()
            );
            ExitCode::from(1)
        }
    }
}
