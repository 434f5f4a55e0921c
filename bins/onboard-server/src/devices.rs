//! Operator device routes under `/private/v1/admin/devices`, and the public
//! one-time bundle download.

use actix_web::http::header;
use actix_web::{delete, get, patch, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use onboard_core::domain::{DeviceId, RevocationReason};
use onboard_core::{CoreError, DevicePatch, NewDeviceRequest, Onboard};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::admin::blocking;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::views::{CertificateView, DeviceDetailsView, DeviceView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceBody {
    /// 1 to 128 characters, not only spaces, no control characters.
    #[schema(
        example = "boiler room sensor",
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    pub model: Option<String>,
    /// At most 128 characters, no control characters.
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub location: Option<String>,
    pub firmware_version: Option<String>,
    /// The hardware serial; the device id when absent.
    pub serial: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// `certificate` or `password`; the model's default when absent.
    #[schema(example = "certificate")]
    pub credential: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredDeviceView {
    pub device: DeviceView,
    /// A certificate device's certificate (absent for a password device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateView>,
    /// A password device's client id (its MQTT username and OAuth2 client id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A password device's secret (its MQTT password). Shown once; only its hash
    /// is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Downloads the AES-256 encrypted ZIP once, until `bundle_expires_at`.
    pub bundle_url: String,
    /// Opens the ZIP. Shown once; never stored.
    pub bundle_password: String,
    pub bundle_expires_at: DateTime<Utc>,
}

/// Register a device: the server generates its key, issues its certificate, grants
/// broker access and offers an encrypted bundle through a single-use link.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    request_body = RegisterDeviceBody, responses(
    (status = 201, body = RegisteredDeviceView),
    (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    (status = 503, body = ErrorBody),
))]
#[post("/devices")]
pub async fn register_device(
    admin: Admin,
    onboard: web::Data<Onboard>,
    body: web::Json<RegisterDeviceBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let req = NewDeviceRequest {
        name: b.name,
        model: b.model,
        location: b.location,
        firmware_version: b.firmware_version,
        serial: b.serial,
        config: b.config,
        metadata: b.metadata,
        credential: b.credential,
    };
    let (done, link) = blocking(move || onboard.register_device_with_link(&admin.0, &req)).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(RegisteredDeviceView {
            device: DeviceView::from(&done.device),
            certificate: done.certificate.as_ref().map(CertificateView::from),
            client_id: done
                .client_secret
                .as_ref()
                .map(|_| done.device.id.to_string()),
            client_secret: done.client_secret.as_ref().map(|s| s.expose().to_owned()),
            bundle_url: link.url,
            bundle_password: done.bundle_password.expose().to_owned(),
            bundle_expires_at: link.expires_at,
        }))
}

pub(crate) fn device_id(raw: &str) -> Result<DeviceId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("device not found"))
}

fn details(d: &onboard_core::DeviceDetails) -> DeviceDetailsView {
    DeviceDetailsView {
        device: DeviceView::from(&d.device),
        current_certificate: d.current_certificate.as_ref().map(CertificateView::from),
        certificates: d.certificates.iter().map(CertificateView::from).collect(),
        aws: d.aws.as_ref().map(crate::views::AwsView::from),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// An RFC 5280 reason: unspecified, keyCompromise, cACompromise,
    /// affiliationChanged, superseded, cessationOfOperation, certificateHold,
    /// privilegeWithdrawn, aACompromise. Default unspecified.
    #[schema(
        example = "keyCompromise",
        pattern = "^(unspecified|keyCompromise|cACompromise|affiliationChanged|superseded|cessationOfOperation|certificateHold|privilegeWithdrawn|aACompromise)$"
    )]
    pub reason: Option<String>,
}

/// Revoke a device: its certificates go into the CRL and its broker access is
/// removed. Revoking again changes nothing.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    request_body(content = Option<RevokeBody>), responses(
    (status = 200, body = DeviceDetailsView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    (status = 503, description = "recorded, but the broker could not be updated; retry", body = ErrorBody),
))]
#[post("/devices/{id}/revoke")]
pub async fn revoke_device(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
    body: Option<web::Json<RevokeBody>>,
) -> Result<web::Json<DeviceDetailsView>, ApiError> {
    let id = device_id(&id)?;
    let reason: RevocationReason = match body.and_then(|b| b.into_inner().reason) {
        Some(r) => r.parse().map_err(CoreError::Invalid)?,
        None => RevocationReason::Unspecified,
    };
    let d = blocking(move || onboard.revoke_device(&admin.0, id, reason)).await?;
    Ok(web::Json(details(&d)))
}

/// Decommission a device: revoke it, remove broker and cloud access, keep the
/// record and its audit trail.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = DeviceDetailsView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
))]
#[delete("/devices/{id}")]
pub async fn decommission_device(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<web::Json<DeviceDetailsView>, ApiError> {
    let id = device_id(&id)?;
    let d = blocking(move || onboard.decommission_device(&admin.0, id)).await?;
    Ok(web::Json(details(&d)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDeviceBody {
    /// 1 to 128 characters, not only spaces, no control characters.
    #[schema(
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    /// At most 128 characters, no control characters.
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub location: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Change a device's name, location, configuration or metadata.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    request_body = PatchDeviceBody, responses(
    (status = 200, body = DeviceView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
#[patch("/devices/{id}")]
pub async fn update_device(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
    body: web::Json<PatchDeviceBody>,
) -> Result<web::Json<DeviceView>, ApiError> {
    let id = device_id(&id)?;
    let b = body.into_inner();
    let patch = DevicePatch {
        name: b.name,
        location: b.location,
        config: b.config,
        metadata: b.metadata,
    };
    let d = blocking(move || onboard.update_device(&admin.0, id, &patch)).await?;
    Ok(web::Json(DeviceView::from(&d)))
}

/// Download a credential bundle, once. A used, expired, tampered or unknown link
/// answers 404 alike.
#[utoipa::path(context_path = "/public/v1", tag = "public", responses(
    (status = 200, description = "the AES-256 encrypted ZIP", content_type = "application/zip"),
    (status = 404, body = ErrorBody),
))]
#[get("/bundles/{token}")]
pub async fn download_bundle(
    onboard: web::Data<Onboard>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = token.into_inner();
    let zip = blocking(move || onboard.download_bundle(&token))
        .await
        .map_err(|e| {
            if e.status() == actix_web::http::StatusCode::NOT_FOUND {
                ApiError::not_found("no bundle at this link (used, expired or unknown)")
            } else {
                e
            }
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"credentials.zip\"",
        ))
        .content_type("application/zip")
        .body(zip))
}

/// The provisioning package of a device (the earlier backend's JSON download):
/// connection settings, topics, configuration, CA chain. For a password device it
/// carries a new secret, which replaces the old one at once (broker and tokens).
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "device id")), responses(
    (status = 200, body = crate::iot::ProvisioningView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "the device is revoked or decommissioned, or its password rotation is PENDING"),
))]
#[get("/devices/{id}/provisioning")]
pub async fn device_provisioning(
    admin: Admin,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = device_id(&id)?;
    let p = blocking(move || onboard.admin_provisioning(&admin.0, id)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(crate::iot::provisioning_view(&p)))
}
