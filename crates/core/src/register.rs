//! Device self-registration with a bootstrap key (`POST /public/v1/register`).
//!
//! 1. the key is looked up by its public prefix and its hash compared in constant
//!    time; the request body is validated (nothing is spent on a bad request);
//! 2. a serial that exists is a retry, answered only with proof of possession
//!    (`register_again`);
//! 3. otherwise the certificate is issued, and one transaction stores the device,
//!    the certificate, the audit event, the pending broker and cloud effects, and
//!    takes one use of the key in a single conditional update (so concurrent
//!    registrations can never take more than `max_uses`);
//!    Concurrent registrations share commits on SQLite (group commit, each in a
//!    savepoint of its own; see `Store::grouped_transaction`);
//! 4. the effects are applied after the commit (see `effects`).
//!
//! A failure before the commit leaves nothing behind and is written to the audit
//! log with its reason.

use std::time::Instant;

use chrono::{DateTime, Utc};

use onboard_domain::{
    new_id, AuditOutcome, AuditRepository, BootstrapKey, BootstrapKeyRepository, Certificate,
    CertificateIssuer, CertificateRepository, CertificateStatus, Device, DeviceId,
    DeviceModelRepository, DeviceRepository, DeviceStatus, DeviceUpdate, Effect, KeyRejection,
    ModelCode, NewRegistration, RepoError, Repositories, RevocationReason, SecretString, Serial,
    Store,
};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::cloud::{CloudAnswer, CloudPending};
use crate::effects::Enqueued;
use crate::error::CoreError;
use crate::provision::{check_serial_is_not_an_id, invalid, DeviceSpec, Prepared, Trail};
use crate::secrets::{bootstrap_key_prefix, matches_hash};

/// The largest CSR accepted (PEM).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// The largest metadata object accepted, serialised.
pub const MAX_METADATA_BYTES: usize = onboard_domain::MAX_METADATA_BYTES;
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
    /// An EST label (`/.well-known/est/<batch>/simpleenroll`): the key must belong to
    /// this batch, or the request is refused like an unknown key (`key_other_batch`).
    pub batch: Option<String>,
}

