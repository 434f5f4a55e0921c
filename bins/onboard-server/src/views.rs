//! The JSON shapes of the API, with their OpenAPI schemas. Field names follow
//! `api.md`; domain types stay free of HTTP concerns.

use chrono::{DateTime, Utc};
use onboard_core::domain::{AuditEvent, BootstrapKey, Certificate, Device};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub batch: String,
    /// The public part of the key, for recognising it; the secret is never shown again.
    #[schema(example = "obk_9f86d081884c7d65")]
    pub prefix: String,
    pub model: Option<String>,
    pub max_uses: i32,
    pub uses: i32,
    pub not_before: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&BootstrapKey> for KeyView {
    fn from(k: &BootstrapKey) -> Self {
        Self {
            id: k.id.to_string(),
            batch: k.batch.clone(),
            prefix: k.prefix.clone(),
            model: k.model.as_ref().map(|m| m.to_string()),
            max_uses: k.max_uses,
            uses: k.uses,
            not_before: k.not_before,
            expires_at: k.expires_at,
            active: k.active,
            created_at: k.created_at,
            updated_at: k.updated_at,
        }
    }
}

/// A key just created: the only answer that carries its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyView {
    pub id: String,
    pub prefix: String,
    /// The bootstrap key in clear. Shown once; only its hash is stored.
    pub key: String,
    pub max_uses: i32,
    pub not_before: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub model: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBatchView {
    pub batch: String,
    pub keys: Vec<CreatedKeyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub serial: String,
    pub name: String,
    pub model: Option<String>,
    pub location: String,
    pub firmware_version: String,
    /// registered, active, revoked or decommissioned.
    pub status: String,
    /// certificate or password.
    pub credential: String,
    pub batch: Option<String>,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub decommissioned_at: Option<DateTime<Utc>>,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        Self {
            id: d.id.to_string(),
            serial: d.serial.to_string(),
            name: d.name.clone(),
            model: d.model.as_ref().map(|m| m.to_string()),
            location: d.location.clone(),
            firmware_version: d.firmware_version.clone(),
            status: d.status.to_string(),
            credential: d.credential.to_string(),
            batch: d.batch.clone(),
            config: d.config.clone(),
            metadata: d.metadata.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            activated_at: d.activated_at,
            last_seen_at: d.last_seen_at,
            decommissioned_at: d.decommissioned_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateView {
    /// Uppercase hex.
    pub serial: String,
    pub fingerprint_sha256: String,
    pub subject: String,
    pub issuer: String,
    pub key_algorithm: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// active or revoked.
    pub status: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revocation_reason: Option<String>,
    pub certificate_pem: String,
}

impl From<&Certificate> for CertificateView {
    fn from(c: &Certificate) -> Self {
        Self {
            serial: c.serial.to_string(),
            fingerprint_sha256: c.fingerprint.to_string(),
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            key_algorithm: c.key_algorithm.to_string(),
            not_before: c.not_before,
            not_after: c.not_after,
            status: c.status.to_string(),
            revoked_at: c.revoked_at,
            revocation_reason: c.revocation_reason.map(|r| r.to_string()),
            certificate_pem: c.pem.clone(),
        }
    }
}

/// Where a device lives in AWS IoT Core.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AwsView {
    pub thing_name: String,
    pub thing_arn: String,
    pub certificate_id: String,
    pub certificate_arn: String,
}

impl From<&onboard_core::domain::CloudRecord> for AwsView {
    fn from(r: &onboard_core::domain::CloudRecord) -> Self {
        Self {
            thing_name: r.thing_name.clone(),
            thing_arn: r.thing_arn.clone(),
            certificate_id: r.certificate_id.clone(),
            certificate_arn: r.certificate_arn.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDetailsView {
    #[serde(flatten)]
    pub device: DeviceView,
    pub current_certificate: Option<CertificateView>,
    pub certificates: Vec<CertificateView>,
    /// The Thing and certificate in AWS IoT Core; absent when AWS is off or the
    /// device is not registered there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    /// `admin:<token name>`, `cli:<user>`, `device`, `system`.
    pub actor: String,
    pub action: String,
    /// success or failure.
    pub outcome: String,
    pub reason: Option<String>,
    pub device_id: Option<String>,
    pub serial: Option<String>,
    pub key_prefix: Option<String>,
    pub remote_addr: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<&AuditEvent> for AuditView {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            occurred_at: e.occurred_at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            outcome: e.outcome.to_string(),
            reason: e.reason.clone(),
            device_id: e.device_id.map(|d| d.to_string()),
            serial: e.serial.clone(),
            key_prefix: e.key_prefix.clone(),
            remote_addr: e.remote_addr.clone(),
            details: e.details.clone(),
        }
    }
}

/// One page of a listing. Pass `next_cursor` as `after` for the next page; it is
/// absent on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageView<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
