//! Who did what: actors, and the audit events every use case writes in the same
//! transaction as the change it records.

use onboard_domain::{
    new_id, AuditEvent, AuditFilter, AuditOutcome, AuditRepository, Clock, DeviceId, Page,
    PageRequest, Store,
};

use crate::app::Onboard;
use crate::error::CoreError;

/// Who acts: an admin token (by name), the CLI (by OS user), a device, the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `admin:<token name>`, `cli:<user>`, `device:<serial>`, `system`.
    pub name: String,
    pub remote_addr: Option<String>,
}

impl Actor {
    pub fn admin(token_name: &str, remote_addr: Option<String>) -> Self {
        Self {
            name: format!("admin:{token_name}"),
            remote_addr,
        }
    }

    /// The operator running `onboardctl`, named by `$USER` when set.
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            name: format!("cli:{user}"),
            remote_addr: None,
        }
    }

    pub fn device(remote_addr: Option<String>) -> Self {
        Self {
            name: "device".into(),
            remote_addr,
        }
    }

    /// Onboard itself (the reconciler, a rule that fires on its own).
    pub fn system() -> Self {
        Self {
            name: "system".into(),
            remote_addr: None,
        }
    }
}

/// An audit event under construction.
#[derive(Debug, Clone)]
pub(crate) struct Audit {
    event: AuditEvent,
}

impl Audit {
    pub fn new(clock: &dyn Clock, actor: &Actor, action: &str, outcome: AuditOutcome) -> Self {
        Self {
            event: AuditEvent {
                id: new_id(clock),
                occurred_at: clock.now(),
                actor: actor.name.clone(),
                action: action.to_owned(),
                outcome,
                reason: None,
                device_id: None,
                serial: None,
                key_prefix: None,
                remote_addr: actor.remote_addr.clone(),
                details: serde_json::json!({}),
            },
        }
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.event.reason = Some(reason.to_owned());
        self
    }

    pub fn device(mut self, id: DeviceId) -> Self {
        self.event.device_id = Some(id);
        self
    }

    pub fn serial(mut self, serial: &str) -> Self {
        self.event.serial = Some(serial.to_owned());
        self
    }

    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.event.key_prefix = Some(prefix.to_owned());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.event.details = details;
        self
    }

    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    pub fn into_event(self) -> AuditEvent {
        self.event
    }
}

impl Onboard {
    /// Writes one audit event in its own transaction (for failures, whose other
    /// changes were rolled back).
    pub(crate) fn record(&self, audit: Audit) -> Result<(), CoreError> {
        // One row: it may share a commit with other writers (group commit).
        self.store()
            .grouped_transaction(|tx| tx.append_audit(audit.event()))
            .map_err(CoreError::from)
    }

    /// Like [`Onboard::record`] for a failure path: a failure to audit is logged,
    /// and the original error is what the caller reports.
    pub(crate) fn record_failure(&self, audit: Audit) {
        if let Err(e) = self.record(audit) {
            tracing::error!(error = %e, "could not write an audit event");
        }
    }

    /// Audit events, newest first.
    pub fn audit_events(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, CoreError> {
        if let Some(after) = page.after() {
            uuid_cursor(after)?;
        }
        Ok(self.store().read(|tx| tx.list_audit(filter, page))?)
    }
}

/// Cursors are ids; anything else is the caller's mistake, not an empty page.
pub(crate) fn uuid_cursor(cursor: &str) -> Result<(), CoreError> {
    uuid::Uuid::parse_str(cursor).map(|_| ()).map_err(|_| {
        CoreError::Invalid(onboard_domain::InvalidValue::new(
            "after",
            "not a cursor from a previous page",
        ))
    })
}
