use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use onboard_domain::{
    CertificateId, CredentialKind, DeviceId, DeviceStatus, FleetGeneration, RepoError, Rotation,
    RotationRepository, RotationState,
};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, utc, uuid};
use crate::schema::{audit_events as a, devices as d, rotation_schedule as s, rotations as r};

const ENTITY: &str = "rotation";
/// The one schedule there is (the table allows more later).
const SCHEDULE: &str = "fleet";

type Row = (
    String,
    String,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    i32,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    NaiveDateTime,
    i64,
    Option<NaiveDateTime>,
);

#[allow(clippy::type_complexity)]
fn columns() -> (
    r::device_id,
    r::state,
    r::queued_at,
    r::started_at,
    r::deadline_at,
    r::completed_at,
    r::attempts,
    r::old_secret_encrypted,
    r::new_certificate_id,
    r::last_error,
    r::updated_at,
    r::generation,
    r::notified_at,
) {
    (
        r::device_id,
        r::state,
        r::queued_at,
        r::started_at,
        r::deadline_at,
        r::completed_at,
        r::attempts,
        r::old_secret_encrypted,
        r::new_certificate_id,
        r::last_error,
        r::updated_at,
        r::generation,
        r::notified_at,
    )
}

fn domain(row: Row) -> Result<Rotation, RepoError> {
    Ok(Rotation {
        device_id: DeviceId(uuid("device id", &row.0)?),
        state: row
            .1
            .parse()
            .map_err(|e| RepoError::Corrupt(format!("rotation state: {e}")))?,
        queued_at: row.2.map(utc),
        started_at: row.3.map(utc),
        deadline_at: row.4.map(utc),
        completed_at: row.5.map(utc),
        attempts: row.6,
        old_secret_encrypted: row.7,
        new_certificate_id: row
            .8
            .map(|c| uuid("certificate id", &c).map(CertificateId))
            .transpose()?,
        last_error: row.9,
        updated_at: utc(row.10),
        generation: row.11,
        notified_at: row.12.map(utc),
    })
}

fn in_service() -> [&'static str; 2] {
    [
        DeviceStatus::Registered.as_str(),
        DeviceStatus::Active.as_str(),
    ]
}

impl RotationRepository for DbConnection {
    fn rotation(&mut self, device: DeviceId) -> Result<Option<Rotation>, RepoError> {
        r::table
            .filter(r::device_id.eq(device.to_string()))
            .select(columns())
            .first::<Row>(self)
            .optional()
            .repo(ENTITY)?
            .map(domain)
            .transpose()
    }

