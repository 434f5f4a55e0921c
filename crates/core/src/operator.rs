//! Operator registration: the server generates the key, issues the certificate,
//! grants broker access and packs everything into an AES-256 encrypted ZIP whose
//! password is shown once. The bundle is handed over directly (CLI) or through a
//! single-use download link that expires (API).

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{
    new_id, AuditOutcome, Certificate, CredentialBundleRepository, Device, DeviceModelRepository,
    ModelCode, NewCredentialBundle, RepoError, SecretString, Serial, Store,
};
use onboard_pki::{build_bundle, BundleContents, PrivateKeyPem};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::provision::{invalid, DeviceSpec, Provisioned, Trail};
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
}

/// A device registered by an operator, with its encrypted bundle.
#[derive(Debug)]
pub struct OperatorRegistered {
    pub device: Device,
    pub certificate: Certificate,
    /// The AES-256 encrypted ZIP: `device.crt`, `device.key`, `ca.crt`,
    /// `connection.json`.
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

impl Onboard {
    /// Validates an operator's request into a device to provision.
    pub(crate) fn operator_spec(
        &self,
        actor: &Actor,
        req: &NewDeviceRequest,
    ) -> Result<DeviceSpec, CoreError> {
        check_text("name", &req.name, 128, true)?;
        let location = req.location.clone().unwrap_or_default();
        check_text("location", &location, 128, false)?;
        let firmware_version = req.firmware_version.clone().unwrap_or_default();
        if firmware_version.len() > 64 || !firmware_version.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(
                "firmware_version",
                "must be at most 64 printable characters without spaces",
            ));
        }
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
        let model = match &code {
            Some(code) => match self.store().read(|tx| tx.model(code)) {
                Ok(m) => Some(m),
                Err(RepoError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let id = onboard_domain::DeviceId(new_id(self.clock()));
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
        })
    }

    /// Registers one device for an operator: key, certificate, broker, bundle. All
    /// or nothing; a failure is audited.
    pub fn register_device(
        &self,
        actor: &Actor,
        req: &NewDeviceRequest,
    ) -> Result<OperatorRegistered, CoreError> {
        let mut trail = Trail::default();
        let result = self.operator_spec(actor, req).and_then(|spec| {
            trail.serial = Some(spec.serial.to_string());
            let done = self.provision(&spec, &mut trail, &mut Vec::new())?;
            self.bundle(done)
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

    /// Packs a provisioned device's credentials. The private key exists only inside
    /// the encrypted ZIP afterwards.
    pub(crate) fn bundle(&self, done: Provisioned) -> Result<OperatorRegistered, CoreError> {
        let key = done
            .private_key_pem
            .as_ref()
            .ok_or_else(|| CoreError::Internal("a generated credential without its key".into()))?;
        let key = PrivateKeyPem::new(key.expose().to_owned());
        let connection = connection_json(
            &done.device,
            &done.mqtt,
            &done.config,
            &self.settings().server.public_base_url,
        );
        let bundle = build_bundle(&BundleContents {
            certificate_pem: &done.certificate.pem,
            private_key: &key,
            ca_chain_pem: &done.ca_chain_pem,
            connection_json: connection.as_bytes(),
            created_at: self.clock().now(),
        })
        .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(OperatorRegistered {
            device: done.device,
            certificate: done.certificate,
            bundle_zip: bundle.zip,
            bundle_password: SecretString::new(bundle.password.expose_secret()),
        })
    }

    /// Keeps the bundle for one download through a link that expires after
    /// `delivery.download_expiry_minutes`. Only the token's hash is stored.
    pub fn offer_bundle(&self, registered: &OperatorRegistered) -> Result<BundleLink, CoreError> {
        let token = onboard_pki::secrets::random_token()
            .map_err(|e| CoreError::Internal(format!("the random generator failed: {e}")))?;
        let now = self.clock().now();
        let expires_at =
            now + Duration::minutes(i64::from(self.settings().delivery.download_expiry_minutes));
        let row = NewCredentialBundle {
            id: new_id(self.clock()),
            device_id: registered.device.id,
            token_hash: onboard_pki::secrets::sha256_hex(token.as_bytes()),
            content: registered.bundle_zip.clone(),
            expires_at,
            created_at: now,
        };
        self.store().transaction(|tx| tx.insert_bundle(&row))?;
        Ok(BundleLink {
            url: format!(
                "{}/public/v1/bundles/{token}",
                self.settings().server.public_base_url
            ),
            expires_at,
        })
    }

    /// The bundle behind a download token, once. Unknown, used, expired and
    /// malformed tokens are all `NotFound`: the answer does not say which.
    pub fn download_bundle(&self, token: &str) -> Result<Vec<u8>, CoreError> {
        let not_found = CoreError::NotFound { entity: "bundle" };
        let shaped = token.len() == 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !shaped {
            return Err(not_found);
        }
        let hash = onboard_pki::secrets::sha256_hex(token.as_bytes());
        let now = self.clock().now();
        self.store()
            .transaction(|tx| tx.take_bundle(&hash, now))?
            .ok_or(not_found)
    }

    /// Drops the content of expired bundles (the server runs this every minute).
    pub fn purge_expired_bundles(&self) -> Result<usize, CoreError> {
        let now = self.clock().now();
        Ok(self
            .store()
            .transaction(|tx| tx.purge_expired_bundles(now))?)
    }
}

/// `connection.json`: how the device reaches the broker and which file is which.
pub(crate) fn connection_json(
    device: &Device,
    mqtt: &MqttInfo,
    config: &Value,
    base_url: &str,
) -> String {
    json!({
        "device_id": device.id,
        "serial": device.serial,
        "mqtt": {
            "host": mqtt.host, "port": mqtt.port, "client_id": mqtt.client_id,
            "publish": mqtt.publish, "subscribe": mqtt.subscribe,
            "max_qos": mqtt.max_qos, "retain": mqtt.retain_allowed,
        },
        "files": {"certificate": "device.crt", "private_key": "device.key", "ca_chain": "ca.crt"},
        "onboard_url": base_url,
        "config": config,
    })
    .to_string()
}
