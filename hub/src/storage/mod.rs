//! One transaction API over the hub's two database engines: SQLite (a file beside the hub, the
//! embedded default) and PostgreSQL (a server that several hub processes share; ADR 0002).
//!
//! A store (the cases, and after them the registry and the ingest log) writes each statement
//! once where the dialects agree — with SQLite's `?N` placeholders, which become `$N` for
//! PostgreSQL ([`Sql::same`]) — and twice, side by side, where they differ ([`Sql::each`]).
//! Values go in as [`Val`] and come back through [`Row`], so a store never names a driver type.
//! Migrations are numbered per store and per engine ([`Engine::migrate`]); a database written
//! by a newer hub is refused.
//!
//! This module is plumbing: it must not know any table or any rule of the stores above it.

mod values;

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use std::collections::HashMap;

pub use values::{Row, Val};

/// Where the hub keeps its data: `[database] url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (`sqlite:///var/lib/hub/hub.db`, or a plain path).
    Sqlite(PathBuf),
    /// A PostgreSQL server (`postgres://user:password@host:port/database`).
    Postgres(String),
}

impl DatabaseUrl {
    /// Reads `sqlite:///path`, `sqlite://relative/path`, `postgres://…` or `postgresql://…`.
    ///
    /// # Errors
    /// A sentence saying what is wrong (for the config checker).
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "`sqlite://` names no file (write sqlite:///var/lib/hub/hub.db)".into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.parse::<postgres::Config>()
                .map_err(|e| format!("`{}` is not a PostgreSQL URL: {e}", redact(url)))?;
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        Err(format!(
            "`{}` names no database this hub knows: use sqlite:///path/to/hub.db or postgres://user@host/database",
            redact(url)
        ))
    }

    /// The engine it names.
    pub fn kind(&self) -> EngineKind {
        match self {
            DatabaseUrl::Sqlite(_) => EngineKind::Sqlite,
            DatabaseUrl::Postgres(_) => EngineKind::Postgres,
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    /// The URL with any password replaced by `***` (for logs and reports).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Which engine a database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// SQLite: one file, one writer at a time, one hub machine.
    Sqlite,
    /// PostgreSQL: a server, a pool of connections, any number of hub processes.
    Postgres,
}

/// A storage failure. Every variant but [`StorageError::SchemaTooNew`] may pass on retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (the server, the connection, or a statement).
    #[error("PostgreSQL: {}", postgres_detail(.0))]
    Postgres(#[from] postgres::Error),
    /// No pooled PostgreSQL connection could be had in time (the server is down or full).
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[from] r2d2::Error),
    /// A connection of its own (listening, leading) was closed by the server or the network.
    #[error("the database connection closed")]
    Closed,
    /// A stored value is not of the type its column should hold.
    #[error("stored value of column {column} is not {wanted}")]
    Type {
        /// Its position in the row.
        column: usize,
        /// What was wanted.
        wanted: &'static str,
    },
    /// The database was written by a newer hub: this one refuses to touch it.
    #[error(
        "the {store} schema in the database has version {found}, newer than this hub's {supported}: run the newer hub"
    )]
    SchemaTooNew {
        /// Which store.
        store: &'static str,
        /// The version found.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
}

/// A statement in both dialects.
#[derive(Debug, Clone)]
pub struct Sql {
    sqlite: Cow<'static, str>,
    postgres: Cow<'static, str>,
}

impl Sql {
    /// A statement both engines read alike, written with SQLite's `?N` placeholders.
    pub fn same(sql: impl Into<Cow<'static, str>>) -> Sql {
        let sqlite = sql.into();
        let postgres = Cow::Owned(dollar_placeholders(&sqlite));
        Sql { sqlite, postgres }
    }

    /// A statement written once per dialect (`?N` for SQLite, `$N` for PostgreSQL).
    pub fn each(
        sqlite: impl Into<Cow<'static, str>>,
        postgres: impl Into<Cow<'static, str>>,
    ) -> Sql {
        Sql {
            sqlite: sqlite.into(),
            postgres: postgres.into(),
        }
    }
}

/// A database on either engine: one connection behind a lock (SQLite), or a pool (PostgreSQL).
pub struct Engine(Kind);

enum Kind {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(PoolHandle),
}

