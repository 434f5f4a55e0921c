//! Model firmware over HTTP: the admin upload (`PUT`, a raw body streamed to a
//! staging file and cut at `assets.max_firmware_bytes`) and download, and
//! [`serve_model_firmware`], which every firmware download (admin and device)
//! goes through: `ETag` (the image's SHA-256), `304` on a matching
//! `If-None-Match`, `X-Firmware-Version`, `Accept-Ranges: bytes` and single
//! byte ranges (`206`, `416`) for resumed downloads.

use std::io::{Read, Seek, SeekFrom};

use actix_web::body::SizedStream;
use actix_web::dev::ServiceRequest;
use actix_web::http::{header, Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{get, put, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use onboard_core::domain::{ModelCode, ModelFirmware};
use onboard_core::{CoreError, FirmwareFile, Onboard, StagedFirmware};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::blocking;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};

/// The upload route's pattern: its body limit is `assets.max_firmware_bytes`
/// instead of `server.max_body_bytes`.
pub const UPLOAD_PATTERN: &str = "/private/v1/admin/models/{code}/firmware";
/// The header that carries the firmware's version on every download.
pub const VERSION_HEADER: &str = "x-firmware-version";
/// Received bytes are written to the staging file in parts of this size.
const FLUSH_BYTES: usize = 256 * 1024;
/// Parts of the file sent per read.
const READ_BYTES: u64 = 64 * 1024;

/// Whether a request is a firmware upload (for the body limit).
pub fn is_upload(req: &ServiceRequest) -> bool {
    req.method() == Method::PUT && req.match_pattern().as_deref() == Some(UPLOAD_PATTERN)
}

/// A model's firmware as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FirmwareView {
    pub model: String,
    /// The application descriptor's version (`PROJECT_VER`).
    #[schema(example = "1.4.2")]
    pub version: String,
    /// SHA-256 of the image file, lowercase hex; also its `ETag`.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// The descriptor's project name.
    pub project: String,
    /// The ESP-IDF version it was built with.
    pub idf_version: String,
    pub uploaded_at: DateTime<Utc>,
}

impl From<&ModelFirmware> for FirmwareView {
    fn from(f: &ModelFirmware) -> Self {
        Self {
            model: f.model.to_string(),
            version: f.version.clone(),
            sha256: f.sha256.to_string(),
            size: f.size,
            project: f.project.clone(),
            idf_version: f.idf_version.clone(),
            uploaded_at: f.uploaded_at,
        }
    }
}

fn model_code(raw: &str) -> Result<ModelCode, ApiError> {
    ModelCode::parse(raw).map_err(|_| ApiError::not_found("device model not found"))
}

/// Writes the buffered part of an upload off the async workers.
async fn flush(
    mut staged: StagedFirmware,
    buf: Vec<u8>,
) -> Result<(StagedFirmware, Vec<u8>), ApiError> {
    blocking(move || {
        staged.write(&buf)?;
        let mut buf = buf;
        buf.clear();
        Ok((staged, buf))
    })
    .await
}

/// Streams an upload's bytes into a staging file (written off the async workers in
/// parts of [`FLUSH_BYTES`]) and cuts it at `assets.max_firmware_bytes`. An unknown
/// model is refused before the body is read. Used by the admin API's `PUT` and the
/// console's upload form, so both stage, limit and validate alike.
pub async fn receive<S, E>(
    onboard: &web::Data<Onboard>,
    code: &str,
    mut body: S,
) -> Result<StagedFirmware, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let (o, c) = (onboard.clone(), code.to_owned());
    let mut staged = blocking(move || {
        o.model(&c)?;
        o.stage_firmware()
    })
    .await?;
    let limit = onboard.settings().assets.max_firmware_bytes;
    let mut buf = Vec::with_capacity(FLUSH_BYTES);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            )
        })?;
        if staged.len() + (buf.len() + chunk.len()) as u64 > limit {
            return Err(CoreError::TooLarge {
                what: "firmware image",
                setting: "assets.max_firmware_bytes",
                limit,
            }
            .into());
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= FLUSH_BYTES {
            (staged, buf) = flush(staged, buf).await?;
        }
    }
    let (staged, _) = flush(staged, buf).await?;
    Ok(staged)
}

/// Upload a model's firmware: an ESP32 application image as the raw body
/// (`application/octet-stream`). It is validated (image header, segments,
/// checksum, appended SHA-256, application descriptor) and its version, project
/// and ESP-IDF version are read from it; an invalid image is a 422 that names
/// the problem and changes nothing.
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the image file as `idf.py build` writes it"),
    responses(
    (status = 200, body = FirmwareView), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 422, body = ErrorBody, description = "not a valid ESP32 application image"),
))]
#[put("/models/{code}/firmware")]
pub async fn upload_firmware(
    admin: Admin,
    onboard: web::Data<Onboard>,
    code: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let code = model_code(&code)?.to_string();
    let staged = receive(&onboard, &code, payload).await?;
    let fw = blocking(move || onboard.install_firmware(&admin.0, &code, staged)).await?;
    Ok(HttpResponse::Ok().json(FirmwareView::from(&fw)))
}

