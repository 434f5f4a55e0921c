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
        crate::register::register,
        crate::admin::create_keys,
        crate::admin::list_keys,
        crate::admin::show_key,
        crate::admin::activate_key,
        crate::admin::deactivate_key,
        crate::admin::delete_key,
        crate::admin::list_devices,
        crate::admin::show_device,
        crate::admin::list_audit,
        crate::devices::register_device,
        crate::devices::revoke_device,
        crate::devices::decommission_device,
        crate::devices::update_device,
        crate::devices::download_bundle,
        crate::public::ca_info,
        crate::models::create_model,
        crate::models::list_models,
        crate::models::show_model,
        crate::models::update_model,
        crate::models::delete_model,
        crate::devices::device_provisioning,
        crate::iot::token,
        crate::iot::jwks,
        crate::iot::openid_configuration,
        crate::iot::config,
        crate::iot::provisioning,
        crate::iot::activate,
        crate::iot::renew,
        crate::iot::firmware,
        crate::firmware::upload_firmware,
        crate::firmware::download_firmware,
        crate::rotation::rotation_status,
        crate::rotation::trigger_rotation,
        crate::rotation::rotate_device,
        crate::rotation::acknowledge,
    ),
    components(schemas(ErrorBody, HealthBody, ReadyBody)),
    modifiers(&OperationsPaths, &SecuritySchemes),
    tags(
        (name = "operations", description = "Health, metrics and documentation"),
        (name = "public", description = "Routes devices call without admin credentials"),
        (name = "admin", description = "Operator routes: Authorization: Bearer <admin token>"),
        (name = "iot", description = "The device API: a client certificate of ours (mutual TLS) or an access token from POST /iot/token"),
    ),
)]
pub struct ApiDoc;

/// The credentials: admin tokens, and bootstrap keys (bearer or X-Api-Key).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin token (onboardctl admin token create)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bootstrap_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The bootstrap key flashed into the device"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "The bootstrap key, as devices of the earlier service send it",
            ))),
        );
    }
}

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
