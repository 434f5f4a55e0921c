//! Revocation, decommissioning and edits of a device's record.
//!
//! The registry is the source of truth: a revocation is committed first (device,
//! certificates, audit and the pending broker and cloud effects in one
//! transaction), then a new CRL is signed and installed in the broker and the
//! device's broker access removed. When the broker cannot be reached the
//! revocation stays recorded, the call fails with `Unavailable`, and the
//! reconciler applies it once the broker is back; calling it again (it is
//! idempotent) or `onboardctl reconcile` does it at once.

use onboard_domain::{
    AuditOutcome, AuditRepository, CertificateRepository, CertificateStatus, Device, DeviceId,
    DeviceRepository, DeviceStatus, DeviceUpdate, Effect, RevocationReason, Store,
};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::devices::DeviceDetails;
use crate::error::CoreError;
use crate::operator::{check_object, check_text};

/// Fields an operator may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DevicePatch {
    pub name: Option<String>,
    pub location: Option<String>,
    pub config: Option<Value>,
    pub metadata: Option<Value>,
}

impl Onboard {
    /// Revokes the device's certificates with `reason`, marks it revoked, publishes
    /// the CRL and removes its broker access. Revoking a revoked (or
    /// decommissioned) device changes nothing and answers its current state.
    pub fn revoke_device(
        &self,
        actor: &Actor,
        id: DeviceId,
        reason: RevocationReason,
    ) -> Result<DeviceDetails, CoreError> {
        self.retire(actor, id, reason, DeviceStatus::Revoked, "device.revoke")
    }

    /// Revokes (cessationOfOperation), removes broker and cloud access, and keeps
    /// the record and its audit trail as `decommissioned`.
    pub fn decommission_device(
        &self,
        actor: &Actor,
        id: DeviceId,
    ) -> Result<DeviceDetails, CoreError> {
        self.retire(
            actor,
            id,
            RevocationReason::CessationOfOperation,
            DeviceStatus::Decommissioned,
            "device.decommission",
        )
    }

    fn retire(
        &self,
        actor: &Actor,
        id: DeviceId,
        reason: RevocationReason,
        to: DeviceStatus,
        action: &'static str,
    ) -> Result<DeviceDetails, CoreError> {
        let now = self.clock().now();
        let from: Vec<DeviceStatus> = [
            DeviceStatus::Registered,
            DeviceStatus::Active,
            DeviceStatus::Revoked,
        ]
        .into_iter()
        .filter(|s| s.transition(to).is_ok())
        .collect();
        // The cloud side too: REVOKED in AWS, or removed when decommissioned.
        let todo = vec![
            Effect::BrokerDevice(id),
            Effect::BrokerCrl,
            Effect::CloudDevice(id),
        ];
        let mut effects = Vec::new();
        let changed = self.store().transaction(|tx| -> Result<bool, CoreError> {
            // The status change first: it holds the device's row, so a concurrent
            // registration either committed before (and its certificate is
            // revoked below) or waits and then finds the device retired.
            let update = DeviceUpdate {
                status: Some(to),
                decommissioned_at: (to == DeviceStatus::Decommissioned).then_some(now),
                ..DeviceUpdate::default()
            };
            let Some(device) = tx.update_device_if(id, &from, &update, now)? else {
                // Already retired this way (or decommissioned): nothing to change.
                return Ok(false);
            };
            let mut revoked = Vec::new();
            for cert in tx.certificates_of_device(id)? {
                if cert.status == CertificateStatus::Active {
                    tx.revoke_certificate(cert.id, now, reason)?;
                    revoked.push(cert.serial.to_string());
                }
            }
            let audit = Audit::new(self.clock(), actor, action, AuditOutcome::Success)
                .device(id)
                .serial(device.serial.as_str())
                .details(json!({"reason": reason, "revoked_certificates": revoked}));
            tx.append_audit(audit.event())?;
            self.enqueue(tx, &todo, &mut effects)?;
            Ok(true)
        })?;
        if changed {
            tracing::info!(device = %id, %reason, status = %to, "device retired");
            self.apply_effects(&effects)
        } else {
            // A repeated call finishes what the first could not apply (its
            // effects also stay queued for the reconciler).
            self.apply_effects(
                &todo
                    .iter()
                    .map(|e| (uuid::Uuid::nil(), *e))
                    .collect::<Vec<_>>(),
            )
        }
        .map_err(|e| CoreError::Pending {
            action,
            detail: e.to_string(),
        })?;
        self.device(id)
    }

    /// Changes the name, location, configuration or metadata of a device.
    pub fn update_device(
        &self,
        actor: &Actor,
        id: DeviceId,
        patch: &DevicePatch,
    ) -> Result<Device, CoreError> {
        if let Some(name) = &patch.name {
            check_text("name", name, 128, true)?;
        }
        if let Some(location) = &patch.location {
            check_text("location", location, 128, false)?;
        }
        if let Some(config) = &patch.config {
            check_object("config", config)?;
        }
        if let Some(metadata) = &patch.metadata {
            check_object("metadata", metadata)?;
        }
        let now = self.clock().now();
        self.store().transaction(|tx| -> Result<Device, CoreError> {
            let device = tx.device(id)?;
            if device.status == DeviceStatus::Decommissioned {
                return Err(CoreError::Conflict(
                    "a decommissioned device cannot be changed".into(),
                ));
            }
            let updated = tx.update_device(
                id,
                &DeviceUpdate {
                    name: patch.name.as_ref().map(|n| n.trim().to_owned()),
                    location: patch.location.clone(),
                    config: patch.config.clone(),
                    metadata: patch.metadata.clone(),
                    ..DeviceUpdate::default()
                },
                now,
            )?;
            let fields: Vec<&str> = [
                patch.name.as_ref().map(|_| "name"),
                patch.location.as_ref().map(|_| "location"),
                patch.config.as_ref().map(|_| "config"),
                patch.metadata.as_ref().map(|_| "metadata"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let audit = Audit::new(self.clock(), actor, "device.update", AuditOutcome::Success)
                .device(id)
                .serial(device.serial.as_str())
                .details(json!({"fields": fields}));
            tx.append_audit(audit.event())?;
            Ok(updated)
        })
    }
}

/// Holds the device's row for the rest of the transaction, whatever its status,
/// before the device's certificates change: every use case that changes them
/// starts this way (`DeviceRepository::update_device_if`), so two of them on one
/// device run one after the other, each seeing what the other committed (the
/// registry's renewal marks depend on it), and always take the device's row
/// before any certificate's (no deadlock between them). A device that is gone
/// has nothing left to change.
pub(crate) fn hold_device<T: DeviceRepository>(
    tx: &mut T,
    device: DeviceId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), CoreError> {
    match tx.update_device_if(device, DeviceStatus::ALL, &DeviceUpdate::default(), now) {
        Ok(_) | Err(onboard_domain::RepoError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
