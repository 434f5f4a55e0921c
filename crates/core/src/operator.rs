//! Operator registration: the server generates the key, issues the certificate,
//! grants broker access and packs everything into an AES-256 encrypted ZIP whose
//! password is shown once. The bundle is handed over directly (CLI) or through a
//! single-use download link that expires (API).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{
    new_id, AuditOutcome, Certificate, CredentialBundleRepository, CredentialKind, Device,
    DeviceId, DeviceModel, DeviceModelRepository, DeviceRepository, ModelCode, NewCredentialBundle,
    RepoError, SecretString, Serial, Store,
};
use onboard_pki::{BundleWriter, DeviceFiles, PrivateKeyPem};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::provision::{check_serial_is_not_an_id, invalid, DeviceSpec, Prepared, Trail};
use crate::register::MqttInfo;

/// What an operator registers.
#[derive(Debug, Clone, Default)]
pub struct NewDeviceRequest {
    pub name: String,
    pub model: Option<String>,
    pub location: Option<String>,
    pub firmware_version: Option<String>,
    /// The hardware serial; the device id when absent.
    pub serial: Option<String>,
    pub config: Option<Value>,
    pub metadata: Option<Value>,
    /// `certificate` or `password`; the model's default when absent.
    pub credential: Option<String>,
}

/// A device registered by an operator, with its encrypted bundle.
#[derive(Debug)]
pub struct OperatorRegistered {
    pub device: Device,
    /// A certificate device's certificate; `None` for a password device.
    pub certificate: Option<Certificate>,
    /// A password device's secret (its client id is the device id), shown once;
    /// only its hash is stored.
    pub client_secret: Option<SecretString>,
    /// The AES-256 encrypted ZIP: `device.crt`, `device.key`, `ca.crt`,
    /// `connection.json` (a password device: `ca.crt` and `connection.json` with
    /// its client id and secret).
    pub bundle_zip: Vec<u8>,
    /// Shown once; never stored.
    pub bundle_password: SecretString,
}

/// Where the bundle can be downloaded once.
#[derive(Debug)]
pub struct BundleLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

pub(crate) fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), CoreError> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

pub(crate) fn check_object(field: &'static str, value: &Value) -> Result<(), CoreError> {
    if !value.is_object() {
        return Err(invalid(field, "must be a JSON object"));
    }
    if value.to_string().len() > 16 * 1024 {
        return Err(invalid(field, "must be at most 16 KiB"));
    }
    Ok(())
}

/// Device models as read during one import: `None` for a code with no model.
#[derive(Debug, Default)]
pub(crate) struct ModelCache(HashMap<ModelCode, Option<DeviceModel>>);

impl Onboard {
    /// Validates an operator's request into a device to provision.
    pub(crate) fn operator_spec(
        &self,
        actor: &Actor,
        req: &NewDeviceRequest,
    ) -> Result<DeviceSpec, CoreError> {
        self.operator_spec_with(actor, req, &mut ModelCache::default())
    }

