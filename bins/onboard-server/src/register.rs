//! `POST /public/v1/register`: device self-registration with a bootstrap key.

use actix_web::http::header;
use actix_web::{post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use onboard_core::domain::SecretString;
use onboard_core::{CoreError, Onboard, RegisterRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{bearer, peer};
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::client_ip;
use crate::telemetry::RegistrationMetrics;
use crate::PublicGuard;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterBody {
    /// The device's hardware serial: 1 to 64 of `A-Z a-z 0-9 . _ : -`. `device_id`
    /// is accepted as an alias (devices flashed for the earlier service).
    #[serde(alias = "device_id")]
    #[schema(example = "SN-000123")]
    pub serial: String,
    #[schema(example = "tempsensor")]
    pub model: Option<String>,
    #[schema(example = "1.4.2")]
    pub firmware_version: Option<String>,
    /// PKCS#10, PEM. Without it the server generates the key pair and returns
    /// `private_key_pem`.
    pub csr: Option<String>,
    /// A JSON object of at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MqttView {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Where Onboard publishes this device's rotation notifications (QoS 1); the
    /// device may subscribe to it.
    pub rotation_topic: String,
    pub max_qos: u8,
    pub retain: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredView {
    pub device_id: String,
    pub serial: String,
    /// `registered` until the device reports in.
    pub status: String,
    pub certificate_pem: String,
    /// Only when the request had no CSR. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<String>,
    pub ca_chain_pem: String,
    /// Uppercase hex.
    pub certificate_serial: String,
    pub not_after: DateTime<Utc>,
    pub mqtt: MqttView,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The device's Thing and certificate in AWS IoT Core and the data endpoint
    /// (`iot:Data-ATS`) it connects to; only when AWS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsAnswerView>,
    /// The earlier FastAPI service's names, for devices flashed for it: the
    /// same key as `private_key_pem` (only without a CSR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// AWS's certificate id (earlier service's name); only when AWS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    /// The Thing's name (earlier service's name); only when AWS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_name: Option<String>,
    /// The Thing's ARN (earlier service's name); only when AWS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_arn: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AwsAnswerView {
    /// The AWS IoT data endpoint (host) the device connects to on port 8883.
    pub endpoint: Option<String>,
    pub thing_name: String,
    pub thing_arn: String,
    pub certificate_id: String,
    pub certificate_arn: String,
}

/// The bootstrap key: `Authorization: Bearer <key>`, or `X-Api-Key: <key>` as the
/// earlier service accepted.
fn bootstrap_key(req: &HttpRequest) -> Option<SecretString> {
    bearer(req)
        .or_else(|| {
            req.headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
        .map(SecretString::new)
}

/// Register a device: present a bootstrap key, get an X.509 identity, broker
/// permissions and configuration. All or nothing.
#[utoipa::path(context_path = "/public/v1", tag = "public", request_body = RegisterBody,
    security(("bootstrap_key" = []), ("api_key" = [])),
    responses(
        (status = 201, body = RegisteredView),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "missing, unknown, inactive, expired or used-up key", body = ErrorBody),
        (status = 409, description = "the serial is already active", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "invalid serial, CSR or body", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody),
    ))]
#[post("/register")]
pub async fn register(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    guard: web::Data<PublicGuard>,
    metrics: web::Data<RegistrationMetrics>,
    body: web::Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let request = RegisterRequest {
        key: bootstrap_key(&req),
        serial: body.serial,
        model: body.model,
        firmware_version: body.firmware_version,
        csr: body.csr,
        metadata: body.metadata,
        remote_addr: peer(&req),
        batch: None,
    };
    let outcome = web::block(move || onboard.register(request))
        .await
        .map_err(|_| ApiError::from(CoreError::Internal("a worker task failed".into())))?;
    let done = match outcome {
        Ok(done) => done,
        Err(e) => {
            let reason = e.reason_code();
            metrics.failure(reason);
            // Only guesses lock the address out: a key nobody issued. A known key
            // that cannot be used (used up, expired, deactivated) is refused and
            // audited but locks no one out, or one used-up batch key would lock
            // out a whole factory line behind one address.
            if matches!(e, CoreError::Unauthorized("key_unknown")) {
                if let Some(ip) = client_ip(&req, guard.trust_forwarded_for) {
                    guard.limiter.record_failure(ip);
                }
            }
            return Err(e.into());
        }
    };
    metrics.success(&done.timings, done.reregistered);
    let private_key = done.private_key_pem.as_ref().map(|k| k.expose().to_owned());
    let record = done.cloud.as_ref().map(|c| &c.record);
    let view = RegisteredView {
        aws: done.cloud.as_ref().map(|c| AwsAnswerView {
            endpoint: c.endpoint.clone(),
            thing_name: c.record.thing_name.clone(),
            thing_arn: c.record.thing_arn.clone(),
            certificate_id: c.record.certificate_id.clone(),
            certificate_arn: c.record.certificate_arn.clone(),
        }),
        private_key: private_key.clone(),
        certificate_id: record.map(|r| r.certificate_id.clone()),
        thing_name: record.map(|r| r.thing_name.clone()),
        thing_arn: record.map(|r| r.thing_arn.clone()),
        device_id: done.device.id.to_string(),
        serial: done.device.serial.to_string(),
        status: done.device.status.to_string(),
        certificate_pem: done.certificate.pem.clone(),
        private_key_pem: private_key,
        ca_chain_pem: done.ca_chain_pem,
        certificate_serial: done.certificate.serial.to_string(),
        not_after: done.certificate.not_after,
        mqtt: MqttView {
            host: done.mqtt.host,
            port: done.mqtt.port,
            client_id: done.mqtt.client_id,
            publish: done.mqtt.publish,
            subscribe: done.mqtt.subscribe,
            rotation_topic: done.mqtt.rotation_topic,
            max_qos: done.mqtt.max_qos,
            retain: done.mqtt.retain_allowed,
        },
        config: done.config,
    };
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
}
