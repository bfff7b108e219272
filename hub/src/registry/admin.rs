//! What `hub init` and `hub box add|list|revoke` do, as functions returning the text to print,
//! so tests drive them in-process.

use std::fmt::Write as _;
use std::path::Path;

use protocol::{BoxId, GridCode, Timestamp};

use super::{EnrollmentToken, HubCa, HubData, Registry, RegistryError, ca::write_file};

/// Name of the configuration file `hub init` writes.
pub const CONFIG_FILE: &str = "hub.toml";

const STARTER_DUTIES: &str = "\
category,community_department,street_department,district_department,time_limit,registration
environment.exposed_garbage,sanitation-pj,sanitation-gusu,city-management,4h,auto
street_order.illegal_parking,traffic-pj,traffic-gusu,city-management,1d,review
";

const STARTER_CALENDAR: &str = r#"utc_offset_minutes = 480
working_hours = ["08:30-12:00", "13:30-17:30"]
weekend_days = ["saturday", "sunday"]
holidays = []
makeup_workdays = []
"#;

/// `hub init --data DIR`: makes the CA, the registry, the case database, starter grid, duties
/// and calendar files, and a `hub.toml` naming them, in `dir`. Refuses to replace an existing
/// CA. `ingest_listen` goes into the config's `[ingest] listen_addr`.
///
/// # Errors
/// [`RegistryError`] naming what could not be made.
pub fn init(
    dir: &Path,
    name: &str,
    ingest_listen: std::net::SocketAddr,
    now: Timestamp,
) -> Result<String, RegistryError> {
    std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let ca = HubCa::create(dir, name, now)?;
    Registry::open_in(dir)?;
    let db_path = dir.join("hub.db");
    crate::cases::db::Db::open(&db_path).map_err(|e| RegistryError::Io {
        path: db_path.clone(),
        source: std::io::Error::other(crate::telemetry::chain(&e)),
    })?;
    let grid = dir.join("grid.geojson");
    let duties = dir.join("duties.csv");
    let calendar = dir.join("calendar.toml");
    for (path, text) in [
        (&grid, crate::grid::sample::sample_city_geojson()),
        (&duties, STARTER_DUTIES.to_owned()),
        (&calendar, STARTER_CALENDAR.to_owned()),
    ] {
        if !path.exists() {
            write_file(path, text.as_bytes(), false)?;
        }
    }
    let q = |p: &Path| toml_string(&p.display().to_string());
    let config = format!(
        "# Written by `hub init`; every other key takes its default (see config/example.toml).\n\
         api_listen_addr = \"127.0.0.1:8080\"\n\
         database_path = {}\n\
         grid_path = {}\n\
         duties_path = {}\n\
         calendar_path = {}\n\n\
         [ingest]\n\
         listen_addr = \"{ingest_listen}\"\n\
         data_dir = {}\n\n\
         [[departments]]\nid = \"sanitation-pj\"\nname = \"sanitation (street)\"\n\n\
         [[departments]]\nid = \"sanitation-gusu\"\nname = \"sanitation (district)\"\n\n\
         [[departments]]\nid = \"city-management\"\nname = \"city management\"\n\n\
         [[departments]]\nid = \"traffic-pj\"\nname = \"traffic (street)\"\n\n\
         [[departments]]\nid = \"traffic-gusu\"\nname = \"traffic (district)\"\n",
        q(&db_path),
        q(&grid),
        q(&duties),
        q(&calendar),
        q(dir),
    );
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        write_file(&config_path, config.as_bytes(), false)?;
    }
    Ok(format!(
        "hub data folder ready: {}\nCA fingerprint (sha256): {}\nconfiguration: {}\n",
        dir.display(),
        super::hex(&ca.fingerprint()),
        config_path.display()
    ))
}

/// `hub box add ID`: registers a box and prints its one-time enrollment token.
///
/// # Errors
/// [`RegistryError`] (box exists, no CA in `dir`, ...).
pub fn box_add(
    hub: impl Into<HubData>,
    id: &BoxId,
    name: Option<&str>,
    grid: Option<&GridCode>,
    token_ttl_secs: u64,
    now: Timestamp,
) -> Result<String, RegistryError> {
    let hub = hub.into();
    let ca = HubCa::load(&hub.dir)?;
    let mut registry = hub.registry()?;
    let secret = registry.add_box(id, name.unwrap_or(id.as_str()), grid, token_ttl_secs, now)?;
    let token = EnrollmentToken {
        ca_fingerprint: ca.fingerprint(),
        secret,
    };
    Ok(format!("{token}\n"))
}

/// `hub box list`: one line per box, or JSON lines.
///
/// # Errors
/// [`RegistryError::Storage`].
pub fn box_list(hub: impl Into<HubData>, json: bool) -> Result<String, RegistryError> {
    let hub = hub.into();
    let registry = hub.registry()?;
    let mut out = String::new();
    if !json {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<16} {:<26} {:<26} name",
            "id", "status", "grid", "certificate expires", "last seen"
        );
    }
    for b in registry.list()? {
        if json {
            match serde_json::to_string(&b) {
                Ok(line) => {
                    let _ = writeln!(out, "{line}");
                }
                Err(e) => {
                    return Err(RegistryError::Io {
                        path: hub.dir.clone(),
                        source: std::io::Error::other(e),
                    });
                }
            }
            continue;
        }
        let opt = |t: Option<Timestamp>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<16} {:<26} {:<26} {}",
            b.id.as_str(),
            b.status.as_str(),
            b.grid.as_ref().map_or("-", GridCode::as_str),
            opt(b.cert_not_after),
            opt(b.last_seen_at),
            b.name
        );
    }
    Ok(out)
}

/// `hub box revoke ID`.
///
/// # Errors
/// [`RegistryError::UnknownBox`], [`RegistryError::Storage`].
pub fn box_revoke(
    hub: impl Into<HubData>,
    id: &BoxId,
    now: Timestamp,
) -> Result<String, RegistryError> {
    hub.into().registry()?.revoke(id, now)?;
    Ok(format!(
        "box `{id}` revoked; a running hub disconnects it within its revocation check interval\n"
    ))
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_config_that_parses_and_a_token_that_pins_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_unix_millis(1_790_000_000_000);
        let listen = "127.0.0.1:0".parse().unwrap();
        let text = init(dir.path(), "test hub", listen, now).unwrap();
        assert!(text.contains("CA fingerprint"));
        let config = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
        let parsed = crate::config::HubConfig::from_toml_str(&config).unwrap();
        assert_eq!(parsed.ingest.unwrap().data_dir, dir.path());
        assert!(init(dir.path(), "again", listen, now).is_err());
        let id = BoxId::parse("box-1").unwrap();
        let token = box_add(dir.path(), &id, None, None, 60, now).unwrap();
        let token: EnrollmentToken = token.trim().parse().unwrap();
        let ca = HubCa::load(dir.path()).unwrap();
        assert_eq!(token.ca_fingerprint, ca.fingerprint());
        assert!(box_list(dir.path(), false).unwrap().contains("box-1"));
        box_revoke(dir.path(), &id, now).unwrap();
        assert!(box_list(dir.path(), true).unwrap().contains("\"revoked\""));
    }
}