    /// As [`Onboard::operator_spec`], reading each model once per `models` (an
    /// import names the same few models in thousands of rows).
    pub(crate) fn operator_spec_with(
        &self,
        actor: &Actor,
        req: &NewDeviceRequest,
        models: &mut ModelCache,
    ) -> Result<DeviceSpec, CoreError> {
        check_text("name", &req.name, 128, true)?;
        let location = req.location.clone().unwrap_or_default();
        check_text("location", &location, 128, false)?;
        let firmware_version = req.firmware_version.clone().unwrap_or_default();
        onboard_domain::check_firmware_version(&firmware_version, true)?;
        let config = req.config.clone().unwrap_or_else(|| json!({}));
        check_object("config", &config)?;
        let metadata = req.metadata.clone().unwrap_or_else(|| json!({}));
        check_object("metadata", &metadata)?;
        let serial = match req
            .serial
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(s) => Some(Serial::parse(s)?),
            None => None,
        };
        let code = req
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(ModelCode::parse)
            .transpose()?;
        let model =
            match &code {
                Some(code) => {
                    let found = match models.0.get(code) {
                        Some(known) => known.clone(),
                        None => {
                            let read = match self.store().read(|tx| tx.model(code)) {
                                Ok(m) => Some(m),
                                Err(RepoError::NotFound { .. }) => None,
                                Err(e) => return Err(e.into()),
                            };
                            models.0.insert(code.clone(), read.clone());
                            read
                        }
                    };
                    // An operator names a model on purpose: a typo must not create a
                    // device without one.
                    Some(found.ok_or_else(|| {
                        invalid("model", format!("no device model {code} exists"))
                    })?)
                }
                None => None,
            };
        let credential = match req.credential.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => c.parse::<CredentialKind>()?,
            _ => model.as_ref().map(|m| m.credential).unwrap_or_default(),
        };
        if credential == CredentialKind::Password
            && self.settings().broker.kind == crate::settings::BrokerKind::MosquittoDynsec
        {
            // The plugin takes only clear passwords, which are never kept.
            return Err(invalid(
                "credential",
                "password devices need broker.kind = mosquitto-file (the dynamic-security plugin cannot take a stored hash)",
            ));
        }
        let id = onboard_domain::DeviceId(new_id(self.clock()));
        if let Some(s) = &serial {
            check_serial_is_not_an_id(s, Some(id))?;
        }
        Ok(DeviceSpec {
            actor: actor.clone(),
            action: "device.create",
            key: None,
            device_id: Some(id),
            serial: match serial {
                Some(s) => s,
                None => Serial::parse(&id.to_string())?,
            },
            name: req.name.trim().to_owned(),
            location,
            model_code: model.as_ref().map(|m| m.code.clone()),
            model,
            firmware_version,
            config,
            metadata,
            csr: None,
            checked_csr: None,
            credential,
        })
    }

    /// Registers one device for an operator: key, certificate, broker, bundle. All
    /// or nothing; a failure is audited.
    pub fn register_device(
        &self,
        actor: &Actor,
        req: &NewDeviceRequest,
    ) -> Result<OperatorRegistered, CoreError> {
        self.register_device_with(actor, req, false)
            .map(|(done, _)| done)
    }

    /// As [`Onboard::register_device`], and keeps the bundle for one download
    /// through a link that expires after `delivery.download_expiry_minutes`, in the
    /// same transaction as the device: there is never a device whose bundle link
    /// was lost, nor a link to a device that does not exist.
    pub fn register_device_with_link(
        &self,
        actor: &Actor,
        req: &NewDeviceRequest,
    ) -> Result<(OperatorRegistered, BundleLink), CoreError> {
        let (done, link) = self.register_device_with(actor, req, true)?;
        let link = link.ok_or_else(|| CoreError::Internal("a bundle link went missing".into()))?;
        Ok((done, link))
    }

    fn register_device_with(
        &self,
        actor: &Actor,
        req: &NewDeviceRequest,
        link: bool,
    ) -> Result<(OperatorRegistered, Option<BundleLink>), CoreError> {
        let mut trail = Trail::default();
        let result = self.operator_spec(actor, req).and_then(|spec| {
            trail.serial = Some(spec.serial.to_string());
            if self
                .store()
                .read(|tx| tx.device_by_serial(&spec.serial))?
                .is_some()
            {
                return Err(CoreError::Conflict(format!(
                    "serial {} is already registered",
                    spec.serial
                )));
            }
            let issuer = self.issuer()?;
            let id = spec
                .device_id
                .unwrap_or_else(|| DeviceId(new_id(self.clock())));
            let prepared = match spec.credential {
                CredentialKind::Certificate => {
                    let (issued, key) = self.issue_for(issuer.as_ref(), &spec, id)?;
                    self.prepare(&spec, id, &issued, key)
                }
                CredentialKind::Password => self.prepare_password(&spec, id)?,
            };
            let writer = bundle_writer(&issuer.ca_chain_pem())?;
            let (zip, password) = self.bundle(&prepared, &writer)?;
            let offer = if link {
                Some(self.bundle_offer(id, &zip)?)
            } else {
                None
            };
            let mut effects = Vec::new();
            let (device, certificate) = self.store().transaction(|tx| -> Result<_, CoreError> {
                let rows = self.store_new(tx, &spec, &prepared, json!({}), &mut effects)?;
                if let Some((row, _)) = &offer {
                    tx.insert_bundle(row)?;
                }
                Ok(rows)
            })?;
            self.apply_or_defer(&effects);
            Ok((
                OperatorRegistered {
                    device,
                    certificate,
                    client_secret: prepared.secret.map(|(s, _)| s),
                    bundle_zip: zip,
                    bundle_password: password,
                },
                offer.map(|(_, l)| l),
            ))
        });
        if let Err(e) = &result {
            let mut audit = Audit::new(self.clock(), actor, "device.create", AuditOutcome::Failure)
                .reason(e.reason_code());
            if let Some(s) = &trail.serial {
                audit = audit.serial(s);
            }
            self.record_failure(audit);
        }
        result
    }

    /// Packs a prepared device's credentials into the encrypted ZIP and its
    /// password. The private key exists only inside the ZIP afterwards.
    pub(crate) fn bundle(
        &self,
        p: &Prepared,
        writer: &BundleWriter,
    ) -> Result<(Vec<u8>, SecretString), CoreError> {
        let base_url = &self.settings().server.public_base_url;
        let bundle = match (&p.cert_row, &p.private_key_pem, &p.secret) {
            (Some(cert), Some(key), _) => {
                let key = PrivateKeyPem::new(key.expose().to_owned());
                // The settings may hold secrets (a Wi-Fi password): wiped after use.
                let connection = zeroize::Zeroizing::new(connection_json(
                    &p.device, &p.mqtt, &p.config, base_url, None,
                ));
                writer.build(&DeviceFiles {
                    certificate_pem: &cert.pem,
                    private_key: &key,
                    connection_json: connection.as_bytes(),
                    created_at: self.clock().now(),
                })
            }
            (None, None, Some((secret, _))) => {
                let connection = zeroize::Zeroizing::new(connection_json(
                    &p.device,
                    &p.mqtt,
                    &p.config,
                    base_url,
                    Some(secret),
                ));
                writer.build_password(connection.as_bytes(), self.clock().now())
            }
            _ => {
                return Err(CoreError::Internal(
                    "a generated credential without its secret".into(),
                ))
            }
        }
        .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok((
            bundle.zip,
            SecretString::new(bundle.password.expose_secret()),
        ))
    }

    /// The bundle row and its link; only the token's hash is stored.
    fn bundle_offer(
        &self,
        device: DeviceId,
        zip: &[u8],
    ) -> Result<(NewCredentialBundle, BundleLink), CoreError> {
        let token = onboard_pki::secrets::random_token()
            .map_err(|e| CoreError::Internal(format!("the random generator failed: {e}")))?;
        let now = self.clock().now();
        let expires_at =
            now + Duration::minutes(i64::from(self.settings().delivery.download_expiry_minutes));
        let row = NewCredentialBundle {
            id: new_id(self.clock()),
            device_id: device,
            token_hash: onboard_pki::secrets::sha256_hex(token.as_bytes()),
            content: zip.to_vec(),
            expires_at,
            created_at: now,
        };
        let link = BundleLink {
            url: format!(
                "{}/public/v1/bundles/{token}",
                self.settings().server.public_base_url
            ),
            expires_at,
        };
        Ok((row, link))
    }

    /// The bundle behind a download token, once. Unknown, used, expired and
    /// malformed tokens are all `NotFound`: the answer does not say which.
    pub fn download_bundle(&self, token: &str) -> Result<Vec<u8>, CoreError> {
        let not_found = CoreError::NotFound { entity: "bundle" };
        if !onboard_pki::secrets::is_token_shaped(token) {
            return Err(not_found);
        }
        let hash = onboard_pki::secrets::sha256_hex(token.as_bytes());
        let now = self.clock().now();
        let taken = self.store().transaction(|tx| tx.take_bundle(&hash, now))?;
        tracing::debug!(found = taken.is_some(), "bundle link used");
        taken.ok_or(not_found)
    }

    /// Drops the content of expired bundles (the server runs this every minute).
    pub fn purge_expired_bundles(&self) -> Result<usize, CoreError> {
        let now = self.clock().now();
        Ok(self
            .store()
            .transaction(|tx| tx.purge_expired_bundles(now))?)
    }
}

