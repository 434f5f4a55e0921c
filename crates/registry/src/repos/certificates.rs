use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::query_builder::{QueryFragment, QueryId};
use onboard_domain::{
    CertSerial, Certificate, CertificateId, CertificateRepository, CertificateStatus, DeviceId,
    NewCertificate, RepoError, RevocationReason,
};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, utc, CertificateRow};
use crate::schema::certificates;

const ENTITY: &str = "certificate";

impl DbConnection {
    fn certificate(&mut self, id: CertificateId) -> Result<Certificate, RepoError> {
        certificates::table
            .find(id.to_string())
            .select(CertificateRow::as_select())
            .first(self)
            .repo(ENTITY)?
            .into_domain()
    }
}

pub(super) fn certificate_row(c: &NewCertificate) -> CertificateRow {
    CertificateRow {
        id: c.id.to_string(),
        device_id: c.device_id.to_string(),
        serial: c.serial.as_str().to_owned(),
        fingerprint: c.fingerprint.as_str().to_owned(),
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        key_algorithm: c.key_algorithm.as_str().to_owned(),
        not_before: ts(c.not_before),
        not_after: ts(c.not_after),
        status: CertificateStatus::Active.as_str().to_owned(),
        revoked_at: None,
        revocation_reason: None,
        pem: c.pem.clone(),
        created_at: ts(c.created_at),
        renewed_at: None,
    }
}

/// Sets `renewed_at` of each active certificate of a device to the creation time
/// of the newest strictly newer active certificate of the same device, or `NULL`
/// when there is none (migration `2026-12-05-000001_certificate_renewals`). Run
/// after every change of the device's active certificates, so the marks always
/// say what grouping the device's certificates would.
#[derive(QueryId)]
struct RefreshRenewals {
    device_id: String,
}

impl<DB> QueryFragment<DB> for RefreshRenewals
where
    DB: diesel::backend::Backend,
    String: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        out.push_sql(
            "UPDATE certificates SET renewed_at = (SELECT max(n.created_at) \
             FROM certificates n WHERE n.device_id = certificates.device_id \
             AND n.status = 'active' AND n.created_at > certificates.created_at) \
             WHERE status = 'active' AND device_id = ",
        );
        out.push_bind_param::<diesel::sql_types::Text, _>(&self.device_id)?;
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for RefreshRenewals {}

impl DbConnection {
    fn refresh_renewals(&mut self, device_id: String) -> Result<(), RepoError> {
        RefreshRenewals { device_id }.execute(self).repo(ENTITY)?;
        Ok(())
    }
}

impl CertificateRepository for DbConnection {
    fn insert_certificate(&mut self, c: &NewCertificate) -> Result<Certificate, RepoError> {
        let certificate = self.insert_first_certificate(c)?;
        self.refresh_renewals(c.device_id.to_string())?;
        Ok(certificate)
    }

    fn insert_first_certificate(&mut self, c: &NewCertificate) -> Result<Certificate, RepoError> {
        let row = certificate_row(c);
        diesel::insert_into(certificates::table)
            .values(&row)
            .execute(self)
            .repo(ENTITY)?;
        // The row as stored: no second round trip to read it back.
        row.into_domain()
    }

    fn insert_certificates(
        &mut self,
        list: &[NewCertificate],
    ) -> Result<Vec<Certificate>, RepoError> {
        let rows: Vec<CertificateRow> = list.iter().map(certificate_row).collect();
        super::insert_batches!(self, certificates::table, rows).repo(ENTITY)?;
        rows.into_iter().map(CertificateRow::into_domain).collect()
    }

    fn certificate_by_serial(
        &mut self,
        serial: &CertSerial,
    ) -> Result<Option<Certificate>, RepoError> {
        certificates::table
            .filter(certificates::serial.eq(serial.as_str()))
            .select(CertificateRow::as_select())
            .first(self)
            .optional()
            .repo(ENTITY)?
            .map(CertificateRow::into_domain)
            .transpose()
    }

