//! Provisioning one device, shared by self-registration (with a bootstrap key),
//! operator registration and bulk import, so all of them are all or nothing in
//! the same way:
//!
//! 1. the certificate is issued (signing takes no database lock) and the answer
//!    prepared ([`Prepared`]);
//! 2. one transaction writes the device, its certificate, the audit event, the
//!    key use when there is one, and the effects outside the database (broker
//!    access, cloud registry) as pending rows;
//! 3. after the commit the effects are applied (see `effects`); what cannot be
//!    applied now is applied by the reconciler.
//!
//! A failure before the commit leaves nothing behind; after it, nothing is undone.

use std::sync::Arc;

use onboard_domain::{
    new_id, AuditOutcome, BootstrapKey, BrokerGrant, CertSerial, Certificate, CertificateId,
    CertificateIssuer, CredentialKind, Device, DeviceId, DeviceModel, DeviceModelRepository,
    DeviceStatus, Effect, InvalidValue, IssuedCert, ModelCode, MqttCredential, NewAuditEvent,
    NewCertificate, NewDevice, PortError, RepoError, Repositories, SecretString, Serial, Store,
};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::effects::Enqueued;
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
    /// `csr` as parsed and verified by the internal CA when the request was
    /// checked, so that issuing does not parse it again.
    pub checked_csr: Option<onboard_pki::CheckedCsr>,
    /// A certificate, or a client id and secret.
    pub credential: CredentialKind,
}

/// What the flow learned before it failed, for the audit record.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    pub prefix: Option<String>,
    pub serial: Option<String>,
    pub device: Option<DeviceId>,
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

