//! Device self-registration with a bootstrap key (`POST /public/v1/register`).
//!
//! The order, and what undoes what:
//! 1. the key is looked up by its public prefix and its hash compared in constant
//!    time; the request body is validated (nothing is spent on a bad request);
//! 2. one use of the key is taken in a single conditional update (committed, so
//!    concurrent registrations can never take more than `max_uses`);
//! 3. the certificate is issued; 4. the device and certificate rows are written;
//! 5. broker permissions, 6. the cloud registry;
//! 7. earlier certificates of a re-registering device are revoked and the success
//!    is audited.
//!
//! A failure after step 2 undoes what was done, in reverse order, gives the use
//! back, and writes the failure to the audit log with its reason.

use std::time::Instant;

use onboard_domain::{
    new_id, AuditOutcome, AuditRepository, BootstrapKey, BootstrapKeyRepository, BrokerGrant,
    Certificate, CertificateId, CertificateIssuer, CertificateRepository, CertificateStatus,
    CloudDevice, Device, DeviceId, DeviceModel, DeviceModelRepository, DeviceRepository,
    DeviceUpdate, InvalidValue, IssuedCert, ModelCode, NewCertificate, NewDevice, PortError,
    RepoError, RevocationReason, SecretString, Serial, Store,
};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::secrets::{bootstrap_key_prefix, matches_hash};

/// The largest CSR accepted (PEM).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// The largest metadata object accepted, serialised.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;
/// Default topic template when a device has no model (or the model has none).
pub const DEFAULT_TOPIC: &str = "devices/{device_id}/#";

/// What a device sends.
#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    /// The bootstrap key; `None` when the request carried none.
    pub key: Option<SecretString>,
    pub serial: String,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    /// PKCS#10, PEM. Without it the server generates the key pair.
    pub csr: Option<String>,
    pub metadata: Option<Value>,
    pub remote_addr: Option<String>,
}

/// Where and how the device connects to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttInfo {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub max_qos: u8,
    pub retain_allowed: bool,
}

