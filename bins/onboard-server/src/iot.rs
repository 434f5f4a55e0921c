//! The device API (`/iot`) and the token endpoint's discovery documents.
//!
//! A device authenticates with, in this order: the client certificate of its TLS
//! connection (our TLS listener verified it against the CA); a certificate in
//! `server.client_cert_header` when the connection comes from one of
//! `server.trusted_proxies`; a bearer token from `POST /iot/token`. Anything else
//! is 401 with `WWW-Authenticate`, and nothing runs.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{get, post, web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use onboard_core::{CoreError, DeviceSession, Onboard};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::admin::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::client_ip;
use crate::tls::PeerCertificate;
use crate::views::CertificateView;
use crate::PublicGuard;

/// Whose certificate header is believed.
#[derive(Debug, Clone)]
pub struct ProxyTrust {
    pub proxies: Vec<IpAddr>,
    pub header: String,
}

impl ProxyTrust {
    pub fn from_settings(s: &onboard_core::settings::ServerSettings) -> Self {
        Self {
            proxies: s
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            header: s.client_cert_header.clone(),
        }
    }
}

/// A 401 of the device API: `WWW-Authenticate` names both ways in.
#[derive(Debug)]
pub struct DeviceUnauthorized(ApiError);

impl std::fmt::Display for DeviceUnauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for DeviceUnauthorized {
    fn status_code(&self) -> StatusCode {
        self.0.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = self.0.error_response();
        if self.0.status() == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Bearer realm="onboard-iot""#),
            );
        }
        res
    }
}

fn unauthorized() -> DeviceUnauthorized {
    DeviceUnauthorized(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a client certificate of this service's CA that is in use, or a valid access token, is required",
    ))
}

/// Decodes `%XX` escapes (ingress-nginx's `$ssl_client_escaped_cert`).
enum Credential {
    Peer(Vec<u8>),
    Forwarded(Vec<u8>),
    Bearer(String),
}

fn credential_of(req: &HttpRequest) -> Option<Credential> {
    if let Some(peer) = req.conn_data::<PeerCertificate>() {
        return Some(Credential::Peer(peer.0.clone()));
    }
    if let Some(trust) = req.app_data::<web::Data<ProxyTrust>>() {
        let from_proxy = req
            .peer_addr()
            .is_some_and(|a| trust.proxies.contains(&a.ip()));
        if from_proxy {
            if let Some(v) = req.headers().get(trust.header.as_str()) {
                return v
                    .to_str()
                    .ok()
                    .and_then(onboard_core::domain::credentials::percent_decode)
                    .map(Credential::Forwarded);
            }
        }
    }
    crate::auth::bearer(req).map(|t| Credential::Bearer(t.to_owned()))
}

/// The authenticated device of a request.
#[derive(Debug, Clone)]
pub struct Device(pub DeviceSession);

impl FromRequest for Device {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let onboard = req.app_data::<web::Data<Onboard>>().cloned();
        let credential = credential_of(req);
        Box::pin(async move {
            let (Some(onboard), Some(credential)) = (onboard, credential) else {
                return Err(unauthorized().into());
            };
            let result = web::block(move || match credential {
                Credential::Peer(der) => {
                    onboard_pki_presented(&der).and_then(|p| onboard.authenticate_certificate(&p))
                }
                Credential::Forwarded(pem) => onboard.authenticate_forwarded_certificate(&pem),
                Credential::Bearer(bearer) => onboard.authenticate_token(&bearer),
            })
            .await
            .map_err(|_| ApiError::from(CoreError::Internal("a worker task failed".into())))?;
            match result {
                Ok(session) => Ok(Device(session)),
                Err(CoreError::Unauthorized(_)) => Err(unauthorized().into()),
                Err(e) => Err(ApiError::from(e).into()),
            }
        })
    }
}

fn onboard_pki_presented(der: &[u8]) -> Result<onboard_core::PresentedCertificate, CoreError> {
    onboard_core::presented_certificate(der)
        .map_err(|_| CoreError::Unauthorized("certificate_unreadable"))
}

/// `POST /iot/token`'s form body (RFC 6749 section 4.4.2, client_secret_post).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenForm {
    /// Only `client_credentials` (required).
    #[schema(required = true, nullable = false, pattern = "^client_credentials$")]
    pub grant_type: Option<String>,
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
    /// Space-separated; the only scope is `device`.
    #[schema(nullable = false, pattern = "^ *(device( +device)*)? *$")]
    pub scope: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: u32,
    pub scope: String,
}

/// An error of the token endpoint, as RFC 6749 section 5.2 shapes it.
fn oauth_error(status: StatusCode, error: &str, description: &str, basic: bool) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if basic && status == StatusCode::UNAUTHORIZED {
        res.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="onboard-iot""#));
    }
    res.json(json!({"error": error, "error_description": description, "message": description}))
}

