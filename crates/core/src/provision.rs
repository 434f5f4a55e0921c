//! Provisioning one device: certificate, rows, broker, cloud, confirmation. Shared
//! by self-registration (with a bootstrap key), operator registration and bulk
//! import, so all of them are all or nothing in the same way:
//!
//! the certificate is issued; the device and certificate rows are written in one
//! transaction; broker permissions are granted; the cloud registry is told; earlier
//! certificates of a re-registering device are revoked and the success audited. A
//! failure undoes the steps already done, in reverse order.

use std::sync::Arc;
use std::time::Instant;

use onboard_domain::{
    new_id, AuditOutcome, AuditRepository, BootstrapKey, BrokerGrant, Certificate, CertificateId,
    CertificateIssuer, CertificateRepository, CertificateStatus, CloudDevice, Device, DeviceId,
    DeviceModel, DeviceRepository, DeviceUpdate, InvalidValue, IssuedCert, ModelCode,
    NewCertificate, NewDevice, PortError, RepoError, RevocationReason, SecretString, Serial, Store,
};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::register::{MqttInfo, DEFAULT_TOPIC};

/// One device to provision.
#[derive(Debug, Clone)]
pub(crate) struct DeviceSpec {
    pub actor: Actor,
    /// The audit action: `device.register` (self-registration) or `device.create`.
    pub action: &'static str,
    /// The bootstrap key a device registers with; `None` for operator registration.
    pub key: Option<BootstrapKey>,
    /// The id a new device gets (chosen up front when the serial defaults to it);
    /// a fresh one when `None`.
    pub device_id: Option<DeviceId>,
    pub serial: Serial,
    pub name: String,
    pub location: String,
    /// The model's templates and defaults, when the model exists.
    pub model: Option<DeviceModel>,
    /// The model code stored on the device (always an existing model).
    pub model_code: Option<ModelCode>,
    pub firmware_version: String,
    pub config: Value,
    pub metadata: Value,
    /// PEM; `None` to generate the key pair here.
    pub csr: Option<Vec<u8>>,
}

/// What the flow learned before it failed, for the audit record.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    pub prefix: Option<String>,
    pub serial: Option<String>,
    pub device: Option<DeviceId>,
}

