//! Credential rotation (`docs/rotation.md`): one cycle of the job the Kubernetes
//! CronJob runs, the operator's trigger and status, and what the device API does
//! while a rotation is PENDING.
//!
//! Every state change is decided by `onboard_rotation::transition`, written with
//! its time and its audit event in one transaction. A cycle holds
//! `Store::exclusive("rotation")` (an advisory lock on PostgreSQL), and each start
//! re-counts the PENDING rotations inside its own write transaction, so two
//! cycles never exceed `rotation.max_in_flight` nor start one device twice.
//!
//! Certificate devices are rotated always; password devices once
//! `rotation.secret_key` is set (`secret_rotation.rs`).

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{
    AuditOutcome, AuditRepository, CertificateId, CertificateRepository, CertificateStatus,
    CredentialKind, DeviceId, DeviceRepository, DeviceStatus, Effect, FleetGeneration,
    RevocationReason, Rotation, RotationRepository, RotationState, Store,
};
use onboard_rotation::{start_slots, transition, Schedule};
use serde::Serialize;
use serde_json::json;

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::lifecycle::hold_device;

/// How many rotations one query of a cycle looks at.
const BATCH: i64 = 100;
/// How many devices per state `rotation status` lists.
pub const STATUS_DEVICES_PER_STATE: i64 = 100;

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CycleSummary {
    /// PENDING rotations past their deadline, now TIMEOUT.
    pub timed_out: u64,
    /// The scheduled run the fleet was queued for in this cycle, if any.
    pub scheduled_run: Option<DateTime<Utc>>,
    /// The fleet generation that run started (the fleet is queued by it without
    /// a row per device; `rotation status` counts the devices).
    pub generation: Option<i64>,
    /// Rotations started (QUEUED or TIMEOUT -> PENDING).
    pub started: u64,
    /// PENDING rotations whose notification the broker acknowledged in this
    /// cycle (those started now, and earlier ones not notified yet).
    pub notified: u64,
    /// PENDING rotations whose notification failed in this cycle (the next
    /// cycle tries again), and why.
    pub not_notified: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_error: Option<String>,
    /// PENDING after the cycle.
    pub pending: u64,
    pub max_in_flight: u32,
}

impl fmt::Display for CycleSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rotation cycle: {} timed out", self.timed_out)?;
        if let (Some(at), Some(generation)) = (self.scheduled_run, self.generation) {
            write!(
                f,
                ", fleet queued (schedule due {}, generation {generation})",
                at.format("%Y-%m-%dT%H:%M:%SZ")
            )?;
        }
        write!(f, ", {} started", self.started)?;
        if self.notified > 0 || self.not_notified > 0 {
            write!(f, ", {} notified", self.notified)?;
        }
        if self.not_notified > 0 {
            write!(f, ", {} not notified", self.not_notified)?;
            if let Some(e) = &self.notify_error {
                write!(f, " ({e})")?;
            }
        }
        write!(f, ", {} pending (max {})", self.pending, self.max_in_flight)
    }
}

/// A device in a rotation state, for `rotation status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationEntry {
    pub device_id: DeviceId,
    pub state: RotationState,
    pub attempts: i32,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// While PENDING: when the broker took the notification (`None`: not yet).
    pub notified_at: Option<DateTime<Utc>>,
}

impl From<&Rotation> for RotationEntry {
    fn from(r: &Rotation) -> Self {
        Self {
            device_id: r.device_id,
            state: r.state,
            attempts: r.attempts,
            queued_at: r.queued_at,
            started_at: r.started_at,
            deadline_at: r.deadline_at,
            completed_at: r.completed_at,
            notified_at: r.notified_at,
        }
    }
}

/// Counts per state and (up to [`STATUS_DEVICES_PER_STATE`]) the devices in each.
/// Devices without a rotation record are OK and counted under `OK` only when a
/// rotation of theirs completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationStatus {
    pub last_scheduled_run: Option<DateTime<Utc>>,
    pub states: Vec<StateDevices>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateDevices {
    pub state: RotationState,
    pub count: i64,
    pub devices: Vec<RotationEntry>,
}

