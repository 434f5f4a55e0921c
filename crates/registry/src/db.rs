//! Connections, the pool, migrations and transactions over PostgreSQL or SQLite.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use onboard_domain::{RepoError, Store};

use crate::error::{from_diesel, RegistryError};
use crate::group::Group;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// One connection to either backend. Queries are written once against it.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbConnection::Pg(_) => "DbConnection::Pg",
            DbConnection::Sqlite(_) => "DbConnection::Sqlite",
        })
    }
}

/// Which backend a database URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Postgres(String),
    Sqlite(PathBuf),
}

impl Backend {
    /// `postgres://` or `postgresql://` is PostgreSQL; `sqlite://PATH`, `sqlite:PATH`
    /// or a plain path is SQLite (relative to the working directory); anything else
    /// with a scheme is refused rather than guessed.
    pub fn from_url(url: &str) -> Result<Self, RegistryError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(RegistryError::Url("the database URL is empty".into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(RegistryError::Url("sqlite:// needs a file path".into()));
            }
            return Ok(Backend::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(RegistryError::Url(format!(
                "unsupported scheme {scheme:?}: use postgres:// or sqlite://"
            )));
        }
        Ok(Backend::Sqlite(PathBuf::from(url)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }
}

/// How to open the pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a caller waits for a connection before the database counts as
    /// unavailable.
    pub connect_timeout: Duration,
    /// SQLite's busy timeout: how long a writer waits for the lock.
    pub sqlite_busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection as the pool holds it: the connection, when it was opened, and
/// whether it failed in a way that makes it unusable.
///
/// The pool does not ping a connection when it is checked out (that was one
/// round trip per use); a connection that the database dropped (a restart, an
/// outage) is found out by its next `BEGIN`, which then marks it broken so the
/// pool discards it, and the transaction starts again on another connection
/// (see [`Database::begin`]).
#[derive(Debug)]
pub struct PoolConnection {
    conn: DbConnection,
    /// A connection opened before a caller started may have been dropped by the
    /// database since (a restart while it sat idle, used or not).
    opened: std::time::Instant,
    broken: bool,
}

/// A connection checked out of the pool; derefs to the [`DbConnection`].
pub struct Conn(PooledConnection<ConnectionManager>);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Conn").field(&self.0.conn).finish()
    }
}

impl std::ops::Deref for Conn {
    type Target = DbConnection;

    fn deref(&self) -> &DbConnection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.0.conn
    }
}

impl Conn {
    /// The pool discards this connection when it is returned.
    pub(crate) fn mark_broken(&mut self) {
        self.0.broken = true;
    }
}

/// Opens connections for the pool, each set up for its backend.
#[derive(Debug)]
pub struct ConnectionManager {
    backend: Backend,
    sqlite_busy_timeout: Duration,
}

impl ManageConnection for ConnectionManager {
    type Connection = PoolConnection;
    type Error = RegistryError;

