//! The registry of edge boxes: who may enroll (one-time tokens), who is enrolled, who is revoked,
//! and the hub's CA ([`HubCa`]) that binds a box id into each box certificate.
//!
//! - [`Registry`]: boxes and enrollment tokens in `registry.db` (SQLite, WAL, `synchronous=FULL`)
//!   in the hub's data folder, or in the PostgreSQL database of `[database] url` that every hub
//!   process shares ([`Registry::open_for`]). Several processes share it: `hub box revoke`
//!   writes while `hub serve` runs, and the ingest polls [`Registry::revoked`] to cut live
//!   connections.
//! - [`EnrollmentToken`]: what `hub box add` prints: the CA fingerprint and a one-time secret in
//!   one string, `gs1-<64 hex sha256 of the CA certificate>-<32 hex secret>`. The hub stores only
//!   the secret's SHA-256.
//!
//! This module must not talk to the network or hold events: enrollment over QUIC lives in
//! [`crate::ingest`], which calls [`Registry::enroll`].

pub mod admin;
mod ca;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use protocol::{BoxId, EnrollRefusal, GridCode, Timestamp};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

pub use ca::{BOX_URN_PREFIX, CA_CERT_FILE, CA_KEY_FILE, HubCa, first_cert_der, hex};

use crate::storage::{self, DatabaseUrl, Engine, PoolSettings, Sql, StorageError};

/// File name of the registry database in the data folder.
pub const REGISTRY_FILE: &str = "registry.db";

/// Everything the registry can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A file could not be read or written.
    #[error("failed to access `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `hub init` found a CA already there.
    #[error("`{}` already exists; refusing to replace the hub's CA", path.display())]
    Exists {
        /// The file found.
        path: PathBuf,
    },
    /// A certificate or key could not be made or parsed.
    #[error("certificate operation failed")]
    Certificate(#[from] rcgen::Error),
    /// The CSR a box sent does not parse or its signature is wrong.
    #[error("certificate signing request is malformed")]
    BadCsr(#[source] rcgen::Error),
    /// The database failed (either engine).
    #[error("registry database operation failed: {0}")]
    Storage(StorageError),
    /// `hub box add` for an id already registered.
    #[error("box `{0}` is already registered")]
    BoxExists(BoxId),
    /// No such box.
    #[error("box `{0}` is not registered")]
    UnknownBox(BoxId),
    /// The registry was written by a newer hub.
    #[error(
        "`{}` was written by a newer hub (schema {found}; this one knows up to {supported}): upgrade the hub",
        path.display()
    )]
    SchemaTooNew {
        /// The file (or database URL).
        path: std::path::PathBuf,
        /// Its version.
        found: i64,
        /// The newest this hub knows.
        supported: i64,
    },
    /// `hub box add` for an id the hub uses itself.
    #[error("box id `{0}` is reserved (the hub uses it for {1}): choose another")]
    Reserved(BoxId, &'static str),
    /// An enrollment was refused (unknown, expired or used token, revoked box).
    #[error("enrollment refused: {0:?}")]
    Refused(EnrollRefusal),
    /// A token string that is not `gs1-<fingerprint>-<secret>`.
    #[error("enrollment token is malformed (expected gs1-<64 hex>-<32 hex>)")]
    BadToken,
    /// The OS random source failed (a secret or serial number cannot be made).
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
}

/// Where a box stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxStatus {
    /// Registered; its token not used yet.
    Pending,
    /// Holds a certificate.
    Enrolled,
    /// Refused from now on.
    Revoked,
}

impl BoxStatus {
    /// The status as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            BoxStatus::Pending => "pending",
            BoxStatus::Enrolled => "enrolled",
            BoxStatus::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> BoxStatus {
        match s {
            "enrolled" => BoxStatus::Enrolled,
            "revoked" => BoxStatus::Revoked,
            _ => BoxStatus::Pending,
        }
    }
}

/// One registered box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxRecord {
    /// Its id.
    pub id: BoxId,
    /// A display name.
    pub name: String,
    /// The grid code it stands in, if given.
    pub grid: Option<GridCode>,
    /// Where it stands.
    pub status: BoxStatus,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When its current certificate expires.
    pub cert_not_after: Option<Timestamp>,
    /// When it last connected or reported.
    pub last_seen_at: Option<Timestamp>,
}

