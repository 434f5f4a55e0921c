//! How errors become HTTP responses. The policy:
//!
//! - Errors the client can fix (bad input, unknown resource, state conflict, body too
//!   large, not authenticated) are 4xx with a stable body
//!   `{"error": "<machine code>", "message": "<human sentence>"}`.
//! - Errors on our side are 500 (or 503 when a dependency is unavailable and a retry
//!   may help). They are logged with their detail; the body says only that something
//!   failed on the server, never internal text. A change that is committed but
//!   not yet applied to the broker is 503 too, saying so (`<action> recorded; it
//!   reaches the broker ... once they are back`).
//! - No body ever carries a secret or a stack trace.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use onboard_core::CoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `not_found`, `invalid_body`.
    #[schema(example = "not_found")]
    pub error: String,
    /// A sentence for humans.
    #[schema(example = "no route for GET /nope")]
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message of the JSON body (the console shows the same text).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        response.json(ErrorBody {
            error: self.code.to_owned(),
            message: self.message.clone(),
        })
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Invalid(v) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                v.to_string(),
            ),
            CoreError::NotFound { entity } => ApiError::not_found(format!("{entity} not found")),
            CoreError::InvalidFirmware(onboard_core::ImageError::TooLarge { limit, .. }) => {
                ApiError::payload_too_large(usize::try_from(limit).unwrap_or(usize::MAX))
            }
            CoreError::InvalidFirmware(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_firmware",
                format!("not a valid ESP32 application image: {e}"),
            ),
            CoreError::TooLarge {
                what,
                setting,
                limit,
            } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the {what} is larger than {limit} bytes ({setting})"),
            ),
            // One answer for every unusable credential; the audit log keeps which.
            CoreError::Unauthorized(_) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the credential is missing, unknown, inactive, expired or used up",
            ),
            CoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CoreError::Takeover(m) => ApiError::new(StatusCode::CONFLICT, "serial_taken", m),
            // Committed: the caller must not take the 503 for "nothing happened".
            CoreError::Pending { action, detail } => {
                tracing::warn!(%detail, action, "recorded; the broker is behind");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("{action} recorded; it reaches the broker (and AWS IoT, when on) once they are back, retried automatically"),
                )
            }
            CoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a dependency of the service is unavailable; retry later",
                )
            }
            // The AWS call and AWS's message are not secrets, and tell the
            // operator (and the device's logs) which step failed.
            CoreError::Cloud(message) => {
                tracing::warn!(%message, "AWS IoT unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "aws_unavailable", message)
            }
            CoreError::Setup(detail) | CoreError::Internal(detail) => {
                tracing::error!(%detail, "request failed on the server");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed to handle the request",
                )
            }
        }
    }
}

/// Errors from actix's extractors (JSON, query, path), as `ApiError`s.
pub mod extractors {
    use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
    use actix_web::http::StatusCode;
    use actix_web::HttpRequest;

    use super::ApiError;

    pub fn json(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
        let e = match &err {
            JsonPayloadError::OverflowKnownLength { limit, .. }
            | JsonPayloadError::Overflow { limit } => ApiError::payload_too_large(*limit),
            JsonPayloadError::ContentType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ),
            JsonPayloadError::Deserialize(de) if de.is_data() => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the JSON body does not match the schema: {de}"),
            ),
            JsonPayloadError::Deserialize(de) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {de}"),
            ),
            JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            ),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            ),
        };
        e.into()
    }

    /// Form bodies: the token endpoint answers these itself, in RFC 6749's shape.
    pub fn form(err: actix_web::error::UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the form body cannot be read: {err}"),
        )
        .into()
    }

    pub fn query(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            format!("invalid query parameters: {err}"),
        )
        .into()
    }

    pub fn path(err: PathError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("invalid path parameter: {err}"),
        )
        .into()
    }
}