/// The pool, closed off the async runtime: closing a connection blocks on the client's own
/// runtime, which a tokio worker thread may not do (the last handle of a service may well be
/// dropped on one at shutdown).
#[derive(Clone)]
struct PoolHandle {
    pool: Option<Pool>,
    /// How its connections are made (for connections of their own: leadership).
    config: Box<postgres::Config>,
}

impl std::ops::Deref for PoolHandle {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        self.pool.as_ref().expect("the pool is there until dropped")
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            drop_off_runtime(pool);
        }
    }
}

/// Drops `value` (PostgreSQL connections) on a thread of its own when called on a thread that
/// drives async tasks, where the client's blocking close would panic; waits for it.
fn drop_off_runtime<T: Send + 'static>(value: T) {
    if tokio::runtime::Handle::try_current().is_err() {
        drop(value);
        return;
    }
    let closing = std::thread::Builder::new()
        .name("pg-close".into())
        .spawn(move || drop(value));
    if let Ok(thread) = closing {
        let _ = thread.join();
    }
}

/// A PostgreSQL connection listening on a notification channel (see [`Engine::listen`]).
pub struct Listener {
    client: Option<postgres::Client>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// Waits up to `timeout` for a notification; true when at least one came (all that came
    /// are taken).
    ///
    /// # Errors
    /// [`StorageError`] when the connection broke (listen again on a new one).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, StorageError> {
        use postgres::fallible_iterator::FallibleIterator as _;
        let Some(client) = self.client.as_mut() else {
            return Ok(false);
        };
        let came = {
            let mut notifications = client.notifications();
            let came = notifications.timeout_iter(timeout).next()?.is_some();
            if came {
                // the rest that arrived with it
                let mut rest = notifications.iter();
                while rest.next()?.is_some() {}
            }
            came
        };
        if client.is_closed() {
            return Err(StorageError::Closed);
        }
        Ok(came)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            drop_off_runtime(c);
        }
    }
}

/// Which hub process runs the fleet-wide timers (deadline checks, webhook delivery): the one
/// holding a session-level advisory lock on a connection of its own. When that process dies
/// its connection closes and the server releases the lock; the next process to ask takes it.
/// On SQLite (one machine) every process leads.
pub struct Leadership {
    name: &'static str,
    kind: LeadKind,
    held: bool,
}

enum LeadKind {
    Alone,
    Postgres(Box<PgLead>),
}

/// A lead on PostgreSQL: the lock's key and the connection holding it (when connected).
struct PgLead {
    config: postgres::Config,
    key: i64,
    client: Option<postgres::Client>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.name)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Whether this process leads now: keeps the lock it holds (checking its connection),
    /// else tries to take it without waiting. Blocking (a round trip): call it from a
    /// blocking thread, once per timer tick.
    pub fn check(&mut self) -> bool {
        let LeadKind::Postgres(lead) = &mut self.kind else {
            return true;
        };
        let PgLead {
            config,
            key,
            client,
        } = &mut **lead;
        if self.held {
            if let Some(c) = client.as_mut()
                && c.simple_query("SELECT 1").is_ok()
            {
                return true;
            }
            tracing::warn!(
                role = self.name,
                "lost the lead: its database connection broke"
            );
            self.held = false;
            if let Some(c) = client.take() {
                drop_off_runtime(c);
            }
        }
        if client.is_none() {
            match config.connect(postgres::NoTls) {
                Ok(c) => *client = Some(c),
                Err(e) => {
                    tracing::debug!(role = self.name, error = %postgres_detail(&e), "cannot ask for the lead");
                    return false;
                }
            }
        }
        let Some(c) = client.as_mut() else {
            return false;
        };
        match c.query_one("SELECT pg_try_advisory_lock($1)", &[&*key]) {
            Ok(row) => {
                self.held = row.get(0);
                if self.held {
                    tracing::info!(role = self.name, "this process leads now");
                }
            }
            Err(e) => {
                tracing::warn!(role = self.name, error = %postgres_detail(&e), "asking for the lead failed");
                if let Some(c) = client.take() {
                    drop_off_runtime(c);
                }
            }
        }
        self.held
    }

    /// Whether this process led at the last [`Leadership::check`].
    pub fn held(&self) -> bool {
        self.held
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let LeadKind::Postgres(lead) = &mut self.kind
            && let Some(c) = lead.client.take()
        {
            drop_off_runtime(c);
        }
    }
}

type Pool = r2d2::Pool<PgManager>;