    fn connect(&self) -> Result<PoolConnection, RegistryError> {
        self.open().map(|conn| PoolConnection {
            conn,
            opened: std::time::Instant::now(),
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut PoolConnection) -> Result<(), RegistryError> {
        conn.conn
            .ping()
            .map_err(|e| RegistryError::Connect(e.to_string()))
    }

    fn has_broken(&self, conn: &mut PoolConnection) -> bool {
        conn.broken || conn.conn.is_broken()
    }
}

impl ConnectionManager {
    fn open(&self) -> Result<DbConnection, RegistryError> {
        match &self.backend {
            Backend::Postgres(url) => pg_connect(url)
                .map(DbConnection::Pg)
                .map_err(|e| RegistryError::Connect(redact(&e.to_string(), url))),
            Backend::Sqlite(path) => {
                let path_str = path.to_string_lossy();
                let mut conn = SqliteConnection::establish(&path_str)
                    .map_err(|e| RegistryError::Connect(e.to_string()))?;
                // WAL lets readers run beside the writer; foreign keys are off by
                // default in SQLite; the busy timeout makes writers queue; FULL
                // syncs the WAL on every commit, so an acknowledged registration
                // survives a power loss.
                conn.batch_execute(&format!(
                    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}; \
                     PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;",
                    self.sqlite_busy_timeout.as_millis()
                ))
                .map_err(|e| RegistryError::Connect(e.to_string()))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

/// Keeps a password in a PostgreSQL URL out of error messages.
fn redact(message: &str, url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
    {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let password = userinfo.split_once(':').map(|(_, p)| p).unwrap_or("");
            if password.is_empty() {
                message.to_owned()
            } else {
                message.replace(password, "***")
            }
        }
        _ => message.to_owned(),
    }
}

/// The registry: a pool of connections to one database.
#[derive(Clone)]
pub struct Database {
    pool: Pool<ConnectionManager>,
    backend_name: &'static str,
    backend: Backend,
    /// The named locks of [`Store::exclusive`] on SQLite (one process per file).
    local_locks: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Group commit of [`Store::grouped_transaction`] on SQLite.
    group: Arc<Group>,
}

/// libpq speaks TLS to PostgreSQL through OpenSSL. When libpq is the first to
/// initialise OpenSSL, OpenSSL registers a clean-up for process exit that frees its
/// tables while other threads (the pool's, the server's workers) may still be in a
/// TLS read or write, and the process dies of SIGSEGV as it exits. The openssl
/// crate initialises it without that clean-up (`OPENSSL_INIT_NO_ATEXIT`); doing it
/// before any connection makes that the initialisation that counts
/// (`tests/exit.rs`).
pub fn init_openssl_before_libpq() {
    openssl::init();
}

/// Connects to PostgreSQL as every Onboard connection does: OpenSSL initialised
/// first (above), and `gssencmode=disable` unless the URL chooses: libpq's default
/// (`prefer`) looks for Kerberos credentials on every connect, and a process that
/// exits while another thread is in that lookup aborts in libkrb5's clean-up
/// (`tests/exit.rs`). TLS (`sslmode`) is what encrypts Onboard's connections; a URL
/// that names `gssencmode` keeps it.
pub fn pg_connect(url: &str) -> diesel::ConnectionResult<PgConnection> {
    init_openssl_before_libpq();
    if url.contains("gssencmode=") {
        return PgConnection::establish(url);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    PgConnection::establish(&format!("{url}{sep}gssencmode=disable"))
}

/// A stable PostgreSQL advisory lock key for a lock name (FNV-1a, 64 bits), so
/// every replica and version maps a name to the same key.
fn advisory_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("onboard:{name}").bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend_name)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens a pool for `url`. Creates the SQLite file's directory when missing and
    /// checks that it is writable. The
    /// pool opens no connection up front, so a server can start while its database
    /// is still coming up and report that through readiness.
    pub fn open(url: &str, options: &PoolOptions) -> Result<Self, RegistryError> {
        init_openssl_before_libpq();
        let backend = Backend::from_url(url)?;
        if let Backend::Sqlite(path) = &backend {
            ensure_parent_dir(path)?;
        }
        let backend_name = backend.name();
        let manager = ConnectionManager {
            backend: backend.clone(),
            sqlite_busy_timeout: options.sqlite_busy_timeout,
        };
        let pool = Pool::builder()
            .max_size(options.max_connections.max(1))
            .min_idle(Some(0))
            .connection_timeout(options.connect_timeout)
            // No ping per checkout: a dead connection is found by its BEGIN.
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(Self {
            pool,
            backend_name,
            backend,
            local_locks: Arc::default(),
            group: Arc::default(),
        })
    }

    /// What group commit has done in this pool (all zero on PostgreSQL, which
    /// does not use it).
    pub fn group_stats(&self) -> crate::GroupStats {
        self.group.stats()
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        self.backend_name
    }

    pub fn connection(&self) -> Result<Conn, RegistryError> {
        let conn = self
            .pool
            .get()
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        Ok(Conn(conn))
    }

    /// A connection with a transaction begun by `begin` (`BEGIN` or `BEGIN
    /// IMMEDIATE`). A pooled connection whose `BEGIN` finds it closed (the server
    /// restarted or dropped it while it was idle) is discarded and the next one
    /// tried; nothing ran on it, so trying again is safe. A new connection that
    /// fails is the error. At most one attempt per pool slot, plus one.
    /// A pooled connection, and whether it was opened before `started` (so may
    /// be one the database has closed since).
    fn checkout(&self, started: std::time::Instant) -> Result<(Conn, bool), RepoError> {
        let pooled = self
            .pool
            .get()
            .map_err(|e| RepoError::from(RegistryError::Unavailable(e.to_string())))?;
        let reused = pooled.opened < started;
        Ok((Conn(pooled), reused))
    }

    fn begin(
        &self,
        begin: fn(&mut DbConnection) -> diesel::QueryResult<()>,
    ) -> Result<Conn, RepoError> {
        let started = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut conn, reused) = self.checkout(started)?;
            match begin(&mut conn) {
                Ok(()) => return Ok(conn),
                Err(e) => {
                    let lost = connection_lost(&e);
                    if lost {
                        conn.mark_broken();
                    }
                    if !(lost && reused) || attempts > self.pool.max_size() as usize {
                        return Err(from_diesel(e, "transaction"));
                    }
                    tracing::debug!(error = %e, "a pooled database connection was closed; trying another");
                }
            }
        }
    }

    /// Checks that the database answers within `timeout` (for readiness probes, which
    /// must answer faster than the pool's connect timeout). A pooled connection
    /// opened before the check that fails its ping may predate a database restart:
    /// it is discarded and the check tried again on another one, so readiness
    /// follows the database itself, not the pool's leftovers.
    pub fn check(&self, timeout: Duration) -> Result<(), RegistryError> {
        let started = std::time::Instant::now();
        let deadline = started + timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut conn = self
                .pool
                .get_timeout(left)
                .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
            let reused = conn.opened < started;
            match conn.conn.ping() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    conn.broken = true;
                    if !reused || attempts > self.pool.max_size() as usize {
                        return Err(RegistryError::Unavailable(e.to_string()));
                    }
                }
            }
        }
    }

    /// Applies every pending migration; returns the versions applied now.
    pub fn run_migrations(&self) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.connection()?;
        let harness: &mut DbConnection = &mut conn;
        let applied = match harness {
            DbConnection::Pg(c) => c.run_pending_migrations(PG_MIGRATIONS),
            DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
        }
        .map_err(|e| RegistryError::Migration(e.to_string()))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    }

    /// Reverts every applied migration, newest first; returns the versions reverted.
    pub fn revert_all_migrations(&self) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.connection()?;
        let harness: &mut DbConnection = &mut conn;
        let reverted = match harness {
            DbConnection::Pg(c) => c.revert_all_migrations(PG_MIGRATIONS),
            DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS),
        }
        .map_err(|e| RegistryError::Migration(e.to_string()))?;
        Ok(reverted.iter().map(|v| v.to_string()).collect())
    }

    /// Reverts the newest applied migration; returns its version (tests of an
    /// upgrade: revert, write what an older version wrote, migrate again).
    pub fn revert_last_migration(&self) -> Result<String, RegistryError> {
        let mut conn = self.connection()?;
        let harness: &mut DbConnection = &mut conn;
        let reverted = match harness {
            DbConnection::Pg(c) => c.revert_last_migration(PG_MIGRATIONS),
            DbConnection::Sqlite(c) => c.revert_last_migration(SQLITE_MIGRATIONS),
        }
        .map_err(|e| RegistryError::Migration(e.to_string()))?;
        Ok(reverted.to_string())
    }

    /// The migrations not applied yet.
    pub fn pending_migrations(&self) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.connection()?;
        let harness: &mut DbConnection = &mut conn;
        let pending = match harness {
            DbConnection::Pg(c) => c
                .pending_migrations(PG_MIGRATIONS)
                .map(|m| m.iter().map(|m| m.name().to_string()).collect()),
            DbConnection::Sqlite(c) => c
                .pending_migrations(SQLITE_MIGRATIONS)
                .map(|m| m.iter().map(|m| m.name().to_string()).collect()),
        }
        .map_err(|e| RegistryError::Migration(e.to_string()))?;
        Ok(pending)
    }
}