fn fresh(device: DeviceId, now: DateTime<Utc>) -> Rotation {
    Rotation {
        device_id: device,
        state: RotationState::Ok,
        queued_at: None,
        started_at: None,
        deadline_at: None,
        completed_at: None,
        attempts: 0,
        old_secret_encrypted: None,
        new_certificate_id: None,
        last_error: None,
        updated_at: now,
        generation: 0,
        notified_at: None,
    }
}

/// The credential kinds rotated: certificate devices, and password devices once
/// `rotation.secret_key` is set.
pub(crate) fn rotated_kinds(settings: &crate::settings::Settings) -> &'static [CredentialKind] {
    if settings.rotation.secret_key.is_empty() {
        &[CredentialKind::Certificate]
    } else {
        &[CredentialKind::Certificate, CredentialKind::Password]
    }
}

/// How many devices `fleet` still queues, over `kinds`.
fn count_fleet_queued<T: RotationRepository>(
    tx: &mut T,
    fleet: &FleetGeneration,
    kinds: &[CredentialKind],
) -> Result<i64, onboard_domain::RepoError> {
    kinds.iter().map(|k| tx.count_fleet_queued(fleet, *k)).sum()
}

/// Up to `limit` devices `fleet` queues over `kinds`, in device id order.
fn fleet_queued<T: RotationRepository>(
    tx: &mut T,
    fleet: &FleetGeneration,
    kinds: &[CredentialKind],
    limit: i64,
) -> Result<Vec<DeviceId>, onboard_domain::RepoError> {
    let mut ids = Vec::new();
    for k in kinds {
        ids.extend(tx.fleet_queued(fleet, *k, None, limit)?);
    }
    ids.sort_by_key(|id| id.to_string());
    ids.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(ids)
}

/// A device QUEUED by the fleet generation (its record, if any, is OK).
fn fleet_entry(device: DeviceId, r: Option<&Rotation>, fleet: &FleetGeneration) -> RotationEntry {
    RotationEntry {
        device_id: device,
        state: RotationState::Queued,
        attempts: r.map_or(0, |r| r.attempts),
        queued_at: fleet.due_at,
        started_at: r.and_then(|r| r.started_at),
        deadline_at: None,
        completed_at: r.and_then(|r| r.completed_at),
        notified_at: None,
    }
}

/// Per-state counts of rotation records, with the devices the fleet generation
/// queues moved to (or added to) QUEUED.
pub(crate) fn with_fleet_queued<T: RotationRepository>(
    tx: &mut T,
    kinds: &[CredentialKind],
    mut counts: Vec<(String, i64)>,
) -> Result<Vec<(String, i64)>, onboard_domain::RepoError> {
    let fleet = tx.fleet_generation()?;
    let queued = count_fleet_queued(tx, &fleet, kinds)?;
    let mut records = 0;
    for k in kinds {
        records += tx.count_fleet_queued_records(&fleet, *k)?;
    }
    counts.push((RotationState::Queued.as_str().to_string(), queued));
    counts.push((RotationState::Ok.as_str().to_string(), -records));
    Ok(counts)
}

fn in_service(status: DeviceStatus) -> bool {
    matches!(status, DeviceStatus::Registered | DeviceStatus::Active)
}

impl Onboard {
    fn schedule(&self) -> Result<Schedule, CoreError> {
        self.settings()
            .rotation
            .cron
            .parse::<Schedule>()
            .map_err(|e| CoreError::Setup(format!("rotation.cron: {e}")))
    }

