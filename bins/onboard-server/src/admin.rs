//! `/private/v1/admin`: bootstrap keys, devices and the audit log. Every handler
//! takes an [`Admin`], so a request without a valid admin token never reaches it.

use actix_web::{delete, get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use onboard_core::domain::{
    AuditFilter, BootstrapKeyFilter, BootstrapKeyId, DeviceFilter, DeviceId, ModelCode, PageRequest,
};
use onboard_core::{CoreError, KeyBatchRequest, Onboard};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::views::{
    AuditView, CertificateView, CreatedBatchView, CreatedKeyView, DeviceDetailsView, DeviceView,
    KeyView, PageView,
};

/// Runs blocking core work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|_| ApiError::from(CoreError::Internal("a worker task failed".into())))?
        .map_err(ApiError::from)
}

fn page(limit: Option<u32>, after: Option<String>) -> Result<PageRequest, ApiError> {
    PageRequest::new(limit.unwrap_or(PageRequest::DEFAULT_LIMIT), after)
        .map_err(|e| CoreError::Invalid(e).into())
}

fn parse_id<T: std::str::FromStr>(raw: &str, entity: &'static str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("{entity} not found")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeysBody {
    /// The batch name, e.g. a factory line and week: 1 to 64 of `A-Z a-z 0-9 . _ - :`.
    #[schema(example = "line7-2026w47")]
    pub batch: String,
    /// Keys to create (1 to 10,000). Default 1.
    pub count: Option<u32>,
    /// Registrations each key allows (1 to 1,000,000). Default 1.
    pub max_uses: Option<u32>,
    /// Valid from now for this many days (1 to 3650). Default 30 unless
    /// `expires_at` is given.
    pub valid_days: Option<u32>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Bind the keys to a device model.
    pub model: Option<String>,
}

/// Create a batch of bootstrap keys. Each key is in the answer once, in clear.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), request_body = CreateKeysBody, responses(
    (status = 201, body = CreatedBatchView),
    (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
))]
#[post("/bootstrap-keys")]
pub async fn create_keys(
    admin: Admin,
    onboard: web::Data<Onboard>,
    body: web::Json<CreateKeysBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let req = KeyBatchRequest {
        batch: body.batch.clone(),
        count: body.count.unwrap_or(1),
        max_uses: body.max_uses.unwrap_or(1),
        valid_days: body.valid_days,
        not_before: body.not_before,
        expires_at: body.expires_at,
        model: body.model,
    };
    let created = blocking(move || onboard.create_key_batch(&admin.0, &req)).await?;
    let keys = created
        .iter()
        .map(|c| CreatedKeyView {
            id: c.key.id.to_string(),
            prefix: c.key.prefix.clone(),
            key: c.secret.expose().to_owned(),
            max_uses: c.key.max_uses,
            not_before: c.key.not_before,
            expires_at: c.key.expires_at,
            model: c.key.model.as_ref().map(|m| m.to_string()),
        })
        .collect();
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedBatchView {
            batch: body.batch,
            keys,
        }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    pub batch: Option<String>,
    pub active: Option<bool>,
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (an id).
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// List bootstrap keys (never their secrets).
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), params(KeyQuery), responses(
    (status = 200, body = PageView<KeyView>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
))]
#[get("/bootstrap-keys")]
pub async fn list_keys(
    _admin: Admin,
    onboard: web::Data<Onboard>,
    query: web::Query<KeyQuery>,
) -> Result<web::Json<PageView<KeyView>>, ApiError> {
    let q = query.into_inner();
    let page = page(q.limit, q.after)?;
    let filter = BootstrapKeyFilter {
        batch: q.batch,
        active: q.active,
    };
    let found = blocking(move || onboard.list_keys(&filter, &page)).await?;
    Ok(web::Json(PageView {
        items: found.items.iter().map(KeyView::from).collect(),
        next_cursor: found.next_cursor,
    }))
}