/// Refuses a serial shaped like a device id (a UUID) unless it is the device's
/// own: topic templates put `{serial}` and `{device_id}` in the same places, so
/// such a serial could name another device's topics.
pub(crate) fn check_serial_is_not_an_id(
    serial: &Serial,
    own_id: Option<DeviceId>,
) -> Result<(), CoreError> {
    match serial.as_str().parse::<uuid::Uuid>() {
        Ok(u) if own_id.map(|d| d.0) != Some(u) => Err(invalid(
            "serial",
            "must not be shaped like a device id (a UUID): it could name another device's topics",
        )),
        _ => Ok(()),
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
/// `devices/{device_id}/#` both ways, and its rotation topic
/// (`<rotation.topic_prefix>/<client id>/rotation`), which it may read.
pub(crate) fn mqtt_info(
    settings: &crate::settings::Settings,
    model: Option<&DeviceModel>,
    device: &Device,
) -> MqttInfo {
    let b = &settings.broker;
    let client_id = device.id.to_string();
    let templates = |list: Option<&Vec<String>>| -> Vec<String> {
        match list {
            Some(l) if !l.is_empty() => l.iter().map(|t| render_topic(t, device)).collect(),
            _ => vec![render_topic(DEFAULT_TOPIC, device)],
        }
    };
    MqttInfo {
        host: b.public_host.clone(),
        port: b.public_port,
        rotation_topic: onboard_rotation::notification_topic(
            &settings.rotation.topic_prefix,
            &client_id,
        ),
        client_id,
        publish: templates(model.map(|m| &m.publish_topics)),
        subscribe: templates(model.map(|m| &m.subscribe_topics)),
        max_qos: model.map(|m| m.max_qos).unwrap_or(1),
        retain_allowed: model.is_some_and(|m| m.retain_allowed),
    }
}

/// The broker grant for a device with its connection settings: its topics, and
/// read access to its rotation topic.
pub(crate) fn grant_of(
    device: &Device,
    mqtt: &MqttInfo,
    password_hash: Option<String>,
) -> BrokerGrant {
    let mut subscribe = mqtt.subscribe.clone();
    if !subscribe.contains(&mqtt.rotation_topic) {
        subscribe.push(mqtt.rotation_topic.clone());
    }
    BrokerGrant {
        device_id: device.id,
        serial: device.serial.clone(),
        client_id: mqtt.client_id.clone(),
        publish: mqtt.publish.clone(),
        subscribe,
        max_qos: mqtt.max_qos,
        retain_allowed: mqtt.retain_allowed,
        password_hash,
    }
}

/// A new device ready to be stored: its rows and its answer, computed before the
/// transaction.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub new_device: NewDevice,
    /// A certificate device's certificate.
    pub cert_row: Option<NewCertificate>,
    /// A password device's secret, in clear (shown once) and as stored.
    pub secret: Option<(SecretString, MqttCredential)>,
    /// The device as it will be stored.
    pub device: Device,
    pub private_key_pem: Option<SecretString>,
    pub mqtt: MqttInfo,
    pub config: Value,
}

/// The device as `insert_device` stores it.
fn stored_form(d: &NewDevice) -> Device {
    Device {
        id: d.id,
        serial: d.serial.clone(),
        name: d.name.clone(),
        model: d.model.clone(),
        location: d.location.clone(),
        firmware_version: d.firmware_version.clone(),
        credential: d.credential,
        status: DeviceStatus::Registered,
        bootstrap_key_id: d.bootstrap_key_id,
        batch: d.batch.clone(),
        config: d.config.clone(),
        metadata: d.metadata.clone(),
        created_at: d.created_at,
        updated_at: d.created_at,
        activated_at: None,
        last_seen_at: None,
        decommissioned_at: None,
    }
}

impl Onboard {
    /// Issues the certificate for a new device: from the CSR, or with a key pair
    /// generated here.
    pub(crate) fn issue_for(
        &self,
        issuer: &dyn CertificateIssuer,
        c: &DeviceSpec,
        device_id: DeviceId,
    ) -> Result<(IssuedCert, Option<SecretString>), CoreError> {
        let now = self.clock().now();
        match &c.csr {
            Some(csr) => {
                let issued = match (&c.checked_csr, self.ports().issuer.is_none()) {
                    // The internal CA issues from the check it already made.
                    (Some(checked), true) => self
                        .internal_issuer()?
                        .issue_from_checked(device_id, checked, now),
                    _ => issuer.issue_from_csr(device_id, csr, now),
                };
                Ok((issued.map_err(|e| port("issue", e))?, None))
            }
            None => {
                let (cert, key) = issuer
                    .issue_with_new_key(device_id, now)
                    .map_err(|e| port("issue", e))?;
                Ok((cert, Some(key)))
            }
        }
    }

    /// The rows and the answer of a new device whose certificate was issued.
    pub(crate) fn prepare(
        &self,
        c: &DeviceSpec,
        device_id: DeviceId,
        issued: &IssuedCert,
        private_key_pem: Option<SecretString>,
    ) -> Prepared {
        let mut p = self.prepare_device(c, device_id);
        p.cert_row = Some(self.certificate_row(device_id, issued));
        p.private_key_pem = private_key_pem;
        p
    }

    /// The rows and the answer of a new password device: a fresh secret, stored
    /// only as its hash.
    pub(crate) fn prepare_password(
        &self,
        c: &DeviceSpec,
        device_id: DeviceId,
    ) -> Result<Prepared, CoreError> {
        let mut p = self.prepare_device(c, device_id);
        p.secret = Some(self.new_secret(&p.device, &p.mqtt)?);
        Ok(p)
    }

    /// A new secret for a password device and the row that stores its hash.
    pub(crate) fn new_secret(
        &self,
        device: &Device,
        mqtt: &MqttInfo,
    ) -> Result<(SecretString, MqttCredential), CoreError> {
        let secret = onboard_pki::secrets::random_token()
            .map_err(|e| CoreError::Internal(format!("the random generator failed: {e}")))?;
        let password_hash = onboard_broker::hash_password(&secret)
            .map_err(|e| CoreError::Internal(format!("cannot hash the secret: {e}")))?;
        let now = self.clock().now();
        Ok((
            SecretString::new(&secret),
            MqttCredential {
                device_id: device.id,
                username: mqtt.client_id.clone(),
                password_hash,
                created_at: now,
                updated_at: now,
            },
        ))
    }

    /// A credential's issue is apart; this builds the device row and its answer.
    pub(crate) fn prepare_device(&self, c: &DeviceSpec, device_id: DeviceId) -> Prepared {
        let new_device = NewDevice {
            id: device_id,
            serial: c.serial.clone(),
            name: c.name.clone(),
            model: c.model_code.clone(),
            location: c.location.clone(),
            firmware_version: c.firmware_version.clone(),
            credential: c.credential,
            bootstrap_key_id: c.key.as_ref().map(|k| k.id),
            batch: c.key.as_ref().map(|k| k.batch.clone()),
            config: c.config.clone(),
            metadata: c.metadata.clone(),
            created_at: self.clock().now(),
        };
        let device = stored_form(&new_device);
        let mqtt = self.mqtt_info(&c.model, &device);
        let config = self.device_config(&c.model, &device);
        Prepared {
            cert_row: None,
            secret: None,
            new_device,
            device,
            private_key_pem: None,
            mqtt,
            config,
        }
    }

    /// Writes a new device inside the caller's transaction: device, certificate,
    /// success audit event and its effects. A taken serial is a `Conflict`.
    pub(crate) fn store_new<T: Repositories>(
        &self,
        tx: &mut T,
        c: &DeviceSpec,
        p: &Prepared,
        details: Value,
        effects: &mut Vec<Enqueued>,
    ) -> Result<(Device, Option<Certificate>), CoreError> {
        let device = tx.insert_device(&p.new_device).map_err(|e| match e {
            RepoError::Conflict { .. } => {
                CoreError::Conflict(format!("serial {} is already registered", c.serial))
            }
            other => other.into(),
        })?;
        let certificate = match &p.cert_row {
            // The device is created just above: its first certificate.
            Some(row) => Some(tx.insert_first_certificate(row)?),
            None => None,
        };
        if let Some((_, row)) = &p.secret {
            tx.set_mqtt_credential(row)?;
        }
        tx.append_audit(&self.created_event(
            c,
            &device,
            certificate.as_ref().map(|c| &c.serial),
            details,
        ))?;
        self.enqueue(tx, &self.new_device_effects(p), effects)?;
        Ok((device, certificate))
    }

    /// The effects of a new device: the cloud's, and the broker's unless the
    /// broker already gives the device exactly its grant
    /// (`BrokerAccess::enforces_new_device`: the file backend's pattern mode).
    /// Only for a device without a model: a model's topics were read before the
    /// transaction and may have changed since, and the effect reads them again
    /// after the commit.
    pub(crate) fn new_device_effects(&self, p: &Prepared) -> Vec<Effect> {
        let id = p.device.id;
        let enforced = p.secret.is_none()
            && p.device.model.is_none()
            && self
                .ports()
                .broker
                .enforces_new_device(&grant_of(&p.device, &p.mqtt, None));
        if enforced {
            vec![Effect::CloudDevice(id)]
        } else {
            vec![Effect::BrokerDevice(id), Effect::CloudDevice(id)]
        }
    }

    /// As [`Onboard::store_new`] for many devices (a bulk import's chunk), each
    /// kind of row in a few multi-row statements. A taken serial is a `Conflict`
    /// for all of them.
    pub(crate) fn store_new_many<T: Repositories>(
        &self,
        tx: &mut T,
        items: &[(&DeviceSpec, &Prepared)],
        details: &Value,
        effects: &mut Vec<Enqueued>,
    ) -> Result<Vec<(Device, Option<Certificate>)>, CoreError> {
        let rows: Vec<NewDevice> = items.iter().map(|(_, p)| p.new_device.clone()).collect();
        let devices = tx.insert_devices(&rows).map_err(|e| match e {
            RepoError::Conflict { .. } => {
                CoreError::Conflict("a serial of the chunk is already registered".into())
            }
            other => other.into(),
        })?;
        let cert_rows: Vec<NewCertificate> = items
            .iter()
            .filter_map(|(_, p)| p.cert_row.clone())
            .collect();
        let mut certs = tx.insert_certificates(&cert_rows)?.into_iter();
        let mut stored = Vec::with_capacity(items.len());
        let mut events = Vec::with_capacity(items.len());
        let mut pending = Vec::with_capacity(2 * items.len());
        for ((c, p), device) in items.iter().zip(devices) {
            let certificate = match p.cert_row {
                Some(_) => Some(certs.next().ok_or_else(|| {
                    CoreError::Internal("a stored certificate went missing".into())
                })?),
                None => None,
            };
            if let Some((_, row)) = &p.secret {
                tx.set_mqtt_credential(row)?;
            }
            events.push(self.created_event(
                c,
                &device,
                certificate.as_ref().map(|c| &c.serial),
                details.clone(),
            ));
            pending.extend(self.new_device_effects(p));
            stored.push((device, certificate));
        }
        tx.append_audits(&events)?;
        self.enqueue(tx, &pending, effects)?;
        Ok(stored)
    }

    /// The success audit event of a new device: `details` with its certificate's
    /// serial or its credential kind.
    pub(crate) fn created_event(
        &self,
        c: &DeviceSpec,
        device: &Device,
        certificate: Option<&CertSerial>,
        mut details: Value,
    ) -> NewAuditEvent {
        if let Value::Object(map) = &mut details {
            match certificate {
                Some(serial) => map.insert("certificate_serial".into(), json!(serial)),
                None => map.insert("credential".into(), json!(device.credential)),
            };
        }
        let mut audit = Audit::new(self.clock(), &c.actor, c.action, AuditOutcome::Success)
            .device(device.id)
            .serial(device.serial.as_str())
            .details(details);
        if let Some(k) = &c.key {
            audit = audit.key_prefix(&k.prefix);
        }
        audit.into_event()
    }

    /// Applies a committed change's effects. A failure is logged and left to the
    /// reconciler: the change stands, and the broker or cloud catches up.
    pub(crate) fn apply_or_defer(&self, effects: &[Enqueued]) -> bool {
        match self.apply_effects(effects) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "committed; an external update is pending and will be retried");
                false
            }
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

    /// The device's model, when it has one that exists.
    pub(crate) fn model_of(&self, device: &Device) -> Result<Option<DeviceModel>, CoreError> {
        match &device.model {
            Some(code) => match self.store().read(|tx| tx.model(code)) {
                Ok(m) => Ok(Some(m)),
                Err(RepoError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            None => Ok(None),
        }
    }

    pub(crate) fn mqtt_info(&self, model: &Option<DeviceModel>, device: &Device) -> MqttInfo {
        mqtt_info(self.settings(), model.as_ref(), device)
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
        Ok(Arc::new(self.internal_issuer()?))
    }

    /// The internal CA under the configured profile.
    pub(crate) fn internal_issuer(&self) -> Result<crate::adapters::InternalIssuer, CoreError> {
        let s = self.settings();
        Ok(crate::adapters::InternalIssuer {
            ca: self.ca()?,
            validity_days: s.ca.validity_days,
            public_base_url: s.server.public_base_url.clone(),
            key_algorithm: s.ca.key_algorithm,
        })
    }
}