    /// One cycle, as `onboardctl rotation run-job` runs it: time out PENDING
    /// rotations past their deadline, queue the fleet when the schedule came due,
    /// start rotations while fewer than `rotation.max_in_flight` are PENDING.
    pub fn run_rotation_cycle(&self) -> Result<CycleSummary, CoreError> {
        let schedule = self.schedule()?;
        self.store().exclusive("rotation", || {
            let now = self.clock().now();
            let max = self.settings().rotation.max_in_flight;
            let mut summary = CycleSummary {
                max_in_flight: max,
                ..CycleSummary::default()
            };
            // 1. Timeouts.
            let mut timed_out = HashSet::new();
            loop {
                let due = self
                    .store()
                    .read(|tx| tx.pending_past_deadline(now, BATCH))?;
                let n = due.len();
                for r in due {
                    if self.time_out(r.device_id, now)? {
                        timed_out.insert(r.device_id);
                    }
                }
                if (n as i64) < BATCH {
                    break;
                }
            }
            summary.timed_out = timed_out.len() as u64;
            // 2. The schedule.
            let (scheduled, generation) =
                self.store().transaction(|tx| -> Result<_, CoreError> {
                    let Some(last) = tx.last_scheduled_run()? else {
                        // The first cycle sets the baseline: the fleet is queued at
                        // the first occurrence after it, not for one before the job
                        // existed.
                        tx.set_last_scheduled_run(now)?;
                        return Ok((None, None));
                    };
                    let Some(due) = schedule
                        .due_since(last, now)
                        .map_err(|e| CoreError::Setup(format!("rotation.cron: {e}")))?
                    else {
                        return Ok((None, None));
                    };
                    let g = tx.advance_fleet_generation(due)?;
                    tx.set_last_scheduled_run(due)?;
                    let audit = Audit::new(
                        self.clock(),
                        &Actor::system(),
                        "rotation.queue",
                        AuditOutcome::Success,
                    )
                    .reason("schedule")
                    .details(json!({"scheduled_run": due, "generation": g.generation}));
                    tx.append_audit(audit.event())?;
                    Ok((Some(due), Some(g.generation)))
                })?;
            summary.scheduled_run = scheduled;
            summary.generation = generation;
            // 3. Starts.
            // A password device's new secret reaches the broker after the
            // notifications: Mosquitto disconnects a client whose password it no
            // longer takes, and the notification goes over that connection.
            let mut to_broker = Vec::new();
            while let Some(_started) = self.start_next(now, max, &timed_out, &mut to_broker)? {
                summary.started += 1;
            }
            // 4. Notifications, for every PENDING rotation not notified yet.
            let notified = self.notify_pending(&mut summary);
            self.apply_or_defer(&to_broker);
            notified?;
            summary.pending = self
                .store()
                .read(|tx| tx.count_rotations_in_state(RotationState::Pending))?
                as u64;
            Ok(summary)
        })
    }

    /// PENDING -> TIMEOUT for one device whose deadline passed: the certificate
    /// issued during the rotation (if any) is revoked, so the device keeps its old
    /// one. Returns whether it timed out (false when something else got there).
    fn time_out(&self, device: DeviceId, now: DateTime<Utc>) -> Result<bool, CoreError> {
        let mut effects = Vec::new();
        let done = self.store().transaction(|tx| -> Result<_, CoreError> {
            hold_device(tx, device, now)?;
            let Some(mut r) = tx.rotation(device)? else {
                return Ok(false);
            };
            if r.state != RotationState::Pending || r.deadline_at.is_none_or(|d| d > now) {
                return Ok(false);
            }
            r.state = transition(r.state, RotationState::Timeout)
                .map_err(|e| CoreError::Conflict(e.to_string()))?;
            let mut revoked = None;
            if let Some(new_cert) = r.new_certificate_id.take() {
                let certs = tx.certificates_of_device(device)?;
                if let Some(c) = certs
                    .iter()
                    .find(|c| c.id == new_cert && c.status == CertificateStatus::Active)
                {
                    tx.revoke_certificate(c.id, now, RevocationReason::Superseded)?;
                    revoked = Some(c.serial.to_string());
                    self.enqueue(
                        tx,
                        &[Effect::BrokerCrl, Effect::CloudDevice(device)],
                        &mut effects,
                    )?;
                }
            }
            if let Some(sealed) = r.old_secret_encrypted.take() {
                self.restore_password(tx, device, &sealed, now, &mut effects)?;
            }
            r.last_error = Some("deadline passed without an acknowledgment".into());
            r.updated_at = now;
            tx.put_rotation(&r)?;
            let mut audit = Audit::new(
                self.clock(),
                &Actor::system(),
                "rotation.timeout",
                AuditOutcome::Failure,
            )
            .device(device)
            .reason("deadline_passed")
            .details(json!({"attempts": r.attempts, "revoked_new_certificate": revoked}));
            if let Ok(d) = tx.device(device) {
                audit = audit.serial(d.serial.as_str());
            }
            tx.append_audit(audit.event())?;
            Ok(true)
        })?;
        self.apply_or_defer(&effects);
        Ok(done)
    }

