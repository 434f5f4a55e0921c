use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::dsl::{count_star, min};
use diesel::prelude::*;
use onboard_domain::{DeviceId, Effect, EffectRepository, PendingEffect, RepoError};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, utc};
use crate::schema::pending_effects as e;

const ENTITY: &str = "pending effect";

type EffectRow = (
    String,
    String,
    Option<String>,
    NaiveDateTime,
    i32,
    Option<String>,
    NaiveDateTime,
);

fn corrupt(what: &str, err: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt(format!("{what}: {err}"))
}

fn into_domain(row: EffectRow) -> Result<PendingEffect, RepoError> {
    let (id, kind, device, created_at, attempts, last_error, next_attempt_at) = row;
    let device = device
        .map(|d| {
            d.parse::<DeviceId>()
                .map_err(|err| corrupt("effect device", err))
        })
        .transpose()?;
    let effect = Effect::from_parts(&kind, device)
        .ok_or_else(|| corrupt("effect", format!("unknown kind {kind:?}")))?;
    Ok(PendingEffect {
        id: uuid::Uuid::parse_str(&id).map_err(|err| corrupt("effect id", err))?,
        effect,
        created_at: utc(created_at),
        attempts,
        last_error,
        next_attempt_at: utc(next_attempt_at),
    })
}

impl EffectRepository for DbConnection {
    fn has_pending_effect(&mut self, kind: &str, device: DeviceId) -> Result<bool, RepoError> {
        let n: i64 = e::table
            .filter(e::kind.eq(kind))
            .filter(e::device_id.eq(device.to_string()))
            .select(count_star())
            .first(self)
            .repo(ENTITY)?;
        Ok(n > 0)
    }

    fn enqueue_effect(
        &mut self,
        id: uuid::Uuid,
        effect: Effect,
        now: DateTime<Utc>,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        diesel::insert_into(e::table)
            .values((
                e::id.eq(id.to_string()),
                e::kind.eq(effect.kind()),
                e::device_id.eq(effect.device().map(|d| d.to_string())),
                e::created_at.eq(ts(now)),
                e::attempts.eq(0),
                e::next_attempt_at.eq(ts(next_attempt_at)),
            ))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    fn enqueue_effects(
        &mut self,
        effects: &[(uuid::Uuid, Effect)],
        now: DateTime<Utc>,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let rows: Vec<_> = effects
            .iter()
            .map(|(id, effect)| {
                (
                    e::id.eq(id.to_string()),
                    e::kind.eq(effect.kind()),
                    e::device_id.eq(effect.device().map(|d| d.to_string())),
                    e::created_at.eq(ts(now)),
                    e::attempts.eq(0),
                    e::next_attempt_at.eq(ts(next_attempt_at)),
                )
            })
            .collect();
        super::insert_batches!(self, e::table, rows).repo(ENTITY)?;
        Ok(())
    }

    fn due_effects(
        &mut self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingEffect>, RepoError> {
        let rows: Vec<EffectRow> = e::table
            .filter(e::next_attempt_at.le(ts(now)))
            .order((e::next_attempt_at.asc(), e::id.asc()))
            .limit(i64::from(limit))
            .select((
                e::id,
                e::kind,
                e::device_id,
                e::created_at,
                e::attempts,
                e::last_error,
                e::next_attempt_at,
            ))
            .load(self)
            .repo(ENTITY)?;
        rows.into_iter().map(into_domain).collect()
    }

    fn pending_effects_summary(&mut self) -> Result<(i64, Option<DateTime<Utc>>), RepoError> {
        let (n, oldest): (i64, Option<NaiveDateTime>) = e::table
            .select((count_star(), min(e::created_at)))
            .first(self)
            .repo(ENTITY)?;
        Ok((n, oldest.map(utc)))
    }

    fn complete_effects(&mut self, ids: &[uuid::Uuid]) -> Result<(), RepoError> {
        for chunk in ids.chunks(500) {
            let ids: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
            diesel::delete(e::table.filter(e::id.eq_any(ids)))
                .execute(self)
                .repo(ENTITY)?;
        }
        Ok(())
    }

    fn postpone_effect(
        &mut self,
        id: uuid::Uuid,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let error: String = error.chars().take(500).collect();
        diesel::update(e::table.find(id.to_string()))
            .set((
                e::attempts.eq(e::attempts + 1),
                e::last_error.eq(Some(error)),
                e::next_attempt_at.eq(ts(retry_at)),
            ))
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }
}