    fn put_rotation(&mut self, x: &Rotation) -> Result<(), RepoError> {
        let device = x.device_id.to_string();
        diesel::delete(r::table.filter(r::device_id.eq(&device)))
            .execute(self)
            .repo(ENTITY)?;
        diesel::insert_into(r::table)
            .values((
                r::device_id.eq(&device),
                r::state.eq(x.state.as_str()),
                r::queued_at.eq(x.queued_at.map(ts)),
                r::started_at.eq(x.started_at.map(ts)),
                r::deadline_at.eq(x.deadline_at.map(ts)),
                r::completed_at.eq(x.completed_at.map(ts)),
                r::attempts.eq(x.attempts),
                r::old_secret_encrypted.eq(x.old_secret_encrypted.as_deref()),
                r::new_certificate_id.eq(x.new_certificate_id.map(|c| c.to_string())),
                r::last_error.eq(x.last_error.as_deref()),
                r::updated_at.eq(ts(x.updated_at)),
                r::generation.eq(x.generation),
                r::notified_at.eq(x.notified_at.map(ts)),
            ))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    fn delete_rotation(&mut self, device: DeviceId) -> Result<(), RepoError> {
        diesel::delete(r::table.filter(r::device_id.eq(device.to_string())))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    fn rotations_in_state(
        &mut self,
        state: RotationState,
        limit: i64,
    ) -> Result<Vec<Rotation>, RepoError> {
        r::table
            .filter(r::state.eq(state.as_str()))
            .order((r::queued_at.asc(), r::device_id.asc()))
            .limit(limit)
            .select(columns())
            .load::<Row>(self)
            .repo(ENTITY)?
            .into_iter()
            .map(domain)
            .collect()
    }

    fn pending_past_deadline(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Rotation>, RepoError> {
        r::table
            .filter(r::state.eq(RotationState::Pending.as_str()))
            .filter(r::deadline_at.le(ts(now)))
            .order((r::deadline_at.asc(), r::device_id.asc()))
            .limit(limit)
            .select(columns())
            .load::<Row>(self)
            .repo(ENTITY)?
            .into_iter()
            .map(domain)
            .collect()
    }

    fn pending_unnotified(&mut self, limit: i64) -> Result<Vec<Rotation>, RepoError> {
        r::table
            .filter(r::state.eq(RotationState::Pending.as_str()))
            .filter(r::notified_at.is_null())
            .order((r::started_at.asc(), r::device_id.asc()))
            .limit(limit)
            .select(columns())
            .load::<Row>(self)
            .repo(ENTITY)?
            .into_iter()
            .map(domain)
            .collect()
    }

    fn mark_rotation_notified(
        &mut self,
        device: DeviceId,
        started_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let n = diesel::update(
            r::table
                .filter(r::device_id.eq(device.to_string()))
                .filter(r::state.eq(RotationState::Pending.as_str()))
                .filter(r::started_at.eq(ts(started_at)))
                .filter(r::notified_at.is_null()),
        )
        .set((r::notified_at.eq(Some(ts(at))), r::updated_at.eq(ts(at))))
        .execute(self)
        .repo(ENTITY)?;
        Ok(n == 1)
    }

    fn count_rotations_in_state(&mut self, state: RotationState) -> Result<i64, RepoError> {
        r::table
            .filter(r::state.eq(state.as_str()))
            .count()
            .get_result(self)
            .repo(ENTITY)
    }

    fn advance_fleet_generation(
        &mut self,
        due_at: DateTime<Utc>,
    ) -> Result<FleetGeneration, RepoError> {
        let current = self.fleet_generation()?;
        let next = current.generation + 1;
        let n = diesel::update(s::table.filter(s::name.eq(SCHEDULE)))
            .set((
                s::generation.eq(next),
                s::generation_at.eq(Some(ts(due_at))),
                s::cursor_device_id.eq(None::<String>),
                s::updated_at.eq(ts(due_at)),
            ))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            diesel::insert_into(s::table)
                .values((
                    s::name.eq(SCHEDULE),
                    s::last_run_at.eq(ts(due_at)),
                    s::updated_at.eq(ts(due_at)),
                    s::generation.eq(next),
                    s::generation_at.eq(Some(ts(due_at))),
                ))
                .execute(self)
                .repo(ENTITY)?;
        }
        Ok(FleetGeneration {
            generation: next,
            due_at: Some(due_at),
            cursor: None,
        })
    }

    fn fleet_generation(&mut self) -> Result<FleetGeneration, RepoError> {
        let row = s::table
            .filter(s::name.eq(SCHEDULE))
            .select((s::generation, s::generation_at, s::cursor_device_id))
            .first::<(i64, Option<NaiveDateTime>, Option<String>)>(self)
            .optional()
            .repo(ENTITY)?;
        Ok(match row {
            Some((generation, at, cursor)) => FleetGeneration {
                generation,
                due_at: at.map(utc),
                cursor,
            },
            None => FleetGeneration {
                generation: 0,
                due_at: None,
                cursor: None,
            },
        })
    }

    fn set_fleet_cursor(&mut self, device: DeviceId) -> Result<(), RepoError> {
        diesel::update(s::table.filter(s::name.eq(SCHEDULE)))
            .set(s::cursor_device_id.eq(Some(device.to_string())))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    fn fleet_queued(
        &mut self,
        generation: &FleetGeneration,
        credential: CredentialKind,
        device: Option<DeviceId>,
        limit: i64,
    ) -> Result<Vec<DeviceId>, RepoError> {
        let Some(due) = generation.due_at else {
            return Ok(Vec::new());
        };
        let mut query = d::table
            .left_join(r::table)
            .filter(d::status.eq_any(in_service()))
            .filter(d::credential.eq(credential.as_str()))
            .filter(d::created_at.le(ts(due)))
            .filter(
                r::device_id.nullable().is_null().or(r::state
                    .eq(RotationState::Ok.as_str())
                    .and(r::generation.lt(generation.generation))
                    .assume_not_null()),
            )
            .select(d::id)
            .order(d::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(cursor) = &generation.cursor {
            query = query.filter(d::id.gt(cursor.clone()));
        }
        if let Some(id) = device {
            query = query.filter(d::id.eq(id.to_string()));
        }
        query
            .load::<String>(self)
            .repo(ENTITY)?
            .iter()
            .map(|id| uuid("device id", id).map(DeviceId))
            .collect()
    }

    fn count_fleet_queued(
        &mut self,
        generation: &FleetGeneration,
        credential: CredentialKind,
    ) -> Result<i64, RepoError> {
        count_fleet(self, generation, credential, false)
    }

    fn count_fleet_queued_records(
        &mut self,
        generation: &FleetGeneration,
        credential: CredentialKind,
    ) -> Result<i64, RepoError> {
        count_fleet(self, generation, credential, true)
    }

    fn last_scheduled_run(&mut self) -> Result<Option<DateTime<Utc>>, RepoError> {
        Ok(s::table
            .filter(s::name.eq(SCHEDULE))
            .select(s::last_run_at)
            .first::<NaiveDateTime>(self)
            .optional()
            .repo(ENTITY)?
            .map(utc))
    }

    fn set_last_scheduled_run(&mut self, at: DateTime<Utc>) -> Result<(), RepoError> {
        let n = diesel::update(s::table.filter(s::name.eq(SCHEDULE)))
            .set((s::last_run_at.eq(ts(at)), s::updated_at.eq(ts(at))))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            diesel::insert_into(s::table)
                .values((
                    s::name.eq(SCHEDULE),
                    s::last_run_at.eq(ts(at)),
                    s::updated_at.eq(ts(at)),
                ))
                .execute(self)
                .repo(ENTITY)?;
        }
        Ok(())
    }

    fn count_audit_actions(&mut self, actions: &[&str]) -> Result<Vec<(String, i64)>, RepoError> {
        a::table
            .filter(a::action.eq_any(actions))
            .group_by(a::action)
            .select((a::action, diesel::dsl::count_star()))
            .load::<(String, i64)>(self)
            .repo("audit event")
    }
}

fn count_fleet(
    conn: &mut DbConnection,
    generation: &FleetGeneration,
    credential: CredentialKind,
    records_only: bool,
) -> Result<i64, RepoError> {
    let Some(due) = generation.due_at else {
        return Ok(0);
    };
    let mut query = d::table
        .left_join(r::table)
        .filter(d::status.eq_any(in_service()))
        .filter(d::credential.eq(credential.as_str()))
        .filter(d::created_at.le(ts(due)))
        .filter(
            r::device_id.nullable().is_null().or(r::state
                .eq(RotationState::Ok.as_str())
                .and(r::generation.lt(generation.generation))
                .assume_not_null()),
        )
        .count()
        .into_boxed();
    if let Some(cursor) = &generation.cursor {
        query = query.filter(d::id.gt(cursor.clone()));
    }
    if records_only {
        query = query.filter(r::device_id.nullable().is_not_null());
    }
    query.get_result(conn).repo(ENTITY)
}
