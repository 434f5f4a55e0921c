//! Row types as stored, and their conversion to and from the domain's entities.
//!
//! Every `Insertable` row binds `None` as `NULL` (`treat_none_as_default_value =
//! false`) instead of writing `DEFAULT`: with `DEFAULT` the SQL depends on the
//! values, so diesel never keeps the statement prepared on PostgreSQL and parsed
//! and planned every insert again. No nullable column has a default other than
//! `NULL`, so what is stored is the same.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use onboard_domain::{
    AuditEvent, BootstrapKey, BootstrapKeyId, CertSerial, Certificate, CertificateId, Device,
    DeviceId, DeviceModel, Fingerprint, ModelCode, RepoError, Serial,
};

use crate::schema::{
    audit_events, bootstrap_key_uses, bootstrap_keys, certificates, device_models, devices,
};

/// Times are kept to the microsecond, PostgreSQL's resolution, on both backends.
pub(crate) fn ts(t: DateTime<Utc>) -> NaiveDateTime {
    t.trunc_subsecs(6).naive_utc()
}

pub(crate) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt(format!("{what}: {e}"))
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, RepoError>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| corrupt(what, e))
}

pub(crate) fn uuid(what: &str, s: &str) -> Result<uuid::Uuid, RepoError> {
    uuid::Uuid::parse_str(s).map_err(|e| corrupt(what, e))
}

fn json(what: &str, s: &str) -> Result<serde_json::Value, RepoError> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

pub(crate) fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

fn model_code(s: Option<String>) -> Result<Option<ModelCode>, RepoError> {
    s.map(|c| ModelCode::parse(&c).map_err(|e| corrupt("model code", e)))
        .transpose()
}

#[derive(Debug, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = device_models, treat_none_as_default_value = false)]
pub(crate) struct ModelRow {
    pub code: String,
    pub name: String,
    pub description: String,
    pub publish_topics: String,
    pub subscribe_topics: String,
    pub max_qos: i32,
    pub retain_allowed: bool,
    pub config: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub credential: String,
}

impl ModelRow {
    pub fn from_domain(m: &DeviceModel) -> Self {
        Self {
            code: m.code.as_str().to_owned(),
            name: m.name.clone(),
            description: m.description.clone(),
            publish_topics: serde_json::Value::from(m.publish_topics.clone()).to_string(),
            subscribe_topics: serde_json::Value::from(m.subscribe_topics.clone()).to_string(),
            max_qos: i32::from(m.max_qos),
            retain_allowed: m.retain_allowed,
            config: json_text(&m.config),
            created_at: ts(m.created_at),
            updated_at: ts(m.updated_at),
            credential: m.credential.as_str().to_owned(),
        }
    }

    pub fn into_domain(self) -> Result<DeviceModel, RepoError> {
        let topics = |what: &str, s: &str| -> Result<Vec<String>, RepoError> {
            serde_json::from_str(s).map_err(|e| corrupt(what, e))
        };
        Ok(DeviceModel {
            code: ModelCode::parse(&self.code).map_err(|e| corrupt("model code", e))?,
            name: self.name,
            description: self.description,
            publish_topics: topics("publish topics", &self.publish_topics)?,
            subscribe_topics: topics("subscribe topics", &self.subscribe_topics)?,
            max_qos: u8::try_from(self.max_qos).map_err(|e| corrupt("max qos", e))?,
            retain_allowed: self.retain_allowed,
            config: json("model config", &self.config)?,
            credential: parse("model credential", &self.credential)?,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
        })
    }
}

/// A key as read: its `uses` are the sum of its shards' (`bootstrap_key_uses`).
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = bootstrap_keys)]
pub(crate) struct KeyRow {
    pub id: String,
    pub batch: String,
    pub prefix: String,
    pub key_hash: String,
    pub model_code: Option<String>,
    pub max_uses: i32,
    #[diesel(
        select_expression = crate::repos::keys::KeyUses,
        select_expression_type = crate::repos::keys::KeyUses
    )]
    pub uses: i32,
    pub not_before: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A key as written; its uses are counted in `bootstrap_key_uses`.
