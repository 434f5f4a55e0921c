use chrono::{DateTime, Utc};
use diesel::prelude::*;
use onboard_domain::{CredentialBundleRepository, NewCredentialBundle, RepoError};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::ts;
use crate::schema::credential_bundles as b;

const ENTITY: &str = "credential bundle";

impl CredentialBundleRepository for DbConnection {
    fn insert_bundle(&mut self, bundle: &NewCredentialBundle) -> Result<(), RepoError> {
        diesel::insert_into(b::table)
            .values((
                b::id.eq(bundle.id.to_string()),
                b::device_id.eq(bundle.device_id.to_string()),
                b::token_hash.eq(&bundle.token_hash),
                b::content.eq(Some(&bundle.content)),
                b::expires_at.eq(ts(bundle.expires_at)),
                b::created_at.eq(ts(bundle.created_at)),
            ))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    fn take_bundle(
        &mut self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let now = ts(now);
        let available = b::table
            .filter(b::token_hash.eq(token_hash))
            .filter(b::downloaded_at.is_null())
            .filter(b::expires_at.gt(now))
            .filter(b::content.is_not_null());
        let content: Option<Option<Vec<u8>>> = available
            .select(b::content)
            .first(self)
            .optional()
            .repo(ENTITY)?;
        let Some(Some(content)) = content else {
            return Ok(None);
        };
        // The same conditions again in the update: of two concurrent takers only the
        // one whose update changes the row gets the content.
        let taken = diesel::update(available)
            .set((
                b::downloaded_at.eq(Some(now)),
                b::content.eq(None::<Vec<u8>>),
            ))
            .execute(self)
            .repo(ENTITY)?;
        Ok((taken == 1).then_some(content))
    }

    fn purge_expired_bundles(&mut self, now: DateTime<Utc>) -> Result<usize, RepoError> {
        diesel::update(
            b::table
                .filter(b::expires_at.le(ts(now)))
                .filter(b::content.is_not_null()),
        )
        .set(b::content.eq(None::<Vec<u8>>))
        .execute(self)
        .repo(ENTITY)
    }
}