/// A provisioned device and what it needs to connect.
#[derive(Debug)]
pub(crate) struct Provisioned {
    pub device: Device,
    pub certificate: Certificate,
    pub private_key_pem: Option<SecretString>,
    pub ca_chain_pem: String,
    pub mqtt: MqttInfo,
    pub config: Value,
    pub reregistered: bool,
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> CoreError {
    CoreError::Invalid(InvalidValue::new(field, reason))
}

fn port(step: &'static str, e: PortError) -> CoreError {
    match e {
        PortError::Rejected(m) if step == "issue" => invalid("csr", m),
        PortError::Rejected(m) => CoreError::Conflict(format!("{step}: {m}")),
        PortError::Unavailable(m) => CoreError::Unavailable(format!("{step}: {m}")),
    }
}

/// Replaces `{device_id}`, `{serial}` and `{model}` in a topic template.
pub fn render_topic(template: &str, device: &Device) -> String {
    template
        .replace("{device_id}", &device.id.to_string())
        .replace("{serial}", device.serial.as_str())
        .replace(
            "{model}",
            device.model.as_ref().map(|m| m.as_str()).unwrap_or(""),
        )
}

/// Where a device connects and which topics it may use: its model's templates, or
/// `devices/{device_id}/#` both ways.
pub(crate) fn mqtt_info(
    b: &crate::settings::BrokerSettings,
    model: Option<&DeviceModel>,
    device: &Device,
) -> MqttInfo {
    let templates = |list: Option<&Vec<String>>| -> Vec<String> {
        match list {
            Some(l) if !l.is_empty() => l.iter().map(|t| render_topic(t, device)).collect(),
            _ => vec![render_topic(DEFAULT_TOPIC, device)],
        }
    };
    MqttInfo {
        host: b.public_host.clone(),
        port: b.public_port,
        client_id: device.id.to_string(),
        publish: templates(model.map(|m| &m.publish_topics)),
        subscribe: templates(model.map(|m| &m.subscribe_topics)),
        max_qos: model.map(|m| m.max_qos).unwrap_or(1),
        retain_allowed: model.is_some_and(|m| m.retain_allowed),
    }
}

/// The broker grant for a device with its connection settings.
pub(crate) fn grant_of(device: &Device, mqtt: &MqttInfo) -> BrokerGrant {
    BrokerGrant {
        device_id: device.id,
        serial: device.serial.clone(),
        client_id: mqtt.client_id.clone(),
        publish: mqtt.publish.clone(),
        subscribe: mqtt.subscribe.clone(),
        max_qos: mqtt.max_qos,
        retain_allowed: mqtt.retain_allowed,
        password_hash: None,
    }
}

impl Onboard {
    /// Steps 3 to 7. On error, whatever this function did is undone before it
    /// returns; the caller gives the key use back.
    pub(crate) fn provision(
        &self,
        c: &DeviceSpec,
        trail: &mut Trail,
        timings: &mut Vec<(&'static str, f64)>,
    ) -> Result<Provisioned, CoreError> {
        let issuer = self.issuer()?;
        // Two rounds at most: a concurrent registration of the same serial may
        // create the device between our lookup and our insert; then we issue again
        // for that device, as a re-registration.
        for _ in 0..2 {
            let existing = self.store().read(|tx| tx.device_by_serial(&c.serial))?;
            if let Some(d) = &existing {
                // Only a device's own bootstrap key batch may replace the
                // credentials of a device that has not reported in; anything else
                // (an operator registration, another batch) finds the serial taken.
                let same_batch = c.key.as_ref().map(|k| k.batch.as_str());
                if same_batch.is_none() {
                    return Err(CoreError::Conflict(format!(
                        "serial {} is already registered",
                        c.serial
                    )));
                }
                if !d.status.may_reregister() {
                    return Err(CoreError::Conflict(format!(
                        "serial {} is already registered and {}",
                        c.serial, d.status
                    )));
                }
                if d.batch.as_deref() != same_batch {
                    return Err(CoreError::Conflict(format!(
                        "serial {} is registered with another key batch",
                        c.serial
                    )));
                }
            }
            let device_id = existing
                .as_ref()
                .map(|d| d.id)
                .or(c.device_id)
                .unwrap_or_else(|| DeviceId(new_id(self.clock())));
            trail.device = Some(device_id);

            let step = Instant::now();
            let now = self.clock().now();
            let (issued, private_key) = match &c.csr {
                Some(csr) => (
                    issuer
                        .issue_from_csr(device_id, csr, now)
                        .map_err(|e| port("issue", e))?,
                    None,
                ),
                None => {
                    let (cert, key) = issuer
                        .issue_with_new_key(device_id, now)
                        .map_err(|e| port("issue", e))?;
                    (cert, Some(key))
                }
            };
            timings.push(("issue", step.elapsed().as_secs_f64()));

            let step = Instant::now();
            let stored = self.store_registration(c, existing.as_ref(), device_id, &issued);
            let (device, certificate) = match stored {
                Ok(rows) => rows,
                Err(CoreError::Conflict(_)) if existing.is_none() => continue,
                Err(e) => return Err(e),
            };
            timings.push(("store", step.elapsed().as_secs_f64()));

            let done =
                self.connect_and_confirm(c, existing.is_some(), device, certificate, timings);
            return match done {
                Ok((device, certificate, mqtt, reregistered)) => Ok(Provisioned {
                    config: self.device_config(&c.model, &device),
                    device,
                    certificate,
                    private_key_pem: private_key,
                    ca_chain_pem: issuer.ca_chain_pem(),
                    mqtt,
                    reregistered,
                }),
                Err(e) => Err(e),
            };
        }
        Err(CoreError::Conflict(format!(
            "serial {} is being registered concurrently; retry",
            c.serial
        )))
    }

    /// Step 4: the device (new, or refreshed on re-registration) and its new
    /// certificate, in one transaction.
    fn store_registration(
        &self,
        c: &DeviceSpec,
        existing: Option<&Device>,
        device_id: DeviceId,
        issued: &IssuedCert,
    ) -> Result<(Device, Certificate), CoreError> {
        let now = self.clock().now();
        let cert = self.certificate_row(device_id, issued);
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let device = match existing {
                Some(_) => tx.update_device(
                    device_id,
                    &DeviceUpdate {
                        firmware_version: Some(c.firmware_version.clone()),
                        metadata: Some(c.metadata.clone()),
                        ..DeviceUpdate::default()
                    },
                    now,
                )?,
                None => tx.insert_device(&NewDevice {
                    id: device_id,
                    serial: c.serial.clone(),
                    name: c.name.clone(),
                    model: c.model_code.clone(),
                    location: c.location.clone(),
                    firmware_version: c.firmware_version.clone(),
                    bootstrap_key_id: c.key.as_ref().map(|k| k.id),
                    batch: c.key.as_ref().map(|k| k.batch.clone()),
                    config: c.config.clone(),
                    metadata: c.metadata.clone(),
                    created_at: now,
                })?,
            };
            let certificate = tx.insert_certificate(&cert)?;
            Ok((device, certificate))
        })
    }