/// Download a model's firmware image (`ETag`, `If-None-Match`, `Range`).
#[utoipa::path(context_path = "/private/v1/admin", tag = "admin", security(("admin_token" = [])),
    params(
        ("If-None-Match" = Option<String>, Header, description = "the ETag held: 304 when it is current"),
        ("Range" = Option<String>, Header, description = "one byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n`"),
    ),
    responses(
    (status = 200, description = "the image", content_type = "application/octet-stream", body = Vec<u8>,
        headers(("ETag" = String, description = "the image's SHA-256, quoted"),
                ("X-Firmware-Version" = String, description = "the image's version"))),
    (status = 206, description = "the requested range", content_type = "application/octet-stream", body = Vec<u8>),
    (status = 304, description = "the image is the one the client has"),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no such model, or it has no firmware"),
    (status = 416, body = ErrorBody, description = "the range lies outside the image"),
))]
#[get("/models/{code}/firmware")]
pub async fn download_firmware(
    _admin: Admin,
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    code: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve_model_firmware(&req, &onboard, &model_code(&code)?).await
}

/// A `Range` header, read against the image's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No range (absent, not `bytes`, several ranges, or malformed: RFC 9110
    /// lets a server ignore those and send the whole image).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A range that starts past the end of the image: 416.
    Unsatisfiable,
}

/// Reads one `bytes=a-b`, `bytes=a-` or `bytes=-n` range.
pub fn parse_range(value: &str, size: u64) -> ByteRange {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => ByteRange::Whole,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (a, b) => {
            let Some(start) = number(a) else {
                return ByteRange::Whole;
            };
            let end = if b.is_empty() {
                None
            } else {
                match number(b) {
                    Some(end) if end >= start => Some(end),
                    _ => return ByteRange::Whole,
                }
            };
            if start >= size {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Part {
                start,
                end: end.map_or(size - 1, |e| e.min(size - 1)),
            }
        }
    }
}

/// Whether an `If-None-Match` value names this ETag (`*`, or a list of strong or
/// weak tags).
fn none_match(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/").is_some_and(|t| t == etag))
}

/// Serves `model`'s firmware for `req`: 404 (JSON) when the model has none,
/// 304 when `If-None-Match` holds its ETag, a single range (206 or 416) for a
/// `Range` request whose `If-Range` (if any) still matches, the whole image
/// otherwise. Every answer carries `ETag` and `X-Firmware-Version`.
pub async fn serve_model_firmware(
    req: &HttpRequest,
    onboard: &Onboard,
    model: &ModelCode,
) -> Result<HttpResponse, ApiError> {
    let (o, code) = (onboard.clone(), model.to_string());
    let FirmwareFile { firmware, file } = blocking(move || o.model_firmware(&code)).await?;
    let etag = format!("\"{}\"", firmware.sha256);
    let headers = req.headers();
    let response = |status: StatusCode| {
        let mut r = HttpResponse::build(status);
        r.insert_header((header::ETAG, etag.clone()))
            .insert_header((VERSION_HEADER, firmware.version.clone()))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((header::CACHE_CONTROL, "no-cache"));
        r
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| none_match(v, &etag))
    {
        return Ok(response(StatusCode::NOT_MODIFIED).finish());
    }
    let size = firmware.size;
    let if_range_holds = headers
        .get(header::IF_RANGE)
        .map(|v| v.to_str().is_ok_and(|v| v.trim() == etag))
        .unwrap_or(true);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_holds => parse_range(v, size),
        _ => ByteRange::Whole,
    };
    let (status, start, len) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, size),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            let e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the firmware image has {size} bytes"),
            );
            let mut r = actix_web::ResponseError::error_response(&e);
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                header::HeaderValue::from_str(&format!("bytes */{size}"))
                    .map_err(|_| CoreError::Internal("content range".into()))?,
            );
            return Ok(r);
        }
    };
    let mut builder = response(status);
    builder
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{model}.bin\""),
        ));
    if status == StatusCode::PARTIAL_CONTENT {
        builder.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        ));
    }
    Ok(builder.body(SizedStream::new(len, file_stream(file, start, len))))
}

/// `len` bytes of `file` from `start`, read off the async workers.
fn file_stream(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some((file, start, len)), |state| async move {
        let (mut file, at, left) = state?;
        if left == 0 {
            return None;
        }
        let n = left.min(READ_BYTES);
        let read = web::block(move || {
            file.seek(SeekFrom::Start(at))?;
            let mut buf = vec![0u8; n as usize];
            file.read_exact(&mut buf)?;
            Ok::<_, std::io::Error>((file, buf))
        })
        .await;
        match read {
            Ok(Ok((file, buf))) => Some((Ok(Bytes::from(buf)), Some((file, at + n, left - n)))),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading a firmware image failed");
                Some((Err(e), None))
            }
            Err(_) => Some((Err(std::io::Error::other("a worker task failed")), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{none_match, parse_range, ByteRange::*};

    #[test]
    fn ranges() {
        let size = 1000;
        assert_eq!(parse_range("bytes=0-99", size), Part { start: 0, end: 99 });
        assert_eq!(
            parse_range("bytes=900-", size),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-100", size),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-5000", size),
            Part { start: 0, end: 999 }
        );
        assert_eq!(
            parse_range("bytes=990-5000", size),
            Part {
                start: 990,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=999-999", size),
            Part {
                start: 999,
                end: 999
            }
        );
        assert_eq!(parse_range("bytes=1000-", size), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-1001", size), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", size), Unsatisfiable);
        for ignored in [
            "",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=0-1,5-6",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(ignored, size), Whole, "{ignored}");
        }
    }

    #[test]
    fn if_none_match_lists() {
        let etag = "\"abc\"";
        for hit in ["\"abc\"", "*", "\"x\", \"abc\"", "W/\"abc\""] {
            assert!(none_match(hit, etag), "{hit}");
        }
        for miss in ["\"ab\"", "abc", "\"abcd\", W/\"x\""] {
            assert!(!none_match(miss, etag), "{miss}");
        }
    }
}