/// Makes the pool's connections: a client and the statements prepared on it.
#[derive(Debug)]
struct PgManager {
    config: postgres::Config,
}

/// A pooled PostgreSQL connection and the statements prepared on it (by their SQL): each is
/// parsed and planned once per connection instead of on every call (half the round trips).
struct PgConn {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl r2d2::ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.config.connect(postgres::NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Engine").field(&self.kind()).finish()
    }
}

/// One transaction's statements; see [`Engine::atomically`].
pub struct Tx<'c>(TxKind<'c>, Memo);

/// Numbers a store keeps for the rest of one transaction (the next id of a sequence it holds
/// the lock of), by name: see [`Tx::memo`].
type Memo = RefCell<HashMap<&'static str, i64>>;

enum TxKind<'c> {
    Sqlite(rusqlite::Transaction<'c>),
    Postgres(RefCell<PgTx<'c>>),
}

/// A PostgreSQL transaction with its connection's prepared statements.
struct PgTx<'c> {
    tx: postgres::Transaction<'c>,
    statements: &'c mut HashMap<String, postgres::Statement>,
}

impl PgTx<'_> {
    /// The statement for `sql`, prepared on this connection once.
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Tx").field(&self.engine()).finish()
    }
}

/// Settings of a PostgreSQL pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Connections kept at most.
    pub size: u32,
    /// How long a caller waits for a connection (and the first connect may take).
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            size: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Engine {
    /// Opens (creating if needed) a SQLite file: WAL, full sync, foreign keys, a 5 s wait for
    /// another connection's write lock, 32 MiB of page cache.
    ///
    /// # Errors
    /// [`StorageError::Sqlite`].
    pub fn open_sqlite(path: &Path) -> Result<Engine, StorageError> {
        let conn = rusqlite::Connection::open(path)?;
        // Another connection (another hub process, a tool) may hold the write lock a moment.
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 32 MiB of page cache (the default 2 MiB re-read hot index pages from the OS)
        conn.pragma_update(None, "cache_size", -32_768)?;
        Ok(Engine::sqlite(conn))
    }

    /// An engine over an opened SQLite connection (in memory for tests).
    pub fn sqlite(conn: rusqlite::Connection) -> Engine {
        Engine(Kind::Sqlite(Mutex::new(conn)))
    }

    /// Connects a pool to a PostgreSQL server; the first connection is made before this
    /// returns, so a wrong address or password is reported at startup.
    ///
    /// # Errors
    /// [`StorageError::Postgres`] for a bad URL, [`StorageError::Pool`] when no connection
    /// could be made within the timeout (with the server's last answer).
    pub fn connect_postgres(url: &str, settings: PoolSettings) -> Result<Engine, StorageError> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_application_name().is_none() {
            // which process holds a connection (and a lead), for `hub doctor` and the DBA
            config.application_name(&format!("gridsense-hub pid {}", std::process::id()));
        }
        // a dead peer (the server's machine, or this one's network) is noticed in about a minute
        config.keepalives_idle(Duration::from_secs(30));
        config.connect_timeout(settings.connect_timeout);
        let manager = PgManager {
            config: config.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(settings.size.max(1))
            .min_idle(Some(1))
            .connection_timeout(settings.connect_timeout)
            .error_handler(Box::new(LogPoolErrors))
            .build(manager)?;
        Ok(Engine(Kind::Postgres(PoolHandle {
            pool: Some(pool),
            config: Box::new(config),
        })))
    }

    /// The leadership of the role `name` among the hub processes on this database (see
    /// [`Leadership`]); nobody leads until the first [`Leadership::check`].
    pub fn leadership(&self, name: &'static str) -> Leadership {
        let kind = match &self.0 {
            Kind::Sqlite(_) => LeadKind::Alone,
            Kind::Postgres(pool) => LeadKind::Postgres(Box::new(PgLead {
                config: (*pool.config).clone(),
                key: lock_key(&format!("gridsense leader {name}")),
                client: None,
            })),
        };
        Leadership {
            name,
            kind,
            held: false,
        }
    }

    /// Who leads the role `name` (see [`Leadership`]): the `application_name` of the
    /// connection holding its lock (`gridsense-hub pid N`) and the address it comes from;
    /// `None` when nobody does. Always `None` on SQLite.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn leader(&self, name: &str) -> Result<Option<String>, StorageError> {
        let Kind::Postgres(pool) = &self.0 else {
            return Ok(None);
        };
        let key = lock_key(&format!("gridsense leader {name}"));
        // a bigint advisory lock shows as its high half (classid) and low half (objid)
        let (high, low) = (i64::from((key >> 32) as u32), i64::from(key as u32));
        let mut conn = pool.get()?;
        let row = conn.client.query_opt(
            "SELECT a.application_name || ' at ' || COALESCE(host(a.client_addr), 'local socket') \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND l.classid::BIGINT = $1 AND l.objid::BIGINT = $2",
            &[&high, &low],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Another handle on the same PostgreSQL pool (for a thread of its own); `None` on
    /// SQLite, whose one connection stays with its owner.
    pub fn shared(&self) -> Option<Engine> {
        match &self.0 {
            Kind::Sqlite(_) => None,
            Kind::Postgres(pool) => Some(Engine(Kind::Postgres(pool.clone()))),
        }
    }

    /// A connection of its own that listens on the notification channel `channel`
    /// (`LISTEN`); `None` on SQLite, which has no notifications.
    ///
    /// # Errors
    /// [`StorageError`] when the server cannot be reached.
    pub fn listen(&self, channel: &'static str) -> Result<Option<Listener>, StorageError> {
        let Kind::Postgres(pool) = &self.0 else {
            return Ok(None);
        };
        let mut client = pool.config.connect(postgres::NoTls)?;
        client.batch_execute(&format!("LISTEN {channel}"))?;
        Ok(Some(Listener {
            client: Some(client),
        }))
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match &self.0 {
            Kind::Sqlite(_) => EngineKind::Sqlite,
            Kind::Postgres(_) => EngineKind::Postgres,
        }
    }

    /// Runs `f` in one transaction, committed when it returns `Ok` and rolled back otherwise.
    ///
    /// On SQLite the transaction takes the write lock as it begins (`BEGIN IMMEDIATE`), so what
    /// `f` reads stays true until it commits, even with other connections to the file. On
    /// PostgreSQL it runs at READ COMMITTED on a pooled connection, beside other transactions
    /// of this and other processes: a store that reads and then writes takes row locks
    /// (`FOR UPDATE`) or advisory locks ([`Tx::lock`]) for what must not change under it.
    ///
    /// # Errors
    /// Whatever `f` returns, or [`StorageError`] when the transaction cannot begin or commit.
    pub fn atomically<T, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.0 {
            Kind::Sqlite(conn) => {
                // a panic while holding the lock leaves SQLite consistent (the transaction
                // rolls back)
                let mut conn = conn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(StorageError::from)?;
                let tx = Tx(TxKind::Sqlite(tx), Memo::default());
                let out = f(&tx)?;
                let TxKind::Sqlite(tx) = tx.0 else {
                    unreachable!("a SQLite engine begins SQLite transactions")
                };
                tx.commit().map_err(StorageError::from)?;
                Ok(out)
            }
            Kind::Postgres(pool) => {
                let mut conn = pool.get().map_err(StorageError::from)?;
                let PgConn { client, statements } = &mut *conn;
                let tx = client.transaction().map_err(StorageError::from)?;
                let tx = Tx(
                    TxKind::Postgres(RefCell::new(PgTx { tx, statements })),
                    Memo::default(),
                );
                let out = f(&tx)?;
                let TxKind::Postgres(tx) = tx.0 else {
                    unreachable!("a PostgreSQL engine begins PostgreSQL transactions")
                };
                tx.into_inner().tx.commit().map_err(StorageError::from)?;
                Ok(out)
            }
        }
    }

    /// Brings `store`'s schema up to date: SQLite counts in `PRAGMA user_version` (one store
    /// per file), PostgreSQL in the `gridsense_schema` table (one row per store), migrated
    /// under an advisory lock so that hub processes starting together migrate once. Returns
    /// the version now in place.
    ///
    /// # Errors
    /// [`StorageError::SchemaTooNew`] when the database is newer than `migrations` knows.
    pub fn migrate(
        &self,
        store: &'static str,
        sqlite: &[&str],
        postgres: &[&str],
    ) -> Result<i64, StorageError> {
        match &self.0 {
            Kind::Sqlite(conn) => {
                let mut conn = conn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
                check_version(store, found, sqlite.len())?;
                let tx = conn.transaction()?;
                for (i, sql) in sqlite.iter().enumerate().skip(found.max(0) as usize) {
                    tx.execute_batch(sql)?;
                    tx.pragma_update(None, "user_version", i as i64 + 1)?;
                }
                tx.commit()?;
                Ok(found.max(sqlite.len() as i64))
            }
            Kind::Postgres(pool) => {
                let mut conn = pool.get()?;
                // migrations change the tables: statements prepared before would be stale
                conn.statements.clear();
                let mut tx = conn.client.transaction()?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1)",
                    &[&lock_key("gridsense_schema")],
                )?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS gridsense_schema \
                     (store TEXT PRIMARY KEY, version BIGINT NOT NULL)",
                )?;
                let found: i64 = tx
                    .query_opt(
                        "SELECT version FROM gridsense_schema WHERE store = $1",
                        &[&store],
                    )?
                    .map_or(0, |r| r.get(0));
                check_version(store, found, postgres.len())?;
                for sql in postgres.iter().skip(found.max(0) as usize) {
                    tx.batch_execute(sql)?;
                }
                let now = found.max(postgres.len() as i64);
                tx.execute(
                    "INSERT INTO gridsense_schema (store, version) VALUES ($1, $2) \
                     ON CONFLICT (store) DO UPDATE SET version = excluded.version",
                    &[&store, &now],
                )?;
                tx.commit()?;
                Ok(now)
            }
        }
    }

    /// The schema version of `store` in place (0 when never migrated), for `hub doctor`.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn schema_version(&self, store: &str) -> Result<i64, StorageError> {
        match &self.0 {
            Kind::Sqlite(conn) => {
                let conn = conn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
            }
            Kind::Postgres(pool) => {
                let mut conn = pool.get()?;
                let exists: bool = conn
                    .client
                    .query_one("SELECT to_regclass('gridsense_schema') IS NOT NULL", &[])?
                    .get(0);
                if !exists {
                    return Ok(0);
                }
                Ok(conn
                    .client
                    .query_opt(
                        "SELECT version FROM gridsense_schema WHERE store = $1",
                        &[&store],
                    )?
                    .map_or(0, |r| r.get(0)))
            }
        }
    }
}

