use std::marker::PhantomData;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Integer, Text, Timestamp};
use onboard_domain::{
    BootstrapKey, BootstrapKeyFilter, BootstrapKeyId, BootstrapKeyRepository, Device,
    NewBootstrapKey, Page, PageRequest, RepoError, Serial,
};

use super::overfetch;
use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, DeviceRow, KeyRow, KeyUsesRow, NewKeyRow};
use crate::schema::bootstrap_key_uses as u;
use crate::schema::bootstrap_keys as k;
use crate::schema::devices;

const ENTITY: &str = "bootstrap key";

/// How many rows (shards) a key's uses are counted in at most
/// (`migrations/*/2026-12-06-000001_key_use_shards`, which splits the keys that
/// existed before the same way): concurrent registrations with one batch key each
/// take a use from a shard no other transaction holds, instead of queueing for
/// one counter's row lock until the holder's commit.
pub const KEY_USE_SHARDS: i32 = 16;

/// The shards of a key with `max_uses` uses: `(shard, its max_uses)`, as many as
/// the key has uses up to [`KEY_USE_SHARDS`], their max_uses adding up to the key's.
pub fn key_use_shards(max_uses: i32) -> Vec<(i32, i32)> {
    let n = max_uses.clamp(1, KEY_USE_SHARDS);
    let (q, r) = (max_uses / n, max_uses % n);
    (0..n).map(|i| (i, q + i32::from(i < r))).collect()
}

/// A key's uses: the sum of its shards' (`KeyRow::uses` selects it). A type of
/// its own rather than `diesel::dsl::sql`, whose queries diesel never keeps
/// prepared; the key is read by every registration.
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub(crate) struct KeyUses;

impl Expression for KeyUses {
    type SqlType = Integer;
}

// Wherever the key's own columns can be selected (the key's table, or a join
// with it).
impl<QS> AppearsOnTable<QS> for KeyUses where k::id: AppearsOnTable<QS> {}
impl<QS> SelectableExpression<QS> for KeyUses where k::id: SelectableExpression<QS> {}

impl<DB: Backend> QueryFragment<DB> for KeyUses {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "(SELECT CAST(COALESCE(SUM(s.uses), 0) AS INTEGER) FROM bootstrap_key_uses s \
             WHERE s.key_id = bootstrap_keys.id)",
        );
        Ok(())
    }
}

impl BootstrapKeyRepository for DbConnection {
    fn insert_bootstrap_keys(
        &mut self,
        keys: &[NewBootstrapKey],
    ) -> Result<Vec<BootstrapKey>, RepoError> {
        // Keys row by row (a batch is small and the caller's transaction makes it
        // all or nothing); their shards in multi-row statements.
        let mut shards = Vec::new();
        for key in keys {
            let row = NewKeyRow {
                id: key.id.to_string(),
                batch: key.batch.clone(),
                prefix: key.prefix.clone(),
                key_hash: key.key_hash.clone(),
                model_code: key.model.as_ref().map(|m| m.as_str().to_owned()),
                max_uses: key.max_uses,
                not_before: ts(key.not_before),
                expires_at: ts(key.expires_at),
                active: true,
                created_at: ts(key.created_at),
                updated_at: ts(key.created_at),
            };
            diesel::insert_into(k::table)
                .values(&row)
                .execute(self)
                .repo(ENTITY)?;
            shards.extend(
                key_use_shards(key.max_uses)
                    .into_iter()
                    .map(|(shard, max_uses)| KeyUsesRow {
                        key_id: row.id.clone(),
                        shard,
                        max_uses,
                        uses: 0,
                        active: true,
                    }),
            );
        }
        super::insert_batches!(self, u::table, shards).repo(ENTITY)?;
        keys.iter().map(|key| self.bootstrap_key(key.id)).collect()
    }

    fn bootstrap_key(&mut self, id: BootstrapKeyId) -> Result<BootstrapKey, RepoError> {
        k::table
            .find(id.to_string())
            .select(KeyRow::as_select())
            .first(self)
            .repo(ENTITY)?
            .into_domain()
    }

    fn bootstrap_key_by_prefix(&mut self, prefix: &str) -> Result<Option<BootstrapKey>, RepoError> {
        k::table
            .filter(k::prefix.eq(prefix))
            .select(KeyRow::as_select())
            .first(self)
            .optional()
            .repo(ENTITY)?
            .map(KeyRow::into_domain)
            .transpose()
    }

    fn bootstrap_key_and_device(
        &mut self,
        prefix: &str,
        serial: &Serial,
    ) -> Result<Option<(BootstrapKey, Option<Device>)>, RepoError> {
        let row: Option<(KeyRow, Option<DeviceRow>)> = k::table
            .left_join(devices::table.on(devices::serial.eq(serial.as_str())))
            .filter(k::prefix.eq(prefix))
            .select((KeyRow::as_select(), Option::<DeviceRow>::as_select()))
            .first(self)
            .optional()
            .repo(ENTITY)?;
        row.map(|(key, device)| {
            Ok((
                key.into_domain()?,
                device.map(DeviceRow::into_domain).transpose()?,
            ))
        })
        .transpose()
    }

