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
        crate::ocsp::ocsp_post,
        crate::ocsp::ocsp_get,
        crate::est::cacerts,
        crate::est::simpleenroll,
        crate::est::simplereenroll,
        crate::est::csrattrs,
        crate::est::labelled_cacerts,
        crate::est::labelled_simpleenroll,
        crate::est::labelled_simplereenroll,
        crate::est::labelled_csrattrs,
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
    modifiers(&OperationsPaths, &SecuritySchemes, &ExtractorAnswers),
    tags(
        (name = "operations", description = "Health, metrics and documentation"),
        (name = "public", description = "Routes devices call without admin credentials"),
        (name = "admin", description = "Operator routes: Authorization: Bearer <admin token>"),
        (name = "est", description = "EST enrollment (RFC 7030), on the TLS listener only"),
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

/// What every route with a request body may answer before its handler runs (the
/// extractors and the body limit), added to each such operation that does not
/// document it itself: 400 (a body that is not JSON or not a form), 413 (too large),
/// 415 (another content type).
struct ExtractorAnswers;

impl Modify for ExtractorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Response};
        let answers = [
            ("400", "the body cannot be read (malformed JSON or form)"),
            ("413", "the body is larger than the limit"),
            ("415", "the body has another content type"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in [item.post.as_mut(), item.put.as_mut(), item.patch.as_mut()]
                .into_iter()
                .flatten()
            {
                if op.request_body.is_none() {
                    continue;
                }
                for (status, what) in answers {
                    if op.responses.responses.contains_key(status) {
                        continue;
                    }
                    let response: Response = ResponseBuilder::new()
                        .description(what)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build();
                    op.responses
                        .responses
                        .insert(status.to_owned(), RefOr::T(response));
                }
            }
        }
    }
}

/// The OpenAPI document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// The methods the document lists for the route that `path` matches, if any (so an
/// unsupported method on a known route is 405, not 404).
pub fn allowed_methods(path: &str) -> Option<Vec<&'static str>> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    document().paths.paths.iter().find_map(|(template, item)| {
        let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
        let matches = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
        matches.then(|| {
            [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter_map(|(m, has)| has.then_some(m))
            .collect()
        })
    })
}

/// The OpenAPI 3 document for every endpoint.
#[get("/api/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
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