impl Tx<'_> {
    /// Which engine runs this transaction.
    pub fn engine(&self) -> EngineKind {
        match &self.0 {
            TxKind::Sqlite(_) => EngineKind::Sqlite,
            TxKind::Postgres(_) => EngineKind::Postgres,
        }
    }

    /// Runs a statement; returns the rows it changed.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn execute(&self, sql: &Sql, args: &[Val]) -> Result<u64, StorageError> {
        match &self.0 {
            TxKind::Sqlite(tx) => {
                let n = tx
                    .prepare_cached(&sql.sqlite)?
                    .execute(rusqlite::params_from_iter(args.iter()))?;
                Ok(n as u64)
            }
            TxKind::Postgres(tx) => {
                let mut tx = tx.borrow_mut();
                let statement = tx.statement(&sql.postgres)?;
                Ok(tx.tx.execute(&statement, &pg_args(args))?)
            }
        }
    }

    /// Runs a query and maps each row with `f`.
    ///
    /// # Errors
    /// [`StorageError`], or what `f` returns.
    pub fn query<T, E: From<StorageError>>(
        &self,
        sql: &Sql,
        args: &[Val],
        mut f: impl FnMut(&Row<'_>) -> Result<T, E>,
    ) -> Result<Vec<T>, E> {
        let mut out = Vec::new();
        match &self.0 {
            TxKind::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(&sql.sqlite).map_err(StorageError::from)?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(args.iter()))
                    .map_err(StorageError::from)?;
                while let Some(row) = rows.next().map_err(StorageError::from)? {
                    out.push(f(&Row::sqlite(row))?);
                }
            }
            TxKind::Postgres(tx) => {
                let mut tx = tx.borrow_mut();
                let statement = tx.statement(&sql.postgres).map_err(StorageError::from)?;
                let rows = tx
                    .tx
                    .query(&statement, &pg_args(args))
                    .map_err(StorageError::from)?;
                for row in &rows {
                    out.push(f(&Row::postgres(row))?);
                }
            }
        }
        Ok(out)
    }

    /// The first row of a query, mapped with `f`, if there is one.
    ///
    /// # Errors
    /// [`StorageError`], or what `f` returns.
    pub fn query_first<T, E: From<StorageError>>(
        &self,
        sql: &Sql,
        args: &[Val],
        f: impl FnOnce(&Row<'_>) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        match &self.0 {
            TxKind::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(&sql.sqlite).map_err(StorageError::from)?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(args.iter()))
                    .map_err(StorageError::from)?;
                match rows.next().map_err(StorageError::from)? {
                    Some(row) => Ok(Some(f(&Row::sqlite(row))?)),
                    None => Ok(None),
                }
            }
            TxKind::Postgres(tx) => {
                let mut tx = tx.borrow_mut();
                let statement = tx.statement(&sql.postgres).map_err(StorageError::from)?;
                let row = tx
                    .tx
                    .query_opt(&statement, &pg_args(args))
                    .map_err(StorageError::from)?;
                match row {
                    Some(row) => Ok(Some(f(&Row::postgres(&row))?)),
                    None => Ok(None),
                }
            }
        }
    }

    /// A number kept under `name` for the rest of this transaction, if one was.
    pub fn memo(&self, name: &'static str) -> Option<i64> {
        self.1.borrow().get(name).copied()
    }

    /// Keeps `value` under `name` for the rest of this transaction.
    pub fn set_memo(&self, name: &'static str, value: i64) {
        self.1.borrow_mut().insert(name, value);
    }

    /// Holds the lock named `key` until this transaction ends, waiting for any other
    /// transaction holding it (PostgreSQL's `pg_advisory_xact_lock`). On SQLite the
    /// transaction already holds the file's write lock, and this does nothing.
    ///
    /// Take several in ascending order of key, so that two transactions cannot each hold one
    /// and wait for the other.
    ///
    /// # Errors
    /// [`StorageError`].
    pub fn lock(&self, key: i64) -> Result<(), StorageError> {
        match &self.0 {
            TxKind::Sqlite(_) => Ok(()),
            TxKind::Postgres(tx) => {
                let mut tx = tx.borrow_mut();
                let statement = tx.statement("SELECT pg_advisory_xact_lock($1)")?;
                tx.tx.execute(&statement, &[&key])?;
                Ok(())
            }
        }
    }
}

