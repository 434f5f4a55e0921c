//! EST (RFC 7030) on the TLS listener, under `/.well-known/est/`: `cacerts`,
//! `simpleenroll`, `simplereenroll` and `csrattrs`, and the same four under
//! `/.well-known/est/<batch>/` where the label names a bootstrap key batch: only that
//! batch's keys enroll there and only its devices re-enroll. Bodies are base64 without
//! line breaks (some clients, strongSwan's pki among them, refuse wrapped ones).

use actix_web::http::{header, StatusCode};
use actix_web::{get, post, web, HttpRequest, HttpResponse, ResponseError};
use base64::Engine as _;
use onboard_core::domain::SecretString;
use onboard_core::{CoreError, Onboard, RegisterRequest};

use crate::auth::peer;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::client_ip;
use crate::telemetry::RegistrationMetrics;
use crate::tls::TlsConnection;
use crate::PublicGuard;

const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The body of an enrollment: base64 DER PKCS#10 (whitespace ignored) as PEM.
fn csr_pem(body: &[u8]) -> Result<String, ApiError> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = B64.decode(&text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_csr",
            "the body must be the base64 of a DER PKCS#10 CSR",
        )
    })?;
    Ok(format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        B64.encode(&der)
    ))
}

fn require_tls(req: &HttpRequest) -> Result<(), ApiError> {
    if req.conn_data::<TlsConnection>().is_some() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tls_required",
            "EST is served only on the TLS listener (server.tls_bind)",
        ))
    }
}

fn certs_only(der: &[u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CERTS_ONLY)
        .insert_header(("Content-Transfer-Encoding", "base64"))
        .body(B64.encode(der))
}

/// 401 with the challenge RFC 7030 3.2.3 and RFC 7617 call for.
fn unauthorized(message: &str) -> HttpResponse {
    let mut res = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).error_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"onboard-est\", charset=\"UTF-8\""),
    );
    res
}

/// `user:password` of an `Authorization: Basic` header.
fn basic(req: &HttpRequest) -> Option<(String, SecretString)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    if user.is_empty() || pass.is_empty() {
        return None;
    }
    Some((user.to_owned(), SecretString::new(pass)))
}

/// A label is a batch name; anything else is no EST resource of ours.
fn label(path: web::Path<String>) -> Result<String, ApiError> {
    let label = path.into_inner();
    onboard_core::validate_batch_name(&label)
        .map_err(|_| ApiError::not_found("no EST label of that form (a batch name)"))?;
    Ok(label)
}

/// The CA chain (issuing CA to root) as certs-only PKCS#7, base64.
#[utoipa::path(tag = "est", responses(
    (status = 200, description = "certs-only PKCS#7, base64 (no line breaks)", content_type = "application/pkcs7-mime", body = String),
    (status = 403, description = "not on the TLS listener", body = ErrorBody),
    (status = 500, body = ErrorBody),
))]
#[get("/.well-known/est/cacerts")]
pub async fn cacerts(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    cacerts_of(&req, &onboard)
}

/// The CA chain under a batch label: the same chain (one CA issues for every batch).
#[utoipa::path(tag = "est", params(("label" = String, Path, description = "a bootstrap key batch")), responses(
    (status = 200, description = "certs-only PKCS#7, base64 (no line breaks)", content_type = "application/pkcs7-mime", body = String),
    (status = 403, description = "not on the TLS listener", body = ErrorBody),
    (status = 404, description = "the label is not a batch name", body = ErrorBody),
    (status = 500, body = ErrorBody),
))]
#[get("/.well-known/est/{label}/cacerts")]
pub async fn labelled_cacerts(
    req: HttpRequest,
    path: web::Path<String>,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    label(path)?;
    cacerts_of(&req, &onboard)
}

fn cacerts_of(req: &HttpRequest, onboard: &Onboard) -> Result<HttpResponse, ApiError> {
    require_tls(req)?;
    let ca = onboard.ca()?;
    let der = ca
        .chain_pkcs7()
        .map_err(|e| ApiError::from(CoreError::Internal(e.to_string())))?;
    Ok(certs_only(&der))
}

