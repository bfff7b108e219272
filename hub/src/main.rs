//! `hub`: the command line of the Gridsense hub.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hub::grid::ImportOptions;
use protocol::{BoxId, Catalog, Crs, GridCode};

/// Gridsense hub: takes events from enrolled edge boxes, matches them to grid cells and runs
/// them as cases around the closed loop.
#[derive(Debug, Parser)]
#[command(name = "hub", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the event categories (codes and keys to use in the responsibility list).
    Categories {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the hub: the HTTP API, deadline checks and webhooks, until SIGINT/SIGTERM.
    Serve {
        /// The configuration file (TOML).
        #[arg(long, default_value = "/etc/hub/hub.toml")]
        config: PathBuf,
    },
    /// Copy a hub online (it keeps serving) into a new folder: its databases through SQLite's
    /// backup API, each checked, then its CA, evidence, configuration and the files it names,
    /// with a MANIFEST of where each came from. Restore by copying the files back (README).
    Backup {
        /// The hub's configuration file.
        #[arg(long, default_value = "/etc/hub/hub.toml")]
        config: PathBuf,
        /// The new folder to write (must not exist, or be empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// The case database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Check a hub (it may be running): its configuration, each database (schema version,
    /// SQLite's quick check; on PostgreSQL the leading process and the clock), its CA's
    /// validity and the free disk. Exit status 1 when a check fails.
    Doctor {
        /// The hub's configuration file.
        #[arg(long, default_value = "/etc/hub/hub.toml")]
        config: PathBuf,
    },
    /// Check a config file: every problem at once (with its key path and what is expected),
    /// the files it names parsed as `hub serve` would, or the validated config with secrets
    /// redacted. Exit status 1 when it has problems.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Print the SHA-256 of a bearer token (or an Open311 api_key), for the configuration.
    /// Without the argument the token is read from standard input (so that it does not stay in
    /// the shell's history or the process list).
    TokenHash {
        /// The token (default: read from standard input).
        token: Option<String>,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Grid files: write a sample city, find the cell of a point.
    Grid {
        #[command(subcommand)]
        command: GridCommand,
    },
    /// Create the hub's data folder: its CA, box registry, database, starter files and hub.toml.
    Init {
        /// The data folder (created if missing; an existing CA is never replaced).
        #[arg(long, default_value = "/var/lib/hub")]
        data: PathBuf,
        /// The hub's name, in its CA certificate.
        #[arg(long, default_value = "gridsense hub")]
        name: String,
        /// Where the QUIC ingest listens (written into hub.toml).
        #[arg(long, default_value = "0.0.0.0:4433")]
        ingest_listen: std::net::SocketAddr,
    },
    /// Edge boxes: register (prints a one-time enrollment token), list, revoke.
    Box {
        /// The hub data folder.
        #[arg(long, global = true, default_value = "/var/lib/hub")]
        data: PathBuf,
        /// The hub's configuration instead: its `[ingest] data_dir`, and its `[database] url`
        /// when that is PostgreSQL (the registry every hub process shares is there).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: BoxCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Copy a hub into another, empty database — SQLite to PostgreSQL as a hub grows, or
    /// back — keeping every id, with progress, then check the row counts: the case database
    /// (cases, events, audit trail, change outbox, webhook state, re-checks), and the box
    /// registry, ingest log and evidence files, which a SQLite hub keeps in its data folder
    /// and a PostgreSQL hub in the database. Stop `hub serve` first; then point
    /// `[database] url` at the copy.
    Migrate {
        /// The database to copy: `sqlite:///var/lib/hub/hub.db` or `postgres://…`.
        #[arg(long)]
        from: String,
        /// The empty database to copy into (its schema is made).
        #[arg(long)]
        to: String,
        /// The SQLite side's data folder (`[ingest] data_dir`): its `registry.db`,
        /// `ingest.db` and `evidence/` are read (SQLite to PostgreSQL) or written (back).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a random API token (from the OS random source): prints the token once, and the
    /// `[[tokens]]` entry with its hash for hub.toml.
    New {
        /// The entry's name.
        #[arg(long)]
        name: String,
        /// admin, dispatcher, department or worker.
        #[arg(long)]
        role: String,
        /// The department or worker id the token acts as (for admin and dispatcher, a user
        /// name).
        #[arg(long)]
        subject: String,
    },
}

#[derive(Debug, Subcommand)]
enum BoxCommand {
    /// Register a box and print its one-time enrollment token (it carries the CA fingerprint).
    Add {
        /// The box id (letters, digits, `.`, `_`, `-`).
        #[arg(value_parser = |s: &str| BoxId::parse(s))]
        id: BoxId,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// The grid code the box stands in.
        #[arg(long, value_parser = |s: &str| GridCode::parse(s))]
        grid: Option<GridCode>,
        /// The token expires after this many seconds.
        #[arg(long, default_value_t = 86_400)]
        token_ttl_secs: u64,
    },
    /// List registered boxes.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a box: its live connection is closed and it is refused from then on.
    Revoke {
        /// The box id.
        #[arg(value_parser = |s: &str| BoxId::parse(s))]
        id: BoxId,
    },
}

#[derive(Debug, Subcommand)]
enum GridCommand {
    /// Write a realistic sample city (GeoJSON, 4 levels below the city, valid codes).
    Sample {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print city → district → street → community → cell and the grid worker for a point.
    Locate {
        /// Latitude in degrees.
        #[arg(allow_hyphen_values = true)]
        lat: f64,
        /// Longitude in degrees.
        #[arg(allow_hyphen_values = true)]
        lon: f64,
        /// The coordinate system of LAT/LON.
        #[arg(long, value_enum, default_value = "wgs84")]
        crs: CrsArg,
        /// The grid file (GeoJSON, WGS84).
        #[arg(long)]
        grid: PathBuf,
        /// Within this many metres of a cell edge, list the neighbouring cells as candidates.
        #[arg(long, default_value_t = 15.0)]
        edge_distance_m: f64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CrsArg {
    Wgs84,
    Gcj02,
    Bd09,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hub::telemetry::init();
    match cli.command {
        Command::Categories { json } => print_categories(json),
        Command::Grid { command } => report(grid(command)),
        Command::Serve { config } => report(serve(config)),
        Command::Backup { config, to } => report(backup(&config, &to)),
        Command::Db {
            command: DbCommand::Migrate { from, to, data },
        } => report(db_migrate(&from, &to, data.as_deref())),
        Command::Doctor { config } => {
            let report = hub::doctor::run(&config, hub::clock::now());
            print!("{}", report.render());
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::CheckConfig { file } => {
            let check = hub::checks::check_config_file(&file);
            print!("{}", check.render());
            if check.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Init {
            data,
            name,
            ingest_listen,
        } => report(
            hub::registry::admin::init(&data, &name, ingest_listen, hub::clock::now())
                .map_err(Into::into),
        ),
        Command::Box {
            data,
            config,
            command,
        } => report(hub_data(data, config.as_deref()).and_then(|hub| boxes(hub, command))),
        Command::TokenHash { token } => report(token_hash(token)),
        Command::Token {
            command:
                TokenCommand::New {
                    name,
                    role,
                    subject,
                },
        } => report(token_new(&name, &role, &subject)),
    }
}

/// Where `hub box` finds the registry: the folder, or what the configuration says.
fn hub_data(
    data: PathBuf,
    config: Option<&std::path::Path>,
) -> anyhow::Result<hub::registry::HubData> {
    let Some(path) = config else {
        return Ok(hub::registry::HubData::from(&data));
    };
    read_config(path)?.hub_data().ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no [ingest] section: that hub serves no boxes",
            path.display()
        )
    })
}

fn boxes(data: hub::registry::HubData, command: BoxCommand) -> anyhow::Result<String> {
    use hub::registry::admin;
    Ok(match command {
        BoxCommand::Add {
            id,
            name,
            grid,
            token_ttl_secs,
        } => admin::box_add(
            data,
            &id,
            name.as_deref(),
            grid.as_ref(),
            token_ttl_secs,
            hub::clock::now(),
        )?,
        BoxCommand::List { json } => admin::box_list(data, json)?,
        BoxCommand::Revoke { id } => admin::box_revoke(data, &id, hub::clock::now())?,
    })
}

fn token_hash(token: Option<String>) -> anyhow::Result<String> {
    let token = match token {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    anyhow::ensure!(
        !token.is_empty(),
        "no token given (argument or standard input)"
    );
    Ok(format!("{}\n", hub::api::hash_token(&token)))
}

fn token_new(name: &str, role: &str, subject: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        matches!(role, "admin" | "dispatcher" | "department" | "worker"),
        "--role: one of admin, dispatcher, department, worker"
    );
    let token = hub::random::api_token()?;
    Ok(format!(
        "# the token (shown once; give it to its holder, it is not stored):\n# {token}\n\
         [[tokens]]\nname = {name:?}\ntoken_sha256 = \"{}\"\nrole = \"{role}\"\nsubject = {subject:?}\n",
        hub::api::hash_token(&token)
    ))
}

fn grid(command: GridCommand) -> anyhow::Result<String> {
    match command {
        GridCommand::Sample { out } => Ok(hub::commands::grid_sample(&out)?),
        GridCommand::Locate {
            lat,
            lon,
            crs,
            grid,
            edge_distance_m,
        } => {
            let options = ImportOptions {
                edge_distance_m,
                ..ImportOptions::default()
            };
            let (grid, warnings) = hub::commands::load_grid(&grid, &options, &mut progress_bar)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            let crs = match crs {
                CrsArg::Wgs84 => Crs::Wgs84,
                CrsArg::Gcj02 => Crs::Gcj02,
                CrsArg::Bd09 => Crs::Bd09,
            };
            Ok(hub::commands::grid_locate(&grid, lat, lon, crs)?)
        }
    }
}

/// Reads and validates the configuration file at `path`.
fn read_config(path: &std::path::Path) -> anyhow::Result<hub::config::HubConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("failed to read `{}`: {e}", path.display()))?;
    Ok(hub::config::HubConfig::from_toml_str(&text)?)
}

fn serve(path: PathBuf) -> anyhow::Result<String> {
    let config = read_config(&path)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let signal_cancel = cancel.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            signal_cancel.cancel();
        });
        hub::serve::run(config, cancel, |at| {
            eprintln!("hub console and api listening on http://{}/", at.api)
        })
        .await
    })?;
    Ok(String::new())
}

