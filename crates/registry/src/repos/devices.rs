use chrono::{DateTime, Utc};
use diesel::prelude::*;
use onboard_domain::{
    Certificate, Device, DeviceFilter, DeviceId, DeviceRepository, DeviceStatus, DeviceUpdate,
    NewDevice, NewRegistration, Page, PageRequest, RepoError, Serial,
};

use super::{contains_pattern, lower, overfetch};
use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{json_text, ts, DeviceRow};
use crate::schema::{certificates, devices, mqtt_credentials, rotations};

const ENTITY: &str = "device";

#[derive(AsChangeset)]
#[diesel(table_name = devices)]
struct DeviceChanges {
    name: Option<String>,
    location: Option<String>,
    firmware_version: Option<String>,
    config: Option<String>,
    metadata: Option<String>,
    status: Option<String>,
    activated_at: Option<chrono::NaiveDateTime>,
    last_seen_at: Option<chrono::NaiveDateTime>,
    decommissioned_at: Option<chrono::NaiveDateTime>,
    updated_at: chrono::NaiveDateTime,
}

fn changes_of(u: &DeviceUpdate, now: DateTime<Utc>) -> DeviceChanges {
    DeviceChanges {
        name: u.name.clone(),
        location: u.location.clone(),
        firmware_version: u.firmware_version.clone(),
        config: u.config.as_ref().map(json_text),
        metadata: u.metadata.as_ref().map(json_text),
        status: u.status.map(|s| s.as_str().to_owned()),
        activated_at: u.activated_at.map(ts),
        last_seen_at: u.last_seen_at.map(ts),
        decommissioned_at: u.decommissioned_at.map(ts),
        updated_at: ts(now),
    }
}

pub(super) fn device_row(d: &NewDevice) -> DeviceRow {
    DeviceRow {
        id: d.id.to_string(),
        serial: d.serial.as_str().to_owned(),
        name: d.name.clone(),
        model_code: d.model.as_ref().map(|m| m.as_str().to_owned()),
        location: d.location.clone(),
        firmware_version: d.firmware_version.clone(),
        status: onboard_domain::DeviceStatus::Registered.as_str().to_owned(),
        bootstrap_key_id: d.bootstrap_key_id.map(|k| k.to_string()),
        batch: d.batch.clone(),
        config: json_text(&d.config),
        metadata: json_text(&d.metadata),
        created_at: ts(d.created_at),
        updated_at: ts(d.created_at),
        activated_at: None,
        last_seen_at: None,
        decommissioned_at: None,
        credential: d.credential.as_str().to_owned(),
    }
}

impl DeviceRepository for DbConnection {
    fn count_devices_by_status(&mut self) -> Result<Vec<(String, i64)>, RepoError> {
        devices::table
            .group_by(devices::status)
            .select((devices::status, diesel::dsl::count_star()))
            .load::<(String, i64)>(self)
            .repo(ENTITY)
    }

    fn count_rotations_by_state(&mut self) -> Result<Vec<(String, i64)>, RepoError> {
        rotations::table
            .group_by(rotations::state)
            .select((rotations::state, diesel::dsl::count_star()))
            .load::<(String, i64)>(self)
            .repo("rotation")
    }

    fn insert_device(&mut self, d: &NewDevice) -> Result<Device, RepoError> {
        let row = device_row(d);
        diesel::insert_into(devices::table)
            .values(&row)
            .execute(self)
            .repo(ENTITY)?;
        // The row as stored (every column is set here, timestamps already at the
        // database's microseconds): no second round trip to read it back.
        row.into_domain()
    }

    fn insert_registration(
        &mut self,
        registration: &NewRegistration<'_>,
    ) -> Result<Option<(Device, Certificate)>, RepoError> {
        super::registration::insert_registration(self, registration)
    }

    fn insert_devices(&mut self, list: &[NewDevice]) -> Result<Vec<Device>, RepoError> {
        let rows: Vec<DeviceRow> = list.iter().map(device_row).collect();
        super::insert_batches!(self, devices::table, rows).repo(ENTITY)?;
        rows.into_iter().map(DeviceRow::into_domain).collect()
    }