    /// Steps 5 to 7, undoing 4 to 6 on failure.
    fn connect_and_confirm(
        &self,
        c: &DeviceSpec,
        reregistration: bool,
        device: Device,
        certificate: Certificate,
        timings: &mut Vec<(&'static str, f64)>,
    ) -> Result<(Device, Certificate, MqttInfo, bool), CoreError> {
        let ports = self.ports();
        let mqtt = self.mqtt_info(&c.model, &device);
        let grant = grant_of(&device, &mqtt);
        let step = Instant::now();
        if let Err(e) = ports.broker.grant(&grant) {
            self.undo_rows(reregistration, &device, &certificate);
            return Err(port("broker", e));
        }
        timings.push(("broker", step.elapsed().as_secs_f64()));

        let step = Instant::now();
        let cloud_device = CloudDevice {
            device_id: device.id,
            serial: device.serial.clone(),
            certificate_pem: certificate.pem.clone(),
        };
        if let Err(e) = ports.cloud.register(&cloud_device) {
            self.undo_broker(reregistration, device.id);
            self.undo_rows(reregistration, &device, &certificate);
            return Err(port("cloud", e));
        }
        timings.push(("cloud", step.elapsed().as_secs_f64()));

        let step = Instant::now();
        let now = self.clock().now();
        let audit = Audit::new(self.clock(), &c.actor, c.action, AuditOutcome::Success)
            .device(device.id)
            .serial(device.serial.as_str())
            .details(json!({
                "certificate_serial": certificate.serial,
                "reregistration": reregistration,
                "csr": c.csr.is_some(),
            }));
        let audit = match &c.key {
            Some(k) => audit.key_prefix(&k.prefix),
            None => audit,
        };
        let confirmed = self.store().transaction(|tx| -> Result<usize, CoreError> {
            // Concurrent registrations of one serial: the newest certificate wins,
            // whatever order these transactions commit in. A registration that
            // finds a newer one is refused (and undone) instead of handing out a
            // certificate that is already superseded.
            let certificates = tx.certificates_of_device(device.id)?;
            let newest_active = certificates
                .iter()
                .filter(|c| c.status == CertificateStatus::Active)
                .map(|c| c.id)
                .max();
            if newest_active != Some(certificate.id) {
                return Err(CoreError::Conflict(format!(
                    "a newer registration of serial {} replaced this one; retry",
                    device.serial
                )));
            }
            let mut revoked = 0;
            for old in certificates {
                if old.status == CertificateStatus::Active && old.id < certificate.id {
                    match tx.revoke_certificate(old.id, now, RevocationReason::Superseded) {
                        Ok(_) => revoked += 1,
                        // A concurrent registration that lost to this one removed its
                        // certificate meanwhile: nothing left to revoke.
                        Err(RepoError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            tx.append_audit(audit.event())?;
            Ok(revoked)
        });
        let revoked = match confirmed {
            Ok(n) => n,
            Err(e) => {
                // Superseded by a newer registration of the same serial: the device
                // (and its grants) now belong to that one; only this certificate
                // goes.
                let keep_device = reregistration || matches!(e, CoreError::Conflict(_));
                self.undo_cloud(keep_device, device.id);
                self.undo_broker(keep_device, device.id);
                self.undo_rows(keep_device, &device, &certificate);
                return Err(e);
            }
        };
        if revoked > 0 {
            // The revocation is committed; if the CRL cannot be published now, the
            // next CRL request or revocation publishes it.
            match self.publish_crl() {
                Ok(crl) => {
                    if let Err(e) = ports.broker.publish_crl(&crl.pem) {
                        tracing::warn!(error = %e, "could not hand the new CRL to the broker");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not publish the CRL after a re-registration")
                }
            }
        }
        timings.push(("confirm", step.elapsed().as_secs_f64()));
        Ok((device, certificate, mqtt, reregistration))
    }

    /// A re-registering device keeps its cloud record; a new one loses it.
    fn undo_cloud(&self, reregistration: bool, device: DeviceId) {
        if !reregistration {
            if let Err(e) = self.ports().cloud.deregister(device) {
                tracing::error!(error = %e, %device, "could not undo a cloud registration");
            }
        }
    }

    /// A re-registering device keeps the permissions it had; a new one loses them.
    fn undo_broker(&self, reregistration: bool, device: DeviceId) {
        if !reregistration {
            if let Err(e) = self.ports().broker.revoke(device) {
                tracing::error!(error = %e, %device, "could not undo a broker grant");
            }
        }
    }

    /// Removes the rows step 4 wrote: the new certificate, and the device when it
    /// was new.
    fn undo_rows(&self, reregistration: bool, device: &Device, certificate: &Certificate) {
        let result = self.store().transaction(|tx| -> Result<(), RepoError> {
            if reregistration {
                tx.delete_certificate(certificate.id)
            } else {
                tx.delete_device(device.id)
            }
        });
        if let Err(e) = result {
            tracing::error!(error = %e, device = %device.id, "could not undo a registration's rows");
        }
    }

    /// The registry row for a certificate just issued to `device_id`.
    pub(crate) fn certificate_row(
        &self,
        device_id: DeviceId,
        issued: &IssuedCert,
    ) -> NewCertificate {
        NewCertificate {
            id: CertificateId(new_id(self.clock())),
            device_id,
            serial: issued.serial.clone(),
            fingerprint: issued.fingerprint.clone(),
            subject: issued.subject.clone(),
            issuer: issued.issuer.clone(),
            key_algorithm: issued.key_algorithm,
            not_before: issued.not_before,
            not_after: issued.not_after,
            pem: issued.pem.clone(),
            created_at: self.clock().now(),
        }
    }

    pub(crate) fn mqtt_info(&self, model: &Option<DeviceModel>, device: &Device) -> MqttInfo {
        mqtt_info(&self.settings().broker, model.as_ref(), device)
    }

    /// The device's configuration: the service defaults, then the model's, then the
    /// device's own (later keys win).
    pub(crate) fn device_config(&self, model: &Option<DeviceModel>, device: &Device) -> Value {
        let mut config = serde_json::Map::new();
        let d = &self.settings().device;
        if !d.wifi_ssid.is_empty() {
            config.insert("wifi_ssid".into(), json!(d.wifi_ssid));
        }
        if !d.wifi_password.is_empty() {
            config.insert("wifi_password".into(), json!(d.wifi_password.expose()));
        }
        for layer in [model.as_ref().map(|m| &m.config), Some(&device.config)]
            .into_iter()
            .flatten()
        {
            if let Value::Object(map) = layer {
                for (k, v) in map {
                    config.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(config)
    }

    pub(crate) fn issuer(&self) -> Result<Arc<dyn CertificateIssuer>, CoreError> {
        if let Some(issuer) = &self.ports().issuer {
            return Ok(issuer.clone());
        }
        let s = self.settings();
        Ok(Arc::new(crate::adapters::InternalIssuer {
            ca: self.ca()?,
            validity_days: s.ca.validity_days,
            public_base_url: s.server.public_base_url.clone(),
            key_algorithm: s.ca.key_algorithm,
        }))
    }
}