    fn certificates_of_device(&mut self, device: DeviceId) -> Result<Vec<Certificate>, RepoError> {
        let rows: Vec<CertificateRow> = certificates::table
            .filter(certificates::device_id.eq(device.to_string()))
            .order(certificates::id.desc())
            .select(CertificateRow::as_select())
            .load(self)
            .repo(ENTITY)?;
        crate::rows::all(rows, CertificateRow::into_domain)
    }

    fn renewals_older_than(
        &mut self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<(DeviceId, CertificateId)>, RepoError> {
        // Only the certificates with a newer active one carry a mark, so this reads
        // the renewals in their grace period, not the fleet. Without `DISTINCT`:
        // SQLite would rather walk the device index than sort, and read it all.
        let devices: std::collections::BTreeSet<String> = certificates::table
            .filter(certificates::renewed_at.le(ts(cutoff)))
            .select(certificates::device_id)
            .load::<String>(self)
            .repo(ENTITY)?
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for device in devices {
            let id = DeviceId(crate::rows::uuid("device id", &device)?);
            let newest = self
                .certificates_of_device(id)?
                .into_iter()
                .filter(|c| c.status == CertificateStatus::Active)
                .max_by_key(|c| c.created_at);
            if let Some(c) = newest {
                out.push((id, c.id));
            }
        }
        Ok(out)
    }

    fn revoke_certificate(
        &mut self,
        id: CertificateId,
        at: DateTime<Utc>,
        reason: RevocationReason,
    ) -> Result<Certificate, RepoError> {
        let n = diesel::update(
            certificates::table
                .find(id.to_string())
                .filter(certificates::status.eq(CertificateStatus::Active.as_str())),
        )
        .set((
            certificates::status.eq(CertificateStatus::Revoked.as_str()),
            certificates::revoked_at.eq(Some(ts(at))),
            certificates::revocation_reason.eq(Some(reason.as_str())),
            certificates::renewed_at.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(self)
        .repo(ENTITY)?;
        let certificate = self.certificate(id)?;
        if n == 1 {
            self.refresh_renewals(certificate.device_id.to_string())?;
        }
        Ok(certificate)
    }

    fn delete_certificate(&mut self, id: CertificateId) -> Result<(), RepoError> {
        let device = self.certificate(id)?.device_id;
        let n = diesel::delete(certificates::table.find(id.to_string()))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        self.refresh_renewals(device.to_string())
    }

    fn revocation_count(&mut self) -> Result<i64, RepoError> {
        certificates::table
            .filter(certificates::status.eq(CertificateStatus::Revoked.as_str()))
            .count()
            .get_result(self)
            .repo(ENTITY)
    }

    fn revoked_certificates(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(CertSerial, DateTime<Utc>, RevocationReason)>, RepoError> {
        let rows: Vec<(String, Option<chrono::NaiveDateTime>, Option<String>)> =
            certificates::table
                .filter(certificates::status.eq(CertificateStatus::Revoked.as_str()))
                .filter(certificates::not_after.gt(ts(now)))
                .order(certificates::serial.asc())
                .select((
                    certificates::serial,
                    certificates::revoked_at,
                    certificates::revocation_reason,
                ))
                .load(self)
                .repo(ENTITY)?;
        rows.into_iter()
            .map(|(serial, at, reason)| {
                let serial = CertSerial::parse(&serial)
                    .map_err(|e| RepoError::Corrupt(format!("certificate serial: {e}")))?;
                let at = at.map(utc).ok_or_else(|| {
                    RepoError::Corrupt(format!("revoked certificate {serial} has no time"))
                })?;
                let reason = match reason {
                    Some(r) => r
                        .parse()
                        .map_err(|e| RepoError::Corrupt(format!("revocation reason: {e}")))?,
                    None => RevocationReason::Unspecified,
                };
                Ok((serial, at, reason))
            })
            .collect()
    }
}