/// A one-time enrollment token: the CA fingerprint to pin and the secret to present.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// SHA-256 of the hub CA certificate's DER.
    pub ca_fingerprint: [u8; 32],
    /// The one-time secret (sent in `EnrollRequest.token`).
    pub secret: String,
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gs1-{}-{}", hex(&self.ca_fingerprint), self.secret)
    }
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("ca_fingerprint", &hex(&self.ca_fingerprint))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl FromStr for EnrollmentToken {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        let mut parts = s.trim().splitn(3, '-');
        let (Some("gs1"), Some(fp), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(RegistryError::BadToken);
        };
        let fp = protocol::Digest::from_hex(fp).map_err(|_| RegistryError::BadToken)?;
        if secret.len() != 32 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RegistryError::BadToken);
        }
        Ok(EnrollmentToken {
            ca_fingerprint: fp.0,
            secret: secret.to_ascii_lowercase(),
        })
    }
}

/// Where a hub keeps its boxes: its data folder (the CA; `registry.db` unless the registry is
/// in the database) and the PostgreSQL database every hub process shares, when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubData {
    /// The data folder.
    pub dir: PathBuf,
    /// `[database] url` when it is PostgreSQL: the registry lives there.
    pub database: Option<DatabaseUrl>,
}

impl HubData {
    /// Opens its registry.
    ///
    /// # Errors
    /// As [`Registry::open_for`].
    pub fn registry(&self) -> Result<Registry, RegistryError> {
        Registry::open_for(&self.dir, self.database.as_ref())
    }
}

impl From<&Path> for HubData {
    /// A data folder holding everything (`registry.db` too).
    fn from(dir: &Path) -> HubData {
        HubData {
            dir: dir.to_owned(),
            database: None,
        }
    }
}

impl From<&PathBuf> for HubData {
    fn from(dir: &PathBuf) -> HubData {
        HubData::from(dir.as_path())
    }
}

/// The box registry over `registry.db`, or a shared PostgreSQL database.
#[derive(Debug)]
pub struct Registry {
    engine: Engine,
}

/// The registry's schema version on SQLite (`PRAGMA user_version`): a file of a newer hub is
/// refused.
pub const SCHEMA_VERSION: i64 = 1;

