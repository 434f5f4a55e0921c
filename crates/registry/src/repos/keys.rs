use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Text, Timestamp};
use onboard_domain::{
    BootstrapKey, BootstrapKeyFilter, BootstrapKeyId, BootstrapKeyRepository, NewBootstrapKey,
    Page, PageRequest, RepoError,
};

use super::overfetch;
use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, KeyRow};
use crate::schema::bootstrap_keys as k;

const ENTITY: &str = "bootstrap key";

impl BootstrapKeyRepository for DbConnection {
    fn insert_bootstrap_keys(
        &mut self,
        keys: &[NewBootstrapKey],
    ) -> Result<Vec<BootstrapKey>, RepoError> {
        // Row by row: the multi-backend connection has no portable batch insert, and
        // the caller's transaction makes the batch all or nothing anyway.
        for key in keys {
            let row = KeyRow {
                id: key.id.to_string(),
                batch: key.batch.clone(),
                prefix: key.prefix.clone(),
                key_hash: key.key_hash.clone(),
                model_code: key.model.as_ref().map(|m| m.as_str().to_owned()),
                max_uses: key.max_uses,
                uses: 0,
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
        }
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
        self.bootstrap_key(id)
    }

    fn delete_bootstrap_key(&mut self, id: BootstrapKeyId) -> Result<(), RepoError> {
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
        // One statement checks and takes the use: two callers can never both take
        // the last one (PostgreSQL re-checks the WHERE after the row lock; SQLite
        // has one writer at a time).
        let n = ConsumeUse {
            id: id.to_string(),
            now: ts(now),
        }
        .execute(self)
        .repo(ENTITY)?;
        Ok(n == 1)
    }
}

/// Takes one use of a key, if it has one and is usable now. Written out rather
/// than built with `diesel::update`, which diesel prepares anew on every call (a
/// changeset may leave columns out, so it never keeps an `UPDATE` prepared): this
/// one runs for every registration, and its SQL never changes.
#[derive(QueryId)]
struct ConsumeUse {
    id: String,
    now: NaiveDateTime,
}

impl<DB> QueryFragment<DB> for ConsumeUse
where
    DB: Backend,
    String: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE bootstrap_keys SET uses = uses + 1, updated_at = ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(" AND active AND uses < max_uses AND not_before <= ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(" AND expires_at > ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for ConsumeUse {}
