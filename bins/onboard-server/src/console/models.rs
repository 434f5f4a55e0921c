//! Device models: topic templates, default configuration and the current firmware.

use std::fmt::Write;

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use onboard_core::Onboard;

use super::html::{code_lines, csrf_field, esc, layout};
use super::{api_error_page, forbidden, require, see_other};
use crate::admin::blocking;
use crate::error::ApiError;

/// The upload form's route pattern (its body limit is `assets.max_firmware_bytes`
/// plus [`FORM_OVERHEAD`], checked by the handler so that the answer is a console
/// page).
pub const UPLOAD_PATTERN: &str = "/admin/models/{code}/firmware";
/// What a multipart form adds around the image: boundaries, part headers and the
/// CSRF field.
pub const FORM_OVERHEAD: u64 = 16 * 1024;
/// The longest CSRF field read.
const MAX_CSRF_BYTES: usize = 256;

async fn models(req: HttpRequest, onboard: web::Data<Onboard>) -> HttpResponse {
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("models");
    let o = onboard.clone();
    let found = blocking(move || {
        let mut out = Vec::new();
        for m in o.models()? {
            let firmware = o.firmware_info(m.code.as_str())?;
            out.push((m, firmware));
        }
        Ok(out)
    })
    .await;
    let found = match found {
        Ok(f) => f,
        Err(e) => return api_error_page(&e, Some(&nav)),
    };
    let mut body = String::from("<h1>Device models</h1>");
    if found.is_empty() {
        body.push_str(
            "<p>No models yet (<code>onboardctl models create</code> or the admin API).</p>",
        );
    }
    for (m, firmware) in &found {
        let list = code_lines;
        let firmware = match firmware {
            Some(f) => format!(
                "{} ({} bytes, SHA-256 <code>{}</code>, uploaded {})",
                esc(&f.version),
                f.size,
                esc(&f.sha256.to_string()),
                f.uploaded_at.format("%Y-%m-%d %H:%M UTC")
            ),
            None => "none uploaded".into(),
        };
        let _ = write!(
            body,
            r#"<section class="card model" id="model-{code}" aria-labelledby="h-{code}"><h2 id="h-{code}">{code} · {name}</h2><dl>
<dt>Description</dt><dd>{description}</dd><dt>Publish</dt><dd>{publish}</dd><dt>Subscribe</dt><dd>{subscribe}</dd>
<dt>Max QoS</dt><dd>{qos}</dd><dt>Retain</dt><dd>{retain}</dd><dt>Credential</dt><dd>{credential}</dd>
<dt>Default configuration</dt><dd><code>{config}</code></dd><dt>Firmware</dt><dd class="firmware">{firmware}</dd></dl>
<form class="upload" method="post" action="/admin/models/{code}/firmware" enctype="multipart/form-data">{csrf}<label for="fw-{code}"><span>New firmware image (an ESP32 application .bin)</span>
<input id="fw-{code}" name="image" type="file" accept=".bin,application/octet-stream" required></label>
<button type="submit">Upload firmware</button></form></section>"#,
            csrf = csrf_field(&signed.csrf),
            code = esc(m.code.as_str()),
            name = esc(&m.name),
            description = esc(&m.description),
            publish = list(&m.publish_topics),
            subscribe = list(&m.subscribe_topics),
            qos = m.max_qos,
            retain = if m.retain_allowed {
                "allowed"
            } else {
                "not allowed"
            },
            credential = esc(&m.credential.to_string()),
            config = esc(&m.config.to_string()),
        );
    }
    layout(StatusCode::OK, "Device models", Some(&nav), &body)
}

/// Reads a text field of at most `max` bytes.
async fn small_field(field: &mut actix_multipart::Field, max: usize) -> Option<String> {
    let mut out = Vec::new();
    while let Some(chunk) = field.next().await {
        out.extend_from_slice(&chunk.ok()?);
        if out.len() > max {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn bad_form(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// The upload form: `multipart/form-data` with the CSRF token first and then the
/// image. The token is checked before a byte of the image is stored; the image goes
/// through the same staging, limit and validation as the admin API's `PUT`.
async fn upload(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    code: web::Path<String>,
    mut form: Multipart,
) -> HttpResponse {
    // Origin and session first, so a cross-site or signed-out post reads nothing;
    // then the CSRF token, the form's first field, before any of the image.
    if !super::same_origin(&req) {
        return forbidden("cross-site request refused");
    }
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    // A declared body above the limit is refused before it is read.
    let limit = onboard
        .settings()
        .assets
        .max_firmware_bytes
        .saturating_add(FORM_OVERHEAD);
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return api_error_page(
            &onboard_core::CoreError::TooLarge {
                what: "firmware image",
                setting: "assets.max_firmware_bytes",
                limit: onboard.settings().assets.max_firmware_bytes,
            }
            .into(),
            Some(&signed.nav("models")),
        );
    }
    let csrf = match form.next().await {
        Some(Ok(mut field)) if field.name() == Some("csrf") => {
            small_field(&mut field, MAX_CSRF_BYTES)
                .await
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    if let Some(answer) = super::csrf_refused(&signed, &csrf) {
        return answer;
    }
    let nav = signed.nav("models");
    let code = code.into_inner();
    let image = match form.next().await {
        Some(Ok(field)) if field.name() == Some("image") => field,
        Some(Err(_)) => {
            return api_error_page(&bad_form("the upload form could not be read"), Some(&nav))
        }
        _ => {
            return api_error_page(
                &bad_form("the upload form has no firmware image"),
                Some(&nav),
            )
        }
    };
    let staged = match crate::firmware::receive(&onboard, &code, image).await {
        Ok(s) => s,
        Err(e) => return api_error_page(&e, Some(&nav)),
    };
    let (o, actor, c) = (onboard.clone(), signed.actor.clone(), code.clone());
    match blocking(move || o.install_firmware(&actor, &c, staged)).await {
        Ok(_) => see_other(&format!("/admin/models#model-{}", super::html::url(&code))),
        Err(e) => api_error_page(&e, Some(&nav)),
    }
}

/// Whether a request is the console's firmware upload (for the body limit).
pub fn is_upload(req: &actix_web::dev::ServiceRequest) -> bool {
    req.method() == actix_web::http::Method::POST
        && req.match_pattern().as_deref() == Some(UPLOAD_PATTERN)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/models", web::get().to(models))
        .route("/models/{code}/firmware", web::post().to(upload));
}