/// `Authorization: Basic` client credentials (RFC 6749 section 2.3.1: each part
/// form-urlencoded before base64); `None` without an `Authorization` header.
fn basic_credentials(req: &HttpRequest) -> Option<Result<(String, String), ()>> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    // Any other scheme is an attempt at client authentication through the
    // header that cannot succeed: RFC 6749 section 5.2 wants 401 for it.
    Some(onboard_core::domain::credentials::basic_credentials(v).map_err(|_| ()))
}

/// The OAuth 2.0 client-credentials grant for password devices: client id (the
/// device id) and secret, by `client_secret_basic` or `client_secret_post`, for a
/// JWT access token verifiable through `/.well-known/jwks.json`.
#[utoipa::path(tag = "iot", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"), responses(
    (status = 200, body = TokenView),
    (status = 400, description = "invalid_request or unsupported_grant_type (RFC 6749 5.2)"),
    (status = 401, description = "invalid_client"),
    (status = 429, body = ErrorBody),
))]
#[post("/iot/token")]
pub async fn token(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    guard: web::Data<PublicGuard>,
    form: Result<web::Form<TokenForm>, actix_web::Error>,
) -> HttpResponse {
    let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d, false);
    let Ok(form) = form else {
        return bad("the body must be application/x-www-form-urlencoded");
    };
    let form = form.into_inner();
    match form.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
                false,
            )
        }
        None => return bad("grant_type is required"),
    }
    if form
        .scope
        .as_deref()
        .is_some_and(|s| !s.split(' ').all(|p| p.is_empty() || p == "device"))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the only scope is device",
            false,
        );
    }
    let basic = basic_credentials(&req);
    let (client_id, secret, via_basic) = match (basic, form.client_id, form.client_secret) {
        (Some(Ok((id, secret))), None, None) => (id, secret, true),
        (Some(Ok(_)), _, _) => return bad("use one client authentication method, not both"),
        (Some(Err(())), _, _) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "the Authorization header holds no readable Basic credentials",
                true,
            )
        }
        (None, Some(id), Some(secret)) => (id, secret, false),
        // "No client authentication included" is invalid_client (section 5.2).
        (None, _, _) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is required",
                true,
            )
        }
    };
    let ip = client_ip(&req, guard.trust_forwarded_for);
    if let Some(ip) = ip {
        if let Err(retry) = guard.limiter.check_request(ip) {
            return retry.response();
        }
    }
    let remote = ip.map(|i| i.to_string());
    let issued = web::block(move || onboard.issue_access_token(&client_id, &secret, remote)).await;
    match issued {
        Ok(Ok(t)) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(TokenView {
                access_token: t.token.expose().to_owned(),
                token_type: "Bearer".into(),
                expires_in: t.expires_in,
                scope: "device".into(),
            }),
        Ok(Err(CoreError::Unauthorized(_))) => {
            if let Some(ip) = ip {
                guard.limiter.record_failure(ip);
            }
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client, wrong secret, or a device not in service",
                via_basic,
            )
        }
        Ok(Err(e)) => ApiError::from(e).error_response(),
        Err(_) => {
            ApiError::from(CoreError::Internal("a worker task failed".into())).error_response()
        }
    }
}

/// The keys that sign access tokens (RFC 7517).
#[utoipa::path(tag = "iot", responses((status = 200, description = "a JWK set")))]
#[get("/.well-known/jwks.json")]
pub async fn jwks(onboard: web::Data<Onboard>) -> Result<HttpResponse, ApiError> {
    let set = blocking(move || onboard.jwks()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(set))
}

/// OAuth 2.0 authorization server metadata (RFC 8414), at the OIDC discovery path.
#[utoipa::path(tag = "iot", responses((status = 200, description = "discovery document")))]
#[get("/.well-known/openid-configuration")]
pub async fn openid_configuration(onboard: web::Data<Onboard>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(onboard.openid_configuration())
}

