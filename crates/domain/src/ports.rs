//! Ports: what the use cases need from storage, as traits the registry implements.
//!
//! A use case runs inside one [`Store::transaction`]; every repository call made
//! through the transaction handle commits or rolls back together, so a state change
//! and its audit event are never separated.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::entities::{
    AuditEvent, BootstrapKey, Certificate, CrlRecord, Device, DeviceModel, ModelFirmware,
    MqttCredential, NewAuditEvent, NewBootstrapKey, NewCertificate, NewDevice, Rotation,
};
use crate::ids::{
    BootstrapKeyId, CertSerial, CertificateId, DeviceId, InvalidValue, ModelCode, Serial,
};
use crate::states::{AuditOutcome, CredentialKind, DeviceStatus, RevocationReason, RotationState};

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

/// What a new device's registration writes: [`DeviceRepository::insert_registration`].
#[derive(Debug, Clone, Copy)]
pub struct NewRegistration<'a> {
    pub device: &'a NewDevice,
    /// The device's first certificate.
    pub certificate: &'a NewCertificate,
    /// The registration's success event.
    pub audit: &'a NewAuditEvent,
    /// The key whose use it takes (as [`BootstrapKeyRepository::consume_bootstrap_key_use`]).
    pub key: BootstrapKeyId,
    pub now: DateTime<Utc>,
}