/// What a registered device walks away with.
#[derive(Debug)]
pub struct Registered {
    pub device: Device,
    pub certificate: Certificate,
    /// Only when the server generated the key (no CSR).
    pub private_key_pem: Option<SecretString>,
    pub ca_chain_pem: String,
    pub mqtt: MqttInfo,
    pub config: Value,
    /// True when an earlier registration of this serial was replaced.
    pub reregistered: bool,
    /// Seconds spent in each step, for the latency metrics.
    pub timings: Vec<(&'static str, f64)>,
}

/// What the flow learned before it failed, for the audit record.
#[derive(Default)]
struct Trail {
    prefix: Option<String>,
    serial: Option<String>,
    device: Option<DeviceId>,
}

struct Checked {
    actor: Actor,
    key: BootstrapKey,
    serial: Serial,
    model: Option<DeviceModel>,
    csr: Option<Vec<u8>>,
    firmware_version: String,
    metadata: Value,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CoreError {
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

impl Onboard {
    /// Registers a device, all or nothing. See the module documentation.
    pub fn register(&self, req: RegisterRequest) -> Result<Registered, CoreError> {
        let actor = Actor::device(req.remote_addr.clone());
        let mut trail = Trail {
            serial: Some(req.serial.chars().take(64).collect()),
            ..Trail::default()
        };
        match self.register_inner(&req, &mut trail) {
            Ok(done) => Ok(done),
            Err(e) => {
                let mut audit = Audit::new(
                    self.clock(),
                    &actor,
                    "device.register",
                    AuditOutcome::Failure,
                )
                .reason(e.reason_code());
                if let Some(p) = &trail.prefix {
                    audit = audit.key_prefix(p);
                }
                if let Some(s) = &trail.serial {
                    audit = audit.serial(s);
                }
                if let Some(d) = trail.device {
                    audit = audit.device(d);
                }
                self.record_failure(audit);
                Err(e)
            }
        }
    }

    fn register_inner(
        &self,
        req: &RegisterRequest,
        trail: &mut Trail,
    ) -> Result<Registered, CoreError> {
        let mut timings = Vec::new();
        let step = Instant::now();
        let checked = self.check_registration(req, trail)?;
        timings.push(("check", step.elapsed().as_secs_f64()));

        let step = Instant::now();
        let now = self.clock().now();
        let key_id = checked.key.id;
        let taken = self
            .store()
            .transaction(|tx| tx.consume_bootstrap_key_use(key_id, now))?;
        if !taken {
            // Tell the audit log why: the row as it is now explains the refusal.
            let key = self.store().transaction(|tx| tx.bootstrap_key(key_id))?;
            let reason = key
                .check_usable(now)
                .err()
                .map(|r| r.code())
                .unwrap_or("key_used_up");
            return Err(CoreError::Unauthorized(reason));
        }
        timings.push(("consume_key", step.elapsed().as_secs_f64()));

        match self.provision(&checked, trail, &mut timings) {
            Ok(done) => Ok(Registered { timings, ..done }),
            Err(e) => {
                let now = self.clock().now();
                if let Err(release) = self
                    .store()
                    .transaction(|tx| tx.release_bootstrap_key_use(key_id, now))
                {
                    tracing::error!(error = %release, "could not give a bootstrap key use back");
                }
                Err(e)
            }
        }
    }

    /// Step 1: the key and the body, before anything is spent.
    fn check_registration(
        &self,
        req: &RegisterRequest,
        trail: &mut Trail,
    ) -> Result<Checked, CoreError> {
        let presented = req
            .key
            .as_ref()
            .ok_or(CoreError::Unauthorized("key_missing"))?;
        let prefix = bootstrap_key_prefix(presented.expose())
            .ok_or(CoreError::Unauthorized("key_unknown"))?;
        trail.prefix = Some(prefix.to_owned());
        let key = self
            .store()
            .transaction(|tx| tx.bootstrap_key_by_prefix(prefix))?
            .filter(|k| matches_hash(presented.expose(), &k.key_hash))
            .ok_or(CoreError::Unauthorized("key_unknown"))?;
        if let Err(rejection) = key.check_usable(self.clock().now()) {
            return Err(CoreError::Unauthorized(rejection.code()));
        }

        let serial = Serial::parse(req.serial.trim())?;
        trail.serial = Some(serial.to_string());
        let requested_model = req.model.as_deref().map(ModelCode::parse).transpose()?;
        let model_code = match (&key.model, requested_model) {
            (Some(bound), Some(asked)) if *bound != asked => {
                return Err(invalid(
                    "model",
                    format!("this bootstrap key is for model {bound}"),
                ))
            }
            (Some(bound), _) => Some(bound.clone()),
            (None, asked) => asked,
        };
        let model = match &model_code {
            Some(code) => match self.store().transaction(|tx| tx.model(code)) {
                Ok(m) => Some(m),
                // A device model nobody created yet is not an error: the device
                // gets the default topics and no model defaults.
                Err(RepoError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let firmware_version = req.firmware_version.clone().unwrap_or_default();
        if firmware_version.len() > 64 || !firmware_version.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(
                "firmware_version",
                "must be at most 64 printable characters without spaces",
            ));
        }
        let metadata = req.metadata.clone().unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(invalid("metadata", "must be a JSON object"));
        }
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(invalid(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes"),
            ));
        }
        let csr = match req.csr.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(pem) if pem.len() > MAX_CSR_BYTES => {
                return Err(invalid(
                    "csr",
                    format!("must be at most {MAX_CSR_BYTES} bytes"),
                ))
            }
            Some(pem) => {
                onboard_pki::check_csr(pem.as_bytes())
                    .map_err(|e| invalid("csr", e.to_string()))?;
                Some(pem.as_bytes().to_vec())
            }
        };
        Ok(Checked {
            actor: Actor::device(req.remote_addr.clone()),
            key,
            serial,
            model,
            csr,
            firmware_version,
            metadata,
        })
    }