    fn list_bootstrap_keys(
        &mut self,
        filter: &BootstrapKeyFilter,
        page: &PageRequest,
    ) -> Result<Page<BootstrapKey>, RepoError> {
        let mut query = k::table.select(KeyRow::as_select()).into_boxed();
        if let Some(batch) = &filter.batch {
            query = query.filter(k::batch.eq(batch.clone()));
        }
        if let Some(active) = filter.active {
            query = query.filter(k::active.eq(active));
        }
        if let Some(after) = page.after() {
            query = query.filter(k::id.gt(after.to_owned()));
        }
        let rows: Vec<KeyRow> = query
            .order(k::id.asc())
            .limit(overfetch(page.limit()))
            .load(self)
            .repo(ENTITY)?;
        let items = crate::rows::all(rows, KeyRow::into_domain)?;
        Ok(Page::from_overfetch(items, page.limit(), |k| {
            k.id.to_string()
        }))
    }

    fn set_bootstrap_key_active(
        &mut self,
        id: BootstrapKeyId,
        active: bool,
        now: DateTime<Utc>,
    ) -> Result<BootstrapKey, RepoError> {
        let n = diesel::update(k::table.find(id.to_string()))
            .set((k::active.eq(active), k::updated_at.eq(ts(now))))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        // The copy a use is checked against. On PostgreSQL this waits for the
        // registrations holding a shard to commit: once a deactivation returns, no
        // registration that commits later took a use of the key.
        diesel::update(u::table.filter(u::key_id.eq(id.to_string())))
            .set(u::active.eq(active))
            .execute(self)
            .repo(ENTITY)?;
        self.bootstrap_key(id)
    }

    fn delete_bootstrap_key(&mut self, id: BootstrapKeyId) -> Result<(), RepoError> {
        // Its shards go with it (ON DELETE CASCADE).
        let n = diesel::delete(k::table.find(id.to_string()))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        Ok(())
    }

    fn consume_bootstrap_key_use(
        &mut self,
        id: BootstrapKeyId,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        // One statement picks a shard with a use left and takes it: two callers
        // can never both take a shard's last use (PostgreSQL re-checks the
        // shard's row after locking it; SQLite has one writer at a time). On
        // PostgreSQL a caller first passes over the shards other transactions
        // hold (`SKIP LOCKED`); only when every shard left is held does it wait
        // for one, and then finds out whether its holder took the last use.
        let first = match self {
            DbConnection::Pg(c) => ConsumeUse::<SkipLocked>::new(id, now).execute(c),
            DbConnection::Sqlite(c) => ConsumeUse::<NoLock>::new(id, now).execute(c),
        };
        if first.repo(ENTITY)? == 1 {
            return Ok(true);
        }
        match self {
            DbConnection::Pg(c) => take_use_waiting(c, id, now),
            DbConnection::Sqlite(_) => Ok(false),
        }
    }
}

/// PostgreSQL, after `SKIP LOCKED` found no free shard: waits for one that has a
/// use left and takes it, or finds that its holder took the last one.
pub(super) fn take_use_waiting(
    pg: &mut PgConnection,
    id: BootstrapKeyId,
    now: DateTime<Utc>,
) -> Result<bool, RepoError> {
    let n = ConsumeUse::<Wait>::new(id, now).execute(pg).repo(ENTITY)?;
    Ok(n == 1)
}

/// Takes one use of a key from one of its shards, if the key is usable now.
/// Written out rather than built with `diesel::update`, which diesel prepares
/// anew on every call (a changeset may leave columns out, so it never keeps an
/// `UPDATE` prepared): this one runs for every registration, and its SQL is one
/// of three fixed texts (see [`LockClause`]). The key's validity is immutable, so
/// it is read from the key's row without locking it; `active` is checked on the
/// shard's copy, on the row this statement locks.
#[derive(QueryId)]
pub(super) struct ConsumeUse<L> {
    id: String,
    now: NaiveDateTime,
    lock: PhantomData<L>,
}

impl<L> ConsumeUse<L> {
    pub(super) fn new(id: BootstrapKeyId, now: DateTime<Utc>) -> Self {
        ConsumeUse {
            id: id.to_string(),
            now: ts(now),
            lock: PhantomData,
        }
    }
}

/// How [`ConsumeUse`] locks the shard it picks: a type each, so that diesel's
/// statement cache (keyed by the query's type) keeps each text prepared apart.
pub(super) trait LockClause {
    const SQL: &'static str;
}
/// PostgreSQL, first try: pass over the shards other transactions hold.
#[derive(QueryId)]
pub(super) struct SkipLocked;
/// PostgreSQL, when every shard with a use left is held: wait for one.
#[derive(QueryId)]
struct Wait;
/// SQLite: one writer at a time, nothing to lock.
#[derive(QueryId)]
struct NoLock;
impl LockClause for SkipLocked {
    const SQL: &'static str = " FOR UPDATE SKIP LOCKED";
}
impl LockClause for Wait {
    const SQL: &'static str = " FOR UPDATE";
}
impl LockClause for NoLock {
    const SQL: &'static str = "";
}

impl<DB, L: LockClause> QueryFragment<DB> for ConsumeUse<L>
where
    DB: Backend,
    String: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE bootstrap_key_uses SET uses = uses + 1 WHERE (key_id, shard) = \
             (SELECT s.key_id, s.shard FROM bootstrap_key_uses s WHERE s.key_id = ",
        );
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(
            " AND s.active AND s.uses < s.max_uses AND EXISTS (SELECT 1 FROM bootstrap_keys k \
             WHERE k.id = s.key_id AND k.not_before <= ",
        );
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(" AND k.expires_at > ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(") ORDER BY s.shard LIMIT 1");
        out.push_sql(L::SQL);
        out.push_sql(")");
        Ok(())
    }
}

impl<Conn, L> RunQueryDsl<Conn> for ConsumeUse<L> {}