pub trait DeviceRepository {
    /// `Conflict` when the serial (or id) is taken.
    fn insert_device(&mut self, device: &NewDevice) -> Result<Device, RepoError>;
    /// A new device's registration in as few round trips as the backend allows:
    /// the device, its first certificate and the audit event, and one use of the
    /// key. `Ok(None)` when the key has no use to give: the caller must then roll
    /// its transaction back, since a backend may have written the rows already.
    /// `Conflict` when the serial (or an id) is taken.
    fn insert_registration(
        &mut self,
        registration: &NewRegistration<'_>,
    ) -> Result<Option<(Device, Certificate)>, RepoError>;
    /// Many devices in a few statements, in order (a bulk import's chunk).
    /// `Conflict` when any serial (or id) is taken: the statement fails as a
    /// whole, and so does the caller's transaction.
    fn insert_devices(&mut self, devices: &[NewDevice]) -> Result<Vec<Device>, RepoError>;
    /// Which of `serials` some device has, in one query per few hundred.
    fn existing_serials(&mut self, serials: &[Serial]) -> Result<Vec<Serial>, RepoError>;
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
    /// Applies `update` only while the device's status is one of `expected`, in
    /// one conditional statement (which also holds the row for the rest of the
    /// transaction on PostgreSQL): `None` when the device is in another status,
    /// `NotFound` when there is no such device. Use cases that check a status and
    /// then change the device's certificates start with this, so a concurrent
    /// revocation or registration waits instead of interleaving.
    fn update_device_if(
        &mut self,
        id: DeviceId,
        expected: &[DeviceStatus],
        update: &DeviceUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Device>, RepoError>;
    /// Removes a device and its certificates (tests and maintenance only; use
    /// cases retire devices, they never delete them).
    fn delete_device(&mut self, id: DeviceId) -> Result<(), RepoError>;
    /// How many devices are in each status (statuses with none are left out).
    fn count_devices_by_status(&mut self) -> Result<Vec<(String, i64)>, RepoError>;
    /// How many devices are in each rotation state (`rotations.state`).
    fn count_rotations_by_state(&mut self) -> Result<Vec<(String, i64)>, RepoError>;
}

pub trait CertificateRepository {
    /// Stores an active certificate of a device that may hold others (a renewal, a
    /// registration again), and keeps the renewal marks the reconciler reads
    /// ([`CertificateRepository::renewals_older_than`]). `Conflict` when the
    /// serial number was used before. The marks are computed from the device's
    /// certificates as this transaction sees them, so a use case that changes a
    /// device's certificates (this, [`CertificateRepository::revoke_certificate`])
    /// first holds the device's row (`DeviceRepository::update_device_if`), as
    /// every one here does: two of them on one device then run one after the other.
    fn insert_certificate(&mut self, cert: &NewCertificate) -> Result<Certificate, RepoError>;
    /// [`CertificateRepository::insert_certificate`] for the first certificate of
    /// a device created in the same transaction: it can have no other, so there is
    /// no mark to keep (one statement less for every registration).
    fn insert_first_certificate(&mut self, cert: &NewCertificate)
        -> Result<Certificate, RepoError>;
    /// Many first certificates (as [`CertificateRepository::insert_first_certificate`],
    /// a bulk import's new devices) in a few statements, in order; `Conflict` as
    /// above, for all of them.
    fn insert_certificates(
        &mut self,
        certs: &[NewCertificate],
    ) -> Result<Vec<Certificate>, RepoError>;
    fn certificate_by_serial(
        &mut self,
        serial: &CertSerial,
    ) -> Result<Option<Certificate>, RepoError>;
    /// Newest first.
    fn certificates_of_device(&mut self, device: DeviceId) -> Result<Vec<Certificate>, RepoError>;
    /// Devices holding more than one active certificate whose newest was created
    /// at or before `cutoff`, with that newest certificate (renewals whose grace
    /// period is over), ordered by device. Reads only the certificates that have a
    /// newer active one, not the fleet.
    fn renewals_older_than(
        &mut self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<(DeviceId, CertificateId)>, RepoError>;
    /// Marks the certificate revoked. Revoking a revoked certificate changes nothing
    /// and returns it as it is (the first reason and time stand).
    fn revoke_certificate(
        &mut self,
        id: CertificateId,
        at: DateTime<Utc>,
        reason: RevocationReason,
    ) -> Result<Certificate, RepoError>;
    /// Removes a certificate record (tests and maintenance only).
    fn delete_certificate(&mut self, id: CertificateId) -> Result<(), RepoError>;
    /// How many certificates were ever revoked. Certificates are never un-revoked,
    /// so this only grows: a CRL signed from a snapshot is complete while the count
    /// is still the snapshot's.
    fn revocation_count(&mut self) -> Result<i64, RepoError>;
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
    /// The key with `prefix` and, when there is one, the device with `serial`, in
    /// one statement (a registration's first read). `None` when no key has the
    /// prefix.
    fn bootstrap_key_and_device(
        &mut self,
        prefix: &str,
        serial: &Serial,
    ) -> Result<Option<(BootstrapKey, Option<Device>)>, RepoError>;
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

pub trait FirmwareRepository {
    /// Sets (or replaces) the model's firmware; `NotFound` without the model.
    fn set_model_firmware(&mut self, firmware: &ModelFirmware) -> Result<(), RepoError>;
    fn model_firmware(&mut self, code: &ModelCode) -> Result<Option<ModelFirmware>, RepoError>;
    /// Every model's firmware, ordered by model code.
    fn list_model_firmware(&mut self) -> Result<Vec<ModelFirmware>, RepoError>;
}

pub trait AuditRepository {
    fn append_audit(&mut self, event: &NewAuditEvent) -> Result<(), RepoError>;
    /// Many events in a few statements.
    fn append_audits(&mut self, events: &[NewAuditEvent]) -> Result<(), RepoError>;
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

/// Something outside the database that a committed change still has to bring in
/// line with the registry. It names what to converge, not what to do: applying it
/// reads the registry as it is then, so applying it twice, late, or after a newer
/// change is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Grant the device's broker access, or remove it, as its status says now.
    BrokerDevice(DeviceId),
    /// Install the newest CRL where the broker reads it.
    BrokerCrl,
    /// Register the device in the cloud registry, or remove it, as its status says.
    CloudDevice(DeviceId),
}

impl Effect {
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::BrokerDevice(_) => "broker.device",
            Effect::BrokerCrl => "broker.crl",
            Effect::CloudDevice(_) => "cloud.device",
        }
    }

    pub fn device(&self) -> Option<DeviceId> {
        match self {
            Effect::BrokerDevice(d) | Effect::CloudDevice(d) => Some(*d),
            Effect::BrokerCrl => None,
        }
    }

    /// The effect a stored kind and device name; `None` for a kind this version
    /// does not know.
    pub fn from_parts(kind: &str, device: Option<DeviceId>) -> Option<Self> {
        match (kind, device) {
            ("broker.device", Some(d)) => Some(Effect::BrokerDevice(d)),
            ("broker.crl", _) => Some(Effect::BrokerCrl),
            ("cloud.device", Some(d)) => Some(Effect::CloudDevice(d)),
            _ => None,
        }
    }
}

/// An effect waiting to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEffect {
    pub id: uuid::Uuid,
    pub effect: Effect,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
}