/// Where and how the device connects to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttInfo {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Where Onboard publishes the device's rotation notifications (the device may
    /// subscribe to it).
    pub rotation_topic: String,
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
    /// The device's Thing and certificate in AWS IoT Core, when AWS is on.
    pub cloud: Option<CloudAnswer>,
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
            Ok(done) => {
                tracing::debug!(
                    device = %done.device.id,
                    serial = %done.device.serial,
                    certificate = %done.certificate.serial,
                    key_prefix = trail.prefix.as_deref().unwrap_or(""),
                    server_key = done.private_key_pem.is_some(),
                    "registration committed"
                );
                Ok(done)
            }
            Err(e) => {
                tracing::debug!(
                    serial = trail.serial.as_deref().unwrap_or(""),
                    key_prefix = trail.prefix.as_deref().unwrap_or(""),
                    reason = e.reason_code(),
                    error = %e,
                    "registration refused"
                );
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
        let (spec, mut looked_up) = self.check_registration(req, trail)?;
        timings.push(("check", step.elapsed().as_secs_f64()));
        let key = spec
            .key
            .clone()
            .ok_or_else(|| CoreError::Internal("a registration without its key".into()))?;
        let issuer = self.issuer()?;
        // Two rounds at most: a concurrent registration of the same serial may
        // commit between our lookup and our insert; then this one is a retry.
        for round in 0..2 {
            // The first round uses the lookup made with the key's; the second
            // (after a concurrent insert) reads again, in a write transaction: on
            // SQLite the other insert may be in a group that has not committed
            // yet, and the write lock is free only once it has.
            let existing = if round == 0 {
                looked_up.take()
            } else {
                self.store()
                    .transaction(|tx| tx.device_by_serial(&spec.serial))?
            };
            if let Some(device) = existing {
                trail.device = Some(device.id);
                return self.register_again(&spec, &key, device, issuer.as_ref(), timings);
            }
            let now = self.clock().now();
            if let Err(rejection) = key.check_usable(now) {
                return Err(CoreError::Unauthorized(rejection.code()));
            }
            let device_id = DeviceId(new_id(self.clock()));
            trail.device = Some(device_id);

            let step = Instant::now();
            let (issued, private_key, cloud) =
                self.issue_and_register(issuer.as_ref(), &spec, device_id)?;
            timings.push(("issue", step.elapsed().as_secs_f64()));
            let prepared = self.prepare(&spec, device_id, &issued, private_key);

            let step = Instant::now();
            let mut effects = Vec::new();
            let details = json!({"reregistration": false, "csr": spec.csr.is_some()});
            // Concurrent registrations may share this transaction's commit
            // (`Store::grouped_transaction`); it returns once the rows are durable.
            let stored = self
                .store()
                .grouped_transaction(|tx| -> Result<_, CoreError> {
                    let stored = self.store_registered(
                        tx,
                        &spec,
                        &prepared,
                        cloud.as_ref(),
                        details,
                        &mut effects,
                        now,
                    )?;
                    match stored {
                        Some(rows) => Ok(rows),
                        // Rolled back: nothing of this registration is kept.
                        None => {
                            let reason = tx
                                .bootstrap_key(key.id)?
                                .check_usable(now)
                                .err()
                                .map(|r| r.code())
                                .unwrap_or("key_used_up");
                            Err(CoreError::Unauthorized(reason))
                        }
                    }
                });
            if stored.is_err() {
                if let Some(pending) = &cloud {
                    self.abandon_cloud_pending(pending);
                }
            }
            let (device, certificate) = match stored {
                Ok(rows) => rows,
                Err(CoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            };
            timings.push(("store", step.elapsed().as_secs_f64()));

            let step = Instant::now();
            self.apply_or_defer(&effects);
            timings.push(("effects", step.elapsed().as_secs_f64()));
            // AWS's certificate chains to Amazon's root, which is also what
            // devices trust to reach the AWS endpoint.
            let ca_chain_pem = cloud
                .as_ref()
                .and_then(|p| p.registration.issued.as_ref())
                .map(|i| i.ca_chain_pem.clone())
                .unwrap_or_else(|| issuer.ca_chain_pem());
            return Ok(Registered {
                device,
                certificate,
                private_key_pem: prepared.private_key_pem,
                ca_chain_pem,
                mqtt: prepared.mqtt,
                config: prepared.config,
                reregistered: false,
                cloud: cloud.as_ref().map(|p| p.answer()),
                timings,
            });
        }
        Err(CoreError::Conflict(format!(
            "serial {} is being registered concurrently; retry",
            spec.serial
        )))
    }

    /// A registration for a serial that exists. It is answered only when the
    /// caller proves it is that device (see `docs/registration.md`):
    /// - a CSR for the public key of the device's current certificate gets that
    ///   certificate again (a lost answer, retried): no use is taken;
    /// - without a CSR, the device's own single-use key (the one spent on this
    ///   serial), before the device activated, gets a new key pair and
    ///   certificate; the earlier one is revoked as superseded.
    ///
    /// Anything else is refused as a possible takeover.
    fn register_again(
        &self,
        spec: &DeviceSpec,
        key: &BootstrapKey,
        device: Device,
        issuer: &dyn CertificateIssuer,
        mut timings: Vec<(&'static str, f64)>,
    ) -> Result<Registered, CoreError> {
        let takeover = |why: &str| {
            CoreError::Takeover(format!(
                "serial {} belongs to a registered device; {why}",
                spec.serial
            ))
        };
        if !matches!(
            device.status,
            DeviceStatus::Registered | DeviceStatus::Active
        ) {
            return Err(CoreError::Conflict(format!(
                "serial {} is {}",
                spec.serial, device.status
            )));
        }
        let model = self.model_of(&device)?;
        if let Some(csr) = &spec.csr {
            let step = Instant::now();
            let current = self
                .store()
                .read(|tx| tx.certificates_of_device(device.id))?
                .into_iter()
                .find(|c| c.status == CertificateStatus::Active)
                .ok_or_else(|| takeover("it holds no active certificate"))?;
            let same = match &spec.checked_csr {
                Some(checked) => {
                    onboard_pki::checked_csr_matches_certificate(checked, &current.pem)
                }
                None => onboard_pki::csr_matches_certificate(csr, &current.pem),
            }
            .map_err(|e| invalid("csr", e.to_string()))?;
            if !same {
                return Err(takeover(
                    "a registration again needs a CSR for the key of its current certificate",
                ));
            }
            self.record(registered_again(
                self.clock(),
                spec,
                key,
                &device,
                json!({"retry": true, "certificate_serial": current.serial}),
            ))?;
            timings.push(("retry", step.elapsed().as_secs_f64()));
            return Ok(Registered {
                cloud: self.cloud_answer(device.id)?,
                mqtt: self.mqtt_info(&model, &device),
                config: self.device_config(&model, &device),
                device,
                certificate: current,
                private_key_pem: None,
                ca_chain_pem: issuer.ca_chain_pem(),
                reregistered: false,
                timings,
            });
        }
        let own_key = key.max_uses == 1 && device.bootstrap_key_id == Some(key.id);
        if !own_key {
            return Err(takeover(
                "without a CSR only the device's own single-use key may register it again",
            ));
        }
        if device.status != DeviceStatus::Registered {
            return Err(CoreError::Conflict(format!(
                "serial {} has activated; it renews its certificate instead",
                spec.serial
            )));
        }
        let step = Instant::now();
        let (issued, private_key) = self.issue_for(issuer, spec, device.id)?;
        timings.push(("issue", step.elapsed().as_secs_f64()));
        let cert_row = self.certificate_row(device.id, &issued);
        let step = Instant::now();
        let now = self.clock().now();
        let mut effects = Vec::new();
        let (device, certificate) = self.store().transaction(|tx| -> Result<_, CoreError> {
            // Holds the device's row: a concurrent revocation waits for this
            // commit and then revokes the new certificate too, or went first and
            // this one finds the device no longer registered.
            let device = tx
                .update_device_if(
                    device.id,
                    &[DeviceStatus::Registered],
                    &DeviceUpdate {
                        firmware_version: Some(spec.firmware_version.clone()),
                        metadata: Some(spec.metadata.clone()),
                        ..DeviceUpdate::default()
                    },
                    now,
                )?
                .ok_or_else(|| {
                    CoreError::Conflict(format!("serial {} changed meanwhile; retry", spec.serial))
                })?;
            let certificate = tx.insert_certificate(&cert_row)?;
            let mut superseded = Vec::new();
            for old in tx.certificates_of_device(device.id)? {
                if old.status == CertificateStatus::Active && old.id != certificate.id {
                    tx.revoke_certificate(old.id, now, RevocationReason::Superseded)?;
                    superseded.push(old.serial.to_string());
                }
            }
            let audit = registered_again(
                self.clock(),
                spec,
                key,
                &device,
                json!({
                "reregistration": true,
                "csr": false,
                "certificate_serial": certificate.serial,
                "superseded": superseded,
                }),
            );
            tx.append_audit(audit.event())?;
            let mut todo = vec![
                Effect::BrokerDevice(device.id),
                Effect::CloudDevice(device.id),
            ];
            if !superseded.is_empty() {
                todo.push(Effect::BrokerCrl);
            }
            self.enqueue(tx, &todo, &mut effects)?;
            Ok((device, certificate))
        })?;
        timings.push(("store", step.elapsed().as_secs_f64()));
        let step = Instant::now();
        self.apply_or_defer(&effects);
        timings.push(("effects", step.elapsed().as_secs_f64()));
        Ok(Registered {
            cloud: self.cloud_answer(device.id)?,
            mqtt: self.mqtt_info(&model, &device),
            config: self.device_config(&model, &device),
            device,
            certificate,
            private_key_pem: private_key,
            ca_chain_pem: issuer.ca_chain_pem(),
            reregistered: true,
            timings,
        })
    }

    /// Writes a new device's rows and takes one use of its key, in the caller's
    /// transaction: the key's use last, so that what it locks is held only until
    /// the commit. `Ok(None)` when the key has no use left; the caller rolls back.
    /// A device with a certificate, no password and no effect row to write (no
    /// cloud, and a broker that already grants its topics or none) is written with
    /// `insert_registration`, one statement on PostgreSQL.
    #[allow(clippy::too_many_arguments)]
    fn store_registered<T: Repositories>(
        &self,
        tx: &mut T,
        spec: &DeviceSpec,
        prepared: &Prepared,
        cloud: Option<&CloudPending>,
        details: Value,
        effects: &mut Vec<Enqueued>,
        now: DateTime<Utc>,
    ) -> Result<Option<(Device, Certificate)>, CoreError> {
        let key = spec
            .key
            .as_ref()
            .ok_or_else(|| CoreError::Internal("a registration without its key".into()))?;
        let taken =
            |serial: &Serial| CoreError::Conflict(format!("serial {serial} is already registered"));
        let quiet = cloud.is_none()
            && prepared.secret.is_none()
            && !self
                .new_device_effects(prepared)
                .iter()
                .any(|e| self.enqueues(e));
        if let (true, Some(row)) = (quiet, &prepared.cert_row) {
            let audit = self.created_event(spec, &prepared.device, Some(&row.serial), details);
            let registration = NewRegistration {
                device: &prepared.new_device,
                certificate: row,
                audit: &audit,
                key: key.id,
                now,
            };
            return tx.insert_registration(&registration).map_err(|e| match e {
                RepoError::Conflict { .. } => taken(&spec.serial),
                other => other.into(),
            });
        }
        let (device, certificate) = self.store_new(tx, spec, prepared, details, effects)?;
        let certificate = certificate
            .ok_or_else(|| CoreError::Internal("a registration stored no certificate".into()))?;
        if let Some(pending) = cloud {
            self.commit_cloud(tx, pending)?;
        }
        if !tx.consume_bootstrap_key_use(key.id, now)? {
            return Ok(None);
        }
        Ok(Some((device, certificate)))
    }

    /// Step 1: the key and the body, before anything is spent.
    fn check_registration(
        &self,
        req: &RegisterRequest,
        trail: &mut Trail,
    ) -> Result<(DeviceSpec, Option<Device>), CoreError> {
        let presented = req
            .key
            .as_ref()
            .ok_or(CoreError::Unauthorized("key_missing"))?;
        let prefix = bootstrap_key_prefix(presented.expose())
            .ok_or(CoreError::Unauthorized("key_unknown"))?;
        trail.prefix = Some(prefix.to_owned());
        // One read for the key, its model and the serial: the answers are judged
        // below in the order a request's problems are reported.
        let serial = Serial::parse(req.serial.trim());
        let requested_model = req.model.as_deref().map(ModelCode::parse).transpose();
        // The reads need no common snapshot: the write that follows checks the
        // key's use and the serial again.
        let (key, model_found, existing) =
            self.store().read_each(|tx| -> Result<_, CoreError> {
                // The key and the serial's device in one statement when the
                // serial parses; `existing` is `Some(lookup)` only then.
                let (key, existing) = match &serial {
                    Ok(s) => match tx.bootstrap_key_and_device(prefix, s)? {
                        Some((key, device)) => (Some(key), Some(device)),
                        None => (None, None),
                    },
                    Err(_) => (tx.bootstrap_key_by_prefix(prefix)?, None),
                };
                let Some(key) = key.filter(|k| matches_hash(presented.expose(), &k.key_hash))
                else {
                    return Ok((None, None, None));
                };
                let code = match (&key.model, &requested_model) {
                    (Some(bound), Ok(Some(asked))) if bound != asked => None,
                    (Some(bound), Ok(_)) => Some(bound.clone()),
                    (None, Ok(asked)) => asked.clone(),
                    (_, Err(_)) => None,
                };
                let model = match code {
                    Some(code) => Some(match tx.model(&code) {
                        Ok(m) => Some(m),
                        Err(RepoError::NotFound { .. }) => None,
                        Err(e) => return Err(e.into()),
                    }),
                    None => None,
                };
                Ok((Some(key), model, existing))
            })?;
        let key = key.ok_or(CoreError::Unauthorized("key_unknown"))?;
        if req.batch.as_deref().is_some_and(|b| b != key.batch) {
            return Err(CoreError::Unauthorized("key_other_batch"));
        }
        // A key with no uses left may still prove a retry (see `register_again`);
        // every other reason refuses it here.
        match key.check_usable(self.clock().now()) {
            Ok(()) | Err(KeyRejection::UsedUp) => {}
            Err(rejection) => return Err(CoreError::Unauthorized(rejection.code())),
        }

        let serial = serial?;
        check_serial_is_not_an_id(&serial, None)?;
        trail.serial = Some(serial.to_string());
        let requested_model = requested_model?;
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
        // Read above for this same code. A device model nobody created yet is not
        // an error for a device (its firmware names it; the operator may create it
        // later): the device gets the default topics and no model defaults.
        let model = match &model_code {
            Some(_) => model_found.flatten(),
            None => None,
        };
        let firmware_version = req.firmware_version.clone().unwrap_or_default();
        onboard_domain::check_firmware_version(&firmware_version, true)?;
        let metadata = req.metadata.clone().unwrap_or_else(|| json!({}));
        onboard_domain::check_json_object("metadata", &metadata, MAX_METADATA_BYTES)?;
        let (csr, checked_csr) = match req.csr.as_deref().map(str::trim) {
            None | Some("") => (None, None),
            Some(pem) if pem.len() > MAX_CSR_BYTES => {
                return Err(invalid(
                    "csr",
                    format!("must be at most {MAX_CSR_BYTES} bytes"),
                ))
            }
            Some(pem) => {
                // Parsed and verified once: issuing and the proof of possession
                // use this check.
                let checked = onboard_pki::parse_csr(pem.as_bytes())
                    .map_err(|e| invalid("csr", e.to_string()))?;
                (Some(pem.as_bytes().to_vec()), Some(checked))
            }
        };
        let spec = DeviceSpec {
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
            checked_csr,
            // Self-registration always ends with a certificate: the device proves
            // possession of its key on every retry (see `register_again`).
            credential: onboard_domain::CredentialKind::Certificate,
        };
        // The serial parsed, so it was looked up.
        Ok((spec, existing.flatten()))
    }
}

/// The success audit event of a registration for a serial that existed.
fn registered_again(
    clock: &dyn onboard_domain::Clock,
    spec: &DeviceSpec,
    key: &BootstrapKey,
    device: &Device,
    details: Value,
) -> Audit {
    Audit::new(clock, &spec.actor, "device.register", AuditOutcome::Success)
        .device(device.id)
        .serial(device.serial.as_str())
        .key_prefix(&key.prefix)
        .details(details)
}
