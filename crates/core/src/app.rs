//! The application context both binaries build from settings.

use std::sync::Arc;
use std::time::Duration;

use onboard_domain::{Clock, SystemClock};
use onboard_registry::{Database, PoolOptions};

use crate::error::CoreError;
use crate::settings::Settings;

/// Everything a use case needs: settings, storage and the clock. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Onboard {
    settings: Arc<Settings>,
    db: Database,
    clock: Arc<dyn Clock>,
}

/// How long a readiness check waits for the database.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

impl Onboard {
    /// Opens the database pool (no connection is made yet) with the system clock.
    pub fn open(settings: Settings) -> Result<Self, CoreError> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    pub fn with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, CoreError> {
        let options = PoolOptions {
            max_connections: settings.database.max_connections,
            connect_timeout: Duration::from_secs(settings.database.connect_timeout_seconds),
            ..PoolOptions::default()
        };
        let db = Database::open(&settings.database.url, &options)?;
        Ok(Self {
            settings: Arc::new(settings),
            db,
            clock,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Applies pending migrations; returns the versions applied now.
    pub fn migrate(&self) -> Result<Vec<String>, CoreError> {
        let applied = self.db.run_migrations()?;
        for version in &applied {
            tracing::info!(version, backend = self.backend(), "migration applied");
        }
        Ok(applied)
    }

    /// Migrations the database has not had yet.
    pub fn pending_migrations(&self) -> Result<Vec<String>, CoreError> {
        Ok(self.db.pending_migrations()?)
    }

    /// Whether the service can serve requests now: the database answers.
    pub fn readiness(&self) -> Result<(), CoreError> {
        self.db.check(READINESS_TIMEOUT)?;
        Ok(())
    }
}
