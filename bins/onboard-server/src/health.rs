//! Liveness and readiness.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};
use onboard_core::{NotReady, Onboard};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `postgres` or `sqlite`.
    #[schema(example = "sqlite")]
    pub database: &'static str,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(tag = "operations", responses((status = 200, body = HealthBody)))]
#[get("/api/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(HealthBody { status: "ok" })
}

/// Readiness: the database answers. 503 while it does not.
#[utoipa::path(tag = "operations", responses(
    (status = 200, body = ReadyBody),
    (status = 503, description = "not ready", body = ErrorBody),
))]
#[get("/api/health/ready")]
pub async fn ready(onboard: web::Data<Onboard>) -> Result<HttpResponse, ApiError> {
    let database = onboard.backend();
    let check = web::block(move || onboard.readiness()).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "readiness check failed",
        )
    })?;
    match check {
        Ok(()) => Ok(HttpResponse::Ok().json(ReadyBody {
            status: "ready",
            database,
        })),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            let message = match reason {
                NotReady::Database(_) => "the database is unavailable".to_owned(),
                pending @ NotReady::MigrationsPending(_) => pending.to_string(),
            };
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                message,
            ))
        }
    }
}