/// One bootstrap key: batch, prefix, uses, validity, state.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
#[get("/bootstrap-keys/{id}")]
pub async fn show_key(
    _admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<web::Json<KeyView>, ApiError> {
    let id: BootstrapKeyId = parse_id(&id, "bootstrap key")?;
    let key = blocking(move || onboard.key(id)).await?;
    Ok(web::Json(KeyView::from(&key)))
}

async fn set_active(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: &str,
    active: bool,
) -> Result<web::Json<KeyView>, ApiError> {
    let id: BootstrapKeyId = parse_id(id, "bootstrap key")?;
    let key = blocking(move || onboard.set_key_active(&admin.0, id, active)).await?;
    Ok(web::Json(KeyView::from(&key)))
}

/// Activate a key again (an expired key cannot be: 409).
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
))]
#[post("/bootstrap-keys/{id}/activate")]
pub async fn activate_key(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<web::Json<KeyView>, ApiError> {
    set_active(admin, onboard, &id, true).await
}

/// Deactivate a key: registrations with it are refused from now on.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
#[post("/bootstrap-keys/{id}/deactivate")]
pub async fn deactivate_key(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<web::Json<KeyView>, ApiError> {
    set_active(admin, onboard, &id, false).await
}

/// Delete a key. Devices registered with it keep their records.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
#[delete("/bootstrap-keys/{id}")]
pub async fn delete_key(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: BootstrapKeyId = parse_id(&id, "bootstrap key")?;
    blocking(move || onboard.delete_key(&admin.0, id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// registered, active, revoked or decommissioned.
    #[param(pattern = "^(registered|active|revoked|decommissioned)$")]
    pub status: Option<String>,
    /// A model code: 1 to 64 of `a-z 0-9 - _`, starting with a letter or digit.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub model: Option<String>,
    pub batch: Option<String>,
    /// Case-insensitive text in serial, name or location.
    pub q: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// List devices.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), params(DeviceQuery), responses(
    (status = 200, body = PageView<DeviceView>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
))]
#[get("/devices")]
pub async fn list_devices(
    _admin: Admin,
    onboard: web::Data<Onboard>,
    query: web::Query<DeviceQuery>,
) -> Result<web::Json<PageView<DeviceView>>, ApiError> {
    let q = query.into_inner();
    let page = page(q.limit, q.after)?;
    let filter = DeviceFilter {
        status: q
            .status
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        model: q
            .model
            .as_deref()
            .map(ModelCode::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        batch: q.batch,
        q: q.q,
    };
    let found = blocking(move || onboard.devices(&filter, &page)).await?;
    Ok(web::Json(PageView {
        items: found.items.iter().map(DeviceView::from).collect(),
        next_cursor: found.next_cursor,
    }))
}

/// One device with its current certificate and its certificate history.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = DeviceDetailsView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
#[get("/devices/{id}")]
pub async fn show_device(
    _admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<web::Json<DeviceDetailsView>, ApiError> {
    let id: DeviceId = parse_id(&id, "device")?;
    let d = blocking(move || onboard.device(id)).await?;
    Ok(web::Json(DeviceDetailsView {
        device: DeviceView::from(&d.device),
        current_certificate: d.current_certificate.as_ref().map(CertificateView::from),
        certificates: d.certificates.iter().map(CertificateView::from).collect(),
        aws: d.aws.as_ref().map(crate::views::AwsView::from),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[param(format = Uuid)]
    pub device: Option<String>,
    /// e.g. `device.register`, `bootstrap_key.create`.
    pub action: Option<String>,
    /// success or failure.
    #[param(pattern = "^(success|failure)$")]
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// Audit events, newest first.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), params(AuditQuery), responses(
    (status = 200, body = PageView<AuditView>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
))]
#[get("/audit")]
pub async fn list_audit(
    _admin: Admin,
    onboard: web::Data<Onboard>,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<PageView<AuditView>>, ApiError> {
    let q = query.into_inner();
    let page = page(q.limit, q.after)?;
    let filter = AuditFilter {
        device_id: q
            .device
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        action: q.action,
        outcome: q
            .outcome
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        since: q.since,
        until: q.until,
    };
    let found = blocking(move || onboard.audit_events(&filter, &page)).await?;
    Ok(web::Json(PageView {
        items: found.items.iter().map(AuditView::from).collect(),
        next_cursor: found.next_cursor,
    }))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/private/v1/admin")
            .service(create_keys)
            .service(list_keys)
            .service(show_key)
            .service(activate_key)
            .service(deactivate_key)
            .service(delete_key)
            .service(list_devices)
            .service(show_device)
            .service(crate::devices::register_device)
            .service(crate::devices::revoke_device)
            .service(crate::devices::decommission_device)
            .service(crate::devices::update_device)
            .service(crate::devices::device_provisioning)
            .service(crate::public::ca_info)
            .service(crate::models::create_model)
            .service(crate::models::list_models)
            .service(crate::models::show_model)
            .service(crate::models::update_model)
            .service(crate::models::delete_model)
            .service(crate::firmware::upload_firmware)
            .service(crate::firmware::download_firmware)
            .service(crate::rotation::rotation_status)
            .service(crate::rotation::trigger_rotation)
            .service(crate::rotation::rotate_device)
            .service(list_audit),
    );
}
