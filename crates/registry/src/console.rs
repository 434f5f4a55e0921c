//! Web console sessions (`console_sessions`): the rows behind the console's
//! session cookie, kept in the database so every replica sees the same sessions.
//! Rows are keyed by a hash of the session id; the id itself is never stored.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use onboard_domain::RepoError;

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, utc};
use crate::schema::audit_events as a;
use crate::schema::console_sessions as s;

const ENTITY: &str = "console session";

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSessionRow {
    pub token_name: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl DbConnection {
    pub fn insert_console_session(
        &mut self,
        id_hash: &str,
        token_name: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        diesel::insert_into(s::table)
            .values((
                s::id_hash.eq(id_hash),
                s::token_name.eq(token_name),
                s::created_at.eq(ts(now)),
                s::last_seen_at.eq(ts(now)),
            ))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    /// The session if it was created after `created_after` and last used after
    /// `seen_after`; marks it used at `now`. An expired session is deleted.
    pub fn touch_console_session(
        &mut self,
        id_hash: &str,
        now: DateTime<Utc>,
        created_after: DateTime<Utc>,
        seen_after: DateTime<Utc>,
    ) -> Result<Option<ConsoleSessionRow>, RepoError> {
        let found: Option<(String, chrono::NaiveDateTime, chrono::NaiveDateTime)> = s::table
            .filter(s::id_hash.eq(id_hash))
            .select((s::token_name, s::created_at, s::last_seen_at))
            .first(self)
            .optional()
            .repo(ENTITY)?;
        let Some((token_name, created_at, last_seen_at)) = found else {
            return Ok(None);
        };
        let (created_at, last_seen_at) = (utc(created_at), utc(last_seen_at));
        if created_at <= created_after || last_seen_at <= seen_after {
            self.delete_console_session(id_hash)?;
            return Ok(None);
        }
        diesel::update(s::table.filter(s::id_hash.eq(id_hash)))
            .set(s::last_seen_at.eq(ts(now)))
            .execute(self)
            .repo(ENTITY)?;
        Ok(Some(ConsoleSessionRow {
            token_name,
            created_at,
            last_seen_at: now,
        }))
    }

    pub fn delete_console_session(&mut self, id_hash: &str) -> Result<bool, RepoError> {
        let n = diesel::delete(s::table.filter(s::id_hash.eq(id_hash)))
            .execute(self)
            .repo(ENTITY)?;
        Ok(n > 0)
    }

    /// Deletes every session that has expired either way; returns how many.
    pub fn purge_console_sessions(
        &mut self,
        created_after: DateTime<Utc>,
        seen_after: DateTime<Utc>,
    ) -> Result<usize, RepoError> {
        diesel::delete(
            s::table.filter(
                s::created_at
                    .le(ts(created_after))
                    .or(s::last_seen_at.le(ts(seen_after))),
            ),
        )
        .execute(self)
        .repo(ENTITY)
    }

    /// Audit events of `action` at or after `since`, counted by outcome and reason
    /// (`None` for events without a reason), most frequent first.
    pub fn count_audit_since(
        &mut self,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, Option<String>, i64)>, RepoError> {
        let mut rows: Vec<(String, Option<String>, i64)> = a::table
            .filter(a::action.eq(action))
            .filter(a::occurred_at.ge(ts(since)))
            .group_by((a::outcome, a::reason))
            .select((a::outcome, a::reason, diesel::dsl::count_star()))
            .load(self)
            .repo("audit event")?;
        rows.sort_by(|x, y| y.2.cmp(&x.2).then_with(|| x.1.cmp(&y.1)));
        Ok(rows)
    }
}
