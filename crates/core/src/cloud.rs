//! AWS IoT Core (the cloud registry) in the registration flow. A registration ends
//! with a Thing, an active certificate and the policy in AWS, or with nothing there
//! and no device row ([ADR 4](../../../docs/adr/0004-aws-iot.md)):
//!
//! 1. an intent is committed first, in its own short transaction: a pending
//!    `cloud.device` effect for the new device id, left to the reconciler for
//!    [`CLOUD_INTENT_GRACE_SECONDS`];
//! 2. the AWS calls are made (the certificate is our CA's, signed before, or AWS's);
//!    a failing step undoes the earlier ones at once;
//! 3. the registration's transaction stores the device with its AWS ids
//!    (`aws_resources`), takes the key use and removes the intent, all together;
//! 4. when that transaction fails, the AWS resources are removed at once and the
//!    intent with them. After a crash the reconciler finds the intent of a device
//!    id that has no row and removes what AWS holds for it (found by the
//!    `onboard_device_id` Thing attribute).
//!
//! After the commit the cloud side converges like the broker: revocation marks the
//! certificate REVOKED, decommissioning deletes the Thing and the certificate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use onboard_domain::{
    new_id, CertificateIssuer, CertificateRepository, CertificateStatus, CloudCertificate,
    CloudDevice, CloudRecord, CloudRecordRepository, CloudRegistrar, CloudRegistration, DeviceId,
    DeviceRepository, DeviceStatus, Effect, EffectRepository, IssuedCert, PortError, RepoError,
    Repositories, SecretString, Store,
};

use crate::app::Onboard;
use crate::error::CoreError;
use crate::provision::DeviceSpec;
use crate::settings::{AwsCertificateMode, AwsSettings};

/// How long the reconciler leaves a registration's intent alone: longer than
/// [`CLOUD_DEADLINE`], so it never removes the resources of a registration that
/// is still running.
pub const CLOUD_INTENT_GRACE_SECONDS: i64 = 300;
/// A registration whose AWS calls took longer than this is abandoned (its AWS
/// resources removed) instead of committed.
const CLOUD_DEADLINE: Duration = Duration::from_secs(150);

/// The cloud side of a device's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudAnswer {
    pub record: CloudRecord,
    /// The data endpoint (`iot:Data-ATS`) devices connect to.
    pub endpoint: Option<String>,
}

/// The AWS IoT registrar the settings describe.
pub fn aws_registrar(s: &AwsSettings) -> Result<Arc<dyn CloudRegistrar>, CoreError> {
    let mut c = onboard_aws_iot::AwsIotConfig::new(s.region.clone());
    c.endpoint_url = (!s.endpoint_url.is_empty()).then(|| s.endpoint_url.clone());
    c.issue_certificates = s.certificate_mode == AwsCertificateMode::AwsIssued;
    c.policy_name = s.policy_name.clone();
    c.thing_name_template = s.thing_name_template.clone();
    c.thing_type = s.thing_type.clone();
    c.thing_groups = s.thing_groups.clone();
    c.operation_timeout = Duration::from_secs(s.timeout_seconds);
    c.max_attempts = s.max_attempts;
    let aws =
        onboard_aws_iot::AwsIot::connect(c).map_err(|e| CoreError::Setup(format!("aws: {e}")))?;
    Ok(Arc::new(aws))
}

fn cloud_error(e: PortError) -> CoreError {
    CoreError::Cloud(format!("{e}; nothing was registered, retry later"))
}

/// A registration's AWS side, made and waiting for the registration's commit.
#[derive(Debug)]
pub(crate) struct CloudPending {
    intent: uuid::Uuid,
    device_id: DeviceId,
    pub registration: CloudRegistration,
    started: Instant,
}

impl CloudPending {
    pub(crate) fn answer(&self) -> CloudAnswer {
        CloudAnswer {
            record: self.registration.record.clone(),
            endpoint: Some(self.registration.endpoint.clone()),
        }
    }
}

/// The rows of a certificate AWS issued.
fn issued_by_cloud(pem: &str) -> Result<IssuedCert, CoreError> {
    let info = onboard_pki::chain_info(pem.as_bytes())
        .map_err(|e| CoreError::Cloud(format!("AWS issued an unreadable certificate: {e}")))?;
    let c = info
        .into_iter()
        .next()
        .ok_or_else(|| CoreError::Cloud("AWS issued no certificate".into()))?;
    let key_algorithm = c.key_algorithm.ok_or_else(|| {
        CoreError::Cloud(format!(
            "AWS issued a certificate for an unsupported key ({})",
            c.key_description
        ))
    })?;
    Ok(IssuedCert {
        pem: pem.to_owned(),
        serial: c.serial,
        fingerprint: c.fingerprint,
        subject: c.subject,
        issuer: c.issuer,
        key_algorithm,
        not_before: c.not_before,
        not_after: c.not_after,
    })
}

