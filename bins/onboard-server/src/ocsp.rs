//! The OCSP responder (RFC 6960, HTTP transport per its appendix A):
//! `POST /public/v1/ocsp` with a DER request, `GET /public/v1/ocsp/{request}` with
//! the URL-encoded base64 of the DER request. Every answer is HTTP 200 with an
//! `application/ocsp-response` body, including the OCSP errors (malformedRequest,
//! unauthorized, internalError), as the RFC wants.

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use base64::Engine as _;
use onboard_core::{OcspAnswer, OcspResponderCache, Onboard};

use crate::error::{ApiError, ErrorBody};

const OCSP_RESPONSE: &str = "application/ocsp-response";

/// GET answers carry Last-Modified (thisUpdate) and Expires (nextUpdate) but no
/// ETag: every answer is signed afresh, so there is nothing to revalidate against.
/// They are cached at most this long (and never past nextUpdate), so a
/// revocation reaches caches within five minutes; POST answers and answers to
/// requests with a nonce are not cached.
pub const MAX_CACHE_SECONDS: i64 = 300;

async fn answer(
    onboard: web::Data<Onboard>,
    cache: web::Data<OcspResponderCache>,
    der: Vec<u8>,
) -> Result<OcspAnswer, ApiError> {
    web::block(move || onboard.answer_ocsp(&cache, &der))
        .await
        .map_err(|_| ApiError::from(onboard_core::CoreError::Internal("OCSP task failed".into())))
}

fn respond(answer: OcspAnswer, cacheable_transport: bool) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.content_type(OCSP_RESPONSE);
    match (
        answer.cacheable && cacheable_transport,
        answer.this_update,
        answer.next_update,
    ) {
        (true, Some(this_update), Some(next_update)) => {
            let max_age = onboard_core::ocsp_max_age(
                this_update,
                next_update,
                chrono::Duration::seconds(MAX_CACHE_SECONDS),
            )
            .num_seconds();
            res.insert_header((
                header::CACHE_CONTROL,
                format!("public, max-age={max_age}, no-transform, must-revalidate"),
            ))
            .insert_header((header::LAST_MODIFIED, http_date(this_update)))
            .insert_header((header::EXPIRES, http_date(next_update)));
        }
        _ => {
            res.insert_header((header::CACHE_CONTROL, "no-store"));
        }
    }
    res.body(answer.der)
}

fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// OCSP over POST: the body is a DER OCSPRequest (`application/ocsp-request`, or
/// `application/octet-stream`), at most 8 KiB (a larger body answers
/// malformedRequest).
#[utoipa::path(context_path = "/public/v1", tag = "public",
    request_body(description = "DER OCSPRequest", content(
        (Vec<u8> = "application/ocsp-request"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "DER OCSPResponse (also for malformedRequest / unauthorized / internalError)", content_type = "application/ocsp-response", body = Vec<u8>),
        (status = 413, description = "the body is larger than server.max_body_bytes", body = ErrorBody),
        (status = 415, description = "the body is neither application/ocsp-request nor application/octet-stream", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
))]
#[post("/ocsp")]
pub async fn ocsp_post(
    req: HttpRequest,
    body: web::Bytes,
    onboard: web::Data<Onboard>,
    cache: web::Data<OcspResponderCache>,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !matches!(
        content_type.as_deref(),
        Some("application/ocsp-request" | "application/octet-stream")
    ) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "an OCSP request must be sent as Content-Type: application/ocsp-request \
             (or application/octet-stream)",
        ));
    }
    let answer = answer(onboard, cache, body.to_vec()).await?;
    Ok(respond(answer, false))
}

/// OCSP over GET: the path ends with the URL-encoded base64 of the DER request
/// (RFC 6960 A.1). Cacheable for at most five minutes, never past nextUpdate.
#[utoipa::path(context_path = "/public/v1", tag = "public",
    params(("request" = String, Path, description = "URL-encoded base64 of the DER OCSPRequest")),
    responses(
        (status = 200, description = "DER OCSPResponse (also for malformedRequest / unauthorized / internalError)", content_type = "application/ocsp-response", body = Vec<u8>),
        (status = 429, description = "rate limited", body = ErrorBody),
))]
#[get("/ocsp/{request:.+}")]
pub async fn ocsp_get(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    cache: web::Data<OcspResponderCache>,
) -> Result<HttpResponse, ApiError> {
    // The raw path: actix would turn %2F into a path separator in some versions.
    let raw = req
        .uri()
        .path()
        .strip_prefix("/public/v1/ocsp/")
        .unwrap_or_default();
    let der = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
    let text: Vec<u8> = der
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&text))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&text))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&text));
    let answer = match decoded {
        Ok(der) => answer(onboard, cache, der).await?,
        Err(_) => OcspAnswer {
            der: onboard_core::OcspFailure::MalformedRequest.to_der(),
            this_update: None,
            next_update: None,
            cacheable: false,
        },
    };
    Ok(respond(answer, true))
}