fn ensure_parent_dir(path: &Path) -> Result<(), RegistryError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| {
            RegistryError::Connect(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    // SQLite writes its journal beside the database: a directory it cannot write
    // (a read-only volume, say) is named here rather than surfacing later as
    // "unable to open database file".
    let probe = dir.join(format!(".onboard-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            RegistryError::Connect(format!(
                "the database directory {} is not writable: {e}",
                dir.display()
            ))
        })
}

/// Whether a diesel error says the connection itself is gone.
fn connection_lost(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection
                | diesel::result::DatabaseErrorKind::UnableToSendCommand,
            _
        ) | diesel::result::Error::BrokenTransactionManager
    )
}

/// Begins a transaction that holds the write lock from its start. On SQLite a
/// plain (deferred) transaction that reads and then writes can fail with "database is
/// locked" when another writer got in between; `BEGIN IMMEDIATE` makes it wait its
/// turn instead. PostgreSQL's row locks already serialise the conditional updates.
fn begin_write(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    match conn {
        DbConnection::Sqlite(inner) => {
            AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")
        }
        DbConnection::Pg(_) => {
            <DbConnection as Connection>::TransactionManager::begin_transaction(conn)
        }
    }
}

/// A plain (deferred) `BEGIN`: a consistent snapshot on both backends without
/// SQLite's write lock.
fn begin_read(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    <DbConnection as Connection>::TransactionManager::begin_transaction(conn)
}