/// Enrollment with a bootstrap key: HTTP Basic, user = the device serial, password =
/// the bootstrap key; the body is the base64 of a DER PKCS#10 CSR. The same use case
/// and rules as `POST /public/v1/register`. Answers the certificate as certs-only
/// PKCS#7, base64.
#[utoipa::path(tag = "est",
    request_body(description = "base64 DER PKCS#10 (the content type is not checked)", content(
        (String = "application/pkcs10"),
        (String = "text/plain"),
    )),
    responses(
        (status = 200, description = "the certificate: certs-only PKCS#7, base64", content_type = "application/pkcs7-mime", body = String),
        (status = 400, description = "the body is not a base64 DER CSR, or the CSR is refused", body = ErrorBody),
        (status = 401, description = "no or a wrong serial:bootstrap key (WWW-Authenticate: Basic)", body = ErrorBody),
        (status = 403, description = "not on the TLS listener", body = ErrorBody),
        (status = 409, description = "the serial belongs to another device", body = ErrorBody),
        (status = 413, description = "the body is larger than the limit", body = ErrorBody),
        (status = 503, description = "a dependency is down", body = ErrorBody),
))]
#[post("/.well-known/est/simpleenroll")]
pub async fn simpleenroll(
    req: HttpRequest,
    body: web::Bytes,
    onboard: web::Data<Onboard>,
    guard: web::Data<PublicGuard>,
    metrics: web::Data<RegistrationMetrics>,
) -> Result<HttpResponse, ApiError> {
    enroll(req, body, onboard, guard, metrics, None).await
}

/// Enrollment under a batch label: as `simpleenroll`, and the bootstrap key must be
/// of that batch (a key of another batch is refused like a wrong key).
#[utoipa::path(tag = "est",
    params(("label" = String, Path, description = "the bootstrap key's batch")),
    request_body(description = "base64 DER PKCS#10 (the content type is not checked)", content(
        (String = "application/pkcs10"),
        (String = "text/plain"),
    )),
    responses(
        (status = 200, description = "the certificate: certs-only PKCS#7, base64", content_type = "application/pkcs7-mime", body = String),
        (status = 400, description = "the body is not a base64 DER CSR, or the CSR is refused", body = ErrorBody),
        (status = 401, description = "no or a wrong serial:bootstrap key, or a key of another batch (WWW-Authenticate: Basic)", body = ErrorBody),
        (status = 403, description = "not on the TLS listener", body = ErrorBody),
        (status = 404, description = "the label is not a batch name", body = ErrorBody),
        (status = 409, description = "the serial belongs to another device", body = ErrorBody),
        (status = 413, description = "the body is larger than the limit", body = ErrorBody),
        (status = 503, description = "a dependency is down", body = ErrorBody),
))]
#[post("/.well-known/est/{label}/simpleenroll")]
pub async fn labelled_simpleenroll(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    onboard: web::Data<Onboard>,
    guard: web::Data<PublicGuard>,
    metrics: web::Data<RegistrationMetrics>,
) -> Result<HttpResponse, ApiError> {
    let batch = label(path)?;
    enroll(req, body, onboard, guard, metrics, Some(batch)).await
}

async fn enroll(
    req: HttpRequest,
    body: web::Bytes,
    onboard: web::Data<Onboard>,
    guard: web::Data<PublicGuard>,
    metrics: web::Data<RegistrationMetrics>,
    batch: Option<String>,
) -> Result<HttpResponse, ApiError> {
    require_tls(&req)?;
    let Some((serial, key)) = basic(&req) else {
        return Ok(unauthorized(
            "EST enrollment needs HTTP Basic: the device serial and its bootstrap key",
        ));
    };
    let pem = csr_pem(&body)?;
    let request = RegisterRequest {
        key: Some(key),
        serial,
        model: None,
        firmware_version: None,
        csr: Some(pem),
        metadata: None,
        remote_addr: peer(&req),
        batch,
    };
    let onboard2 = onboard.clone();
    let outcome = web::block(move || onboard2.register(request))
        .await
        .map_err(|_| ApiError::from(CoreError::Internal("a worker task failed".into())))?;
    let done = match outcome {
        Ok(done) => done,
        Err(e) => {
            metrics.failure(e.reason_code());
            if matches!(e, CoreError::Unauthorized("key_unknown")) {
                if let Some(ip) = client_ip(&req, guard.trust_forwarded_for) {
                    guard.limiter.record_failure(ip);
                }
            }
            return match e {
                CoreError::Unauthorized(_) => Ok(unauthorized(
                    "the serial and bootstrap key are unknown, inactive, expired or used up",
                )),
                CoreError::Invalid(v) => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_csr",
                    v.to_string(),
                )),
                other => Err(other.into()),
            };
        }
    };
    metrics.success(&done.timings, done.reregistered);
    let der = onboard_core::certs_only_pkcs7_from_pem(&done.certificate.pem)
        .map_err(|e| ApiError::from(CoreError::Internal(e.to_string())))?;
    Ok(certs_only(&der))
}

