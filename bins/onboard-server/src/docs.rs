//! The OpenAPI document and the interactive docs, both served from the binary.

use actix_web::{get, HttpResponse};
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::{ContentBuilder, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::health::{HealthBody, ReadyBody};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Onboard",
        description = "IoT device onboarding and provisioning: device self-registration with \
                       bootstrap keys, X.509 identities from the internal CA, and the operator API.",
    ),
    paths(
        crate::health::health,
        crate::health::ready,
        crate::public::ca_chain,
        crate::public::crl,
    ),
    components(schemas(ErrorBody, HealthBody, ReadyBody)),
    modifiers(&OperationsPaths),
    tags(
        (name = "operations", description = "Health, metrics and documentation"),
        (name = "public", description = "Routes devices call without admin credentials"),
    ),
)]
pub struct ApiDoc;

/// Documents the routes that are not handlers of ours: `/metrics` (middleware) and
/// the docs themselves.
struct OperationsPaths;

impl Modify for OperationsPaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let routes = [
            (
                "/metrics",
                "Prometheus metrics (text exposition format)",
                "text/plain",
            ),
            (
                "/api/openapi.json",
                "This OpenAPI document",
                "application/json",
            ),
            (
                "/api/docs",
                "Interactive API documentation (Swagger UI)",
                "text/html",
            ),
        ];
        for (path, summary, media) in routes {
            let operation = OperationBuilder::new()
                .summary(Some(summary))
                .tag("operations")
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description(summary)
                        .content(media, ContentBuilder::new().build()),
                )
                .build();
            openapi
                .paths
                .add_path_operation(path, vec![HttpMethod::Get], operation);
        }
    }
}

/// The OpenAPI 3 document for every endpoint.
#[get("/api/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// `/api/docs` without the slash: where the UI lives.
#[get("/api/docs")]
pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", "/api/docs/"))
        .finish()
}

/// Swagger UI, vendored into the binary: no internet needed.
pub fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/api/docs/{_:.*}")
        .config(utoipa_swagger_ui::Config::from("/api/openapi.json"))
}
