//! Admin authentication: `Authorization: Bearer <admin token>` on every
//! `/private/v1/admin` route. A missing or wrong token is 401 before the handler
//! runs, so nothing happens.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use onboard_core::secrets::AdminTokens;
use onboard_core::Actor;

use crate::error::ApiError;

/// The operator behind a request, by token name.
#[derive(Debug, Clone)]
pub struct Admin(pub Actor);

/// The bearer credential of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

pub fn peer(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_string())
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let tokens = req.app_data::<web::Data<AdminTokens>>();
        let name = match (tokens, bearer(req)) {
            (Some(tokens), Some(token)) => tokens.authenticate(token),
            _ => None,
        };
        tracing::debug!(
            token_name = name.as_deref().unwrap_or(""),
            accepted = name.is_some(),
            "admin token checked"
        );
        ready(match name {
            Some(name) => Ok(Admin(Actor::admin(&name, peer(req)))),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin token is required (Authorization: Bearer <token>)",
            )),
        })
    }
}