#[derive(Debug, Insertable)]
#[diesel(table_name = bootstrap_keys, treat_none_as_default_value = false)]
pub(crate) struct NewKeyRow {
    pub id: String,
    pub batch: String,
    pub prefix: String,
    pub key_hash: String,
    pub model_code: Option<String>,
    pub max_uses: i32,
    pub not_before: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// One shard of a key's uses.
#[derive(Debug, Insertable)]
#[diesel(table_name = bootstrap_key_uses, treat_none_as_default_value = false)]
pub(crate) struct KeyUsesRow {
    pub key_id: String,
    pub shard: i32,
    pub max_uses: i32,
    pub uses: i32,
    pub active: bool,
}

impl KeyRow {
    pub fn into_domain(self) -> Result<BootstrapKey, RepoError> {
        Ok(BootstrapKey {
            id: BootstrapKeyId(uuid("bootstrap key id", &self.id)?),
            batch: self.batch,
            prefix: self.prefix,
            key_hash: self.key_hash,
            model: model_code(self.model_code)?,
            max_uses: self.max_uses,
            uses: self.uses,
            not_before: utc(self.not_before),
            expires_at: utc(self.expires_at),
            active: self.active,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
        })
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = devices, treat_none_as_default_value = false)]
pub(crate) struct DeviceRow {
    pub id: String,
    pub serial: String,
    pub name: String,
    pub model_code: Option<String>,
    pub location: String,
    pub firmware_version: String,
    pub status: String,
    pub bootstrap_key_id: Option<String>,
    pub batch: Option<String>,
    pub config: String,
    pub metadata: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub activated_at: Option<NaiveDateTime>,
    pub last_seen_at: Option<NaiveDateTime>,
    pub decommissioned_at: Option<NaiveDateTime>,
    pub credential: String,
}

impl DeviceRow {
    pub fn into_domain(self) -> Result<Device, RepoError> {
        Ok(Device {
            id: DeviceId(uuid("device id", &self.id)?),
            serial: Serial::parse(&self.serial).map_err(|e| corrupt("serial", e))?,
            name: self.name,
            model: model_code(self.model_code)?,
            location: self.location,
            firmware_version: self.firmware_version,
            status: parse("device status", &self.status)?,
            credential: parse("device credential", &self.credential)?,
            bootstrap_key_id: self
                .bootstrap_key_id
                .map(|k| uuid("bootstrap key id", &k).map(BootstrapKeyId))
                .transpose()?,
            batch: self.batch,
            config: json("device config", &self.config)?,
            metadata: json("device metadata", &self.metadata)?,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            activated_at: self.activated_at.map(utc),
            last_seen_at: self.last_seen_at.map(utc),
            decommissioned_at: self.decommissioned_at.map(utc),
        })
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = certificates, treat_none_as_default_value = false)]
pub(crate) struct CertificateRow {
    pub id: String,
    pub device_id: String,
    pub serial: String,
    pub fingerprint: String,
    pub subject: String,
    pub issuer: String,
    pub key_algorithm: String,
    pub not_before: NaiveDateTime,
    pub not_after: NaiveDateTime,
    pub status: String,
    pub revoked_at: Option<NaiveDateTime>,
    pub revocation_reason: Option<String>,
    pub pem: String,
    pub created_at: NaiveDateTime,
    /// See migration `2026-12-05-000001_certificate_renewals`; kept by the
    /// certificate repository, never part of the domain's certificate.
    pub renewed_at: Option<NaiveDateTime>,
}

impl CertificateRow {
    pub fn into_domain(self) -> Result<Certificate, RepoError> {
        Ok(Certificate {
            id: CertificateId(uuid("certificate id", &self.id)?),
            device_id: DeviceId(uuid("device id", &self.device_id)?),
            serial: CertSerial::parse(&self.serial).map_err(|e| corrupt("serial", e))?,
            fingerprint: Fingerprint::parse(&self.fingerprint)
                .map_err(|e| corrupt("fingerprint", e))?,
            subject: self.subject,
            issuer: self.issuer,
            key_algorithm: parse("key algorithm", &self.key_algorithm)?,
            not_before: utc(self.not_before),
            not_after: utc(self.not_after),
            status: parse("certificate status", &self.status)?,
            revoked_at: self.revoked_at.map(utc),
            revocation_reason: self
                .revocation_reason
                .map(|r| parse("revocation reason", &r))
                .transpose()?,
            pem: self.pem,
            created_at: utc(self.created_at),
        })
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
pub(crate) struct AuditRow {
    pub id: String,
    pub occurred_at: NaiveDateTime,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub device_id: Option<String>,
    pub serial: Option<String>,
    pub key_prefix: Option<String>,
    pub remote_addr: Option<String>,
    pub details: String,
}

impl AuditRow {
    pub fn from_domain(e: &AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            occurred_at: ts(e.occurred_at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            outcome: e.outcome.as_str().to_owned(),
            reason: e.reason.clone(),
            device_id: e.device_id.map(|d| d.to_string()),
            serial: e.serial.clone(),
            key_prefix: e.key_prefix.clone(),
            remote_addr: e.remote_addr.clone(),
            details: json_text(&e.details),
        }
    }

    pub fn into_domain(self) -> Result<AuditEvent, RepoError> {
        Ok(AuditEvent {
            id: uuid("audit id", &self.id)?,
            occurred_at: utc(self.occurred_at),
            actor: self.actor,
            action: self.action,
            outcome: parse("outcome", &self.outcome)?,
            reason: self.reason,
            device_id: self
                .device_id
                .map(|d| uuid("device id", &d).map(DeviceId))
                .transpose()?,
            serial: self.serial,
            key_prefix: self.key_prefix,
            remote_addr: self.remote_addr,
            details: json("audit details", &self.details)?,
        })
    }
}

/// Converts a list of rows, failing on the first corrupt one.
pub(crate) fn all<R, T>(
    rows: Vec<R>,
    f: impl Fn(R) -> Result<T, RepoError>,
) -> Result<Vec<T>, RepoError> {
    rows.into_iter().map(f).collect()
}
