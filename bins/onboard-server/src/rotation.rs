//! Credential rotation over HTTP (`docs/rotation.md`): the operator's status and
//! triggers under `/private/v1/admin`, and the device's acknowledgment
//! `POST /iot/rotation/ack`. Thin: each calls one use case of `onboard_core`.

use actix_web::{get, post, web};
use chrono::{DateTime, Utc};
use onboard_core::{Onboard, RotationEntry};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::blocking;
use crate::auth::Admin;
use crate::devices::device_id;
use crate::error::{ApiError, ErrorBody};
use crate::iot::Device;

#[derive(Debug, Serialize, ToSchema)]
pub struct RotationView {
    pub device_id: String,
    /// `OK`, `QUEUED`, `PENDING` or `TIMEOUT`.
    pub state: String,
    /// How many times the rotation was started.
    pub attempts: i32,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    /// While PENDING: when it times out.
    pub deadline_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// While PENDING: when the broker took the rotation notification; empty
    /// while not notified yet (a later cycle retries).
    pub notified_at: Option<DateTime<Utc>>,
}

impl From<&RotationEntry> for RotationView {
    fn from(r: &RotationEntry) -> Self {
        Self {
            device_id: r.device_id.to_string(),
            state: r.state.to_string(),
            attempts: r.attempts,
            queued_at: r.queued_at,
            started_at: r.started_at,
            deadline_at: r.deadline_at,
            completed_at: r.completed_at,
            notified_at: r.notified_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotationStateView {
    pub state: String,
    pub count: i64,
    /// Up to 100 devices in this state, oldest queued first.
    pub devices: Vec<RotationView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotationStatusView {
    /// The scheduled run the fleet was last queued for (or the first cycle's time).
    pub last_scheduled_run: Option<DateTime<Utc>>,
    /// Every state, in the order OK, QUEUED, PENDING, TIMEOUT.
    pub states: Vec<RotationStateView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedView {
    /// How many devices were queued.
    pub queued: u64,
}

/// Counts per rotation state and the devices in each.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = RotationStatusView), (status = 401, body = ErrorBody)))]
#[get("/rotation")]
pub async fn rotation_status(
    _admin: Admin,
    onboard: web::Data<Onboard>,
) -> Result<web::Json<RotationStatusView>, ApiError> {
    let s = blocking(move || onboard.rotation_status()).await?;
    Ok(web::Json(RotationStatusView {
        last_scheduled_run: s.last_scheduled_run,
        states: s
            .states
            .iter()
            .map(|st| RotationStateView {
                state: st.state.to_string(),
                count: st.count,
                devices: st.devices.iter().map(RotationView::from).collect(),
            })
            .collect(),
    }))
}

/// Queue every certificate device in service that is OK; the next
/// `onboardctl rotation run-job` starts them one by one.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = QueuedView), (status = 401, body = ErrorBody)))]
#[post("/rotation/trigger")]
pub async fn trigger_rotation(
    admin: Admin,
    onboard: web::Data<Onboard>,
) -> Result<web::Json<QueuedView>, ApiError> {
    let queued = blocking(move || onboard.trigger_rotation(&admin.0, None)).await?;
    Ok(web::Json(QueuedView { queued }))
}

/// Queue one device for rotation (it must be OK or TIMEOUT and in service; a
/// password device only once `rotation.secret_key` is set).
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    responses(
    (status = 200, body = RotationView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "already QUEUED or PENDING, not in service, or a password device without rotation.secret_key"),
))]
#[post("/devices/{id}/rotate")]
pub async fn rotate_device(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<web::Json<RotationView>, ApiError> {
    let id = device_id(&id)?;
    let entry = blocking(move || {
        onboard.trigger_rotation(&admin.0, Some(id))?;
        onboard
            .device_rotation(id)?
            .ok_or(onboard_core::CoreError::Internal(
                "the rotation disappeared".into(),
            ))
    })
    .await?;
    Ok(web::Json(RotationView::from(&entry)))
}

/// The device acknowledges its rotated credential: a certificate device presents
/// its new certificate (mutual TLS; its first use completes the rotation already,
/// the acknowledgment confirms it), a password device a token of its new secret
/// (which deletes the old secret).
#[utoipa::path(tag = "iot", responses(
    (status = 200, body = RotationView), (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "no rotation pending, or not the rotation's new certificate or secret"),
))]
#[post("/iot/rotation/ack")]
pub async fn acknowledge(
    device: Device,
    onboard: web::Data<Onboard>,
) -> Result<web::Json<RotationView>, ApiError> {
    let entry = blocking(move || onboard.acknowledge_rotation(&device.0)).await?;
    Ok(web::Json(RotationView::from(&entry)))
}
