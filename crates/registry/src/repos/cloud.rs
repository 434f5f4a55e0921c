use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use onboard_domain::{CloudRecord, CloudRecordRepository, DeviceId, RepoError};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::ts;
use crate::schema::aws_resources as a;

const ENTITY: &str = "AWS resource record";

type Row = (String, String, String, String, String, String);

impl CloudRecordRepository for DbConnection {
    fn put_cloud_record(&mut self, r: &CloudRecord, now: DateTime<Utc>) -> Result<(), RepoError> {
        let now: NaiveDateTime = ts(now);
        let values = (
            a::thing_name.eq(&r.thing_name),
            a::thing_arn.eq(&r.thing_arn),
            a::certificate_id.eq(&r.certificate_id),
            a::certificate_arn.eq(&r.certificate_arn),
            a::certificate_fingerprint.eq(&r.certificate_fingerprint),
            a::updated_at.eq(now),
        );
        let id = r.device_id.to_string();
        let updated = diesel::update(a::table.find(&id))
            .set(values)
            .execute(self)
            .repo(ENTITY)?;
        if updated == 0 {
            diesel::insert_into(a::table)
                .values((a::device_id.eq(&id), values, a::created_at.eq(now)))
                .execute(self)
                .repo(ENTITY)?;
        }
        Ok(())
    }

    fn cloud_record(&mut self, device: DeviceId) -> Result<Option<CloudRecord>, RepoError> {
        let row: Option<Row> = a::table
            .find(device.to_string())
            .select((
                a::device_id,
                a::thing_name,
                a::thing_arn,
                a::certificate_id,
                a::certificate_arn,
                a::certificate_fingerprint,
            ))
            .first(self)
            .optional()
            .repo(ENTITY)?;
        Ok(row.map(
            |(_, thing_name, thing_arn, certificate_id, certificate_arn, fingerprint)| {
                CloudRecord {
                    device_id: device,
                    thing_name,
                    thing_arn,
                    certificate_id,
                    certificate_arn,
                    certificate_fingerprint: fingerprint,
                }
            },
        ))
    }

    fn delete_cloud_record(&mut self, device: DeviceId) -> Result<(), RepoError> {
        diesel::delete(a::table.find(device.to_string()))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }
}
