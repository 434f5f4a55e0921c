//! Throwaway databases for tests, on either backend (feature `test-support`).
//!
//! Every test gets its own database: a temp-dir SQLite file, or a uniquely named
//! PostgreSQL database on the server named by `ONBOARD_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the value drops. The
//! machine's server is shared with CI, so nothing here touches anything it did not
//! create.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: failing loudly is the point

use diesel::connection::SimpleConnection;

use crate::{Database, PoolOptions};

/// The server the PostgreSQL tests use.
pub fn pg_admin_url() -> String {
    std::env::var("ONBOARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Replaces the database name of a PostgreSQL URL.
pub fn pg_url_with_db(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database that disappears with this value.
pub struct TestDb {
    pub url: String,
    pub db: Database,
    guard: Guard,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("url", &self.url).finish()
    }
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn new(backend: TestBackend) -> Self {
        match backend {
            TestBackend::Sqlite => Self::sqlite(),
            TestBackend::Postgres => Self::postgres(),
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("onboard.db").display());
        let db = Database::open(&url, &PoolOptions::default()).expect("open sqlite");
        Self {
            url,
            db,
            guard: Guard::Sqlite(dir),
        }
    }

    pub fn postgres() -> Self {
        let admin_url = pg_admin_url();
        let name = format!("onboard_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = crate::pg_connect(&admin_url).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL for tests is not reachable at {admin_url}: {e}. \
                 Run scripts/test-services.sh (make test does) or set ONBOARD_TEST_PG_URL."
            )
        });
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        let url = pg_url_with_db(&admin_url, &name);
        let db = Database::open(&url, &PoolOptions::default()).expect("open postgres");
        Self {
            url,
            db,
            guard: Guard::Postgres { admin_url, name },
        }
    }

    /// A fresh database with every migration applied.
    pub fn migrated(backend: TestBackend) -> Self {
        let t = Self::new(backend);
        t.db.run_migrations().expect("migrations");
        t
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Guard::Postgres { admin_url, name } = &self.guard {
            if let Ok(mut admin) = crate::pg_connect(admin_url) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            pg_url_with_db("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            pg_url_with_db("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
        assert_eq!(
            pg_url_with_db("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
