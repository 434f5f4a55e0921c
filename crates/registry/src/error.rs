//! The registry's errors, and how diesel's errors become the domain's `RepoError`.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use onboard_domain::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<RegistryError> for RepoError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Connect(m) | RegistryError::Unavailable(m) => RepoError::Unavailable(m),
            other => RepoError::Database(other.to_string()),
        }
    }
}

/// Maps a diesel error for `entity` to the domain's terms.
pub(crate) fn from_diesel(e: DieselError, entity: &'static str) -> RepoError {
    match e {
        DieselError::NotFound => RepoError::NotFound { entity },
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ForeignKeyViolation => {
                RepoError::Conflict {
                    entity,
                    constraint: info
                        .constraint_name()
                        .map(str::to_owned)
                        .unwrap_or_else(|| info.message().to_owned()),
                }
            }
            DatabaseErrorKind::ClosedConnection => {
                RepoError::Unavailable(info.message().to_owned())
            }
            _ if storage_refused(info.message()) => {
                RepoError::Unavailable(format!("storage: {}", info.message()))
            }
            // SQLite's SQLITE_BUSY / SQLITE_LOCKED once the busy timeout is over:
            // another writer held the lock too long. Nothing was written; the same
            // request succeeds later.
            _ if info.message().contains("database is locked")
                || info.message().contains("database table is locked") =>
            {
                RepoError::Unavailable(format!("busy: {}", info.message()))
            }
            _ => RepoError::Database(info.message().to_owned()),
        },
        DieselError::BrokenTransactionManager => {
            RepoError::Unavailable("the connection was lost mid-transaction".into())
        }
        other => RepoError::Database(other.to_string()),
    }
}

/// The storage under the database refuses writes: a full disk or a read-only
/// file system (SQLite's `SQLITE_FULL`, `SQLITE_READONLY` and `SQLITE_IOERR`;
/// PostgreSQL's "No space left on device"). Nothing was committed, and the same
/// request succeeds once space is back, so callers get "unavailable, retry".
fn storage_refused(message: &str) -> bool {
    const SIGNS: [&str; 5] = [
        "database or disk is full",
        "attempt to write a readonly database",
        "disk I/O error",
        "No space left on device",
        "Read-only file system",
    ];
    SIGNS.iter().any(|s| message.contains(s))
}

/// Shorthand for `map_err(|e| from_diesel(e, entity))`.
pub(crate) trait DieselResultExt<T> {
    fn repo(self, entity: &'static str) -> Result<T, RepoError>;
}

impl<T> DieselResultExt<T> for Result<T, DieselError> {
    fn repo(self, entity: &'static str) -> Result<T, RepoError> {
        self.map_err(|e| from_diesel(e, entity))
    }
}
