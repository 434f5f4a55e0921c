//! Public routes that need no credentials: the CA chain and the CRL.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, web, HttpRequest, HttpResponse};
use onboard_core::Onboard;

use crate::error::{ApiError, ErrorBody};

const PEM: &str = "application/x-pem-file";
const PKIX_CRL: &str = "application/pkix-crl";

/// Starts a cacheable answer: 304 when the client's `If-None-Match` names `etag`,
/// else 200; both carry the ETag and `Cache-Control`. Returns whether it is a 304.
fn cacheable(
    req: &HttpRequest,
    etag: String,
    cache_control: String,
) -> (actix_web::HttpResponseBuilder, bool) {
    let fresh = not_modified(req, &etag);
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache_control));
    (res, fresh)
}

/// Whether the request's `If-None-Match` names `etag`.
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// The CA chain (issuing CA first, root last), PEM: what devices and brokers trust.
#[utoipa::path(context_path = "/public/v1", tag = "public", responses(
    (status = 200, description = "PEM certificates", content_type = "application/x-pem-file", body = String),
    (status = 304, description = "unchanged since the ETag given in If-None-Match"),
    (status = 500, body = ErrorBody),
))]
#[get("/ca")]
pub async fn ca_chain(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
) -> Result<HttpResponse, ApiError> {
    let (pem, digest) = onboard.ca_chain()?;
    let etag = format!("\"{digest}\"");
    let (mut res, fresh) = cacheable(&req, etag, "public, max-age=3600".into());
    Ok(if fresh {
        res.finish()
    } else {
        res.content_type(PEM).body(pem)
    })
}

/// The current CRL: PEM, or DER with `Accept: application/pkix-crl`. Cacheable until
/// the server would publish a newer one (a revocation publishes at once).
#[utoipa::path(context_path = "/public/v1", tag = "public", responses(
    (status = 200, description = "the CRL (PEM, or DER by Accept)", content_type = "application/x-pem-file", body = String),
    (status = 304, description = "unchanged since the ETag given in If-None-Match"),
    (status = 500, body = ErrorBody),
))]
#[get("/crl")]
pub async fn crl(req: HttpRequest, onboard: web::Data<Onboard>) -> Result<HttpResponse, ApiError> {
    let der_wanted = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with(PKIX_CRL)));
    let current = web::block(move || onboard.current_crl())
        .await
        .map_err(|_| {
            ApiError::from(onboard_core::CoreError::Internal("CRL task failed".into()))
        })??;
    let etag = format!(
        "\"crl-{}-{}\"",
        current.number,
        if der_wanted { "der" } else { "pem" }
    );
    let max_age = (current.next_update - current.this_update)
        .num_seconds()
        .max(0)
        / 2;
    let (mut res, fresh) = cacheable(&req, etag, format!("public, max-age={max_age}"));
    res.insert_header((header::VARY, HeaderValue::from_static("Accept")))
        .insert_header((
            header::LAST_MODIFIED,
            current
                .this_update
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        ))
        .insert_header(("X-CRL-Number", current.number.to_string()));
    Ok(if fresh {
        res.finish()
    } else if der_wanted {
        res.content_type(PKIX_CRL).body(current.der)
    } else {
        res.content_type(PEM).body(current.pem)
    })
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CaCertificateView {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// `ecdsa-p256`, `rsa-2048`, ...
    pub key: String,
    pub fingerprint_sha256: String,
    pub self_signed: bool,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CaInfoView {
    /// Issuing CA first, root last.
    pub chain: Vec<CaCertificateView>,
    pub key_encrypted: bool,
    /// The latest published CRL's number, when one was published.
    pub crl_number: Option<i64>,
    pub crl_this_update: Option<chrono::DateTime<chrono::Utc>>,
    pub crl_next_update: Option<chrono::DateTime<chrono::Utc>>,
}

/// The CA: its certificates, whether its key is encrypted at rest, the CRL number
/// and next update.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, body = CaInfoView), (status = 401, body = ErrorBody),
))]
#[get("/ca")]
pub async fn ca_info(
    _admin: crate::auth::Admin,
    onboard: web::Data<Onboard>,
) -> Result<web::Json<CaInfoView>, ApiError> {
    let s = crate::admin::blocking(move || onboard.ca_summary()).await?;
    Ok(web::Json(CaInfoView {
        chain: s
            .chain
            .iter()
            .map(|c| CaCertificateView {
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                serial: c.serial.to_string(),
                not_before: c.not_before,
                not_after: c.not_after,
                key: c.key_description.clone(),
                fingerprint_sha256: c.fingerprint.to_string(),
                self_signed: c.self_signed,
            })
            .collect(),
        key_encrypted: s.key_encrypted,
        crl_number: s.crl.as_ref().map(|c| c.number),
        crl_this_update: s.crl.as_ref().map(|c| c.this_update),
        crl_next_update: s.crl.as_ref().map(|c| c.next_update),
    }))
}
