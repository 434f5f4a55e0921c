use diesel::prelude::*;
use onboard_domain::{
    AuditEvent, AuditFilter, AuditRepository, CrlRecord, CrlRepository, NewAuditEvent, Page,
    PageRequest, RepoError,
};

use super::overfetch;
use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, utc, AuditRow};
use crate::schema::{audit_events as a, crls};

impl AuditRepository for DbConnection {
    fn append_audit(&mut self, event: &NewAuditEvent) -> Result<(), RepoError> {
        diesel::insert_into(a::table)
            .values(&AuditRow::from_domain(event))
            .execute(self)
            .repo("audit event")?;
        Ok(())
    }

    fn append_audits(&mut self, events: &[NewAuditEvent]) -> Result<(), RepoError> {
        let rows: Vec<AuditRow> = events.iter().map(AuditRow::from_domain).collect();
        super::insert_batches!(self, a::table, rows).repo("audit event")?;
        Ok(())
    }

    fn list_audit(
        &mut self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, RepoError> {
        let mut query = a::table.select(AuditRow::as_select()).into_boxed();
        if let Some(device) = filter.device_id {
            query = query.filter(a::device_id.eq(device.to_string()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(a::action.eq(action.clone()));
        }
        if let Some(outcome) = filter.outcome {
            query = query.filter(a::outcome.eq(outcome.as_str()));
        }
        if let Some(since) = filter.since {
            query = query.filter(a::occurred_at.ge(ts(since)));
        }
        if let Some(until) = filter.until {
            query = query.filter(a::occurred_at.lt(ts(until)));
        }
        if let Some(after) = page.after() {
            query = query.filter(a::id.lt(after.to_owned()));
        }
        let rows: Vec<AuditRow> = query
            .order(a::id.desc())
            .limit(overfetch(page.limit()))
            .load(self)
            .repo("audit event")?;
        let items = crate::rows::all(rows, AuditRow::into_domain)?;
        Ok(Page::from_overfetch(items, page.limit(), |e| {
            e.id.to_string()
        }))
    }
}

impl CrlRepository for DbConnection {
    fn latest_crl(&mut self) -> Result<Option<CrlRecord>, RepoError> {
        let row: Option<(i64, chrono::NaiveDateTime, chrono::NaiveDateTime, Vec<u8>)> = crls::table
            .order(crls::number.desc())
            .select((
                crls::number,
                crls::this_update,
                crls::next_update,
                crls::der,
            ))
            .first(self)
            .optional()
            .repo("CRL")?;
        Ok(
            row.map(|(number, this_update, next_update, der)| CrlRecord {
                number,
                this_update: utc(this_update),
                next_update: utc(next_update),
                der,
            }),
        )
    }

    fn insert_crl(&mut self, crl: &CrlRecord) -> Result<(), RepoError> {
        if let Some(latest) = self.latest_crl()? {
            if crl.number <= latest.number {
                return Err(RepoError::Conflict {
                    entity: "CRL",
                    constraint: format!(
                        "number {} is not above the latest {}",
                        crl.number, latest.number
                    ),
                });
            }
        }
        diesel::insert_into(crls::table)
            .values((
                crls::number.eq(crl.number),
                crls::this_update.eq(ts(crl.this_update)),
                crls::next_update.eq(ts(crl.next_update)),
                crls::der.eq(&crl.der),
            ))
            .execute(self)
            .repo("CRL")?;
        Ok(())
    }
}
