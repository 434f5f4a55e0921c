//! Device self-registration with a bootstrap key (`POST /public/v1/register`).
//!
//! The order, and what undoes what:
//! 1. the key is looked up by its public prefix and its hash compared in constant
//!    time; the request body is validated (nothing is spent on a bad request);
//! 2. one use of the key is taken in a single conditional update (committed, so
//!    concurrent registrations can never take more than `max_uses`);
//! 3. to 7.: the certificate, the rows, broker, cloud, confirmation, as for every
//!    device (see `provision`).
//!
//! A failure after step 2 undoes what was done, in reverse order, gives the use
//! back, and writes the failure to the audit log with its reason.

use std::time::Instant;

use onboard_domain::{
    AuditOutcome, BootstrapKeyRepository, Certificate, Device, DeviceModelRepository, ModelCode,
    RepoError, SecretString, Serial, Store,
};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::provision::{invalid, DeviceSpec, Trail};
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
        let key_id = checked
            .key
            .as_ref()
            .map(|k| k.id)
            .ok_or_else(|| CoreError::Internal("a registration without its key".into()))?;
        let taken = self
            .store()
            .transaction(|tx| tx.consume_bootstrap_key_use(key_id, now))?;
        if !taken {
            // Tell the audit log why: the row as it is now explains the refusal.
            let key = self.store().read(|tx| tx.bootstrap_key(key_id))?;
            let reason = key
                .check_usable(now)
                .err()
                .map(|r| r.code())
                .unwrap_or("key_used_up");
            return Err(CoreError::Unauthorized(reason));
        }
        timings.push(("consume_key", step.elapsed().as_secs_f64()));

        match self.provision(&checked, trail, &mut timings) {
            Ok(done) => Ok(Registered {
                device: done.device,
                certificate: done.certificate,
                private_key_pem: done.private_key_pem,
                ca_chain_pem: done.ca_chain_pem,
                mqtt: done.mqtt,
                config: done.config,
                reregistered: done.reregistered,
                timings,
            }),
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
    ) -> Result<DeviceSpec, CoreError> {
        let presented = req
            .key
            .as_ref()
            .ok_or(CoreError::Unauthorized("key_missing"))?;
        let prefix = bootstrap_key_prefix(presented.expose())
            .ok_or(CoreError::Unauthorized("key_unknown"))?;
        trail.prefix = Some(prefix.to_owned());
        let key = self
            .store()
            .read(|tx| tx.bootstrap_key_by_prefix(prefix))?
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
            Some(code) => match self.store().read(|tx| tx.model(code)) {
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
        Ok(DeviceSpec {
            actor: Actor::device(req.remote_addr.clone()),
            action: "device.register",
            name: serial.to_string(),
            location: String::new(),
            // The stored model must exist: the key's model, or the requested one
            // when it is known.
            model_code: model
                .as_ref()
                .map(|m| m.code.clone())
                .or_else(|| key.model.clone()),
            key: Some(key),
            device_id: None,
            serial,
            model,
            firmware_version,
            config: json!({}),
            metadata,
            csr,
        })
    }
}
