//! The device API (`/iot`): who a device is, from its client certificate or from an
//! access token, and what it may fetch or do as itself.
//!
//! - A certificate authenticates only while the registry holds it as active and the
//!   device is in service (registered or active): a revocation takes effect on the
//!   next request, not at the next CRL.
//! - A password device exchanges its client id and secret for a short-lived JWT
//!   (`POST /iot/token`, OAuth 2.0 client credentials). A token names its device and
//!   the secret it was issued for: a new secret, a revocation or a decommissioning
//!   ends every token issued before.
//! - Renewal (`POST /iot/renew`) issues a certificate for a new key; the previous
//!   one stays valid until the device first uses the new one, or for
//!   `device.renew_grace_hours`, then it is revoked as superseded.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{
    AuditOutcome, AuditRepository, Certificate, CertificateId, CertificateRepository,
    CertificateStatus, CredentialKind, Device, DeviceId, DeviceRepository, DeviceStatus,
    DeviceUpdate, Effect, MqttCredentialRepository, RepoError, RevocationReason,
    RotationRepository, RotationState, SecretString, Store,
};
use onboard_pki::{PresentedCertificate, TokenKey};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::provision::invalid;
use crate::register::MqttInfo;

/// The `typ` of our access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The `aud` of our access tokens.
pub const ACCESS_TOKEN_AUDIENCE: &str = "onboard-iot";

/// How a request proved it is the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAuth {
    /// A client certificate of ours, active in the registry.
    Certificate(CertificateId),
    /// An access token from `POST /iot/token`.
    Token,
    /// An access token of the previous secret, while the device's password
    /// rotation is PENDING (it may fetch the new secret, not acknowledge).
    PreviousSecretToken,
}

/// An authenticated device.
#[derive(Debug, Clone)]
pub struct DeviceSession {
    pub device: Device,
    pub via: DeviceAuth,
}

/// An access token and its lifetime in seconds.
#[derive(Debug)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_in: u32,
}

/// What a device needs to connect and configure itself.
#[derive(Debug)]
pub struct Provisioning {
    pub device: Device,
    pub mqtt: MqttInfo,
    /// `mqtts://host:port`.
    pub mqtt_url: String,
    pub config: Value,
    pub ca_chain_pem: String,
    /// WiFi SSID and password from the settings, when set.
    pub wifi: Option<(String, SecretString)>,
    /// A password device's new secret: the admin download's (replacing the old), or
    /// the one of its PENDING rotation in its own provisioning.
    pub client_secret: Option<SecretString>,
    /// Where a password device gets its access tokens.
    pub token_url: Option<String>,
    /// The device's current certificate (certificate devices).
    pub certificate: Option<Certificate>,
}

/// A renewed certificate.
#[derive(Debug)]
pub struct Renewed {
    pub certificate: Certificate,
    pub ca_chain_pem: String,
    /// Until when the previous certificate stays valid unless the new one is used.
    pub previous_valid_until: DateTime<Utc>,
}

fn in_service(d: &Device) -> bool {
    matches!(d.status, DeviceStatus::Registered | DeviceStatus::Active)
}

/// A short fingerprint of the secret a token was issued for.
fn secret_version(password_hash: &str) -> String {
    onboard_pki::secrets::sha256_hex(password_hash.as_bytes())[..16].to_owned()
}

impl Onboard {
    /// The key that signs access tokens (derived from the CA key; see
    /// `onboard_pki::TokenKey`).
    pub fn token_key(&self) -> Result<Arc<TokenKey>, CoreError> {
        if let Some(k) = self.token_key_cell().get() {
            return Ok(k.clone());
        }
        let ca = self.ca()?;
        let key = Arc::new(TokenKey::derive(&ca).map_err(|e| {
            CoreError::Internal(format!("cannot derive the token signing key: {e}"))
        })?);
        Ok(self.token_key_cell().get_or_init(|| key).clone())
    }

    /// The `iss` of access tokens: the server's public URL.
    pub fn token_issuer(&self) -> &str {
        &self.settings().server.public_base_url
    }