/// The bundle writer for a CA chain (the chain is compressed once for every bundle
/// it writes).
pub(crate) fn bundle_writer(ca_chain_pem: &str) -> Result<BundleWriter, CoreError> {
    BundleWriter::new(ca_chain_pem).map_err(|e| CoreError::Internal(e.to_string()))
}

/// `connection.json`: how the device reaches the broker and which file is which.
pub(crate) fn connection_json(
    device: &Device,
    mqtt: &MqttInfo,
    config: &Value,
    base_url: &str,
    secret: Option<&SecretString>,
) -> String {
    let mut v = json!({
        "device_id": device.id,
        "serial": device.serial,
        "credential": device.credential,
        "mqtt": {
            "host": mqtt.host, "port": mqtt.port, "client_id": mqtt.client_id,
            "publish": mqtt.publish, "subscribe": mqtt.subscribe,
            "rotation_topic": mqtt.rotation_topic,
            "max_qos": mqtt.max_qos, "retain": mqtt.retain_allowed,
        },
        "files": {"certificate": "device.crt", "private_key": "device.key", "ca_chain": "ca.crt"},
        "onboard_url": base_url,
        "config": config,
    });
    if let Some(secret) = secret {
        v["mqtt"]["username"] = json!(mqtt.client_id);
        v["mqtt"]["password"] = json!(secret.expose());
        v["client_id"] = json!(mqtt.client_id);
        v["client_secret"] = json!(secret.expose());
        v["token_url"] = json!(format!("{base_url}/iot/token"));
        v["files"] = json!({"ca_chain": "ca.crt"});
    }
    v.to_string()
}