impl Onboard {
    fn cloud(&self) -> &Arc<dyn CloudRegistrar> {
        &self.ports().cloud
    }

    /// Issues a new device's certificate and, when the cloud is on, registers
    /// it there (steps 1 and 2 of the module documentation). Returns the
    /// certificate, the generated key (when the device sent no CSR) and the
    /// pending cloud side, which [`Onboard::commit_cloud`] stores with the device.
    pub(crate) fn issue_and_register(
        &self,
        issuer: &dyn CertificateIssuer,
        spec: &DeviceSpec,
        device_id: DeviceId,
    ) -> Result<(IssuedCert, Option<SecretString>, Option<CloudPending>), CoreError> {
        let cloud = self.cloud().clone();
        if !cloud.enabled() {
            let (issued, key) = self.issue_for(issuer, spec, device_id)?;
            return Ok((issued, key, None));
        }
        // Signing has no effect outside until the certificate is handed out.
        let own = if cloud.issues_certificates() {
            None
        } else {
            Some(self.issue_for(issuer, spec, device_id)?)
        };
        let intent = self.record_cloud_intent(device_id)?;
        let started = Instant::now();
        let device = CloudDevice {
            device_id,
            serial: spec.serial.clone(),
            model: spec.model_code.as_ref().map(|m| m.to_string()),
            batch: spec.key.as_ref().map(|k| k.batch.clone()),
            firmware_version: spec.firmware_version.clone(),
            certificate: match &own {
                Some((issued, _)) => CloudCertificate::Own {
                    pem: issued.pem.clone(),
                },
                None => CloudCertificate::Issue {
                    csr: spec.csr.clone(),
                },
            },
        };
        let made = cloud
            .register(&device)
            .map_err(cloud_error)
            .and_then(|mut registration| {
                let (issued, key) = match own {
                    Some(x) => x,
                    None => {
                        let by_aws = registration.issued.as_ref().ok_or_else(|| {
                            CoreError::Cloud("AWS returned no certificate".into())
                        })?;
                        (
                            issued_by_cloud(&by_aws.certificate_pem)?,
                            by_aws.private_key.clone(),
                        )
                    }
                };
                registration.record.certificate_fingerprint = issued.fingerprint.to_string();
                Ok((issued, key, registration))
            });
        match made {
            Ok((issued, key, registration)) => Ok((
                issued,
                key,
                Some(CloudPending {
                    intent,
                    device_id,
                    registration,
                    started,
                }),
            )),
            Err(e) => {
                self.abandon_cloud(device_id, intent);
                Err(e)
            }
        }
    }

    /// Step 1: the durable intent, committed before the first AWS call.
    fn record_cloud_intent(&self, device_id: DeviceId) -> Result<uuid::Uuid, CoreError> {
        let id = new_id(self.clock());
        let now = self.clock().now();
        self.store().transaction(|tx| {
            tx.enqueue_effect(
                id,
                Effect::CloudDevice(device_id),
                now,
                now + ChronoDuration::seconds(CLOUD_INTENT_GRACE_SECONDS),
            )
        })?;
        Ok(id)
    }

    /// Step 3, inside the registration's transaction: the AWS ids stored with the
    /// device, and the intent removed.
    pub(crate) fn commit_cloud<T: Repositories>(
        &self,
        tx: &mut T,
        pending: &CloudPending,
    ) -> Result<(), CoreError> {
        if pending.started.elapsed() > CLOUD_DEADLINE {
            return Err(CoreError::Cloud(
                "AWS IoT took too long to answer; nothing was registered, retry later".into(),
            ));
        }
        tx.put_cloud_record(&pending.registration.record, self.clock().now())?;
        tx.complete_effects(&[pending.intent])?;
        Ok(())
    }

    /// Step 4: the registration did not commit; removes its AWS resources now.
    /// When AWS cannot be reached the intent stays and the reconciler does it.
    pub(crate) fn abandon_cloud_pending(&self, pending: &CloudPending) {
        self.abandon_cloud(pending.device_id, pending.intent);
    }

    fn abandon_cloud(&self, device_id: DeviceId, intent: uuid::Uuid) {
        match self.cloud().deregister(device_id) {
            Ok(()) => {
                if let Err(e) = self
                    .store()
                    .transaction(|tx| tx.complete_effects(&[intent]))
                {
                    tracing::warn!(device = %device_id, error = %e, "could not remove a finished cloud intent; the reconciler will");
                }
            }
            Err(e) => {
                tracing::warn!(device = %device_id, error = %e, "the AWS resources of a failed registration could not be removed now; the reconciler removes them");
                let retry_at = self.clock().now() + ChronoDuration::seconds(5);
                if let Err(e) = self
                    .store()
                    .transaction(|tx| tx.postpone_effect(intent, &e.to_string(), retry_at))
                {
                    tracing::warn!(device = %device_id, error = %e, "could not reschedule a cloud intent");
                }
            }
        }
    }

