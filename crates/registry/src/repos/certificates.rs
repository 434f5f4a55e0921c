use chrono::{DateTime, Utc};
use diesel::prelude::*;
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

fn certificate_row(c: &NewCertificate) -> CertificateRow {
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
    }
}

impl CertificateRepository for DbConnection {
    fn insert_certificate(&mut self, c: &NewCertificate) -> Result<Certificate, RepoError> {
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
        use diesel::dsl::{count_star, max};
        let active = CertificateStatus::Active.as_str();
        let groups: Vec<(String, Option<chrono::NaiveDateTime>)> = certificates::table
            .filter(certificates::status.eq(active))
            .group_by(certificates::device_id)
            .having(count_star().gt(1))
            .select((certificates::device_id, max(certificates::created_at)))
            .load(self)
            .repo(ENTITY)?;
        let mut out = Vec::new();
        for (device, newest) in groups {
            if newest.is_none_or(|t| t > ts(cutoff)) {
                continue;
            }
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
        diesel::update(
            certificates::table
                .find(id.to_string())
                .filter(certificates::status.eq(CertificateStatus::Active.as_str())),
        )
        .set((
            certificates::status.eq(CertificateStatus::Revoked.as_str()),
            certificates::revoked_at.eq(Some(ts(at))),
            certificates::revocation_reason.eq(Some(reason.as_str())),
        ))
        .execute(self)
        .repo(ENTITY)?;
        self.certificate(id)
    }

    fn delete_certificate(&mut self, id: CertificateId) -> Result<(), RepoError> {
        let n = diesel::delete(certificates::table.find(id.to_string()))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        Ok(())
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