/// The device's configuration: the service defaults, its model's, then its own.
#[utoipa::path(tag = "iot", responses(
    (status = 200, description = "a JSON object"), (status = 401, body = ErrorBody),
))]
#[get("/iot/config")]
pub async fn config(device: Device, onboard: web::Data<Onboard>) -> Result<HttpResponse, ApiError> {
    let config = blocking(move || onboard.config_for(&device.0)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(config))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceMqttView {
    /// `mqtts://host:port`.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// A password device's MQTT username (its client id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Where Onboard publishes this device's rotation notifications (QoS 1); the
    /// device may subscribe to it.
    pub rotation_topic: String,
    pub max_qos: u8,
    pub retain: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WifiView {
    pub ssid: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProvisioningView {
    pub device_id: String,
    pub serial: String,
    /// certificate or password.
    pub credential: String,
    pub mqtt: DeviceMqttView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wifi: Option<WifiView>,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The CA chain that signs the broker's and the devices' certificates (PEM).
    pub ca_chain_pem: String,
    /// A certificate device's current certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateView>,
    /// A password device: where it gets access tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// A password device's new secret: in the admin download (the old one no
    /// longer works; shown once), and in the device's own provisioning while its
    /// rotation is PENDING (until it acknowledges).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

pub(crate) fn provisioning_view(p: &onboard_core::Provisioning) -> ProvisioningView {
    let password = p.device.credential == onboard_core::domain::CredentialKind::Password;
    ProvisioningView {
        device_id: p.device.id.to_string(),
        serial: p.device.serial.to_string(),
        credential: p.device.credential.to_string(),
        mqtt: DeviceMqttView {
            url: p.mqtt_url.clone(),
            host: p.mqtt.host.clone(),
            port: p.mqtt.port,
            client_id: p.mqtt.client_id.clone(),
            username: password.then(|| p.mqtt.client_id.clone()),
            publish: p.mqtt.publish.clone(),
            subscribe: p.mqtt.subscribe.clone(),
            rotation_topic: p.mqtt.rotation_topic.clone(),
            max_qos: p.mqtt.max_qos,
            retain: p.mqtt.retain_allowed,
        },
        wifi: p.wifi.as_ref().map(|(ssid, pw)| WifiView {
            ssid: ssid.clone(),
            password: pw.expose().to_owned(),
        }),
        config: p.config.clone(),
        ca_chain_pem: p.ca_chain_pem.clone(),
        certificate: p.certificate.as_ref().map(CertificateView::from),
        token_url: p.token_url.clone(),
        client_secret: p.client_secret.as_ref().map(|s| s.expose().to_owned()),
    }
}

/// How the device connects: broker URL, client id, topics, QoS, WiFi, CA chain,
/// configuration.
#[utoipa::path(tag = "iot", responses(
    (status = 200, body = ProvisioningView), (status = 401, body = ErrorBody),
))]
#[get("/iot/provisioning")]
pub async fn provisioning(
    device: Device,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    let p = blocking(move || onboard.provisioning_for(&device.0)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(provisioning_view(&p)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivatedView {
    pub device_id: String,
    /// `active`.
    pub status: String,
    pub activated_at: Option<DateTime<Utc>>,
}

/// The device reports that it is up: a registered device becomes active (an
/// activation source that needs no MQTT); an active one updates `last_seen_at`.
#[utoipa::path(tag = "iot", responses(
    (status = 200, body = ActivatedView), (status = 401, body = ErrorBody),
))]
#[post("/iot/activate")]
pub async fn activate(
    device: Device,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    let d = blocking(move || onboard.activate_device(&device.0)).await?;
    Ok(HttpResponse::Ok().json(ActivatedView {
        device_id: d.id.to_string(),
        status: d.status.to_string(),
        activated_at: d.activated_at,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// A PKCS#10 CSR (PEM) for a new key.
    pub csr: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenewedView {
    pub certificate_pem: String,
    pub ca_chain_pem: String,
    pub certificate: CertificateView,
    /// The previous certificate is revoked (superseded) when the new one is first
    /// used, or at this time.
    pub previous_valid_until: DateTime<Utc>,
}

/// Re-enrollment with a new key, over the device's current certificate.
#[utoipa::path(tag = "iot", request_body = RenewBody, responses(
    (status = 200, body = RenewedView), (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "not authenticated with a certificate"),
    (status = 422, body = ErrorBody),
))]
#[post("/iot/renew")]
pub async fn renew(
    device: Device,
    onboard: web::Data<Onboard>,
    // Held as a result: actix polls extractors together, and a body error must
    // not answer before the device is known (a stranger learns nothing, not
    // even the body's schema).
    body: Result<web::Json<RenewBody>, actix_web::Error>,
) -> Result<HttpResponse, actix_web::Error> {
    let csr = body?.into_inner().csr;
    let r = blocking(move || onboard.renew_certificate(&device.0, &csr)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(RenewedView {
            certificate_pem: r.certificate.pem.clone(),
            ca_chain_pem: r.ca_chain_pem,
            certificate: CertificateView::from(&r.certificate),
            previous_valid_until: r.previous_valid_until,
        }))
}

/// The current firmware of the device's model: `ETag` (its SHA-256), 304 on
/// `If-None-Match`, `Content-Length`, `X-Firmware-Version`, and single byte ranges
/// for resumed downloads. 404 when the device has no model or the model no firmware.
#[utoipa::path(tag = "iot", responses(
    (status = 200, description = "the ESP32 application image", content_type = "application/octet-stream"),
    (status = 206, description = "the requested byte range"),
    (status = 304, description = "unchanged since the ETag given in If-None-Match"),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 416, description = "the range lies outside the image"),
))]
#[get("/iot/firmware")]
pub async fn firmware(
    req: HttpRequest,
    device: Device,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    let Some(model) = device.0.device.model.clone() else {
        return Err(ApiError::not_found(
            "the device has no model, so no firmware",
        ));
    };
    crate::firmware::serve_model_firmware(&req, &onboard, &model).await
}