    /// The device's cloud side for an answer (a registration retried).
    pub(crate) fn cloud_answer(&self, id: DeviceId) -> Result<Option<CloudAnswer>, CoreError> {
        if !self.cloud().enabled() {
            return Ok(None);
        }
        let Some(record) = self.store().read(|tx| tx.cloud_record(id))? else {
            return Ok(None);
        };
        let endpoint = self.cloud().endpoint().map_err(cloud_error)?;
        Ok(Some(CloudAnswer { record, endpoint }))
    }

    /// Brings the cloud side of one device in line with the registry: in service
    /// with its current certificate registered, REVOKED once revoked, removed once
    /// decommissioned or when there is no such device (a registration that never
    /// committed).
    pub(crate) fn converge_cloud(&self, id: DeviceId) -> Result<(), CoreError> {
        let cloud = self.cloud().clone();
        if !cloud.enabled() {
            return Ok(());
        }
        let unavailable = |e: PortError| CoreError::Cloud(format!("cloud: {e}"));
        let state = self.store().read(|tx| -> Result<_, CoreError> {
            let device = match tx.device(id) {
                Ok(d) => d,
                Err(RepoError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let cert = tx
                .certificates_of_device(id)?
                .into_iter()
                .find(|c| c.status == CertificateStatus::Active);
            Ok(Some((device, cert, tx.cloud_record(id)?)))
        })?;
        let Some((device, cert, record)) = state else {
            return cloud.deregister(id).map_err(unavailable);
        };
        match device.status {
            DeviceStatus::Decommissioned => {
                cloud.deregister(id).map_err(unavailable)?;
                self.store().transaction(|tx| tx.delete_cloud_record(id))?;
                Ok(())
            }
            DeviceStatus::Revoked => match record {
                Some(r) => cloud.revoke(&r).map_err(unavailable),
                None => Ok(()),
            },
            DeviceStatus::Registered | DeviceStatus::Active => {
                let Some(cert) = cert else { return Ok(()) };
                let fingerprint = cert.fingerprint.to_string();
                let record = match record {
                    Some(r) if r.certificate_fingerprint == fingerprint => return Ok(()),
                    Some(r) => cloud
                        .replace_certificate(&r, &cert.pem)
                        .map_err(unavailable)?,
                    None => {
                        // Whatever an earlier attempt left is removed first.
                        cloud.deregister(id).map_err(unavailable)?;
                        let model = device.model.as_ref().map(|m| m.to_string());
                        cloud
                            .register(&CloudDevice {
                                device_id: id,
                                serial: device.serial.clone(),
                                model,
                                batch: device.batch.clone(),
                                firmware_version: device.firmware_version.clone(),
                                certificate: CloudCertificate::Own { pem: cert.pem },
                            })
                            .map_err(unavailable)?
                            .record
                    }
                };
                let record = CloudRecord {
                    certificate_fingerprint: fingerprint,
                    ..record
                };
                let now = self.clock().now();
                self.store()
                    .transaction(|tx| tx.put_cloud_record(&record, now))?;
                Ok(())
            }
        }
    }

    /// Removes AWS resources marked as ours whose device does not exist (or is
    /// decommissioned) and that no pending change accounts for. Returns how many
    /// devices' resources were removed.
    pub(crate) fn sweep_cloud(&self) -> Result<usize, CoreError> {
        let cloud = self.cloud().clone();
        if !cloud.enabled() {
            return Ok(0);
        }
        let unavailable = |e: PortError| CoreError::Cloud(format!("cloud: {e}"));
        let mut removed = 0;
        // Listed before the registry is read: a Thing listed here was created
        // after its intent committed, so the intent, or the device that replaced
        // it in one transaction, is seen below.
        for id in cloud.devices().map_err(unavailable)? {
            let orphan = self.store().read(|tx| -> Result<bool, CoreError> {
                if tx.has_pending_effect(Effect::CloudDevice(id).kind(), id)? {
                    return Ok(false);
                }
                match tx.device(id) {
                    Ok(d) => Ok(d.status == DeviceStatus::Decommissioned),
                    Err(RepoError::NotFound { .. }) => Ok(true),
                    Err(e) => Err(e.into()),
                }
            })?;
            if orphan {
                tracing::info!(device = %id, "removing AWS IoT resources that have no device");
                cloud.deregister(id).map_err(unavailable)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