    /// Starts the next rotation (QUEUED first, then TIMEOUT, oldest first) when
    /// fewer than `max` are PENDING, in one write transaction that re-counts them.
    /// Devices that left service meanwhile lose their record. Returns the device
    /// started, or `None` when there is no slot or no candidate.
    fn start_next(
        &self,
        now: DateTime<Utc>,
        max: u32,
        skip: &HashSet<DeviceId>,
        effects: &mut Vec<crate::effects::Enqueued>,
    ) -> Result<Option<DeviceId>, CoreError> {
        let deadline = now + Duration::seconds(self.timeout_seconds());
        let kinds = rotated_kinds(self.settings());
        loop {
            let mut started = Vec::new();
            let outcome = self.store().transaction(|tx| -> Result<_, CoreError> {
                let pending = tx.count_rotations_in_state(RotationState::Pending)?;
                if start_slots(pending.max(0) as u64, max) == 0 {
                    return Ok(Start::NoSlot);
                }
                let mut candidate = tx.rotations_in_state(RotationState::Queued, 1)?.pop();
                let fleet = tx.fleet_generation()?;
                if candidate.is_none() {
                    // The next device the fleet generation queues, by device id.
                    if let Some(id) = fleet_queued(tx, &fleet, kinds, 1)?.pop() {
                        tx.set_fleet_cursor(id)?;
                        let mut r = tx.rotation(id)?.unwrap_or_else(|| fresh(id, now));
                        r.state = transition(r.state, RotationState::Queued)
                            .map_err(|e| CoreError::Conflict(e.to_string()))?;
                        r.queued_at = fleet.due_at;
                        candidate = Some(r);
                    }
                }
                if candidate.is_none() {
                    let limit = skip.len() as i64 + 1;
                    candidate = tx
                        .rotations_in_state(RotationState::Timeout, limit)?
                        .into_iter()
                        .find(|r| !skip.contains(&r.device_id));
                }
                let Some(mut r) = candidate else {
                    return Ok(Start::NoCandidate);
                };
                let device = tx.device(r.device_id)?;
                if !in_service(device.status) || !kinds.contains(&device.credential) {
                    // Not a state change: the device left service, so its rotation
                    // ends with the record (a device without one is OK).
                    tx.delete_rotation(r.device_id)?;
                    let audit = Audit::new(
                        self.clock(),
                        &Actor::system(),
                        "rotation.skip",
                        AuditOutcome::Failure,
                    )
                    .device(device.id)
                    .serial(device.serial.as_str())
                    .reason("not_in_service")
                    .details(json!({"from": r.state, "status": device.status}));
                    tx.append_audit(audit.event())?;
                    return Ok(Start::Skipped);
                }
                let from = r.state;
                r.state = transition(from, RotationState::Pending)
                    .map_err(|e| CoreError::Conflict(e.to_string()))?;
                r.started_at = Some(now);
                r.deadline_at = Some(deadline);
                r.completed_at = None;
                r.attempts += 1;
                r.new_certificate_id = None;
                r.last_error = None;
                r.notified_at = None;
                r.old_secret_encrypted = None;
                if device.credential == CredentialKind::Password {
                    r.old_secret_encrypted =
                        Some(self.start_password_rotation(tx, &device, now, &mut started)?);
                }
                r.updated_at = now;
                r.generation = fleet.generation;
                tx.put_rotation(&r)?;
                let audit = Audit::new(
                    self.clock(),
                    &Actor::system(),
                    "rotation.start",
                    AuditOutcome::Success,
                )
                .device(device.id)
                .serial(device.serial.as_str())
                .details(json!({"from": from, "attempt": r.attempts, "deadline": deadline, "generation": r.generation}));
                tx.append_audit(audit.event())?;
                Ok(Start::Started(device.id))
            })?;
            effects.extend(started);
            match outcome {
                Start::Started(id) => return Ok(Some(id)),
                Start::Skipped => continue,
                Start::NoSlot | Start::NoCandidate => return Ok(None),
            }
        }
    }

