//! The application context both binaries build from settings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use onboard_domain::{Clock, SystemClock};
use onboard_pki::CertificateAuthority;
use onboard_registry::{Database, PoolOptions};

use crate::adapters::Ports;
use crate::error::CoreError;
use crate::settings::Settings;

/// Everything a use case needs: settings, storage and the clock. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Onboard {
    settings: Arc<Settings>,
    db: Database,
    clock: Arc<dyn Clock>,
    /// Set once the schema was seen up to date; migrations never go backwards under
    /// a running server, so it is not checked again.
    schema_current: Arc<AtomicBool>,
    /// The CA, loaded (or created) on first use.
    ca: Arc<OnceLock<Arc<CertificateAuthority>>>,
    ca_init: Arc<Mutex<()>>,
    /// The access-token key, derived from the CA key on first use.
    token_key: Arc<OnceLock<Arc<onboard_pki::TokenKey>>>,
    ports: Arc<Ports>,
    installed_crl: Arc<crate::effects::InstalledCrl>,
}

/// Why the service cannot serve requests now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the database is unavailable: {0}")]
    Database(String),
    #[error("{0} database migration(s) pending; run onboardctl migrate")]
    MigrationsPending(usize),
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
        let mut ports = Ports {
            broker: crate::broker::broker_for(&settings, &db)?,
            ..Ports::default()
        };
        if settings.aws.enabled {
            ports.cloud = crate::cloud::aws_registrar(&settings.aws)?;
        }
        Ok(Self {
            settings: Arc::new(settings),
            db,
            clock,
            schema_current: Arc::new(AtomicBool::new(false)),
            ca: Arc::new(OnceLock::new()),
            ca_init: Arc::new(Mutex::new(())),
            token_key: Arc::new(OnceLock::new()),
            ports: Arc::new(ports),
            installed_crl: Arc::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The same context with other external components (another issuer, a broker,
    /// a cloud registry; tests inject failing ones).
    pub fn with_ports(mut self, ports: Ports) -> Self {
        self.ports = Arc::new(ports);
        self
    }

    pub(crate) fn ports(&self) -> &Ports {
        &self.ports
    }

    pub(crate) fn installed_crl_cell(&self) -> &crate::effects::InstalledCrl {
        &self.installed_crl
    }

    pub(crate) fn store(&self) -> &Database {
        &self.db
    }

    pub(crate) fn ca_init_lock(&self) -> &Mutex<()> {
        &self.ca_init
    }

    pub(crate) fn token_key_cell(&self) -> &OnceLock<Arc<onboard_pki::TokenKey>> {
        &self.token_key
    }

    pub(crate) fn ca_cell(&self) -> &OnceLock<Arc<CertificateAuthority>> {
        &self.ca
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Applies pending migrations; returns the versions applied now.
    pub fn migrate(&self) -> Result<Vec<String>, CoreError> {
        let applied = self.db.run_migrations()?;
        self.schema_current.store(true, Ordering::Relaxed);
        for version in &applied {
            tracing::info!(version, backend = self.backend(), "migration applied");
        }
        Ok(applied)
    }

    /// Brings the schema up to date before other work, as the server does on start:
    /// applies pending migrations when `database.run_migrations` is on, and
    /// otherwise refuses to work on an outdated schema.
    pub fn ensure_schema(&self) -> Result<(), CoreError> {
        if self.schema_current.load(Ordering::Relaxed) {
            return Ok(());
        }
        if self.settings.database.run_migrations {
            self.migrate()?;
        } else {
            let pending = self.pending_migrations()?;
            if !pending.is_empty() {
                return Err(CoreError::Setup(format!(
                    "{} database migration(s) pending; run onboardctl migrate",
                    pending.len()
                )));
            }
            self.schema_current.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Migrations the database has not had yet.
    pub fn pending_migrations(&self) -> Result<Vec<String>, CoreError> {
        Ok(self.db.pending_migrations()?)
    }

    /// Whether the service can serve requests now: the database answers and its
    /// schema is current (a server started with `database.run_migrations = false`
    /// stays unready until `onboardctl migrate` has run).
    pub fn readiness(&self) -> Result<(), NotReady> {
        self.db
            .check(READINESS_TIMEOUT)
            .map_err(|e| NotReady::Database(e.to_string()))?;
        if !self.schema_current.load(Ordering::Relaxed) {
            let pending = self
                .db
                .pending_migrations()
                .map_err(|e| NotReady::Database(e.to_string()))?;
            if !pending.is_empty() {
                return Err(NotReady::MigrationsPending(pending.len()));
            }
            self.schema_current.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}