/// Creates the empty database `name` on the PostgreSQL server that `server_url` reaches (as a
/// user allowed to), and returns the URL of the new database: for tests, each on a database of
/// its own, and the demo.
///
/// # Errors
/// [`StorageError::Postgres`]: the server cannot be reached, the name is taken, or the user
/// may not create databases.
pub fn create_database(server_url: &str, name: &str) -> Result<String, StorageError> {
    let mut client = server_url
        .parse::<postgres::Config>()?
        .connect(postgres::NoTls)?;
    // a name cannot be a statement parameter: quoted as an identifier
    client.batch_execute(&format!(
        "CREATE DATABASE \"{}\"",
        name.replace('"', "\"\"")
    ))?;
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// [`create_database`] with a name no other caller of any process takes (`prefix`, this
/// process's id, a counter): for tests, each on a database of its own on one server.
///
/// # Errors
/// As [`create_database`].
pub fn create_fresh_database(server_url: &str, prefix: &str) -> Result<String, StorageError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    create_database(server_url, &name)
}

/// An advisory lock's key for a name: the first 8 bytes of its SHA-256, so every hub process
/// (any build, any platform) derives the same key.
pub fn lock_key(name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A URL with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// Logs (at warn) what the pool could not do in the background: a connection refused.
#[derive(Debug)]
struct LogPoolErrors;

impl r2d2::HandleError<postgres::Error> for LogPoolErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::warn!(error = %postgres_detail(&error), "PostgreSQL connection failed");
    }
}

