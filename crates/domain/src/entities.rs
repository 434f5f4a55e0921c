//! The records Onboard keeps, and the rules on them that need no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{
    BootstrapKeyId, CertSerial, CertificateId, DeviceId, Fingerprint, ModelCode, Serial,
    Sha256Digest,
};
use crate::states::{
    AuditOutcome, CertificateStatus, CredentialKind, DeviceStatus, KeyAlgorithm, RevocationReason,
};

/// A kind of device: its defaults, topic templates and firmware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceModel {
    pub code: ModelCode,
    pub name: String,
    pub description: String,
    /// Topic templates the device may publish to (`{device_id}`, `{serial}`, `{model}`).
    pub publish_topics: Vec<String>,
    /// Topic templates the device may subscribe to.
    pub subscribe_topics: Vec<String>,
    pub max_qos: u8,
    pub retain_allowed: bool,
    /// Default configuration handed to every device of the model.
    pub config: serde_json::Value,
    /// The credential a device of this model gets unless the request names one.
    #[serde(default)]
    pub credential: CredentialKind,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The firmware image a model's devices should run: what its application
/// descriptor says and where it is stored (by `sha256`, under `assets.dir`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFirmware {
    pub model: ModelCode,
    /// The descriptor's version (`PROJECT_VER`), what devices report.
    pub version: String,
    /// SHA-256 of the whole image file.
    pub sha256: Sha256Digest,
    pub size: u64,
    pub project: String,
    pub idf_version: String,
    pub uploaded_at: DateTime<Utc>,
}

/// A bootstrap key as stored: never the secret, only its hash and public prefix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootstrapKey {
    pub id: BootstrapKeyId,
    pub batch: String,
    /// The short public part of the key, kept in clear for lookup and display.
    pub prefix: String,
    #[serde(skip)]
    pub key_hash: String,
    pub model: Option<ModelCode>,
    pub max_uses: i32,
    pub uses: i32,
    pub not_before: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a bootstrap key cannot be used now. Devices get one answer for all of these;
/// the audit log keeps which one it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    #[error("the bootstrap key is deactivated")]
    Inactive,
    #[error("the bootstrap key is not valid yet")]
    NotYetValid,
    #[error("the bootstrap key has expired")]
    Expired,
    #[error("the bootstrap key has no uses left")]
    UsedUp,
}

impl KeyRejection {
    /// A stable machine code for audit records and metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            Self::Inactive => "key_inactive",
            Self::NotYetValid => "key_not_yet_valid",
            Self::Expired => "key_expired",
            Self::UsedUp => "key_used_up",
        }
    }
}

impl BootstrapKey {
    /// Whether one more use may be taken at `now`: active, inside `[not_before,
    /// expires_at)`, and uses below `max_uses`. The registry repeats this check in
    /// the atomic update that consumes the use; this is the explanation.
    pub fn check_usable(&self, now: DateTime<Utc>) -> Result<(), KeyRejection> {
        if !self.active {
            Err(KeyRejection::Inactive)
        } else if now < self.not_before {
            Err(KeyRejection::NotYetValid)
        } else if now >= self.expires_at {
            Err(KeyRejection::Expired)
        } else if self.uses >= self.max_uses {
            Err(KeyRejection::UsedUp)
        } else {
            Ok(())
        }
    }

