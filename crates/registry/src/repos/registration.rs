//! A new device's registration (`DeviceRepository::insert_registration`): on
//! PostgreSQL one statement takes the key's use and inserts the device, its
//! certificate and the audit event, where four would each be a round trip.

use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::BigInt;
use onboard_domain::{
    AuditRepository, BootstrapKeyRepository, Certificate, CertificateRepository, Device,
    DeviceRepository, NewRegistration, RepoError,
};

use super::certificates::certificate_row;
use super::devices::device_row;
use super::keys::{take_use_waiting, ConsumeUse, SkipLocked};
use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::AuditRow;
use crate::schema::{audit_events, certificates, devices};

pub(super) fn insert_registration(
    conn: &mut DbConnection,
    r: &NewRegistration<'_>,
) -> Result<Option<(Device, Certificate)>, RepoError> {
    let pg = match conn {
        DbConnection::Pg(c) => c,
        // One writer at a time and no round trips: the statements one by one,
        // the use last as on PostgreSQL, so that a taken serial is reported as
        // such even when the key has no use left (a retry of a registration
        // that took a single-use key's use is answered, not refused).
        DbConnection::Sqlite(_) => {
            let device = conn.insert_device(r.device)?;
            let certificate = conn.insert_first_certificate(r.certificate)?;
            conn.append_audit(r.audit)?;
            if !conn.consume_bootstrap_key_use(r.key, r.now)? {
                return Ok(None);
            }
            return Ok(Some((device, certificate)));
        }
    };
    let device = device_row(r.device);
    let certificate = certificate_row(r.certificate);
    let audit = AuditRow::from_domain(r.audit);
    let taken: i64 = TakeUseAndInsert {
        take: ConsumeUse::<SkipLocked>::new(r.key, r.now),
        device: diesel::insert_into(devices::table).values(&device),
        certificate: diesel::insert_into(certificates::table).values(&certificate),
        audit: diesel::insert_into(audit_events::table).values(&audit),
    }
    .get_result(pg)
    .repo("device")?;
    // Every shard with a use left was held by another transaction: wait for one.
    if taken == 0 && !take_use_waiting(pg, r.key, r.now)? {
        // The rows are written; the caller rolls back (see the port).
        return Ok(None);
    }
    Ok(Some((device.into_domain()?, certificate.into_domain()?)))
}

/// `WITH k AS (<take a use> RETURNING 1), d AS (<insert the device>),
/// c AS (<insert its certificate>), a AS (<insert the audit event>)
/// SELECT count(*) FROM k`: PostgreSQL runs every data-modifying part once and
/// checks the certificate's foreign key at the end of the statement, when the
/// device is in. Its SQL is fixed (every column bound), so diesel keeps it
/// prepared. Returns how many uses it took, 0 or 1.
#[derive(QueryId)]
struct TakeUseAndInsert<K, D, C, A> {
    take: K,
    device: D,
    certificate: C,
    audit: A,
}

impl<K, D, C, A> QueryFragment<Pg> for TakeUseAndInsert<K, D, C, A>
where
    K: QueryFragment<Pg>,
    D: QueryFragment<Pg>,
    C: QueryFragment<Pg>,
    A: QueryFragment<Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH k AS (");
        self.take.walk_ast(out.reborrow())?;
        out.push_sql(" RETURNING 1), d AS (");
        self.device.walk_ast(out.reborrow())?;
        out.push_sql("), c AS (");
        self.certificate.walk_ast(out.reborrow())?;
        out.push_sql("), a AS (");
        self.audit.walk_ast(out.reborrow())?;
        out.push_sql(") SELECT count(*) FROM k");
        Ok(())
    }
}

impl<K, D, C, A> Query for TakeUseAndInsert<K, D, C, A> {
    type SqlType = BigInt;
}

impl<K, D, C, A> RunQueryDsl<PgConnection> for TakeUseAndInsert<K, D, C, A> {}