/// The store's name in PostgreSQL's `gridsense_schema`.
pub const STORE: &str = "registry";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS boxes (
    box_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    grid TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    enrolled_at INTEGER,
    revoked_at INTEGER,
    cert_not_after INTEGER,
    last_seen_at INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    secret_sha256 TEXT PRIMARY KEY,
    box_id TEXT NOT NULL REFERENCES boxes (box_id),
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
"#;

/// The same on PostgreSQL (its own numbering: the `registry` row of `gridsense_schema`).
const POSTGRES_SCHEMA: &str = r#"
CREATE TABLE boxes (
    box_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    grid TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    enrolled_at BIGINT,
    revoked_at BIGINT,
    cert_not_after BIGINT,
    last_seen_at BIGINT
);
CREATE INDEX boxes_revoked ON boxes (status) WHERE status = 'revoked';
CREATE TABLE tokens (
    secret_sha256 TEXT PRIMARY KEY,
    box_id TEXT NOT NULL REFERENCES boxes (box_id),
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
"#;

/// The registry's schema version on PostgreSQL.
pub const POSTGRES_SCHEMA_VERSION: i64 = 1;

/// Box ids the hub uses for what is not a box, with what for: no box may be registered under
/// them (an `open311` box's events would be numbered among the citizens' reports).
pub const RESERVED_BOX_IDS: &[(&str, &str)] = &[
    (crate::cases::OPEN311_BOX, "citizen reports"),
    ("hub", "its own events"),
    ("system", "automatic actions"),
];

/// What the hub uses `id` for, when it is reserved (compared without case).
pub fn reserved(id: &BoxId) -> Option<&'static str> {
    RESERVED_BOX_IDS
        .iter()
        .find(|(r, _)| r.eq_ignore_ascii_case(id.as_str()))
        .map(|(_, why)| *why)
}

impl Registry {
    /// Opens (creating if needed) the registry database at `path`.
    ///
    /// # Errors
    /// [`RegistryError::Storage`], [`RegistryError::SchemaTooNew`].
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let engine = Engine::open_sqlite(path).map_err(|e| RegistryError::at(path, e))?;
        // version 0: the first hubs' registry, the same tables without the mark
        Registry::migrated(engine, path)
    }

    /// Opens the registry in a hub data folder.
    ///
    /// # Errors
    /// As [`Registry::open`].
    pub fn open_in(data_dir: &Path) -> Result<Registry, RegistryError> {
        Registry::open(&data_dir.join(REGISTRY_FILE))
    }

    /// Opens the registry where a hub keeps it: in the PostgreSQL database every hub process
    /// shares when `database` is one, else in the data folder.
    ///
    /// # Errors
    /// As [`Registry::open`].
    pub fn open_for(
        data_dir: &Path,
        database: Option<&DatabaseUrl>,
    ) -> Result<Registry, RegistryError> {
        match database {
            Some(DatabaseUrl::Postgres(url)) => {
                let shown = PathBuf::from(storage::redact(url));
                let settings = PoolSettings {
                    size: 2,
                    ..PoolSettings::default()
                };
                let engine = Engine::connect_postgres(url, settings)
                    .map_err(|e| RegistryError::at(&shown, e))?;
                Registry::migrated(engine, &shown)
            }
            _ => Registry::open_in(data_dir),
        }
    }

    fn migrated(engine: Engine, path: &Path) -> Result<Registry, RegistryError> {
        engine
            .migrate(STORE, &[SCHEMA], &[POSTGRES_SCHEMA])
            .map_err(|e| RegistryError::at(path, e))?;
        Ok(Registry { engine })
    }

    fn atomically<T>(
        &self,
        f: impl FnOnce(&storage::Tx<'_>) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        self.engine.atomically(f)
    }

    /// Registers a box and returns its one-time enrollment secret (valid `token_ttl_secs`).
    ///
    /// # Errors
    /// [`RegistryError::BoxExists`], [`RegistryError::Storage`].
    pub fn add_box(
        &mut self,
        id: &BoxId,
        name: &str,
        grid: Option<&GridCode>,
        token_ttl_secs: u64,
        now: Timestamp,
    ) -> Result<String, RegistryError> {
        if let Some(why) = reserved(id) {
            return Err(RegistryError::Reserved(id.clone(), why));
        }
        let secret = new_secret()?;
        self.atomically(|tx| {
            let n = tx.execute(
                &Sql::same(
                    "INSERT INTO boxes (box_id, name, grid, status, created_at) \
                     VALUES (?1, ?2, ?3, 'pending', ?4) ON CONFLICT DO NOTHING",
                ),
                &[
                    id.as_str().into(),
                    name.into(),
                    grid.map(GridCode::as_str).into(),
                    now.as_unix_millis().into(),
                ],
            )?;
            if n == 0 {
                return Err(RegistryError::BoxExists(id.clone()));
            }
            let expires = now.as_unix_millis().saturating_add(
                i64::try_from(token_ttl_secs)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            );
            tx.execute(
                &Sql::same(
                    "INSERT INTO tokens (secret_sha256, box_id, expires_at) VALUES (?1, ?2, ?3)",
                ),
                &[
                    secret_hash(&secret).into(),
                    id.as_str().into(),
                    expires.into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(secret)
    }

    /// Every registered box, by id.
    ///
    /// # Errors
    /// [`RegistryError::Storage`].
    pub fn list(&self) -> Result<Vec<BoxRecord>, RegistryError> {
        let rows = self.atomically(|tx| {
            Ok(tx.query(
                &Sql::same(
                    "SELECT box_id, name, grid, status, created_at, cert_not_after, last_seen_at \
                     FROM boxes ORDER BY box_id",
                ),
                &[],
                |r| {
                    Ok::<_, StorageError>((
                        r.text(0)?,
                        r.text(1)?,
                        r.opt_text(2)?,
                        r.text(3)?,
                        r.int(4)?,
                        r.opt_int(5)?,
                        r.opt_int(6)?,
                    ))
                },
            )?)
        })?;
        let mut out = Vec::new();
        for (id, name, grid, status, created, not_after, seen) in rows {
            // Rows are only ever written from validated ids; skip one that is not.
            let Ok(id) = BoxId::parse(id) else { continue };
            out.push(BoxRecord {
                id,
                name,
                grid: grid.and_then(|g| GridCode::parse(g).ok()),
                status: BoxStatus::parse(&status),
                created_at: Timestamp::from_unix_millis(created),
                cert_not_after: not_after.map(Timestamp::from_unix_millis),
                last_seen_at: seen.map(Timestamp::from_unix_millis),
            });
        }
        Ok(out)
    }

    /// Revokes a box: its tokens and certificates are refused from now on.
    ///
    /// # Errors
    /// [`RegistryError::UnknownBox`], [`RegistryError::Storage`].
    pub fn revoke(&mut self, id: &BoxId, now: Timestamp) -> Result<(), RegistryError> {
        let n = self.atomically(|tx| {
            Ok(tx.execute(
                &Sql::same(
                    "UPDATE boxes SET status = 'revoked', revoked_at = COALESCE(revoked_at, ?2) \
                     WHERE box_id = ?1",
                ),
                &[id.as_str().into(), now.as_unix_millis().into()],
            )?)
        })?;
        if n == 0 {
            return Err(RegistryError::UnknownBox(id.clone()));
        }
        Ok(())
    }

    /// The status of a box, `None` when it is not registered.
    ///
    /// # Errors
    /// [`RegistryError::Storage`].
    pub fn status(&self, id: &BoxId) -> Result<Option<BoxStatus>, RegistryError> {
        // Read at every session open: the statement is kept prepared (SQLite).
        let status = self.atomically(|tx| {
            Ok(tx.query_first(
                &Sql::same("SELECT status FROM boxes WHERE box_id = ?1"),
                &[id.as_str().into()],
                |r| r.text(0),
            )?)
        })?;
        Ok(status.map(|s| BoxStatus::parse(&s)))
    }

    /// The grid code (a cell or an area) a box was registered in, if any.
    ///
    /// # Errors
    /// [`RegistryError::Storage`].
    pub fn grid_of(&self, id: &BoxId) -> Result<Option<GridCode>, RegistryError> {
        let grid = self.atomically(|tx| {
            Ok(tx.query_first(
                &Sql::same("SELECT grid FROM boxes WHERE box_id = ?1"),
                &[id.as_str().into()],
                |r| r.opt_text(0),
            )?)
        })?;
        Ok(grid.flatten().and_then(|g| GridCode::parse(g).ok()))
    }

    /// Every revoked box.
    ///
    /// # Errors
    /// [`RegistryError::Storage`].
    pub fn revoked(&self) -> Result<HashSet<BoxId>, RegistryError> {
        let ids = self.atomically(|tx| {
            Ok(tx.query(
                &Sql::same("SELECT box_id FROM boxes WHERE status = 'revoked'"),
                &[],
                |r| r.text(0),
            )?)
        })?;
        Ok(ids
            .into_iter()
            .filter_map(|id| BoxId::parse(id).ok())
            .collect())
    }

    /// Redeems a one-time token: in one transaction, checks it (known, unexpired, unused, box
    /// not revoked), calls `sign` for the box it names, marks the token used and the box
    /// enrolled. A failed `sign` leaves the token unused. On PostgreSQL the token's row is
    /// locked meanwhile, so two hub processes cannot both redeem it.
    ///
    /// # Errors
    /// [`RegistryError::Refused`] naming why, whatever `sign` returns,
    /// [`RegistryError::Storage`].
    pub fn enroll(
        &mut self,
        secret: &str,
        now: Timestamp,
        sign: impl FnOnce(&BoxId) -> Result<(String, Timestamp), RegistryError>,
    ) -> Result<(BoxId, String, Timestamp), RegistryError> {
        let hash = secret_hash(secret);
        self.atomically(|tx| {
            let row = tx.query_first(
                &Sql::each(
                    "SELECT t.box_id, t.expires_at, t.used_at, b.status FROM tokens t \
                     JOIN boxes b USING (box_id) WHERE t.secret_sha256 = ?1",
                    "SELECT t.box_id, t.expires_at, t.used_at, b.status FROM tokens t \
                     JOIN boxes b USING (box_id) WHERE t.secret_sha256 = $1 FOR UPDATE",
                ),
                &[hash.as_str().into()],
                |r| Ok::<_, StorageError>((r.text(0)?, r.int(1)?, r.opt_int(2)?, r.text(3)?)),
            )?;
            let Some((id, expires_at, used_at, status)) = row else {
                return Err(RegistryError::Refused(EnrollRefusal::UnknownToken));
            };
            let id = BoxId::parse(id)
                .map_err(|_| RegistryError::Refused(EnrollRefusal::UnknownToken))?;
            if BoxStatus::parse(&status) == BoxStatus::Revoked {
                return Err(RegistryError::Refused(EnrollRefusal::Revoked));
            }
            if used_at.is_some() {
                return Err(RegistryError::Refused(EnrollRefusal::UsedToken));
            }
            if now.as_unix_millis() >= expires_at {
                return Err(RegistryError::Refused(EnrollRefusal::ExpiredToken));
            }
            let (pem, not_after) = sign(&id)?;
            tx.execute(
                &Sql::same("UPDATE tokens SET used_at = ?2 WHERE secret_sha256 = ?1"),
                &[hash.as_str().into(), now.as_unix_millis().into()],
            )?;
            tx.execute(
                &Sql::same(
                    "UPDATE boxes SET status = 'enrolled', enrolled_at = ?2, cert_not_after = ?3 \
                     WHERE box_id = ?1",
                ),
                &[
                    id.as_str().into(),
                    now.as_unix_millis().into(),
                    not_after.as_unix_millis().into(),
                ],
            )?;
            Ok((id, pem, not_after))
        })
    }

    /// Records a renewed certificate's expiry for an enrolled box.
    ///
    /// # Errors
    /// [`RegistryError::Storage`].
    pub fn renewed(&self, id: &BoxId, not_after: Timestamp) -> Result<(), RegistryError> {
        self.atomically(|tx| {
            tx.execute(
                &Sql::same(
                    "UPDATE boxes SET cert_not_after = ?2 WHERE box_id = ?1 AND status = 'enrolled'",
                ),
                &[id.as_str().into(), not_after.as_unix_millis().into()],
            )?;
            Ok(())
        })
    }

    /// Records when each of several boxes was last seen, in one transaction (one disk flush
    /// however many boxes connected since the last call).
    ///
    /// # Errors
    /// [`RegistryError::Storage`]; nothing is recorded then.
    pub fn seen_all(&mut self, seen: &[(BoxId, Timestamp)]) -> Result<(), RegistryError> {
        if seen.is_empty() {
            return Ok(());
        }
        let sql = Sql::each(
            "UPDATE boxes SET last_seen_at = max(coalesce(last_seen_at, 0), ?2) WHERE box_id = ?1",
            "UPDATE boxes SET last_seen_at = GREATEST(coalesce(last_seen_at, 0), $2) \
             WHERE box_id = $1",
        );
        self.atomically(|tx| {
            for (id, at) in seen {
                tx.execute(&sql, &[id.as_str().into(), at.as_unix_millis().into()])?;
            }
            Ok(())
        })
    }

    /// Which engine holds it.
    pub fn engine(&self) -> storage::EngineKind {
        self.engine.kind()
    }

    /// The engine under the registry (for copying it).
    pub(crate) fn storage_engine(&self) -> &Engine {
        &self.engine
    }
}

impl RegistryError {
    /// A storage failure of the registry at `path` (a file, or a database URL shown without
    /// its password): a newer schema names it.
    fn at(path: &Path, e: StorageError) -> RegistryError {
        match e {
            StorageError::SchemaTooNew {
                found, supported, ..
            } => RegistryError::SchemaTooNew {
                path: path.to_owned(),
                found,
                supported,
            },
            other => RegistryError::Storage(other),
        }
    }
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> RegistryError {
        RegistryError::Storage(e)
    }
}

/// 128 bits from the OS random source, in hex: an enrollment token's secret.
fn new_secret() -> Result<String, RegistryError> {
    let bytes = crate::random::bytes::<16>().map_err(RegistryError::Random)?;
    Ok(hex(&bytes))
}

fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(
        secret.trim().to_ascii_lowercase().as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    /// A new registry: in a database of its own on the PostgreSQL server named by
    /// `GRIDSENSE_TEST_POSTGRES` when the tests run against one, else in `dir`.
    fn registry(dir: &Path) -> Registry {
        match std::env::var("GRIDSENSE_TEST_POSTGRES") {
            Ok(server) if !server.is_empty() => {
                let url = storage::create_fresh_database(&server, "registry").unwrap();
                let reg = Registry::open_for(dir, Some(&DatabaseUrl::Postgres(url))).unwrap();
                assert_eq!(reg.engine(), storage::EngineKind::Postgres);
                reg
            }
            _ => Registry::open_in(dir).unwrap(),
        }
    }

    fn sign(id: &BoxId) -> Result<(String, Timestamp), RegistryError> {
        Ok((format!("cert of {id}"), t(1000)))
    }

    #[test]
    fn a_token_enrolls_its_box_once_and_never_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = registry(dir.path());
        let id = BoxId::parse("box-1").unwrap();
        let secret = reg.add_box(&id, "north gate", None, 60, t(0)).unwrap();
        let (got, pem, _) = reg.enroll(&secret, t(10), sign).unwrap();
        assert_eq!((got, pem.as_str()), (id.clone(), "cert of box-1"));
        assert!(matches!(
            reg.enroll(&secret, t(11), sign),
            Err(RegistryError::Refused(EnrollRefusal::UsedToken))
        ));
        assert!(matches!(
            reg.enroll("0123456789abcdef0123456789abcdef", t(11), sign),
            Err(RegistryError::Refused(EnrollRefusal::UnknownToken))
        ));
        assert_eq!(reg.list().unwrap()[0].status, BoxStatus::Enrolled);
        assert!(matches!(
            reg.add_box(&id, "again", None, 60, t(0)),
            Err(RegistryError::BoxExists(_))
        ));
    }

    #[test]
    fn a_registry_of_a_newer_hub_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Registry::open_in(dir.path()).unwrap());
        let path = dir.path().join(REGISTRY_FILE);
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        assert!(matches!(
            Registry::open_in(dir.path()),
            Err(RegistryError::SchemaTooNew { found: 7, .. })
        ));
    }

    #[test]
    fn the_ids_the_hub_uses_itself_cannot_be_registered() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = registry(dir.path());
        for id in ["open311", "Open311", "hub", "system"] {
            let id = BoxId::parse(id).unwrap();
            let refused = reg.add_box(&id, "", None, 60, t(0));
            assert!(
                matches!(refused, Err(RegistryError::Reserved(..))),
                "{id}: {refused:?}"
            );
        }
        assert!(reg.list().unwrap().is_empty());
        let box_0001 = BoxId::parse("box-0001").unwrap();
        reg.add_box(&box_0001, "", None, 60, t(0)).unwrap();
    }

    #[test]
    fn expired_tokens_and_revoked_boxes_are_refused_and_failed_signing_keeps_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = registry(dir.path());
        let a = BoxId::parse("a").unwrap();
        let b = BoxId::parse("b").unwrap();
        let sa = reg.add_box(&a, "", None, 60, t(0)).unwrap();
        let sb = reg.add_box(&b, "", None, 60, t(0)).unwrap();
        assert!(matches!(
            reg.enroll(&sa, t(60), sign),
            Err(RegistryError::Refused(EnrollRefusal::ExpiredToken))
        ));
        assert!(
            reg.enroll(&sb, t(1), |_| Err(RegistryError::BadToken))
                .is_err()
        );
        reg.revoke(&b, t(2)).unwrap();
        assert!(matches!(
            reg.enroll(&sb, t(3), sign),
            Err(RegistryError::Refused(EnrollRefusal::Revoked))
        ));
        assert_eq!(reg.revoked().unwrap(), HashSet::from([b]));
        assert!(matches!(
            reg.revoke(&BoxId::parse("zz").unwrap(), t(3)),
            Err(RegistryError::UnknownBox(_))
        ));
    }

    #[test]
    fn tokens_print_and_parse_with_the_fingerprint() {
        let token = EnrollmentToken {
            ca_fingerprint: [0xab; 32],
            secret: "00112233445566778899aabbccddeeff".into(),
        };
        let text = token.to_string();
        assert!(text.starts_with("gs1-abab"));
        assert_eq!(text.parse::<EnrollmentToken>().unwrap(), token);
        assert!("gs1-zz-00".parse::<EnrollmentToken>().is_err());
        assert!(!format!("{token:?}").contains("0011"), "secret redacted");
    }
}