    /// Steps 3 to 7. On error, whatever this function did is undone before it
    /// returns; the caller gives the key use back.
    fn provision(
        &self,
        c: &Checked,
        trail: &mut Trail,
        timings: &mut Vec<(&'static str, f64)>,
    ) -> Result<Registered, CoreError> {
        let issuer = self.issuer()?;
        // Two rounds at most: a concurrent registration of the same serial may
        // create the device between our lookup and our insert; then we issue again
        // for that device, as a re-registration.
        for _ in 0..2 {
            let existing = self
                .store()
                .transaction(|tx| tx.device_by_serial(&c.serial))?;
            if let Some(d) = &existing {
                if !d.status.may_reregister() {
                    return Err(CoreError::Conflict(format!(
                        "serial {} is already registered and {}",
                        c.serial, d.status
                    )));
                }
                if d.batch.as_deref() != Some(c.key.batch.as_str()) {
                    // Only a key of the batch the device registered with may
                    // replace its credentials.
                    return Err(CoreError::Conflict(format!(
                        "serial {} is registered with another key batch",
                        c.serial
                    )));
                }
            }
            let device_id = existing
                .as_ref()
                .map(|d| d.id)
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
                Ok((device, certificate, mqtt, reregistered)) => Ok(Registered {
                    config: self.device_config(&c.model, &device),
                    device,
                    certificate,
                    private_key_pem: private_key,
                    ca_chain_pem: issuer.ca_chain_pem(),
                    mqtt,
                    reregistered,
                    timings: Vec::new(),
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
        c: &Checked,
        existing: Option<&Device>,
        device_id: DeviceId,
        issued: &IssuedCert,
    ) -> Result<(Device, Certificate), CoreError> {
        let now = self.clock().now();
        let cert = NewCertificate {
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
            created_at: now,
        };
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
                    name: c.serial.to_string(),
                    model: c
                        .model
                        .as_ref()
                        .map(|m| m.code.clone())
                        .or_else(|| c.key.model.clone()),
                    location: String::new(),
                    firmware_version: c.firmware_version.clone(),
                    bootstrap_key_id: Some(c.key.id),
                    batch: Some(c.key.batch.clone()),
                    config: json!({}),
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
        c: &Checked,
        reregistration: bool,
        device: Device,
        certificate: Certificate,
        timings: &mut Vec<(&'static str, f64)>,
    ) -> Result<(Device, Certificate, MqttInfo, bool), CoreError> {
        let ports = self.ports();
        let mqtt = self.mqtt_info(&c.model, &device);
        let grant = BrokerGrant {
            device_id: device.id,
            serial: device.serial.clone(),
            client_id: mqtt.client_id.clone(),
            publish: mqtt.publish.clone(),
            subscribe: mqtt.subscribe.clone(),
            max_qos: mqtt.max_qos,
            retain_allowed: mqtt.retain_allowed,
            password_hash: None,
        };
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
        let audit = Audit::new(
            self.clock(),
            &c.actor,
            "device.register",
            AuditOutcome::Success,
        )
        .device(device.id)
        .serial(device.serial.as_str())
        .key_prefix(&c.key.prefix)
        .details(json!({
            "certificate_serial": certificate.serial,
            "reregistration": reregistration,
            "csr": c.csr.is_some(),
        }));
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
                    tx.revoke_certificate(old.id, now, RevocationReason::Superseded)?;
                    revoked += 1;
                }
            }
            tx.append_audit(audit.event())?;
            Ok(revoked)
        });
        let revoked = match confirmed {
            Ok(n) => n,
            Err(e) => {
                self.undo_cloud(reregistration, device.id);
                self.undo_broker(reregistration, device.id);
                self.undo_rows(reregistration, &device, &certificate);
                return Err(e);
            }
        };
        if revoked > 0 {
            if let Err(e) = self.publish_crl() {
                // The revocation is committed; the next CRL request publishes it.
                tracing::warn!(error = %e, "could not publish the CRL after a re-registration");
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

    fn mqtt_info(&self, model: &Option<DeviceModel>, device: &Device) -> MqttInfo {
        let b = &self.settings().broker;
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
            publish: templates(model.as_ref().map(|m| &m.publish_topics)),
            subscribe: templates(model.as_ref().map(|m| &m.subscribe_topics)),
            max_qos: model.as_ref().map(|m| m.max_qos).unwrap_or(1),
            retain_allowed: model.as_ref().is_some_and(|m| m.retain_allowed),
        }
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

    fn issuer(&self) -> Result<std::sync::Arc<dyn CertificateIssuer>, CoreError> {
        if let Some(issuer) = &self.ports().issuer {
            return Ok(issuer.clone());
        }
        let s = self.settings();
        Ok(std::sync::Arc::new(crate::adapters::InternalIssuer {
            ca: self.ca()?,
            validity_days: s.ca.validity_days,
            public_base_url: s.server.public_base_url.clone(),
            key_algorithm: s.ca.key_algorithm,
        }))
    }
}