    fn existing_serials(&mut self, serials: &[Serial]) -> Result<Vec<Serial>, RepoError> {
        let mut found = Vec::new();
        for part in serials.chunks(super::ROWS_PER_STATEMENT) {
            let texts: Vec<&str> = part.iter().map(Serial::as_str).collect();
            let rows: Vec<String> = devices::table
                .filter(devices::serial.eq_any(texts))
                .select(devices::serial)
                .load(self)
                .repo(ENTITY)?;
            for text in rows {
                found.push(Serial::parse(&text).map_err(|e| crate::rows::corrupt("serial", e))?);
            }
        }
        Ok(found)
    }

    fn device(&mut self, id: DeviceId) -> Result<Device, RepoError> {
        devices::table
            .find(id.to_string())
            .select(DeviceRow::as_select())
            .first(self)
            .repo(ENTITY)?
            .into_domain()
    }

    fn device_by_serial(&mut self, serial: &Serial) -> Result<Option<Device>, RepoError> {
        devices::table
            .filter(devices::serial.eq(serial.as_str()))
            .select(DeviceRow::as_select())
            .first(self)
            .optional()
            .repo(ENTITY)?
            .map(DeviceRow::into_domain)
            .transpose()
    }

    fn list_devices(
        &mut self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<Device>, RepoError> {
        let mut query = devices::table.select(DeviceRow::as_select()).into_boxed();
        if let Some(status) = filter.status {
            query = query.filter(devices::status.eq(status.as_str()));
        }
        if let Some(model) = &filter.model {
            query = query.filter(devices::model_code.eq(model.as_str().to_owned()));
        }
        if let Some(batch) = &filter.batch {
            query = query.filter(devices::batch.eq(batch.clone()));
        }
        if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
            let pattern = contains_pattern(q);
            query = query.filter(
                lower(devices::serial)
                    .like(pattern.clone())
                    .escape('\\')
                    .or(lower(devices::name).like(pattern.clone()).escape('\\'))
                    .or(lower(devices::location).like(pattern).escape('\\')),
            );
        }
        if let Some(after) = page.after() {
            query = query.filter(devices::id.gt(after.to_owned()));
        }
        let rows: Vec<DeviceRow> = query
            .order(devices::id.asc())
            .limit(overfetch(page.limit()))
            .load(self)
            .repo(ENTITY)?;
        let items = crate::rows::all(rows, DeviceRow::into_domain)?;
        Ok(Page::from_overfetch(items, page.limit(), |d| {
            d.id.to_string()
        }))
    }

    fn update_device(
        &mut self,
        id: DeviceId,
        u: &DeviceUpdate,
        now: DateTime<Utc>,
    ) -> Result<Device, RepoError> {
        let n = diesel::update(devices::table.find(id.to_string()))
            .set(&changes_of(u, now))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        self.device(id)
    }

    fn update_device_if(
        &mut self,
        id: DeviceId,
        expected: &[DeviceStatus],
        u: &DeviceUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Device>, RepoError> {
        let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        let n = diesel::update(
            devices::table
                .find(id.to_string())
                .filter(devices::status.eq_any(expected)),
        )
        .set(&changes_of(u, now))
        .execute(self)
        .repo(ENTITY)?;
        if n == 0 {
            // Tell "no such device" from "another status" (NotFound from here).
            self.device(id)?;
            return Ok(None);
        }
        self.device(id).map(Some)
    }

    fn delete_device(&mut self, id: DeviceId) -> Result<(), RepoError> {
        // Certificates go by ON DELETE CASCADE too; deleting them first keeps this
        // correct even on a SQLite connection opened without foreign keys.
        diesel::delete(certificates::table.filter(certificates::device_id.eq(id.to_string())))
            .execute(self)
            .repo("certificate")?;
        diesel::delete(
            mqtt_credentials::table.filter(mqtt_credentials::device_id.eq(id.to_string())),
        )
        .execute(self)
        .repo("mqtt credential")?;
        let n = diesel::delete(devices::table.find(id.to_string()))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        Ok(())
    }
}
