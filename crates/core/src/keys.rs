//! Bootstrap key batches: created for a factory run, time-bound, use-counted,
//! revocable. The secret is shown once, at creation; only its hash is stored.

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{
    new_id, AuditOutcome, AuditRepository, BootstrapKey, BootstrapKeyFilter, BootstrapKeyId,
    BootstrapKeyRepository, DeviceModelRepository, InvalidValue, ModelCode, NewBootstrapKey, Page,
    PageRequest, RepoError, SecretString, Store,
};

use crate::app::Onboard;
use crate::audit::{uuid_cursor, Actor, Audit};
use crate::error::CoreError;
use crate::secrets::new_bootstrap_key;

pub const MAX_BATCH_COUNT: u32 = 10_000;
pub const MAX_USES: u32 = 1_000_000;
pub const MAX_VALID_DAYS: u32 = 3650;

/// A batch to create. Validity is `valid_days` from now, or an explicit window.
#[derive(Debug, Clone, Default)]
pub struct KeyBatchRequest {
    pub batch: String,
    pub count: u32,
    pub max_uses: u32,
    pub valid_days: Option<u32>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub model: Option<String>,
}

/// A key just created: the only time its secret exists outside the device.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: BootstrapKey,
    pub secret: SecretString,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CoreError {
    CoreError::Invalid(InvalidValue::new(field, reason))
}

/// A batch name: 1 to 64 letters, digits and `. _ - :` (also an EST label).
pub fn validate_batch_name(batch: &str) -> Result<(), CoreError> {
    let ok = !batch.is_empty()
        && batch.len() <= 64
        && batch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "batch",
            "must be 1 to 64 characters of letters, digits and . _ - :",
        ))
    }
}

impl KeyBatchRequest {
    /// The validity window at `now`, checked.
    fn window(&self, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), CoreError> {
        let (not_before, expires_at) = match (self.valid_days, self.not_before, self.expires_at) {
            (Some(days), None, None) => {
                if days == 0 || days > MAX_VALID_DAYS {
                    return Err(invalid(
                        "valid_days",
                        format!("must be 1 to {MAX_VALID_DAYS}"),
                    ));
                }
                (now, now + Duration::days(i64::from(days)))
            }
            (None, not_before, Some(expires_at)) => (not_before.unwrap_or(now), expires_at),
            (None, None, None) => (now, now + Duration::days(30)),
            _ => {
                return Err(invalid(
                    "valid_days",
                    "give valid_days, or expires_at (with an optional not_before), not both",
                ))
            }
        };
        if expires_at <= not_before {
            return Err(invalid("expires_at", "must be after not_before"));
        }
        if expires_at <= now {
            return Err(invalid("expires_at", "must be in the future"));
        }
        if expires_at - not_before > Duration::days(i64::from(MAX_VALID_DAYS)) {
            return Err(invalid(
                "expires_at",
                format!("the window may be at most {MAX_VALID_DAYS} days"),
            ));
        }
        Ok((not_before, expires_at))
    }
}

impl Onboard {
    /// Creates `count` keys in one transaction: all of them or none.
    pub fn create_key_batch(
        &self,
        actor: &Actor,
        req: &KeyBatchRequest,
    ) -> Result<Vec<CreatedKey>, CoreError> {
        validate_batch_name(&req.batch)?;
        if req.count == 0 || req.count > MAX_BATCH_COUNT {
            return Err(invalid("count", format!("must be 1 to {MAX_BATCH_COUNT}")));
        }
        if req.max_uses == 0 || req.max_uses > MAX_USES {
            return Err(invalid("max_uses", format!("must be 1 to {MAX_USES}")));
        }
        let model = req.model.as_deref().map(ModelCode::parse).transpose()?;
        let now = self.clock().now();
        let (not_before, expires_at) = req.window(now)?;
        let max_uses = i32::try_from(req.max_uses).map_err(|_| invalid("max_uses", "too large"))?;

        let mut secrets = Vec::with_capacity(req.count as usize);
        let mut rows = Vec::with_capacity(req.count as usize);
        for _ in 0..req.count {
            let s = new_bootstrap_key()?;
            rows.push(NewBootstrapKey {
                id: BootstrapKeyId(new_id(self.clock())),
                batch: req.batch.clone(),
                prefix: s.prefix,
                key_hash: s.hash,
                model: model.clone(),
                max_uses,
                not_before,
                expires_at,
                created_at: now,
            });
            secrets.push(s.secret);
        }
        let audit = Audit::new(
            self.clock(),
            actor,
            "bootstrap_key.create",
            AuditOutcome::Success,
        )
        .details(serde_json::json!({
            "batch": req.batch, "count": req.count, "max_uses": req.max_uses,
            "not_before": not_before, "expires_at": expires_at, "model": req.model,
        }));
        let keys = self.store().transaction(|tx| -> Result<_, CoreError> {
            if let Some(code) = &model {
                match tx.model(code) {
                    Ok(_) => {}
                    Err(RepoError::NotFound { .. }) => {
                        return Err(invalid("model", format!("no device model {code}")))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let keys = tx.insert_bootstrap_keys(&rows)?;
            tx.append_audit(audit.event())?;
            Ok(keys)
        })?;
        Ok(keys
            .into_iter()
            .zip(secrets)
            .map(|(key, secret)| CreatedKey { key, secret })
            .collect())
    }

    pub fn list_keys(
        &self,
        filter: &BootstrapKeyFilter,
        page: &PageRequest,
    ) -> Result<Page<BootstrapKey>, CoreError> {
        if let Some(after) = page.after() {
            uuid_cursor(after)?;
        }
        Ok(self
            .store()
            .read(|tx| tx.list_bootstrap_keys(filter, page))?)
    }

    pub fn key(&self, id: BootstrapKeyId) -> Result<BootstrapKey, CoreError> {
        Ok(self.store().read(|tx| tx.bootstrap_key(id))?)
    }

    /// Activates or deactivates a key. An expired key cannot be activated again.
    pub fn set_key_active(
        &self,
        actor: &Actor,
        id: BootstrapKeyId,
        active: bool,
    ) -> Result<BootstrapKey, CoreError> {
        let now = self.clock().now();
        let action = if active {
            "bootstrap_key.activate"
        } else {
            "bootstrap_key.deactivate"
        };
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let key = tx.bootstrap_key(id)?;
            if active && !key.may_activate(now) {
                return Err(CoreError::Conflict(
                    "the bootstrap key has expired and cannot be activated".into(),
                ));
            }
            let key = tx.set_bootstrap_key_active(id, active, now)?;
            let audit = Audit::new(self.clock(), actor, action, AuditOutcome::Success)
                .key_prefix(&key.prefix);
            tx.append_audit(audit.event())?;
            Ok(key)
        })
    }

    /// Deletes a key. Devices that registered with it keep their record (the link
    /// is cleared).
    pub fn delete_key(&self, actor: &Actor, id: BootstrapKeyId) -> Result<(), CoreError> {
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let key = tx.bootstrap_key(id)?;
            tx.delete_bootstrap_key(id)?;
            let audit = Audit::new(
                self.clock(),
                actor,
                "bootstrap_key.delete",
                AuditOutcome::Success,
            )
            .key_prefix(&key.prefix)
            .details(serde_json::json!({"batch": key.batch}));
            tx.append_audit(audit.event())?;
            Ok(())
        })
    }
}