/// Re-enrollment over mutual TLS with the device's current certificate: the same
/// use case and rules as `POST /iot/renew` (a revoked or superseded certificate
/// cannot re-enroll). The body is the base64 of a DER PKCS#10 CSR for the new key;
/// the answer is the new certificate as certs-only PKCS#7, base64.
#[utoipa::path(tag = "est",
    request_body(description = "base64 DER PKCS#10 (the content type is not checked)", content(
        (String = "application/pkcs10"),
        (String = "text/plain"),
    )),
    responses(
        (status = 200, description = "the new certificate: certs-only PKCS#7, base64", content_type = "application/pkcs7-mime", body = String),
        (status = 400, description = "the body is not a base64 DER CSR, or the CSR is refused", body = ErrorBody),
        (status = 401, description = "no valid client certificate of ours", body = ErrorBody),
        (status = 403, description = "not on the TLS listener", body = ErrorBody),
        (status = 409, description = "authenticated otherwise than with a certificate", body = ErrorBody),
        (status = 413, description = "the body is larger than the limit", body = ErrorBody),
))]
#[post("/.well-known/est/simplereenroll")]
pub async fn simplereenroll(
    req: HttpRequest,
    body: web::Bytes,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    reenroll(req, body, onboard, None).await
}

/// Re-enrollment under a batch label: as `simplereenroll`, for a device registered
/// with a key of that batch only.
#[utoipa::path(tag = "est",
    params(("label" = String, Path, description = "the batch of the key the device registered with")),
    request_body(description = "base64 DER PKCS#10 (the content type is not checked)", content(
        (String = "application/pkcs10"),
        (String = "text/plain"),
    )),
    responses(
        (status = 200, description = "the new certificate: certs-only PKCS#7, base64", content_type = "application/pkcs7-mime", body = String),
        (status = 400, description = "the body is not a base64 DER CSR, or the CSR is refused", body = ErrorBody),
        (status = 401, description = "no valid client certificate of ours, or a device of another batch", body = ErrorBody),
        (status = 403, description = "not on the TLS listener", body = ErrorBody),
        (status = 404, description = "the label is not a batch name", body = ErrorBody),
        (status = 409, description = "authenticated otherwise than with a certificate", body = ErrorBody),
        (status = 413, description = "the body is larger than the limit", body = ErrorBody),
))]
#[post("/.well-known/est/{label}/simplereenroll")]
pub async fn labelled_simplereenroll(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    let batch = label(path)?;
    reenroll(req, body, onboard, Some(batch)).await
}

async fn reenroll(
    req: HttpRequest,
    body: web::Bytes,
    onboard: web::Data<Onboard>,
    batch: Option<String>,
) -> Result<HttpResponse, ApiError> {
    require_tls(&req)?;
    if req.conn_data::<crate::tls::PeerCertificate>().is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "EST re-enrollment needs the device's current certificate (mutual TLS)",
        ));
    }
    let device = match <crate::iot::Device as actix_web::FromRequest>::extract(&req).await {
        Ok(d) => d,
        Err(e) => return Ok(e.error_response()),
    };
    if let Some(batch) = batch {
        if device.0.device.batch.as_deref() != Some(batch.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this device was not registered with a key of this EST label's batch",
            ));
        }
    }
    let pem = csr_pem(&body)?;
    let outcome = web::block(move || onboard.renew_certificate(&device.0, &pem))
        .await
        .map_err(|_| ApiError::from(CoreError::Internal("a worker task failed".into())))?;
    let renewed = match outcome {
        Ok(r) => r,
        Err(CoreError::Invalid(v)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_csr",
                v.to_string(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let der = onboard_core::certs_only_pkcs7_from_pem(&renewed.certificate.pem)
        .map_err(|e| ApiError::from(CoreError::Internal(e.to_string())))?;
    Ok(certs_only(&der))
}

/// What our policy wants in a CSR (RFC 7030 4.5): the accepted key types, as
/// `application/csrattrs`, base64.
#[utoipa::path(tag = "est", responses(
    (status = 200, description = "CsrAttrs DER, base64 (no line breaks)", content_type = "application/csrattrs", body = String),
    (status = 403, description = "not on the TLS listener", body = ErrorBody),
))]
#[get("/.well-known/est/csrattrs")]
pub async fn csrattrs(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    csrattrs_of(&req)
}

/// What our policy wants in a CSR, under a batch label: the same for every batch.
#[utoipa::path(tag = "est", params(("label" = String, Path, description = "a bootstrap key batch")), responses(
    (status = 200, description = "CsrAttrs DER, base64 (no line breaks)", content_type = "application/csrattrs", body = String),
    (status = 403, description = "not on the TLS listener", body = ErrorBody),
    (status = 404, description = "the label is not a batch name", body = ErrorBody),
))]
#[get("/.well-known/est/{label}/csrattrs")]
pub async fn labelled_csrattrs(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    label(path)?;
    csrattrs_of(&req)
}

fn csrattrs_of(req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    require_tls(req)?;
    Ok(HttpResponse::Ok()
        .content_type("application/csrattrs")
        .insert_header(("Content-Transfer-Encoding", "base64"))
        .body(B64.encode(onboard_core::est_csr_attributes())))
}