    fn timeout_seconds(&self) -> i64 {
        i64::try_from(self.settings().rotation.timeout_seconds).unwrap_or(i64::MAX / 2)
    }

    /// Queues one device (OK or TIMEOUT -> QUEUED), or with `None` every
    /// certificate device in service that is OK. Returns how many were queued.
    pub fn trigger_rotation(
        &self,
        actor: &Actor,
        device: Option<DeviceId>,
    ) -> Result<u64, CoreError> {
        let now = self.clock().now();
        let kinds = rotated_kinds(self.settings());
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let Some(id) = device else {
                let current = tx.fleet_generation()?;
                let before = count_fleet_queued(tx, &current, kinds)?;
                let g = tx.advance_fleet_generation(now)?;
                let n = count_fleet_queued(tx, &g, kinds)? - before;
                let audit = Audit::new(self.clock(), actor, "rotation.queue", AuditOutcome::Success)
                    .reason("trigger")
                    .details(json!({"devices": n, "generation": g.generation}));
                tx.append_audit(audit.event())?;
                return Ok(n.max(0) as u64);
            };
            let d = tx.device(id)?;
            if !in_service(d.status) {
                return Err(CoreError::Conflict(format!(
                    "device {id} is {}; only devices in service are rotated",
                    d.status
                )));
            }
            if !kinds.contains(&d.credential) {
                return Err(CoreError::Conflict(format!(
                    "device {id} uses a {} credential; password devices are rotated once rotation.secret_key is set",
                    d.credential
                )));
            }
            let fleet = tx.fleet_generation()?;
            if !tx.fleet_queued(&fleet, d.credential, Some(id), 1)?.is_empty() {
                return Err(CoreError::Conflict(format!(
                    "device {id} is already QUEUED (fleet generation {}); it cannot be queued",
                    fleet.generation
                )));
            }
            let mut r = tx.rotation(id)?.unwrap_or_else(|| fresh(id, now));
            let from = r.state;
            r.state = transition(from, RotationState::Queued).map_err(|_| {
                CoreError::Conflict(format!("device {id} is already {from}; it cannot be queued"))
            })?;
            r.queued_at = Some(now);
            r.updated_at = now;
            tx.put_rotation(&r)?;
            let audit = Audit::new(self.clock(), actor, "rotation.queue", AuditOutcome::Success)
                .device(id)
                .serial(d.serial.as_str())
                .reason("trigger")
                .details(json!({"from": from}));
            tx.append_audit(audit.event())?;
            Ok(1)
        })
    }

    /// Counts per state and the devices in each.
    pub fn rotation_status(&self) -> Result<RotationStatus, CoreError> {
        let kinds = rotated_kinds(self.settings());
        self.store().read(|tx| -> Result<_, CoreError> {
            let mut states = Vec::new();
            let fleet = tx.fleet_generation()?;
            for &state in RotationState::ALL {
                let mut count = tx.count_rotations_in_state(state)?;
                let mut devices: Vec<RotationEntry> = tx
                    .rotations_in_state(state, STATUS_DEVICES_PER_STATE)?
                    .iter()
                    .map(RotationEntry::from)
                    .collect();
                if state == RotationState::Queued {
                    // Devices queued by the fleet generation have no QUEUED row:
                    // counted by a scan of the devices after the cursor.
                    count += count_fleet_queued(tx, &fleet, kinds)?;
                    let room = STATUS_DEVICES_PER_STATE - devices.len() as i64;
                    if room > 0 {
                        for id in fleet_queued(tx, &fleet, kinds, room)? {
                            let r = tx.rotation(id)?;
                            devices.push(fleet_entry(id, r.as_ref(), &fleet));
                        }
                    }
                } else if state == RotationState::Ok {
                    // A record that is OK but queued by the fleet generation counts
                    // as QUEUED only.
                    for k in kinds {
                        count -= tx.count_fleet_queued_records(&fleet, *k)?;
                    }
                }
                states.push(StateDevices {
                    state,
                    count,
                    devices,
                });
            }
            Ok(RotationStatus {
                last_scheduled_run: tx.last_scheduled_run()?,
                states,
            })
        })
    }

    /// The device's rotation, if it has a record.
    /// A device the fleet generation queues shows as QUEUED (at the generation's
    /// due time) though it has no QUEUED record.
    pub fn device_rotation(&self, device: DeviceId) -> Result<Option<RotationEntry>, CoreError> {
        let kinds = rotated_kinds(self.settings());
        self.store().read(|tx| -> Result<_, CoreError> {
            let r = tx.rotation(device)?;
            let fleet = tx.fleet_generation()?;
            let credential = match tx.device(device) {
                Ok(d) => Some(d.credential),
                Err(onboard_domain::RepoError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(credential) = credential.filter(|c| kinds.contains(c)) {
                if !tx
                    .fleet_queued(&fleet, credential, Some(device), 1)?
                    .is_empty()
                {
                    return Ok(Some(fleet_entry(device, r.as_ref(), &fleet)));
                }
            }
            Ok(r.as_ref().map(RotationEntry::from))
        })
    }

    /// Inside a renewal's transaction: a renewal while PENDING is the rotation's
    /// new certificate. Returns whether it was.
    pub(crate) fn note_rotation_certificate<T: RotationRepository>(
        tx: &mut T,
        device: DeviceId,
        certificate: CertificateId,
        now: DateTime<Utc>,
    ) -> Result<bool, CoreError> {
        match tx.rotation(device)? {
            Some(mut r) if r.state == RotationState::Pending => {
                r.new_certificate_id = Some(certificate);
                r.updated_at = now;
                tx.put_rotation(&r)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// PENDING -> OK when `certificate` is the rotation's new certificate: the
    /// device's older active certificates are revoked as superseded (CRL to the
    /// broker). `Ok(false)` when the device has no such PENDING rotation.
    pub(crate) fn complete_rotation(
        &self,
        device: DeviceId,
        certificate: CertificateId,
        via: &'static str,
    ) -> Result<bool, CoreError> {
        let now = self.clock().now();
        let mut effects = Vec::new();
        let done = self.store().transaction(|tx| -> Result<_, CoreError> {
            hold_device(tx, device, now)?;
            let Some(mut r) = tx.rotation(device)? else {
                return Ok(false);
            };
            if r.state != RotationState::Pending || r.new_certificate_id != Some(certificate) {
                return Ok(false);
            }
            let certs = tx.certificates_of_device(device)?;
            let Some(kept) = certs
                .iter()
                .find(|c| c.id == certificate && c.status == CertificateStatus::Active)
            else {
                return Ok(false);
            };
            let mut superseded = Vec::new();
            for c in &certs {
                if c.status == CertificateStatus::Active && c.id != certificate {
                    tx.revoke_certificate(c.id, now, RevocationReason::Superseded)?;
                    superseded.push(c.serial.to_string());
                }
            }
            complete(&mut r, now)?;
            tx.put_rotation(&r)?;
            let mut audit = Audit::new(
                self.clock(),
                &Actor::device(None),
                "rotation.complete",
                AuditOutcome::Success,
            )
            .device(device)
            .reason(via)
            .details(json!({"current": kept.serial, "superseded": superseded}));
            if let Ok(d) = tx.device(device) {
                audit = audit.serial(d.serial.as_str());
            }
            tx.append_audit(audit.event())?;
            if !superseded.is_empty() {
                self.enqueue(
                    tx,
                    &[Effect::BrokerCrl, Effect::CloudDevice(device)],
                    &mut effects,
                )?;
            }
            Ok(true)
        })?;
        self.apply_or_defer(&effects);
        Ok(done)
    }

    /// `POST /iot/rotation/ack`: the device acknowledges its new certificate,
    /// presenting it.
    pub fn acknowledge_rotation(
        &self,
        s: &crate::device_api::DeviceSession,
    ) -> Result<RotationEntry, CoreError> {
        let cert = match s.via {
            crate::device_api::DeviceAuth::Certificate(cert) => cert,
            crate::device_api::DeviceAuth::Token => {
                return self.acknowledge_password_rotation(s.device.id)
            }
            crate::device_api::DeviceAuth::PreviousSecretToken => {
                return Err(CoreError::Conflict(
                    "acknowledge with a token of the new secret (GET /iot/provisioning has it)"
                        .into(),
                ))
            }
        };
        let current = self.store().read(|tx| tx.rotation(s.device.id))?;
        match current {
            Some(r) if r.state == RotationState::Ok && r.completed_at.is_some() => {
                // Acknowledged already (the first use of the new certificate completes
                // the rotation too): answer the same again.
                if self
                    .store()
                    .read(|tx| tx.certificates_of_device(s.device.id))?
                    .iter()
                    .any(|c| c.id == cert && c.status == CertificateStatus::Active)
                {
                    return Ok(RotationEntry::from(&r));
                }
                Err(CoreError::Conflict(
                    "no rotation is pending for this device".into(),
                ))
            }
            Some(r) if r.state == RotationState::Pending => {
                if self.complete_rotation(s.device.id, cert, "acknowledged")? {
                    let r = self
                        .store()
                        .read(|tx| tx.rotation(s.device.id))?
                        .ok_or(CoreError::Internal("the rotation disappeared".into()))?;
                    return Ok(RotationEntry::from(&r));
                }
                Err(CoreError::Conflict(
                    "acknowledge with the certificate issued during the rotation (POST /iot/renew first)"
                        .into(),
                ))
            }
            _ => Err(CoreError::Conflict(
                "no rotation is pending for this device".into(),
            )),
        }
    }
}

impl Onboard {
    /// A password device acknowledges with a token of its new secret: OK, and the
    /// kept old secret is deleted. Acknowledged already: the same answer again.
    fn acknowledge_password_rotation(&self, device: DeviceId) -> Result<RotationEntry, CoreError> {
        let now = self.clock().now();
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let mut r = match tx.rotation(device)? {
                Some(r) if r.state == RotationState::Pending => r,
                Some(r) if r.state == RotationState::Ok && r.completed_at.is_some() => {
                    return Ok(RotationEntry::from(&r))
                }
                _ => {
                    return Err(CoreError::Conflict(
                        "no rotation is pending for this device".into(),
                    ))
                }
            };
            r.old_secret_encrypted = None;
            complete(&mut r, now)?;
            tx.put_rotation(&r)?;
            let mut audit = Audit::new(
                self.clock(),
                &Actor::device(None),
                "rotation.complete",
                AuditOutcome::Success,
            )
            .device(device)
            .reason("acknowledged")
            .details(json!({"credential": "password", "old_secret": "deleted"}));
            if let Ok(d) = tx.device(device) {
                audit = audit.serial(d.serial.as_str());
            }
            tx.append_audit(audit.event())?;
            Ok(RotationEntry::from(&r))
        })
    }
}

enum Start {
    Started(DeviceId),
    Skipped,
    NoSlot,
    NoCandidate,
}

/// A PENDING rotation's move to OK: completed now, no deadline, no error.
fn complete(r: &mut Rotation, now: DateTime<Utc>) -> Result<(), CoreError> {
    r.state =
        transition(r.state, RotationState::Ok).map_err(|e| CoreError::Conflict(e.to_string()))?;
    r.completed_at = Some(now);
    r.deadline_at = None;
    r.last_error = None;
    r.updated_at = now;
    Ok(())
}