    /// An expired key stays dead: re-activation is refused.
    pub fn may_activate(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewBootstrapKey {
    pub id: BootstrapKeyId,
    pub batch: String,
    pub prefix: String,
    pub key_hash: String,
    pub model: Option<ModelCode>,
    pub max_uses: i32,
    pub not_before: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A device known to Onboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub serial: Serial,
    pub name: String,
    pub model: Option<ModelCode>,
    pub location: String,
    pub firmware_version: String,
    pub credential: CredentialKind,
    pub status: DeviceStatus,
    pub bootstrap_key_id: Option<BootstrapKeyId>,
    pub batch: Option<String>,
    pub config: serde_json::Value,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub decommissioned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDevice {
    pub id: DeviceId,
    pub serial: Serial,
    pub name: String,
    pub model: Option<ModelCode>,
    pub location: String,
    pub firmware_version: String,
    pub credential: CredentialKind,
    pub bootstrap_key_id: Option<BootstrapKeyId>,
    pub batch: Option<String>,
    pub config: serde_json::Value,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// An X.509 certificate issued to a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificate {
    pub id: CertificateId,
    pub device_id: DeviceId,
    pub serial: CertSerial,
    pub fingerprint: Fingerprint,
    pub subject: String,
    pub issuer: String,
    pub key_algorithm: KeyAlgorithm,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub status: CertificateStatus,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revocation_reason: Option<RevocationReason>,
    pub pem: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewCertificate {
    pub id: CertificateId,
    pub device_id: DeviceId,
    pub serial: CertSerial,
    pub fingerprint: Fingerprint,
    pub subject: String,
    pub issuer: String,
    pub key_algorithm: KeyAlgorithm,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub pem: String,
    pub created_at: DateTime<Utc>,
}

/// A signed CRL as published, numbered in issue order.
#[derive(Debug, Clone, PartialEq)]
pub struct CrlRecord {
    pub number: i64,
    pub this_update: DateTime<Utc>,
    pub next_update: DateTime<Utc>,
    pub der: Vec<u8>,
}

/// One line of the audit trail. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: uuid::Uuid,
    pub occurred_at: DateTime<Utc>,
    /// Who acted: `admin:<token name>`, `device:<id>`, `cli:<user>`, `system`.
    pub actor: String,
    /// What was done, dotted: `device.register`, `bootstrap_key.create`, ...
    pub action: String,
    pub outcome: AuditOutcome,
    /// A machine code for failures (`key_expired`, `bad_csr`, ...).
    pub reason: Option<String>,
    pub device_id: Option<DeviceId>,
    pub serial: Option<String>,
    pub key_prefix: Option<String>,
    pub remote_addr: Option<String>,
    pub details: serde_json::Value,
}

pub type NewAuditEvent = AuditEvent;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn key(now: DateTime<Utc>) -> BootstrapKey {
        BootstrapKey {
            id: BootstrapKeyId(uuid::Uuid::nil()),
            batch: "line7".into(),
            prefix: "obk_abcd".into(),
            key_hash: "h".into(),
            model: None,
            max_uses: 2,
            uses: 0,
            not_before: now - Duration::days(1),
            expires_at: now + Duration::days(1),
            active: true,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_fresh_key_is_usable() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        assert_eq!(key(now).check_usable(now), Ok(()));
    }

    #[test]
    fn each_rejection_has_its_reason() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        let mut k = key(now);
        k.active = false;
        assert_eq!(k.check_usable(now), Err(KeyRejection::Inactive));
        let k = key(now);
        assert_eq!(
            k.check_usable(now - Duration::days(2)),
            Err(KeyRejection::NotYetValid)
        );
        assert_eq!(k.check_usable(k.expires_at), Err(KeyRejection::Expired));
        let mut k = key(now);
        k.uses = 2;
        assert_eq!(k.check_usable(now), Err(KeyRejection::UsedUp));
        assert_eq!(KeyRejection::UsedUp.code(), "key_used_up");
    }

    #[test]
    fn expired_keys_cannot_be_reactivated() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        let k = key(now);
        assert!(k.may_activate(now));
        assert!(!k.may_activate(now + Duration::days(1)));
    }

    #[test]
    fn the_key_hash_never_serialises() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        let json = serde_json::to_value(key(now)).unwrap();
        assert!(json.get("key_hash").is_none());
        assert_eq!(json["prefix"], "obk_abcd");
    }
}

/// The secret of a password device, as stored: its `mosquitto_passwd` hash only.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttCredential {
    pub device_id: DeviceId,
    /// The MQTT username and OAuth2 client id.
    pub username: String,
    /// `$7$<iterations>$<salt>$<hash>` (PBKDF2-SHA512), as Mosquitto's password
    /// file wants it; also what `POST /iot/token` checks the secret against.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The fleet's current rotation generation (`rotation_schedule`): every device in
/// service, registered by `due_at`, whose rotation record is missing or OK with an
/// older generation, and whose id sorts after `cursor`, is QUEUED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetGeneration {
    /// 0 before the first scheduled run or fleet trigger.
    pub generation: i64,
    pub due_at: Option<DateTime<Utc>>,
    /// The last device a cycle started (or passed) for this generation.
    pub cursor: Option<String>,
}

/// A device's credential rotation, as stored (`rotations`). A device without one
/// is `OK`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    pub device_id: DeviceId,
    pub state: crate::states::RotationState,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    /// While PENDING: when it times out.
    pub deadline_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// How many times the rotation was started.
    pub attempts: i32,
    /// Password devices: the previous secret, encrypted (AES-256-GCM).
    pub old_secret_encrypted: Option<Vec<u8>>,
    /// Certificate devices: the certificate issued during this rotation.
    pub new_certificate_id: Option<crate::ids::CertificateId>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The fleet generation this rotation was last started in (0: none); the
    /// device is QUEUED again by a later generation only.
    pub generation: i64,
    /// When the broker acknowledged this start's notification; `None` while it
    /// is not notified yet (a later cycle retries).
    pub notified_at: Option<DateTime<Utc>>,
}
