//! `/private/v1/admin/models`: device models and their topic templates.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use onboard_core::domain::{DeviceModel, ModelFirmware};
use onboard_core::{ModelRequest, Onboard};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::admin::blocking;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::firmware::FirmwareView;

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    pub code: String,
    pub name: String,
    pub description: String,
    /// Templates with `{device_id}`, `{serial}`, `{model}`.
    pub publish_topics: Vec<String>,
    pub subscribe_topics: Vec<String>,
    pub max_qos: u8,
    pub retain_allowed: bool,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// `certificate` or `password`.
    pub credential: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The model's firmware (`PUT /models/{code}/firmware`); null until uploaded.
    pub firmware: Option<FirmwareView>,
}

impl ModelView {
    fn with_firmware(mut self, firmware: Option<&ModelFirmware>) -> Self {
        self.firmware = firmware.map(FirmwareView::from);
        self
    }
}

impl From<&DeviceModel> for ModelView {
    fn from(m: &DeviceModel) -> Self {
        Self {
            code: m.code.to_string(),
            name: m.name.clone(),
            description: m.description.clone(),
            publish_topics: m.publish_topics.clone(),
            subscribe_topics: m.subscribe_topics.clone(),
            max_qos: m.max_qos,
            retain_allowed: m.retain_allowed,
            config: m.config.clone(),
            credential: m.credential.as_str().to_owned(),
            created_at: m.created_at,
            updated_at: m.updated_at,
            firmware: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    /// Only when creating: 1 to 64 of `a-z 0-9 - _`.
    #[schema(example = "tempsensor")]
    pub code: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Default `["devices/{device_id}/#"]`; each must contain `{device_id}` or `{serial}`.
    pub publish_topics: Option<Vec<String>>,
    /// Default `["devices/{device_id}/#"]`.
    pub subscribe_topics: Option<Vec<String>>,
    /// 0, 1 or 2 (default 1).
    pub max_qos: Option<u8>,
    pub retain_allowed: Option<bool>,
    /// Default configuration for the model's devices.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// `certificate` (default) or `password`: the credential the model's devices get
    /// unless their registration names one.
    pub credential: Option<String>,
}

impl ModelBody {
    fn request(self) -> (Option<String>, ModelRequest) {
        (
            self.code,
            ModelRequest {
                name: self.name,
                description: self.description,
                publish_topics: self.publish_topics,
                subscribe_topics: self.subscribe_topics,
                max_qos: self.max_qos,
                retain_allowed: self.retain_allowed,
                config: self.config,
                credential: self.credential,
            },
        )
    }
}

/// Create a device model.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    request_body = ModelBody, responses(
    (status = 201, body = ModelView), (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
))]
#[post("/models")]
pub async fn create_model(
    admin: Admin,
    onboard: web::Data<Onboard>,
    body: web::Json<ModelBody>,
) -> Result<HttpResponse, ApiError> {
    let (code, req) = body.into_inner().request();
    let code = code.unwrap_or_default();
    let m = blocking(move || onboard.create_model(&admin.0, &code, &req)).await?;
    Ok(HttpResponse::Created().json(ModelView::from(&m)))
}

/// List device models.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = Vec<ModelView>), (status = 401, body = ErrorBody),
))]
#[get("/models")]
pub async fn list_models(
    _admin: Admin,
    onboard: web::Data<Onboard>,
) -> Result<web::Json<Vec<ModelView>>, ApiError> {
    let (all, firmware) =
        blocking(move || Ok((onboard.models()?, onboard.firmware_of_models()?))).await?;
    Ok(web::Json(
        all.iter()
            .map(|m| ModelView::from(m).with_firmware(firmware.iter().find(|f| f.model == m.code)))
            .collect(),
    ))
}

/// One device model.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = ModelView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
#[get("/models/{code}")]
pub async fn show_model(
    _admin: Admin,
    onboard: web::Data<Onboard>,
    code: web::Path<String>,
) -> Result<web::Json<ModelView>, ApiError> {
    let (m, firmware) = blocking(move || {
        let m = onboard.model(&code)?;
        Ok((m, onboard.firmware_info(&code)?))
    })
    .await?;
    Ok(web::Json(
        ModelView::from(&m).with_firmware(firmware.as_ref()),
    ))
}

/// Change a device model; its devices' broker permissions follow.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    request_body = ModelBody, responses(
    (status = 200, body = ModelView), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
))]
#[patch("/models/{code}")]
pub async fn update_model(
    admin: Admin,
    onboard: web::Data<Onboard>,
    code: web::Path<String>,
    body: web::Json<ModelBody>,
) -> Result<web::Json<ModelView>, ApiError> {
    let (new_code, req) = body.into_inner().request();
    if new_code.is_some() {
        return Err(
            onboard_core::CoreError::Invalid(onboard_core::domain::InvalidValue::new(
                "code",
                "a model's code cannot change",
            ))
            .into(),
        );
    }
    let (m, firmware) = blocking(move || {
        let m = onboard.update_model(&admin.0, &code, &req)?;
        Ok((m, onboard.firmware_info(&code)?))
    })
    .await?;
    Ok(web::Json(
        ModelView::from(&m).with_firmware(firmware.as_ref()),
    ))
}

/// Delete a device model that no device or key uses.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
))]
#[delete("/models/{code}")]
pub async fn delete_model(
    admin: Admin,
    onboard: web::Data<Onboard>,
    code: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    blocking(move || onboard.delete_model(&admin.0, &code)).await?;
    Ok(HttpResponse::NoContent().finish())
}