fn backup(config_path: &std::path::Path, to: &std::path::Path) -> anyhow::Result<String> {
    let config = read_config(config_path)?;
    let report = hub::backup::backup(&config, config_path, to, &mut |line| eprintln!("{line}"))?;
    Ok(format!(
        "{} files, {} bytes in {}\n",
        report.files.len(),
        report.bytes(),
        to.display()
    ))
}

fn db_migrate(from: &str, to: &str, data: Option<&Path>) -> anyhow::Result<String> {
    use hub::migrate::BoxesAt;
    use hub::storage::{DatabaseUrl, PoolSettings};
    let parse = |url: &str, what: &str| -> anyhow::Result<DatabaseUrl> {
        DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("--{what}: {e}"))
    };
    let (from_url, to_url) = (parse(from, "from")?, parse(to, "to")?);
    // the boxes move with the cases when the engines differ (files on one side, tables on
    // the other)
    let boxes = match (from_url.kind() == to_url.kind(), data) {
        (false, Some(dir)) => Some(dir),
        (false, None) => anyhow::bail!(
            "--data is needed: the box registry, ingest log and evidence move with the cases (give the SQLite hub's data folder, [ingest] data_dir)"
        ),
        (true, Some(_)) => anyhow::bail!(
            "--data moves the boxes between SQLite and PostgreSQL; between two databases of one engine copy the data folder or use pg_dump (README)"
        ),
        (true, None) => None,
    };
    let open = |url: &DatabaseUrl, what: &str| -> anyhow::Result<hub::db::Db> {
        hub::db::Db::connect(url, PoolSettings::default())
            .map_err(|e| anyhow::anyhow!("--{what} {url}: {}", hub::telemetry::chain(&e)))
    };
    fn side<'a>(dir: &'a Path, url: &'a DatabaseUrl) -> BoxesAt<'a> {
        BoxesAt {
            data_dir: dir,
            database: (url.kind() == hub::storage::EngineKind::Postgres).then_some(url),
        }
    }
    if let Some(dir) = boxes {
        side(dir, &from_url).check_source()?;
    }
    let (source, destination) = (open(&from_url, "from")?, open(&to_url, "to")?);
    let mut progress = |line: &str| eprintln!("{line}");
    let mut report = hub::migrate::copy(&source, &destination, &mut progress)?;
    if let Some(dir) = boxes {
        let copied =
            hub::migrate::copy_boxes(side(dir, &from_url), side(dir, &to_url), &mut progress)?;
        report.tables.extend(copied.tables);
    }
    let mut out = String::new();
    for (table, rows) in &report.tables {
        out.push_str(&format!("{table:<18} {rows:>10}\n"));
    }
    out.push_str(&format!(
        "{} rows copied from {from_url} to {to_url}; set [database] url to the new database\n",
        report.rows()
    ));
    Ok(out)
}

fn report(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", hub::telemetry::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Draws an import progress bar on stderr when it is a terminal.
fn progress_bar(done: usize, total: usize) {
    if total < 5000 || !std::io::stderr().is_terminal() {
        return;
    }
    let filled = done * 40 / total.max(1);
    eprint!(
        "\rimporting grid [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(40 - filled)
    );
    if done == total {
        eprintln!();
    }
}

fn print_categories(json: bool) -> ExitCode {
    let catalog = Catalog::embedded();
    if !json {
        print!("{}", catalog.to_table());
        return ExitCode::SUCCESS;
    }
    for c in catalog.categories() {
        match serde_json::to_string(c) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: failed to encode category {}: {e}", c.code);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