fn check_version(store: &'static str, found: i64, known: usize) -> Result<(), StorageError> {
    if found > known as i64 {
        return Err(StorageError::SchemaTooNew {
            store,
            found,
            supported: known as i64,
        });
    }
    Ok(())
}

fn pg_args(args: &[Val]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| a as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// A PostgreSQL error with the server's message and code when it sent one (the driver's own
/// `Display` says only "db error").
fn postgres_detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// `?N` placeholders as `$N`, outside quoted text.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_turn_into_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?10) AND d = '?3'"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $10) AND d = '?3'"
        );
        assert_eq!(dollar_placeholders("a ? b"), "a ? b");
    }

    #[test]
    fn urls_name_their_engine_and_hide_passwords() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/hub/hub.db").unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/var/lib/hub/hub.db"))
        );
        let pg = DatabaseUrl::parse("postgres://hub:s3cret@db.example:5432/gridsense").unwrap();
        assert_eq!(pg.kind(), EngineKind::Postgres);
        assert_eq!(
            pg.to_string(),
            "postgres://hub:***@db.example:5432/gridsense"
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        let e = DatabaseUrl::parse("mysql://hub:s3cret@db/x").unwrap_err();
        assert!(e.contains("mysql://hub:***@db/x"), "{e}");
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("postgres://hub@db/x?connect_timeout=abc").is_err());
    }

    #[test]
    fn lock_keys_are_stable() {
        // a change here would let two hub builds take different locks for the same thing
        assert_eq!(lock_key("gridsense_schema"), lock_key("gridsense_schema"));
        assert_ne!(lock_key("a"), lock_key("b"));
        let digest_of_a: i64 = i64::from_be_bytes([0xca, 0x97, 0x81, 0x12, 0xca, 0x1b, 0xbd, 0xca]);
        assert_eq!(lock_key("a"), digest_of_a);
    }

    /// A new engine: a database of its own on the PostgreSQL server named by
    /// `GRIDSENSE_TEST_POSTGRES` when the tests run against one, else SQLite in memory.
    fn engine() -> Engine {
        match std::env::var("GRIDSENSE_TEST_POSTGRES") {
            Ok(server) if !server.is_empty() => {
                let url = create_fresh_database(&server, "storage").unwrap();
                Engine::connect_postgres(&url, PoolSettings::default()).unwrap()
            }
            _ => Engine::sqlite(rusqlite::Connection::open_in_memory().unwrap()),
        }
    }

    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let engine = engine();
        let v1 = ["CREATE TABLE t (a INTEGER)"];
        let v2 = [
            "CREATE TABLE t (a INTEGER)",
            "ALTER TABLE t ADD COLUMN b TEXT",
        ];
        assert_eq!(engine.migrate("t", &v1, &v1).unwrap(), 1);
        assert_eq!(engine.migrate("t", &v1, &v1).unwrap(), 1, "once");
        assert_eq!(engine.migrate("t", &v2, &v2).unwrap(), 2);
        assert_eq!(engine.schema_version("t").unwrap(), 2);
        let e = engine.migrate("t", &v1, &v1).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::SchemaTooNew {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn values_round_trip_and_locks_are_taken_again_by_their_holder() {
        let engine = engine();
        engine
            .migrate(
                "t",
                &["CREATE TABLE t (i INTEGER, r REAL, s TEXT, n INTEGER)"],
                &["CREATE TABLE t (i BIGINT, r DOUBLE PRECISION, s JSONB, n INTEGER)"],
            )
            .unwrap();
        type Got = (i64, f64, String, Option<i64>, Val);
        let got = engine
            .atomically(|tx| -> Result<_, StorageError> {
                tx.lock(lock_key("a lock"))?;
                tx.lock(lock_key("a lock"))?;
                tx.set_memo("next", 7);
                tx.execute(
                    &Sql::same("INSERT INTO t (i, r, s, n) VALUES (?1, ?2, ?3, ?4)"),
                    &[
                        Val::from(-7i64),
                        Val::from(1.5),
                        Val::from("[1,2]"),
                        Val::Null,
                    ],
                )?;
                let row = tx.query_first(
                    &Sql::same("SELECT i, r, s, n FROM t"),
                    &[],
                    |r| -> Result<Got, StorageError> {
                        Ok((
                            r.int(0)?,
                            r.real(1)?,
                            r.text(2)?,
                            r.opt_int(3)?,
                            r.value(1)?,
                        ))
                    },
                )?;
                Ok((row, tx.memo("next")))
            })
            .unwrap();
        // JSONB gives its own spelling of the same JSON
        let json = match engine.kind() {
            EngineKind::Postgres => "[1, 2]",
            EngineKind::Sqlite => "[1,2]",
        };
        assert_eq!(
            got,
            (
                Some((-7, 1.5, json.to_owned(), None, Val::Real(1.5))),
                Some(7)
            )
        );
        assert_eq!(
            engine
                .atomically(|tx| Ok::<_, StorageError>(tx.memo("next")))
                .unwrap(),
            None,
            "a memo lasts one transaction"
        );
    }
}
