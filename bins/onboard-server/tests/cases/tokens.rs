//! The token endpoint and device authentication through actix's test service, with
//! time moved through the `Clock`: RFC 6749 errors, expiry, another device's token,
//! the trusted-proxy certificate header.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use base64::Engine;
use chrono::{Duration, TimeZone, Utc};
use onboard_core::domain::ManualClock;
use onboard_core::{Actor, NewDeviceRequest};
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::app;
use serde_json::{json, Value};

use crate::state_with_clock;

fn password_device(onboard: &onboard_core::Onboard, name: &str) -> (String, String) {
    let done = onboard
        .register_device(
            &Actor::cli(),
            &NewDeviceRequest {
                name: name.into(),
                credential: Some("password".into()),
                config: Some(json!({"name": name})),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(done.certificate.is_none());
    (
        done.device.id.to_string(),
        done.client_secret.unwrap().expose().to_owned(),
    )
}

async fn tokens_follow_rfc_6749_and_expire(backend: TestBackend) {
    let t = TestDb::new(backend);
    let t0 = Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let (state, _dir) = state_with_clock(
        &t,
        |s| {
            s.rate_limit.requests_per_minute = 0;
            s.rate_limit.failures_per_hour = 0;
            s.tokens.lifetime_seconds = 600;
        },
        clock.clone(),
    );
    let onboard = state.onboard.clone();
    let (id, secret) = password_device(&onboard, "one");
    let (other, other_secret) = password_device(&onboard, "two");
    let svc = atest::init_service(app(state)).await;
    let form = |body: String, basic: Option<(&str, &str)>| {
        let mut req = atest::TestRequest::post()
            .uri("/iot/token")
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(body);
        if let Some((u, p)) = basic {
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req = req.insert_header(("authorization", format!("Basic {b}")));
        }
        req.to_request()
    };
    let call = |req| {
        let svc = &svc;
        async move {
            let res = atest::call_service(svc, req).await;
            let status = res.status();
            let headers = res.headers().clone();
            let body: Value =
                serde_json::from_slice(&atest::read_body(res).await).unwrap_or(Value::Null);
            (status, headers, body)
        }
    };

    // RFC 6749 section 5.2 errors.
    let cases = [
        (
            form("grant_type=password".into(), Some((&id, &secret))),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            form(String::new(), Some((&id, &secret))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            form("grant_type=client_credentials".into(), None),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            form(
                "grant_type=client_credentials&scope=admin".into(),
                Some((&id, &secret)),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            form("grant_type=client_credentials".into(), Some((&id, "wrong"))),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            form(
                "grant_type=client_credentials".into(),
                Some(("not-a-device", &secret)),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            form(
                "grant_type=client_credentials".into(),
                Some((&other, &secret)),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            form(
                format!("grant_type=client_credentials&client_id={id}&client_secret=x{secret}"),
                None,
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
    ];
    for (req, status, code) in cases {
        let (s, headers, body) = call(req).await;
        assert_eq!((s, body["error"].as_str()), (status, Some(code)), "{body}");
        assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    }
    // Each refused secret is audited (and never the secret itself).
    let refused = onboard
        .audit_events(
            &onboard_core::domain::AuditFilter {
                action: Some("device.token".into()),
                outcome: Some(onboard_core::domain::AuditOutcome::Failure),
                ..Default::default()
            },
            &onboard_core::domain::PageRequest::first(50).unwrap(),
        )
        .unwrap()
        .items;
    assert_eq!(refused.len(), 4, "the four invalid_client cases");
    assert!(refused
        .iter()
        .all(|e| e.reason.as_deref() == Some("invalid_client")));
    assert!(!serde_json::to_string(&refused).unwrap().contains(&secret));
    let (_, headers, _) = call(form(
        "grant_type=client_credentials".into(),
        Some((&id, "wrong")),
    ))
    .await;
    assert!(
        headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "Basic was used: the 401 names it"
    );

    let (s, _, body) = call(form(
        format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
        None,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (_, _, body) = call(form(
        "grant_type=client_credentials".into(),
        Some((&other, &other_secret)),
    ))
    .await;
    let other_token = body["access_token"].as_str().unwrap().to_owned();

    let get = |path: &str, bearer: &str| {
        atest::TestRequest::get()
            .uri(path)
            .insert_header(("authorization", format!("Bearer {bearer}")))
            .to_request()
    };
    let (s, _, body) = call(get("/iot/config", &token)).await;
    assert_eq!((s, body), (StatusCode::OK, json!({"name": "one"})));
    let (s, _, body) = call(get("/iot/provisioning", &other_token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body["device_id"],
        other.as_str(),
        "a token sees its own device only"
    );
    assert!(
        body.get("client_secret").is_none(),
        "the device API never shows a secret"
    );
    let (s, headers, body) = call(get("/iot/renew", &token)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "renew is POST only");
    assert_eq!(headers.get("allow").unwrap(), "POST");
    assert_eq!(body["error"], "method_not_allowed");
    let renew = atest::TestRequest::post()
        .uri("/iot/renew")
        .insert_header(("authorization", format!("Bearer {token}")))
        .set_json(json!({"csr": "x"}))
        .to_request();
    let (s, _, body) = call(renew).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a password device has no certificate to renew: {body}"
    );

    // One second before the expiry it works; at the expiry it does not.
    clock.set(t0 + Duration::seconds(599));
    assert_eq!(call(get("/iot/config", &token)).await.0, StatusCode::OK);
    clock.set(t0 + Duration::seconds(600));
    let (s, headers, body) = call(get("/iot/config", &token)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(headers
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("Bearer"));

    // A decommissioned device's fresh token stops at once.
    let (_, _, body) = call(form(
        "grant_type=client_credentials".into(),
        Some((&other, &other_secret)),
    ))
    .await;
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(call(get("/iot/config", &fresh)).await.0, StatusCode::OK);
    onboard
        .decommission_device(&Actor::cli(), other.parse().unwrap())
        .unwrap();
    assert_eq!(
        call(get("/iot/config", &fresh)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _, body) = call(form(
        "grant_type=client_credentials".into(),
        Some((&other, &other_secret)),
    ))
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    // The discovery documents.
    let (s, _, jwks) = call(
        atest::TestRequest::get()
            .uri("/.well-known/jwks.json")
            .to_request(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part: {jwks}"
    );
}

#[actix_web::test]
async fn sqlite_tokens_follow_rfc_6749_and_expire() {
    tokens_follow_rfc_6749_and_expire(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_tokens_follow_rfc_6749_and_expire() {
    tokens_follow_rfc_6749_and_expire(TestBackend::Postgres).await;
}

/// A certificate header counts only from a configured proxy address.
#[actix_web::test]
async fn a_forwarded_certificate_counts_only_from_a_trusted_proxy() {
    let t = TestDb::new(TestBackend::Sqlite);
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap(),
    ));
    let (state, _dir) = state_with_clock(
        &t,
        |s| s.server.trusted_proxies = vec!["10.0.0.7".into()],
        clock,
    );
    let onboard = state.onboard.clone();
    let done = onboard
        .register_device(
            &Actor::cli(),
            &NewDeviceRequest {
                name: "behind-ingress".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let pem = done.certificate.unwrap().pem;
    // ingress-nginx's $ssl_client_escaped_cert: URL-encoded PEM.
    let escape = |pem: &str| -> String {
        pem.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let escaped = escape(&pem);
    let svc = atest::init_service(app(state)).await;
    let req = |from: &str, header: &str| {
        atest::TestRequest::get()
            .uri("/iot/config")
            .peer_addr(format!("{from}:40000").parse().unwrap())
            .insert_header(("ssl-client-cert", header.to_owned()))
            .to_request()
    };
    let res = atest::call_service(&svc, req("10.0.0.7", &escaped)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = atest::call_service(&svc, req("10.0.0.8", &escaped)).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "untrusted address: ignored"
    );
    // A certificate that is not of our CA, even from the proxy.
    let rogue = escape(&pem.replace('A', "B"));
    let res = atest::call_service(&svc, req("10.0.0.7", &rogue)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    onboard
        .revoke_device(
            &Actor::cli(),
            done.device.id,
            onboard_core::domain::RevocationReason::KeyCompromise,
        )
        .unwrap();
    let res = atest::call_service(&svc, req("10.0.0.7", &escaped)).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "revoked: refused at once"
    );
}

/// A password device's rotation over the device API: a token of the old secret
/// fetches the new secret and cannot acknowledge; a token of the new one
/// acknowledges, and then the old secret gets no token.
async fn a_password_rotation_over_the_device_api(backend: TestBackend) {
    let t = TestDb::new(backend);
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap(),
    ));
    let (state, _dir) = state_with_clock(
        &t,
        |s| {
            s.rate_limit.requests_per_minute = 0;
            s.rate_limit.failures_per_hour = 0;
            s.rotation.secret_key =
                "8f3a1c5e7b9d0f2a4c6e8a0b2d4f6a8c0e2b4d6f8a1c3e5a7b9d1f3a5c7e9b0d".into();
        },
        clock.clone(),
    );
    let onboard = state.onboard.clone();
    let (id, old) = password_device(&onboard, "rot");
    let svc = atest::init_service(app(state)).await;
    let call = |req| {
        let svc = &svc;
        async move {
            let res = atest::call_service(svc, req).await;
            let status = res.status();
            let body: Value =
                serde_json::from_slice(&atest::read_body(res).await).unwrap_or(Value::Null);
            (status, body)
        }
    };
    let token_req = |secret: &str| {
        atest::TestRequest::post()
            .uri("/iot/token")
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(format!(
                "grant_type=client_credentials&client_id={id}&client_secret={secret}"
            ))
            .to_request()
    };
    let with = |req: atest::TestRequest, bearer: &str| {
        req.insert_header(("authorization", format!("Bearer {bearer}")))
            .to_request()
    };

    onboard
        .trigger_rotation(&Actor::cli(), Some(id.parse().unwrap()))
        .unwrap();
    assert_eq!(onboard.run_rotation_cycle().unwrap().started, 1);

    let (s, body) = call(token_req(&old)).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the old secret gets a token while PENDING: {body}"
    );
    let old_token = body["access_token"].as_str().unwrap().to_owned();
    let (s, body) = call(with(
        atest::TestRequest::get().uri("/iot/provisioning"),
        &old_token,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let new = body["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let (s, body) = call(with(
        atest::TestRequest::post().uri("/iot/rotation/ack"),
        &old_token,
    ))
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    let (s, body) = call(token_req(&new)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let new_token = body["access_token"].as_str().unwrap().to_owned();
    let (s, body) = call(with(
        atest::TestRequest::post().uri("/iot/rotation/ack"),
        &new_token,
    ))
    .await;
    assert_eq!(
        (s, &body["state"]),
        (StatusCode::OK, &json!("OK")),
        "{body}"
    );

    let (s, body) = call(token_req(&old)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, _) = call(with(
        atest::TestRequest::get().uri("/iot/config"),
        &old_token,
    ))
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the old secret's token outlived the ack"
    );
    let (s, body) = call(with(
        atest::TestRequest::get().uri("/iot/provisioning"),
        &new_token,
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.get("client_secret").is_none(), "{body}");
}

#[actix_web::test]
async fn sqlite_a_password_rotation_over_the_device_api() {
    a_password_rotation_over_the_device_api(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_a_password_rotation_over_the_device_api() {
    a_password_rotation_over_the_device_api(TestBackend::Postgres).await;
}
