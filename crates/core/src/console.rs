//! What the web admin console needs beyond the admin API's use cases: its sessions
//! (kept in the registry so replicas share them, by hash only) and the overview's
//! counts over the last day.

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{AuditOutcome, AuditRepository, Store};
use onboard_pki::secrets::{constant_time_eq, random_token, sha256_hex};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use onboard_domain::SecretString;

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The admin token's name; actions are audited as `admin:<name>`.
    pub token_name: String,
    pub created_at: DateTime<Utc>,
}

/// A session just created: its id goes into the cookie and nowhere else.
#[derive(Debug)]
pub struct NewConsoleSession {
    pub id: SecretString,
    pub session: ConsoleSession,
}

/// The console's overview counts for the day before `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayActivity {
    pub since: DateTime<Utc>,
    pub registrations: i64,
    /// Failed registrations by reason, most frequent first.
    pub failures: Vec<(String, i64)>,
}

/// The hash a session is stored under.
fn session_hash(id: &str) -> String {
    sha256_hex(format!("console-session:{id}").as_bytes())
}

/// The CSRF token of a session: derived from its id, so no replica has to store
/// it, and useless without the cookie it comes from.
pub fn csrf_token(session_id: &str) -> String {
    sha256_hex(format!("console-csrf:{session_id}").as_bytes())
}

/// Whether `presented` is the CSRF token of the session `session_id` (compared in
/// constant time).
pub fn csrf_matches(session_id: &str, presented: &str) -> bool {
    constant_time_eq(csrf_token(session_id).as_bytes(), presented.as_bytes())
}

impl Onboard {
    fn console_cutoffs(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let c = &self.settings().console;
        (
            now - Duration::hours(i64::from(c.absolute_timeout_hours)),
            now - Duration::minutes(i64::from(c.idle_timeout_minutes)),
        )
    }

    /// Starts a session for an operator whose admin token was checked; audited as
    /// `console.sign_in`.
    pub fn console_sign_in(
        &self,
        actor: &Actor,
        token_name: &str,
    ) -> Result<NewConsoleSession, CoreError> {
        let id = random_token()
            .map_err(|e| CoreError::Internal(format!("the random generator failed: {e}")))?;
        let now = self.clock().now();
        let hash = session_hash(&id);
        let (created_after, seen_after) = self.console_cutoffs(now);
        let audit = Audit::new(
            self.clock(),
            actor,
            "console.sign_in",
            AuditOutcome::Success,
        );
        self.store().transaction(|tx| -> Result<(), CoreError> {
            tx.purge_console_sessions(created_after, seen_after)?;
            tx.insert_console_session(&hash, token_name, now)?;
            tx.append_audit(audit.event())?;
            Ok(())
        })?;
        Ok(NewConsoleSession {
            id: SecretString::new(id),
            session: ConsoleSession {
                token_name: token_name.to_owned(),
                created_at: now,
            },
        })
    }

    /// The live session with this id, marked used now; `None` when it is unknown,
    /// ended or expired (idle or absolute timeout, `[console]`).
    pub fn console_session(&self, id: &str) -> Result<Option<ConsoleSession>, CoreError> {
        let now = self.clock().now();
        let (created_after, seen_after) = self.console_cutoffs(now);
        let hash = session_hash(id);
        let row = self
            .store()
            .transaction(|tx| tx.touch_console_session(&hash, now, created_after, seen_after))?;
        Ok(row.map(|r| ConsoleSession {
            token_name: r.token_name,
            created_at: r.created_at,
        }))
    }

    /// Ends a session; audited as `console.sign_out` when there was one.
    pub fn console_sign_out(&self, actor: &Actor, id: &str) -> Result<bool, CoreError> {
        let hash = session_hash(id);
        let audit = Audit::new(
            self.clock(),
            actor,
            "console.sign_out",
            AuditOutcome::Success,
        );
        self.store().transaction(|tx| -> Result<bool, CoreError> {
            let ended = tx.delete_console_session(&hash)?;
            if ended {
                tx.append_audit(audit.event())?;
            }
            Ok(ended)
        })
    }

    /// Registrations and failed registrations by reason over the last 24 hours.
    pub fn registrations_last_day(&self) -> Result<DayActivity, CoreError> {
        let since = self.clock().now() - Duration::hours(24);
        let rows = self
            .store()
            .read(|tx| tx.count_audit_since("device.register", since))?;
        let mut registrations = 0;
        let mut failures = Vec::new();
        for (outcome, reason, n) in rows {
            if outcome == AuditOutcome::Success.as_str() {
                registrations += n;
            } else {
                failures.push((reason.unwrap_or_else(|| "unspecified".into()), n));
            }
        }
        Ok(DayActivity {
            since,
            registrations,
            failures,
        })
    }
}