    /// `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Result<Value, CoreError> {
        Ok(json!({"keys": [self.token_key()?.jwk()]}))
    }

    /// `/.well-known/openid-configuration` (the OAuth 2.0 authorization server
    /// metadata of RFC 8414, at the path OIDC clients look for).
    pub fn openid_configuration(&self) -> Value {
        let base = self.token_issuer();
        json!({
            "issuer": base,
            "token_endpoint": format!("{base}/iot/token"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The client-credentials grant: a password device's client id (its device
    /// id) and secret for an access token. Every failure is the same
    /// `Unauthorized("invalid_client")` and is audited.
    pub fn issue_access_token(
        &self,
        client_id: &str,
        secret: &str,
        remote_addr: Option<String>,
    ) -> Result<AccessToken, CoreError> {
        let result = self.check_client(client_id, secret);
        let (device, hash) = match result {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(client_id, reason = e.reason_code(), "token refused");
                let mut audit = Audit::new(
                    self.clock(),
                    &Actor::device(remote_addr),
                    "device.token",
                    AuditOutcome::Failure,
                )
                .reason(e.reason_code());
                if let Ok(id) = client_id.parse::<DeviceId>() {
                    if self.store().read(|tx| tx.device(id)).is_ok() {
                        audit = audit.device(id);
                    }
                }
                self.record_failure(audit);
                return Err(e);
            }
        };
        let now = self.clock().now();
        let lifetime = self.settings().tokens.lifetime_seconds;
        let jti = onboard_pki::secrets::random_token()
            .map_err(|e| CoreError::Internal(format!("the random generator failed: {e}")))?;
        let claims = json!({
            "iss": self.token_issuer(),
            "sub": device.id.to_string(),
            "aud": ACCESS_TOKEN_AUDIENCE,
            "client_id": device.id.to_string(),
            "iat": now.timestamp(),
            "nbf": now.timestamp(),
            "exp": now.timestamp() + i64::from(lifetime),
            "jti": jti,
            "scope": "device",
            "cv": secret_version(&hash),
        });
        let token = self
            .token_key()?
            .sign(ACCESS_TOKEN_TYPE, &claims)
            .map_err(|e| CoreError::Internal(format!("cannot sign the token: {e}")))?;
        Ok(AccessToken {
            token: SecretString::new(&token),
            expires_in: lifetime,
        })
    }

    fn check_client(&self, client_id: &str, secret: &str) -> Result<(Device, String), CoreError> {
        let refused = CoreError::Unauthorized("invalid_client");
        let Ok(id) = client_id.parse::<DeviceId>() else {
            return Err(refused);
        };
        if secret.is_empty() || secret.len() > 256 {
            return Err(refused);
        }
        let found = self.device_and_secret(id)?;
        match found {
            Some((device, Some(cred)))
                if device.credential == CredentialKind::Password && in_service(&device) =>
            {
                if onboard_broker::verify_password(secret, &cred.password_hash) {
                    return Ok((device, cred.password_hash));
                }
                // While a rotation is PENDING the old secret still gets tokens.
                match self.previous_secret_hash(device.id)? {
                    Some(old) if onboard_broker::verify_password(secret, &old) => Ok((device, old)),
                    _ => Err(refused),
                }
            }
            _ => Err(refused),
        }
    }

    /// A device and its secret's stored hash; `None` for an unknown device.
    fn device_and_secret(
        &self,
        id: DeviceId,
    ) -> Result<Option<(Device, Option<onboard_domain::MqttCredential>)>, CoreError> {
        self.store().read(|tx| -> Result<_, CoreError> {
            let device = match tx.device(id) {
                Ok(d) => d,
                Err(RepoError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(Some((device, tx.mqtt_credential(id)?)))
        })
    }

    /// The device behind an access token: signature, issuer, audience and time,
    /// then the registry (still in service, the same secret).
    pub fn authenticate_token(&self, token: &str) -> Result<DeviceSession, CoreError> {
        let refused = CoreError::Unauthorized("invalid_token");
        let claims = self
            .token_key()?
            .verify(token, Some(ACCESS_TOKEN_TYPE))
            .map_err(|_| CoreError::Unauthorized("invalid_token"))?;
        let now = self.clock().now().timestamp();
        let int = |k: &str| claims.get(k).and_then(Value::as_i64);
        let text = |k: &str| claims.get(k).and_then(Value::as_str);
        let timely = matches!((int("exp"), int("nbf")), (Some(exp), nbf) if exp > now && nbf.unwrap_or(0) <= now);
        if !timely
            || text("iss") != Some(self.token_issuer())
            || text("aud") != Some(ACCESS_TOKEN_AUDIENCE)
        {
            return Err(refused);
        }
        let Some(id) = text("sub").and_then(|s| s.parse::<DeviceId>().ok()) else {
            return Err(refused);
        };
        tracing::debug!(device = %id, "access token verified; checking the registry");
        let found = self.device_and_secret(id)?;
        match found {
            Some((device, Some(cred)))
                if in_service(&device) && device.credential == CredentialKind::Password =>
            {
                if text("cv") == Some(secret_version(&cred.password_hash).as_str()) {
                    return Ok(DeviceSession {
                        device,
                        via: DeviceAuth::Token,
                    });
                }
                match self.previous_secret_hash(device.id)? {
                    Some(old) if text("cv") == Some(secret_version(&old).as_str()) => {
                        Ok(DeviceSession {
                            device,
                            via: DeviceAuth::PreviousSecretToken,
                        })
                    }
                    _ => Err(refused),
                }
            }
            _ => Err(refused),
        }
    }

    /// The device behind a client certificate that our TLS listener verified
    /// against the CA. The first use of a renewed certificate retires the ones
    /// before it.
    pub fn authenticate_certificate(
        &self,
        presented: &PresentedCertificate,
    ) -> Result<DeviceSession, CoreError> {
        let refused = CoreError::Unauthorized("certificate_not_active");
        let found = self.store().read(|tx| -> Result<_, CoreError> {
            let Some(cert) = tx.certificate_by_serial(&presented.serial)? else {
                return Ok(None);
            };
            let device = match tx.device(cert.device_id) {
                Ok(d) => d,
                Err(RepoError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let older_active = tx.certificates_of_device(device.id)?.into_iter().any(|c| {
                c.status == CertificateStatus::Active
                    && c.id != cert.id
                    && c.created_at < cert.created_at
            });
            let rotating = tx.rotation(device.id)?.is_some_and(|r| {
                r.state == RotationState::Pending && r.new_certificate_id == Some(cert.id)
            });
            Ok(Some((cert, device, older_active, rotating)))
        })?;
        let Some((cert, device, older_active, rotating)) = found else {
            return Err(refused);
        };
        if cert.fingerprint != presented.fingerprint
            || cert.status != CertificateStatus::Active
            || !in_service(&device)
        {
            return Err(refused);
        }
        // The first use of a rotation's new certificate completes the rotation
        // (which retires the older ones); any other renewal retires them here.
        let completed =
            rotating && self.complete_rotation(device.id, cert.id, "new_certificate_used")?;
        if older_active && !completed {
            self.retire_before(device.id, cert.id, "renewed_certificate_used")?;
        }
        Ok(DeviceSession {
            device,
            via: DeviceAuth::Certificate(cert.id),
        })
    }

    /// A certificate forwarded by a trusted TLS-terminating proxy (PEM): checked
    /// against the CA here, then as [`Onboard::authenticate_certificate`].
    pub fn authenticate_forwarded_certificate(
        &self,
        pem: &[u8],
    ) -> Result<DeviceSession, CoreError> {
        let ca = self.ca()?;
        let presented = ca
            .verify_client_certificate(pem, self.clock().now())
            .map_err(|_| CoreError::Unauthorized("certificate_invalid"))?;
        self.authenticate_certificate(&presented)
    }

    /// Revokes (superseded) the device's active certificates created before
    /// `keep`; returns how many. One transaction with the audit event and the CRL
    /// effect; concurrent callers revoke each certificate once.
    fn retire_before(
        &self,
        device: DeviceId,
        keep: CertificateId,
        why: &'static str,
    ) -> Result<usize, CoreError> {
        let now = self.clock().now();
        let mut effects = Vec::new();
        let retired = self.store().transaction(|tx| -> Result<_, CoreError> {
            // Locks the device row, so two requests do not both revoke.
            let Some(d) = tx.update_device_if(
                device,
                &[DeviceStatus::Registered, DeviceStatus::Active],
                &DeviceUpdate::default(),
                now,
            )?
            else {
                return Ok(Vec::new());
            };
            let certs = tx.certificates_of_device(device)?;
            let Some(kept) = certs.iter().find(|c| c.id == keep) else {
                return Ok(Vec::new());
            };
            let mut retired = Vec::new();
            // Only those strictly older: a certificate created at the same instant
            // as `keep` might be the one in use, and is never revoked here.
            for c in &certs {
                if c.status == CertificateStatus::Active
                    && c.id != keep
                    && c.created_at < kept.created_at
                {
                    tx.revoke_certificate(c.id, now, RevocationReason::Superseded)?;
                    retired.push(c.serial.to_string());
                }
            }
            if !retired.is_empty() {
                let audit = Audit::new(
                    self.clock(),
                    &Actor::system(),
                    "certificate.supersede",
                    AuditOutcome::Success,
                )
                .device(device)
                .serial(d.serial.as_str())
                .reason(why)
                .details(json!({"superseded": retired, "current": kept.serial}));
                tx.append_audit(audit.event())?;
                // The broker's CRL; with AWS IoT, the cloud's certificate follows
                // the device's current one from now on.
                self.enqueue(
                    tx,
                    &[Effect::BrokerCrl, Effect::CloudDevice(device)],
                    &mut effects,
                )?;
            }
            Ok(retired)
        })?;
        if !retired.is_empty() {
            self.apply_or_defer(&effects);
        }
        Ok(retired.len())
    }

    /// Retires certificates whose renewal is older than `device.renew_grace_hours`
    /// (the reconciler runs this). Returns how many were revoked.
    pub fn retire_renewed_certificates(&self) -> Result<usize, CoreError> {
        let grace = Duration::hours(i64::from(self.settings().device.renew_grace_hours));
        let cutoff = self.clock().now() - grace;
        let due = self.store().read(|tx| tx.renewals_older_than(cutoff))?;
        let mut n = 0;
        for (device, newest) in due {
            n += self.retire_before(device, newest, "renewal_grace_elapsed")?;
        }
        Ok(n)
    }

    /// The device's configuration: model defaults merged with its own.
    pub fn config_for(&self, s: &DeviceSession) -> Result<Value, CoreError> {
        let model = self.model_of(&s.device)?;
        Ok(self.device_config(&model, &s.device))
    }

    /// What the device needs to connect: broker, topics, configuration, CA chain.
    /// The device's own provisioning; during a PENDING password rotation with
    /// the new secret.
    pub fn provisioning_for(&self, s: &DeviceSession) -> Result<Provisioning, CoreError> {
        let secret = match s.device.credential {
            CredentialKind::Password => self.pending_new_secret(s.device.id)?,
            CredentialKind::Certificate => None,
        };
        self.provisioning(&s.device, secret)
    }

    fn provisioning(
        &self,
        device: &Device,
        client_secret: Option<SecretString>,
    ) -> Result<Provisioning, CoreError> {
        let model = self.model_of(device)?;
        let mqtt = self.mqtt_info(&model, device);
        let d = &self.settings().device;
        let wifi = (!d.wifi_ssid.is_empty()).then(|| {
            (
                d.wifi_ssid.clone(),
                SecretString::new(d.wifi_password.expose()),
            )
        });
        let certificate = match device.credential {
            CredentialKind::Certificate => self
                .store()
                .read(|tx| tx.certificates_of_device(device.id))?
                .into_iter()
                .filter(|c| c.status == CertificateStatus::Active)
                .max_by_key(|c| c.created_at),
            CredentialKind::Password => None,
        };
        Ok(Provisioning {
            mqtt_url: format!("mqtts://{}:{}", mqtt.host, mqtt.port),
            config: self.device_config(&model, device),
            ca_chain_pem: self.issuer()?.ca_chain_pem(),
            token_url: (device.credential == CredentialKind::Password)
                .then(|| format!("{}/iot/token", self.token_issuer())),
            device: device.clone(),
            mqtt,
            wifi,
            client_secret,
            certificate,
        })
    }

    /// The provisioning package an operator downloads for a device. A password
    /// device gets a new secret (the old one stops working on the broker and for
    /// new tokens at once); it is shown in this answer only.
    pub fn admin_provisioning(
        &self,
        actor: &Actor,
        id: DeviceId,
    ) -> Result<Provisioning, CoreError> {
        let device = self.store().read(|tx| tx.device(id))?;
        if !in_service(&device) {
            return Err(CoreError::Conflict(format!(
                "device {id} is {}; it has no credential to provision",
                device.status
            )));
        }
        let secret = match device.credential {
            CredentialKind::Certificate => None,
            CredentialKind::Password => Some(self.reset_secret(actor, &device)?),
        };
        if secret.is_none() {
            // (A new secret is audited in its own transaction.)
            self.record(
                Audit::new(
                    self.clock(),
                    actor,
                    "device.provisioning",
                    AuditOutcome::Success,
                )
                .device(device.id)
                .serial(device.serial.as_str()),
            )?;
        }
        self.provisioning(&device, secret)
    }

    /// Replaces a password device's secret: the hash, the audit event and the
    /// broker effect in one transaction.
    fn reset_secret(&self, actor: &Actor, device: &Device) -> Result<SecretString, CoreError> {
        let model = self.model_of(device)?;
        let mqtt = self.mqtt_info(&model, device);
        let (secret, row) = self.new_secret(device, &mqtt)?;
        let now = self.clock().now();
        let mut effects = Vec::new();
        self.store().transaction(|tx| -> Result<_, CoreError> {
            tx.update_device_if(
                device.id,
                &[DeviceStatus::Registered, DeviceStatus::Active],
                &DeviceUpdate::default(),
                now,
            )?
            .ok_or_else(|| CoreError::Conflict("the device changed meanwhile; retry".into()))?;
            if tx
                .rotation(device.id)?
                .is_some_and(|r| r.state == RotationState::Pending)
            {
                // Its secrets belong to the rotation until it is acknowledged or
                // times out.
                return Err(CoreError::Conflict(format!(
                    "device {} is rotating its secret; a new one can be set once the rotation is OK or TIMEOUT",
                    device.id
                )));
            }
            tx.set_mqtt_credential(&row)?;
            let audit = Audit::new(
                self.clock(),
                actor,
                "device.provisioning",
                AuditOutcome::Success,
            )
            .device(device.id)
            .serial(device.serial.as_str())
            .details(json!({"new_secret": true}));
            tx.append_audit(audit.event())?;
            self.enqueue(tx, &[Effect::BrokerDevice(device.id)], &mut effects)?;
            Ok(())
        })?;
        self.apply_or_defer(&effects);
        Ok(secret)
    }

    /// `POST /iot/activate`: the device says it is up (an activation source that
    /// needs no MQTT). Returns the device as it is now.
    pub fn activate_device(&self, s: &DeviceSession) -> Result<Device, CoreError> {
        let now = self.clock().now();
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let activated = tx.update_device_if(
                s.device.id,
                &[DeviceStatus::Registered],
                &DeviceUpdate {
                    status: Some(DeviceStatus::Active),
                    activated_at: Some(now),
                    last_seen_at: Some(now),
                    ..DeviceUpdate::default()
                },
                now,
            )?;
            if let Some(device) = activated {
                let audit = Audit::new(
                    self.clock(),
                    &Actor::device(None),
                    "device.activate",
                    AuditOutcome::Success,
                )
                .device(device.id)
                .serial(device.serial.as_str())
                .details(json!({"via": "api"}));
                tx.append_audit(audit.event())?;
                return Ok(device);
            }
            tx.update_device_if(
                s.device.id,
                &[DeviceStatus::Active],
                &DeviceUpdate {
                    last_seen_at: Some(now),
                    ..DeviceUpdate::default()
                },
                now,
            )?
            .ok_or(CoreError::Unauthorized("device_not_in_service"))
        })
    }

    /// `POST /iot/renew`: a certificate for a new key, under the registration
    /// policy. Only over a certificate of the device's own; the CSR must carry a
    /// key other than the current certificate's. A renewal not yet used is
    /// replaced by the next one.
    pub fn renew_certificate(
        &self,
        s: &DeviceSession,
        csr_pem: &str,
    ) -> Result<Renewed, CoreError> {
        let DeviceAuth::Certificate(current) = s.via else {
            return Err(CoreError::Conflict(
                "renewal needs the device's current client certificate (mutual TLS)".into(),
            ));
        };
        if csr_pem.len() > crate::MAX_CSR_BYTES {
            return Err(invalid("csr", "is too large"));
        }
        let checked = onboard_pki::parse_csr(csr_pem.as_bytes())
            .map_err(|e| invalid("csr", e.to_string()))?;
        let current_cert = self
            .store()
            .read(|tx| tx.certificates_of_device(s.device.id))?
            .into_iter()
            .find(|c| c.id == current)
            .ok_or(CoreError::Unauthorized("certificate_not_active"))?;
        if onboard_pki::checked_csr_matches_certificate(&checked, &current_cert.pem)
            .map_err(|e| invalid("csr", e.to_string()))?
        {
            return Err(invalid(
                "csr",
                "carries the key of the current certificate; renewal needs a new key",
            ));
        }
        let now = self.clock().now();
        let issued = match &self.ports().issuer {
            Some(issuer) => issuer.issue_from_csr(s.device.id, csr_pem.as_bytes(), now),
            // The internal CA issues from the check above.
            None => self
                .internal_issuer()?
                .issue_from_checked(s.device.id, &checked, now),
        }
        .map_err(|e| match e {
            onboard_domain::PortError::Rejected(m) => invalid("csr", m),
            onboard_domain::PortError::Unavailable(m) => CoreError::Unavailable(m),
        })?;
        let row = self.certificate_row(s.device.id, &issued);
        let mut effects = Vec::new();
        let certificate = self.store().transaction(|tx| -> Result<_, CoreError> {
            let device = tx
                .update_device_if(
                    s.device.id,
                    &[DeviceStatus::Registered, DeviceStatus::Active],
                    &DeviceUpdate::default(),
                    now,
                )?
                .ok_or(CoreError::Unauthorized("device_not_in_service"))?;
            let certs = tx.certificates_of_device(device.id)?;
            if !certs
                .iter()
                .any(|c| c.id == current && c.status == CertificateStatus::Active)
            {
                return Err(CoreError::Unauthorized("certificate_not_active"));
            }
            // An earlier renewal the device never used, or anything but the
            // certificate in use: superseded now.
            let mut superseded = Vec::new();
            for c in &certs {
                if c.status == CertificateStatus::Active && c.id != current {
                    tx.revoke_certificate(c.id, now, RevocationReason::Superseded)?;
                    superseded.push(c.serial.to_string());
                }
            }
            let certificate = tx.insert_certificate(&row)?;
            let rotation = Self::note_rotation_certificate(tx, device.id, certificate.id, now)?;
            let audit = Audit::new(
                self.clock(),
                &Actor::device(None),
                "device.renew",
                AuditOutcome::Success,
            )
            .device(device.id)
            .serial(device.serial.as_str())
            .details(json!({
                "certificate_serial": certificate.serial,
                "previous": current_cert.serial,
                "superseded": superseded,
                "rotation": rotation,
            }));
            tx.append_audit(audit.event())?;
            if !superseded.is_empty() {
                self.enqueue(tx, &[Effect::BrokerCrl], &mut effects)?;
            }
            Ok(certificate)
        })?;
        self.apply_or_defer(&effects);
        Ok(Renewed {
            certificate,
            ca_chain_pem: self.issuer()?.ca_chain_pem(),
            previous_valid_until: now
                + Duration::hours(i64::from(self.settings().device.renew_grace_hours)),
        })
    }
}
