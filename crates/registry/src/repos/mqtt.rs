use chrono::NaiveDateTime;
use diesel::prelude::*;
use onboard_domain::{DeviceId, MqttCredential, MqttCredentialRepository, RepoError};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, utc, uuid};
use crate::schema::mqtt_credentials as m;

const ENTITY: &str = "mqtt credential";

type Row = (String, String, String, NaiveDateTime, NaiveDateTime);

fn columns() -> (
    m::device_id,
    m::username,
    m::password_hash,
    m::created_at,
    m::updated_at,
) {
    (
        m::device_id,
        m::username,
        m::password_hash,
        m::created_at,
        m::updated_at,
    )
}

fn domain(r: Row) -> Result<MqttCredential, RepoError> {
    Ok(MqttCredential {
        device_id: DeviceId(uuid("device id", &r.0)?),
        username: r.1,
        password_hash: r.2,
        created_at: utc(r.3),
        updated_at: utc(r.4),
    })
}

impl MqttCredentialRepository for DbConnection {
    fn set_mqtt_credential(&mut self, c: &MqttCredential) -> Result<(), RepoError> {
        let device = c.device_id.to_string();
        diesel::delete(m::table.filter(m::device_id.eq(&device)))
            .execute(self)
            .repo(ENTITY)?;
        diesel::insert_into(m::table)
            .values((
                m::id.eq(&device),
                m::device_id.eq(&device),
                m::username.eq(&c.username),
                m::password_hash.eq(&c.password_hash),
                m::active.eq(true),
                m::created_at.eq(ts(c.created_at)),
                m::updated_at.eq(ts(c.updated_at)),
            ))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    fn mqtt_credential(&mut self, device: DeviceId) -> Result<Option<MqttCredential>, RepoError> {
        m::table
            .filter(m::device_id.eq(device.to_string()))
            .filter(m::active.eq(true))
            .select(columns())
            .first::<Row>(self)
            .optional()
            .repo(ENTITY)?
            .map(domain)
            .transpose()
    }

    fn mqtt_credentials(&mut self) -> Result<Vec<MqttCredential>, RepoError> {
        m::table
            .filter(m::active.eq(true))
            .select(columns())
            .load::<Row>(self)
            .repo(ENTITY)?
            .into_iter()
            .map(domain)
            .collect()
    }
}