pub trait EffectRepository {
    /// Records an effect to apply after the transaction commits; the reconciler
    /// leaves it alone until `next_attempt_at`.
    fn enqueue_effect(
        &mut self,
        id: uuid::Uuid,
        effect: Effect,
        now: DateTime<Utc>,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), RepoError>;
    /// As [`EffectRepository::enqueue_effect`] for many effects at once.
    fn enqueue_effects(
        &mut self,
        effects: &[(uuid::Uuid, Effect)],
        now: DateTime<Utc>,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), RepoError>;
    /// Effects whose next attempt is due at `now`, oldest first.
    fn due_effects(
        &mut self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingEffect>, RepoError>;
    /// How many effects are waiting, and the creation time of the oldest.
    fn pending_effects_summary(&mut self) -> Result<(i64, Option<DateTime<Utc>>), RepoError>;
    /// Removes applied effects; ids already gone are not an error.
    fn complete_effects(&mut self, ids: &[uuid::Uuid]) -> Result<(), RepoError>;
    /// Whether an effect of `kind` for `device` is waiting.
    fn has_pending_effect(&mut self, kind: &str, device: DeviceId) -> Result<bool, RepoError>;
    /// Counts a failed attempt and sets the next one.
    fn postpone_effect(
        &mut self,
        id: uuid::Uuid,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), RepoError>;
}

/// Where devices live in the cloud registry (`aws_resources`).
pub trait CloudRecordRepository {
    /// Inserts or replaces the device's record.
    fn put_cloud_record(
        &mut self,
        record: &crate::services::CloudRecord,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError>;
    fn cloud_record(
        &mut self,
        device: DeviceId,
    ) -> Result<Option<crate::services::CloudRecord>, RepoError>;
    /// Removing nothing is not an error.
    fn delete_cloud_record(&mut self, device: DeviceId) -> Result<(), RepoError>;
}

/// Everything a use case can do inside one transaction.
/// The secrets of password devices (one per device).
pub trait MqttCredentialRepository {
    /// Sets the device's secret hash, replacing any earlier one.
    fn set_mqtt_credential(&mut self, credential: &MqttCredential) -> Result<(), RepoError>;
    fn mqtt_credential(&mut self, device: DeviceId) -> Result<Option<MqttCredential>, RepoError>;
    /// Every stored secret hash (the broker's password file is written from them).
    fn mqtt_credentials(&mut self) -> Result<Vec<MqttCredential>, RepoError>;
}

/// Credential rotations (`rotations`) and the schedule's last run.
pub trait RotationRepository {
    fn rotation(&mut self, device: DeviceId) -> Result<Option<Rotation>, RepoError>;
    /// Inserts or replaces the device's rotation record.
    fn put_rotation(&mut self, rotation: &Rotation) -> Result<(), RepoError>;
    /// Removes the device's rotation record (a device that left service).
    fn delete_rotation(&mut self, device: DeviceId) -> Result<(), RepoError>;
    /// Up to `limit` rotations in `state`, oldest `queued_at` (then device id) first.
    fn rotations_in_state(
        &mut self,
        state: RotationState,
        limit: i64,
    ) -> Result<Vec<Rotation>, RepoError>;
    /// Up to `limit` PENDING rotations whose deadline is at or before `now`.
    fn pending_past_deadline(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Rotation>, RepoError>;
    /// Up to `limit` PENDING rotations whose notification was not acknowledged
    /// yet, oldest start first.
    fn pending_unnotified(&mut self, limit: i64) -> Result<Vec<Rotation>, RepoError>;
    /// Records that the notification of the start at `started_at` was
    /// acknowledged at `at`; false (nothing written) when the rotation is no
    /// longer that PENDING start or was notified already.
    fn mark_rotation_notified(
        &mut self,
        device: DeviceId,
        started_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;
    fn count_rotations_in_state(&mut self, state: RotationState) -> Result<i64, RepoError>;
    /// Queues the fleet by starting a new generation due at `due_at` (one row
    /// written, whatever the fleet's size); returns it.
    fn advance_fleet_generation(
        &mut self,
        due_at: DateTime<Utc>,
    ) -> Result<crate::entities::FleetGeneration, RepoError>;
    fn fleet_generation(&mut self) -> Result<crate::entities::FleetGeneration, RepoError>;
    /// Records the last device a cycle took for the current generation.
    fn set_fleet_cursor(&mut self, device: DeviceId) -> Result<(), RepoError>;
    /// Up to `limit` devices of `credential` kind QUEUED by `generation`, in
    /// device id order after its cursor (a keyset walk of the devices' index).
    fn fleet_queued(
        &mut self,
        generation: &crate::entities::FleetGeneration,
        credential: CredentialKind,
        device: Option<DeviceId>,
        limit: i64,
    ) -> Result<Vec<DeviceId>, RepoError>;
    /// How many devices `generation` still queues (a scan of the devices after
    /// the cursor: for `rotation status`, not for a cycle).
    fn count_fleet_queued(
        &mut self,
        generation: &crate::entities::FleetGeneration,
        credential: CredentialKind,
    ) -> Result<i64, RepoError>;
    /// Of those, how many have a rotation record (OK, from an older generation).
    fn count_fleet_queued_records(
        &mut self,
        generation: &crate::entities::FleetGeneration,
        credential: CredentialKind,
    ) -> Result<i64, RepoError>;
    /// The scheduled run the fleet was last queued for (or the baseline).
    fn last_scheduled_run(&mut self) -> Result<Option<DateTime<Utc>>, RepoError>;
    fn set_last_scheduled_run(&mut self, at: DateTime<Utc>) -> Result<(), RepoError>;
    /// How many audit events each of `actions` has (rotations by outcome).
    fn count_audit_actions(&mut self, actions: &[&str]) -> Result<Vec<(String, i64)>, RepoError>;
}

pub trait Repositories:
    DeviceRepository
    + RotationRepository
    + MqttCredentialRepository
    + CertificateRepository
    + BootstrapKeyRepository
    + DeviceModelRepository
    + FirmwareRepository
    + AuditRepository
    + CrlRepository
    + CredentialBundleRepository
    + EffectRepository
    + CloudRecordRepository
{
}

impl<T> Repositories for T where
    T: DeviceRepository
        + RotationRepository
        + MqttCredentialRepository
        + CertificateRepository
        + BootstrapKeyRepository
        + DeviceModelRepository
        + FirmwareRepository
        + AuditRepository
        + CrlRepository
        + CredentialBundleRepository
        + EffectRepository
        + CloudRecordRepository
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

    /// Like [`Store::transaction`], for short writes that many callers make at once
    /// (registrations): a backend may run concurrent callers' `f`s one after the
    /// other in one transaction with one commit (group commit), each in a savepoint
    /// of its own, so one caller's `Err` rolls back only its own writes. Each call
    /// still returns only once its writes are committed, and an `Ok` whose commit
    /// failed is returned as the commit's error. `f` runs on the caller's thread.
    fn grouped_transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self::Tx) -> Result<T, E>,
        E: From<RepoError>,
    {
        self.transaction(f)
    }

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

    /// For reads that need no snapshot in common: `f`'s statements may each see
    /// the database as of their own start (PostgreSQL runs them without
    /// `BEGIN` and `COMMIT`, two round trips fewer). `f` must only read: it may
    /// run again on another connection when a pooled one turns out to be closed.
    fn read_each<T, E, F>(&self, mut f: F) -> Result<T, E>
    where
        F: FnMut(&mut Self::Tx) -> Result<T, E>,
        E: From<RepoError>,
    {
        self.read(|tx| f(tx))
    }

    /// Runs `f` while holding the named lock, one holder at a time across every
    /// process on the database (PostgreSQL: an advisory lock on a connection of
    /// its own; SQLite: within this process only, which is what one SQLite file
    /// serves). `f` opens its own transactions. A holder that dies releases it.
    fn exclusive<T, E, F>(&self, name: &str, f: F) -> Result<T, E>
    where
        F: FnOnce() -> Result<T, E>,
        E: From<RepoError>,
    {
        let _ = name;
        f()
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