/// Runs `f` in the transaction begun on `conn` and commits it when `f` returns
/// `Ok`, or rolls it back. A connection whose commit or rollback fails is
/// discarded by the pool.
fn finish<T, E, F>(conn: &mut Conn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<RepoError>,
{
    match f(conn) {
        Ok(value) => commit(conn).map(|()| value).map_err(E::from),
        Err(err) => {
            rollback(conn);
            Err(err)
        }
    }
}

/// Commits the transaction (or releases the savepoint) open on `conn`; a commit
/// that fails is rolled back.
pub(crate) fn commit(conn: &mut Conn) -> Result<(), RepoError> {
    <DbConnection as Connection>::TransactionManager::commit_transaction(conn).map_err(|e| {
        rollback(conn);
        from_diesel(e, "transaction")
    })
}

/// Rolls back the transaction (or to the savepoint) open on `conn`; a connection
/// that cannot is discarded by the pool.
pub(crate) fn rollback(conn: &mut Conn) -> bool {
    let done = <DbConnection as Connection>::TransactionManager::rollback_transaction(conn).is_ok();
    if !done {
        conn.mark_broken();
    }
    done
}

impl Store for Database {
    type Tx = DbConnection;

    fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E>,
        E: From<RepoError>,
    {
        let mut conn = self.begin(begin_write).map_err(E::from)?;
        finish(&mut conn, f)
    }

    /// Group commit on SQLite (`group.rs`). PostgreSQL runs each caller in a
    /// transaction of its own on its own connection: its writers run in parallel,
    /// and one flush of its write-ahead log already covers the commits of every
    /// connection that are waiting for it.
    fn grouped_transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E>,
        E: From<RepoError>,
    {
        match &self.backend {
            Backend::Sqlite(_) => self.group.run(|| self.begin(begin_write), f),
            Backend::Postgres(_) => self.transaction(f),
        }
    }

    fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E>,
        E: From<RepoError>,
    {
        let mut conn = self.begin(begin_read).map_err(E::from)?;
        finish(&mut conn, f)
    }

    /// PostgreSQL: `f`'s statements in autocommit. A failure on a pooled
    /// connection opened before this call may be a connection the database
    /// closed (a restart): if the connection then fails a ping it is discarded
    /// and `f` runs again on another, as `begin` does for a `BEGIN`.
    fn read_each<T, E, F>(&self, mut f: F) -> Result<T, E>
    where
        F: FnMut(&mut DbConnection) -> Result<T, E>,
        E: From<RepoError>,
    {
        if let Backend::Sqlite(_) = &self.backend {
            return self.read(f);
        }
        let started = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut conn, reused) = self.checkout(started).map_err(E::from)?;
            match f(&mut conn) {
                Ok(value) => return Ok(value),
                Err(e) => {
                    if !reused || conn.ping().is_ok() {
                        return Err(e);
                    }
                    conn.mark_broken();
                    if attempts > self.pool.max_size() as usize {
                        return Err(e);
                    }
                    tracing::debug!(
                        "a pooled database connection was closed; reading again on another"
                    );
                }
            }
        }
    }

    fn exclusive<T, E, F>(&self, name: &str, f: F) -> Result<T, E>
    where
        F: FnOnce() -> Result<T, E>,
        E: From<RepoError>,
    {
        match &self.backend {
            Backend::Postgres(url) => {
                // A connection of its own, closed afterwards: closing releases the
                // session lock whatever happened in between, and a process that
                // dies releases it with its connection.
                let mut conn = pg_connect(url)
                    .map_err(|e| E::from(RepoError::Unavailable(redact(&e.to_string(), url))))?;
                diesel::sql_query("SELECT pg_advisory_lock($1)")
                    .bind::<diesel::sql_types::BigInt, _>(advisory_key(name))
                    .execute(&mut conn)
                    .map_err(|e| E::from(from_diesel(e, "lock")))?;
                let result = f();
                let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
                    .bind::<diesel::sql_types::BigInt, _>(advisory_key(name))
                    .execute(&mut conn);
                result
            }
            Backend::Sqlite(_) => {
                let lock = {
                    let mut locks = self
                        .local_locks
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    locks.entry(name.to_owned()).or_default().clone()
                };
                let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
                f()
            }
        }
    }

    fn ping(&self) -> Result<(), RepoError> {
        let mut conn = self.connection()?;
        let result = conn
            .ping()
            .map_err(|e| RepoError::Unavailable(e.to_string()));
        if result.is_err() {
            conn.mark_broken();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").unwrap().name(),
            "postgres"
        );
        assert_eq!(
            Backend::from_url("sqlite://data/onboard.db").unwrap(),
            Backend::Sqlite("data/onboard.db".into())
        );
        assert_eq!(
            Backend::from_url("sqlite:///var/lib/onboard.db").unwrap(),
            Backend::Sqlite("/var/lib/onboard.db".into())
        );
        assert_eq!(
            Backend::from_url("./x.db").unwrap(),
            Backend::Sqlite("./x.db".into())
        );
    }

    #[test]
    fn advisory_keys_are_stable_and_distinct() {
        assert_eq!(advisory_key("crl"), advisory_key("crl"));
        assert_ne!(advisory_key("crl"), advisory_key("rotation"));
    }

    #[test]
    fn unknown_schemes_are_refused() {
        for bad in ["mysql://h/db", "", "sqlite://", "http://x"] {
            assert!(Backend::from_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let msg = redact(
            "could not connect: password s3cret rejected",
            "postgres://u:s3cret@h/db",
        );
        assert!(!msg.contains("s3cret"));
    }
}
