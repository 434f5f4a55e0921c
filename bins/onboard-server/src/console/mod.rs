//! The web admin console at `/admin/`: server-rendered HTML over the same core use
//! cases as the admin API ([docs/console.md](../../../../docs/console.md)).
//!
//! - Sign-in takes an admin token (checked like the API's bearer token) and starts a
//!   server-side session ([`onboard_core::console`]); the cookie holds only a random
//!   id, is `HttpOnly; SameSite=Strict; Path=/admin` and `Secure` over TLS.
//! - Every state-changing request is a POST form carrying the session's CSRF token
//!   and must come from our own origin (`Origin`, `Sec-Fetch-Site`).
//! - Every answer carries a Content-Security-Policy without inline script.

use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse};
use onboard_core::console::{csrf_matches, csrf_token, ConsoleSession};
use onboard_core::secrets::AdminTokens;
use onboard_core::{Actor, Onboard};
use serde::Deserialize;

use crate::admin::blocking;
use crate::auth::peer;
use crate::error::ApiError;
use crate::PublicGuard;

pub mod html;
mod keys;
pub mod models;
mod ops;
mod pages;

use html::{error_page, esc, layout, Nav};

/// The session cookie's name.
pub const COOKIE: &str = "onboard_console";

/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// A request's live session.
pub struct Signed {
    id: String,
    pub session: ConsoleSession,
    pub csrf: String,
    pub actor: Actor,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Signed {
    pub fn nav<'a>(&'a self, current: &'a str) -> Nav<'a> {
        Nav {
            token_name: &self.session.token_name,
            csrf: &self.csrf,
            current,
        }
    }
}

/// The session id from the `Cookie` header.
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn is_tls(req: &HttpRequest) -> bool {
    req.app_config().secure() || req.connection_info().scheme() == "https"
}

fn set_cookie(req: &HttpRequest, value: &str, clear: bool) -> String {
    let secure = if is_tls(req) { "; Secure" } else { "" };
    let expiry = if clear { "; Max-Age=0" } else { "" };
    format!("{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict{secure}{expiry}")
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn api_error_page(e: &ApiError, nav: Option<&Nav<'_>>) -> HttpResponse {
    error_page(e.status(), e.message(), nav)
}

/// The live session of a request, or the answer to give instead (to the sign-in
/// page when there is none).
pub async fn require(
    req: &HttpRequest,
    onboard: &web::Data<Onboard>,
) -> Result<Signed, HttpResponse> {
    let Some(id) = session_cookie(req) else {
        return Err(see_other("/admin/sign-in"));
    };
    let o = onboard.clone();
    let lookup = id.clone();
    match blocking(move || o.console_session(&lookup)).await {
        Ok(Some(session)) => Ok(Signed {
            csrf: csrf_token(&id),
            id,
            actor: Actor::admin(&session.token_name, peer(req)),
            session,
        }),
        Ok(None) => Err(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/admin/sign-in"))
            .insert_header((header::SET_COOKIE, set_cookie(req, "", true)))
            .finish()),
        Err(e) => Err(api_error_page(&e, None)),
    }
}

/// Whether a state-changing request comes from our own pages: `Sec-Fetch-Site`
/// (when the browser sends it) is `same-origin`, and `Origin` (when sent) is ours.
pub fn same_origin(req: &HttpRequest) -> bool {
    if let Some(site) = req.headers().get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return false;
        }
    }
    match req.headers().get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            let info = req.connection_info();
            let expected = format!("{}://{}", info.scheme(), info.host());
            origin.as_bytes() == expected.as_bytes()
        }
    }
}

fn forbidden(message: &str) -> HttpResponse {
    error_page(StatusCode::FORBIDDEN, message, None)
}

/// As [`require`], for a POST: same origin, a live session and its CSRF token.
pub async fn require_post(
    req: &HttpRequest,
    onboard: &web::Data<Onboard>,
    csrf: &str,
) -> Result<Signed, HttpResponse> {
    if !same_origin(req) {
        return Err(forbidden("cross-site request refused"));
    }
    let signed = require(req, onboard).await?;
    match csrf_refused(&signed, csrf) {
        Some(answer) => Err(answer),
        None => Ok(signed),
    }
}

/// The answer to a form whose CSRF token is not the session's; `None` when it is.
pub fn csrf_refused(signed: &Signed, csrf: &str) -> Option<HttpResponse> {
    (!csrf_matches(&signed.id, csrf)).then(|| {
        forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
    })
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .body(CSS)
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .body(JS)
}

fn sign_in_form(status: StatusCode, error: Option<&str>) -> HttpResponse {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<div class="signin"><h1>Sign in to the Onboard console</h1>{error}
<form method="post" action="/admin/sign-in"><label for="token">Admin token
<input id="token" name="token" type="password" autocomplete="off" required autofocus></label>
<button type="submit">Sign in</button></form></div>"#
    );
    layout(status, "Sign in", None, &body)
}

async fn sign_in_page(req: HttpRequest, onboard: web::Data<Onboard>) -> HttpResponse {
    match require(&req, &onboard).await {
        Ok(_) => see_other("/admin/"),
        Err(_) => sign_in_form(StatusCode::OK, None),
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
}

async fn sign_in(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    tokens: web::Data<AdminTokens>,
    guard: web::Data<PublicGuard>,
    form: web::Form<SignInForm>,
) -> HttpResponse {
    if !same_origin(&req) {
        return forbidden("cross-site request refused");
    }
    let ip = crate::ratelimit::client_ip(&req, guard.trust_forwarded_for)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if let Err(retry) = guard.limiter.check_request(ip) {
        return retry.response();
    }
    let Some(name) = tokens.authenticate(form.token.trim()) else {
        guard.limiter.record_failure(ip);
        return sign_in_form(
            StatusCode::UNAUTHORIZED,
            Some("a valid admin token is required"),
        );
    };
    let actor = Actor::admin(&name, peer(&req));
    let o = onboard.clone();
    match blocking(move || o.console_sign_in(&actor, &name)).await {
        Ok(created) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/admin/"))
            .insert_header((
                header::SET_COOKIE,
                set_cookie(&req, created.id.expose(), false),
            ))
            .finish(),
        Err(e) => api_error_page(&e, None),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let signed = match require_post(&req, &onboard, &form.csrf).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let o = onboard.clone();
    match blocking(move || o.console_sign_out(&signed.actor, &signed.id)).await {
        Ok(_) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/admin/sign-in"))
            .insert_header((header::SET_COOKIE, set_cookie(&req, "", true)))
            .finish(),
        Err(e) => api_error_page(&e, None),
    }
}

/// The console's headers on every answer under `/admin`.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CSP))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::CACHE_CONTROL, "no-store"))
}

/// Mounts the console under `/admin`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(security_headers())
            .route("/assets/console.css", web::get().to(css))
            .route("/assets/console.js", web::get().to(js))
            .route("/sign-in", web::get().to(sign_in_page))
            .route("/sign-in", web::post().to(sign_in))
            .route("/sign-out", web::post().to(sign_out))
            .configure(pages::routes)
            .configure(keys::routes)
            .configure(ops::routes)
            .configure(models::routes),
    );
}
