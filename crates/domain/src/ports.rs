//! Ports: what the use cases need from storage, as traits the registry implements.
//!
//! A use case runs inside one [`Store::transaction`]; every repository call made
//! through the transaction handle commits or rolls back together, so a state change
//! and its audit event are never separated.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::entities::{
    AuditEvent, BootstrapKey, Certificate, CrlRecord, Device, DeviceModel, NewAuditEvent,
    NewBootstrapKey, NewCertificate, NewDevice,
};
use crate::ids::{
    BootstrapKeyId, CertSerial, CertificateId, DeviceId, InvalidValue, ModelCode, Serial,
};
use crate::states::{AuditOutcome, DeviceStatus, RevocationReason};

/// What storage can report. `Unavailable` is the one a caller may retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    #[error("{entity} conflicts with an existing record ({constraint})")]
    Conflict {
        entity: &'static str,
        constraint: String,
    },
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored record is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
}

/// The largest page any listing returns.
pub const MAX_PAGE_SIZE: u32 = 500;

/// A page request: at most `limit` items after the opaque `after` cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    after: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;

    /// `limit` must be 1..=[`MAX_PAGE_SIZE`].
    pub fn new(limit: u32, after: Option<String>) -> Result<Self, InvalidValue> {
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(InvalidValue::new(
                "limit",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Ok(Self { limit, after })
    }

    pub fn first(limit: u32) -> Result<Self, InvalidValue> {
        Self::new(limit, None)
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: Self::DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// One page of a listing; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only proves that a
    /// next page exists; the cursor is the last kept item's key.
    pub fn from_overfetch(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let limit = limit as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more { rows.last().map(key) } else { None };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    pub status: Option<DeviceStatus>,
    pub model: Option<ModelCode>,
    pub batch: Option<String>,
    /// Case-insensitive substring of serial, name or location.
    pub q: Option<String>,
}

/// Fields a device update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceUpdate {
    pub name: Option<String>,
    pub location: Option<String>,
    pub firmware_version: Option<String>,
    pub config: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
    pub status: Option<DeviceStatus>,
    pub activated_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub decommissioned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootstrapKeyFilter {
    pub batch: Option<String>,
    pub active: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub device_id: Option<DeviceId>,
    pub action: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

pub trait DeviceRepository {
    /// `Conflict` when the serial (or id) is taken.
    fn insert_device(&mut self, device: &NewDevice) -> Result<Device, RepoError>;
    fn device(&mut self, id: DeviceId) -> Result<Device, RepoError>;
    fn device_by_serial(&mut self, serial: &Serial) -> Result<Option<Device>, RepoError>;
    /// Ordered by id (creation order).
    fn list_devices(
        &mut self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<Device>, RepoError>;
    fn update_device(
        &mut self,
        id: DeviceId,
        update: &DeviceUpdate,
        now: DateTime<Utc>,
    ) -> Result<Device, RepoError>;
    /// Removes a device and its certificates: only to undo a registration that did
    /// not complete. Retired devices are decommissioned, never deleted.
    fn delete_device(&mut self, id: DeviceId) -> Result<(), RepoError>;
}

pub trait CertificateRepository {
    /// `Conflict` when the serial number was used before.
    fn insert_certificate(&mut self, cert: &NewCertificate) -> Result<Certificate, RepoError>;
    fn certificate_by_serial(
        &mut self,
        serial: &CertSerial,
    ) -> Result<Option<Certificate>, RepoError>;
    /// Newest first.
    fn certificates_of_device(&mut self, device: DeviceId) -> Result<Vec<Certificate>, RepoError>;
    /// Marks the certificate revoked. Revoking a revoked certificate changes nothing
    /// and returns it as it is (the first reason and time stand).
    fn revoke_certificate(
        &mut self,
        id: CertificateId,
        at: DateTime<Utc>,
        reason: RevocationReason,
    ) -> Result<Certificate, RepoError>;
    /// Removes a certificate record: only to undo a registration that did not
    /// complete (the certificate was never handed out).
    fn delete_certificate(&mut self, id: CertificateId) -> Result<(), RepoError>;
    /// Every revoked certificate that has not expired before `now`: the CRL's content.
    fn revoked_certificates(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(CertSerial, DateTime<Utc>, RevocationReason)>, RepoError>;
}

pub trait BootstrapKeyRepository {
    /// All or nothing: `Conflict` when any prefix is taken.
    fn insert_bootstrap_keys(
        &mut self,
        keys: &[NewBootstrapKey],
    ) -> Result<Vec<BootstrapKey>, RepoError>;
    fn bootstrap_key(&mut self, id: BootstrapKeyId) -> Result<BootstrapKey, RepoError>;
    fn bootstrap_key_by_prefix(&mut self, prefix: &str) -> Result<Option<BootstrapKey>, RepoError>;
    /// Ordered by id (creation order).
    fn list_bootstrap_keys(
        &mut self,
        filter: &BootstrapKeyFilter,
        page: &PageRequest,
    ) -> Result<Page<BootstrapKey>, RepoError>;
    fn set_bootstrap_key_active(
        &mut self,
        id: BootstrapKeyId,
        active: bool,
        now: DateTime<Utc>,
    ) -> Result<BootstrapKey, RepoError>;
    fn delete_bootstrap_key(&mut self, id: BootstrapKeyId) -> Result<(), RepoError>;
    /// Takes one use in a single conditional update (active, inside its window, uses
    /// below max): `true` when a use was taken. Safe under concurrency on both
    /// backends; [`BootstrapKey::check_usable`] explains a `false`.
    fn consume_bootstrap_key_use(
        &mut self,
        id: BootstrapKeyId,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError>;
    /// Gives back a use taken by a registration that failed later.
    fn release_bootstrap_key_use(
        &mut self,
        id: BootstrapKeyId,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError>;
}

pub trait DeviceModelRepository {
    /// `Conflict` when the code is taken.
    fn insert_model(&mut self, model: &DeviceModel) -> Result<DeviceModel, RepoError>;
    fn model(&mut self, code: &ModelCode) -> Result<DeviceModel, RepoError>;
    /// Ordered by code.
    fn list_models(&mut self) -> Result<Vec<DeviceModel>, RepoError>;
    /// Replaces every field but `code` and `created_at`.
    fn update_model(&mut self, model: &DeviceModel) -> Result<DeviceModel, RepoError>;
    /// `Conflict` while devices or keys refer to the model.
    fn delete_model(&mut self, code: &ModelCode) -> Result<(), RepoError>;
}

pub trait AuditRepository {
    fn append_audit(&mut self, event: &NewAuditEvent) -> Result<(), RepoError>;
    /// Newest first.
    fn list_audit(
        &mut self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, RepoError>;
}

/// A credential bundle waiting for its one download.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCredentialBundle {
    pub id: uuid::Uuid,
    pub device_id: DeviceId,
    /// SHA-256 of the download token; the token itself is never stored.
    pub token_hash: String,
    /// The AES-256 encrypted ZIP (its password is never stored).
    pub content: Vec<u8>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

pub trait CredentialBundleRepository {
    fn insert_bundle(&mut self, bundle: &NewCredentialBundle) -> Result<(), RepoError>;
    /// The content of the bundle `token_hash` names when it has not been downloaded
    /// and has not expired at `now`; marks it downloaded and drops the content in the
    /// same transaction, so it can be taken once. `None` for every other case.
    fn take_bundle(
        &mut self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, RepoError>;
    /// Drops the content of every bundle expired at `now`; returns how many.
    fn purge_expired_bundles(&mut self, now: DateTime<Utc>) -> Result<usize, RepoError>;
}

pub trait CrlRepository {
    fn latest_crl(&mut self) -> Result<Option<CrlRecord>, RepoError>;
    /// `Conflict` when the number is not new: CRL numbers only grow.
    fn insert_crl(&mut self, crl: &CrlRecord) -> Result<(), RepoError>;
}

/// Everything a use case can do inside one transaction.
pub trait Repositories:
    DeviceRepository
    + CertificateRepository
    + BootstrapKeyRepository
    + DeviceModelRepository
    + AuditRepository
    + CrlRepository
    + CredentialBundleRepository
{
}

impl<T> Repositories for T where
    T: DeviceRepository
        + CertificateRepository
        + BootstrapKeyRepository
        + DeviceModelRepository
        + AuditRepository
        + CrlRepository
        + CredentialBundleRepository
{
}

/// Storage as the use cases see it.
pub trait Store: Send + Sync + 'static {
    type Tx: Repositories;

    /// Runs `f` in one transaction that takes the write lock up front (so concurrent
    /// writers queue instead of failing), commits when it returns `Ok` and rolls back
    /// when it returns `Err`.
    fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self::Tx) -> Result<T, E>,
        E: From<RepoError>;

    /// Runs `f` in a transaction meant for reading: it does not take the write lock
    /// up front, so on a single-writer backend readers never queue behind writers.
    /// Writes inside `f` still work but may fail to get the lock; use
    /// [`Store::transaction`] for those.
    fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self::Tx) -> Result<T, E>,
        E: From<RepoError>,
    {
        self.transaction(f)
    }

    /// Checks that the database answers.
    fn ping(&self) -> Result<(), RepoError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_bounded() {
        assert!(PageRequest::new(0, None).is_err());
        assert!(PageRequest::new(MAX_PAGE_SIZE + 1, None).is_err());
        let p = PageRequest::new(MAX_PAGE_SIZE, Some("x".into())).unwrap();
        assert_eq!(p.limit(), MAX_PAGE_SIZE);
        assert_eq!(p.after(), Some("x"));
    }

    #[test]
    fn overfetch_sets_the_cursor_only_when_more_exist() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        let last = Page::from_overfetch(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(last.next_cursor, None);
    }
}
