//! The registration and admin routes through actix's test service: statuses, JSON
//! error bodies, what is (not) left behind, rate limits.

use actix_web::http::StatusCode;
use actix_web::test as atest;
use onboard_core::domain::{AuditFilter, DeviceFilter, PageRequest};
use onboard_core::{Actor, KeyBatchRequest};
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::app;
use serde_json::{json, Value};

use crate::state_with;

fn admin_token(state: &onboard_server::AppState, dir: &std::path::Path) -> String {
    let _ = state;
    std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn registration_failures_answer_json_and_leave_nothing(backend: TestBackend) {
    let t = TestDb::new(backend);
    let (state, _dir) = state_with(&t, |s| {
        s.rate_limit.requests_per_minute = 0;
        s.rate_limit.failures_per_hour = 0;
    });
    let onboard = state.onboard.clone();
    let key = onboard
        .create_key_batch(
            &Actor::cli(),
            &KeyBatchRequest {
                batch: "b".into(),
                count: 1,
                max_uses: 1,
                valid_days: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
        .remove(0)
        .secret;
    let svc = atest::init_service(app(state)).await;
    let post = |auth: Option<String>, body: Vec<u8>| {
        let mut req = atest::TestRequest::post()
            .uri("/public/v1/register")
            .insert_header(("content-type", "application/json"))
            .set_payload(body);
        if let Some(a) = auth {
            req = req.insert_header(("authorization", a));
        }
        req.to_request()
    };
    let bearer = Some(format!("Bearer {}", key.expose()));
    let json_body = |v: Value| v.to_string().into_bytes();
    let cases: Vec<(Option<String>, Vec<u8>, StatusCode, &str)> = vec![
        (
            None,
            json_body(json!({"serial": "SN-1"})),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Some("Bearer obk_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
            json_body(json!({"serial": "SN-1"})),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            bearer.clone(),
            b"{\"serial\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            bearer.clone(),
            json_body(json!({"serial": 42})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            bearer.clone(),
            json_body(json!({"model": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            bearer.clone(),
            json_body(json!({"serial": "SN 1"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            bearer.clone(),
            json_body(
                json!({"serial": "SN-1", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            bearer.clone(),
            json_body(json!({"serial": "SN-1", "metadata": {"x": "y".repeat(70_000)}})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (auth, body, status, code) in cases {
        let res = atest::call_service(&svc, post(auth, body)).await;
        assert_eq!(res.status(), status, "{code}");
        let body: Value = atest::read_body_json(res).await;
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let page = PageRequest::first(100).unwrap();
    assert!(onboard
        .devices(&DeviceFilter::default(), &page)
        .unwrap()
        .items
        .is_empty());
    let failures = onboard
        .audit_events(
            &AuditFilter {
                action: Some("device.register".into()),
                ..Default::default()
            },
            &page,
        )
        .unwrap()
        .items;
    let reasons: Vec<_> = failures.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons.contains(&"key_missing".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"key_unknown".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"invalid_input".to_owned()), "{reasons:?}");

    // The key is still unused: now it works once, then it is used up.
    let res = atest::call_service(
        &svc,
        post(bearer.clone(), json_body(json!({"serial": "SN-1"}))),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = atest::call_service(
        &svc,
        post(bearer.clone(), json_body(json!({"serial": "SN-2"}))),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let used_up: Value = atest::read_body_json(res).await;
    let res = atest::call_service(&svc, post(None, json_body(json!({"serial": "SN-3"})))).await;
    let missing: Value = atest::read_body_json(res).await;
    assert_eq!(used_up, missing, "one answer for every key failure");

    let res =
        atest::call_service(&svc, atest::TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap();
    assert!(
        text.contains(r#"onboard_registrations_total{outcome="success",reason="registered"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"onboard_registrations_total{outcome="failure",reason="key_used_up"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"onboard_registration_step_seconds_count{step="issue"} 1"#),
        "{text}"
    );
}

#[actix_web::test]
async fn sqlite_registration_failures_answer_json_and_leave_nothing() {
    registration_failures_answer_json_and_leave_nothing(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_registration_failures_answer_json_and_leave_nothing() {
    registration_failures_answer_json_and_leave_nothing(TestBackend::Postgres).await;
}

#[actix_web::test]
async fn public_routes_are_rate_limited_and_failed_keys_lock_out_sooner() {
    let t = TestDb::sqlite();
    let (state, _dir) = state_with(&t, |s| {
        s.rate_limit.requests_per_minute = 1;
        s.rate_limit.burst = 3;
        s.rate_limit.failures_per_hour = 1;
        s.rate_limit.failure_burst = 1;
    });
    let svc = atest::init_service(app(state)).await;
    let from = |ip: &str| -> std::net::SocketAddr { format!("{ip}:40000").parse().unwrap() };
    for _ in 0..3 {
        let res = atest::call_service(
            &svc,
            atest::TestRequest::get()
                .uri("/public/v1/ca")
                .peer_addr(from("10.9.0.1"))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/public/v1/ca")
            .peer_addr(from("10.9.0.1"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = atest::read_body_json(res).await;
    assert_eq!(body["error"], "rate_limited");
    // Other clients and the operations routes are not affected.
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/public/v1/ca")
            .peer_addr(from("10.9.0.2"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/api/health")
            .peer_addr(from("10.9.0.1"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    // One failed key attempt locks 10.9.0.3 out before its request budget is used.
    let bad = atest::TestRequest::post()
        .uri("/public/v1/register")
        .peer_addr(from("10.9.0.3"))
        .insert_header((
            "authorization",
            "Bearer obk_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .set_json(json!({"serial": "SN-1"}))
        .to_request();
    assert_eq!(
        atest::call_service(&svc, bad).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/public/v1/ca")
            .peer_addr(from("10.9.0.3"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn a_known_but_unusable_key_is_refused_without_locking_anyone_out() {
    let t = TestDb::sqlite();
    let (state, _dir) = state_with(&t, |s| {
        s.rate_limit.failures_per_hour = 1;
        s.rate_limit.failure_burst = 1;
    });
    let keys = state
        .onboard
        .create_key_batch(
            &onboard_core::Actor::cli(),
            &onboard_core::KeyBatchRequest {
                batch: "line9".into(),
                count: 1,
                max_uses: 1,
                valid_days: Some(30),
                ..Default::default()
            },
        )
        .unwrap();
    let key = keys[0].secret.expose().to_owned();
    let svc = atest::init_service(app(state)).await;
    let factory: std::net::SocketAddr = "10.9.1.1:40000".parse().unwrap();
    let register = |serial: &str, key: &str| {
        atest::TestRequest::post()
            .uri("/public/v1/register")
            .peer_addr(factory)
            .insert_header(("authorization", format!("Bearer {key}")))
            .set_json(json!({"serial": serial}))
            .to_request()
    };
    let res = atest::call_service(&svc, register("SN-L9-1", &key)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // The key is used up now: refused, several times, never a lockout.
    for i in 2..5 {
        let res = atest::call_service(&svc, register(&format!("SN-L9-{i}"), &key)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/public/v1/ca")
            .peer_addr(factory)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "the line is not locked out");
    // A guess (a key nobody issued) still is.
    let guess = "obk_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let res = atest::call_service(&svc, register("SN-L9-9", guess)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = atest::call_service(&svc, register("SN-L9-10", &key)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn admin_routes_validate_and_authenticate() {
    let t = TestDb::sqlite();
    let (state, dir) = state_with(&t, |_| {});
    let token = admin_token(&state, dir.path());
    let onboard = state.onboard.clone();
    let svc = atest::init_service(app(state)).await;
    let auth = ("authorization", format!("Bearer {token}"));
    let create = |body: Value, auth: Option<(&'static str, String)>| {
        let mut req = atest::TestRequest::post()
            .uri("/private/v1/admin/bootstrap-keys")
            .set_json(body);
        if let Some(a) = auth {
            req = req.insert_header(a);
        }
        req.to_request()
    };

    let res = atest::call_service(&svc, create(json!({"batch": "b"}), None)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = atest::call_service(
        &svc,
        create(
            json!({"batch": "b"}),
            Some(("authorization", "Bearer oat.admin.wrong".into())),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        onboard
            .list_keys(&Default::default(), &PageRequest::default())
            .unwrap()
            .items
            .is_empty(),
        "nothing happened"
    );

    for bad in [
        json!({"batch": "b", "count": 0}),
        json!({"batch": "b", "count": 10_001}),
        json!({"batch": "b", "max_uses": 0}),
        json!({"batch": "b", "valid_days": 0}),
        json!({"batch": "b", "valid_days": 3651}),
        json!({"batch": "b", "valid_days": 3, "expires_at": "2030-01-01T00:00:00Z"}),
        json!({"batch": "has space"}),
        json!({"batch": "b", "model": "No Such"}),
        json!({"batch": "b", "model": "unknown-model"}),
        json!({"batch": "b", "surprise": 1}),
    ] {
        let res = atest::call_service(&svc, create(bad.clone(), Some(auth.clone()))).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let body: Value = atest::read_body_json(res).await;
        assert!(body["error"].is_string(), "{body}");
    }
    assert!(onboard
        .list_keys(&Default::default(), &PageRequest::default())
        .unwrap()
        .items
        .is_empty());

    let res = atest::call_service(
        &svc,
        create(
            json!({"batch": "b", "count": 2, "max_uses": 5, "valid_days": 7}),
            Some(auth.clone()),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = atest::read_body_json(res).await;
    let id = created["keys"][0]["id"].as_str().unwrap().to_owned();

    let get = |uri: String| {
        atest::TestRequest::get()
            .uri(&uri)
            .insert_header(auth.clone())
            .to_request()
    };
    for (uri, status) in [
        (
            format!("/private/v1/admin/bootstrap-keys/{id}"),
            StatusCode::OK,
        ),
        (
            "/private/v1/admin/bootstrap-keys/00000000-0000-7000-8000-000000000000".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/private/v1/admin/bootstrap-keys/not-an-id".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/private/v1/admin/bootstrap-keys?limit=0".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/private/v1/admin/bootstrap-keys?limit=501".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/private/v1/admin/bootstrap-keys?after=garbage".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/private/v1/admin/devices?status=lost".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/private/v1/admin/devices/00000000-0000-7000-8000-000000000000".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/private/v1/admin/audit?outcome=maybe".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let res = atest::call_service(&svc, get(uri.clone())).await;
        assert_eq!(res.status(), status, "{uri}");
    }
    let ca: Value =
        atest::read_body_json(atest::call_service(&svc, get("/private/v1/admin/ca".into())).await)
            .await;
    assert_eq!(ca["chain"].as_array().unwrap().len(), 1);
    assert_eq!(ca["chain"][0]["self_signed"], true);
    assert_eq!(ca["chain"][0]["key"], "ecdsa-p256");
    let page: Value = atest::read_body_json(
        atest::call_service(&svc, get("/private/v1/admin/bootstrap-keys?limit=1".into())).await,
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());

    let post = |uri: String| {
        atest::TestRequest::post()
            .uri(&uri)
            .insert_header(auth.clone())
            .to_request()
    };
    let res = atest::call_service(
        &svc,
        post(format!("/private/v1/admin/bootstrap-keys/{id}/deactivate")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let key: Value = atest::read_body_json(res).await;
    assert_eq!(key["active"], false);
    let res = atest::call_service(
        &svc,
        post(format!("/private/v1/admin/bootstrap-keys/{id}/activate")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let del = atest::TestRequest::delete()
        .uri(&format!("/private/v1/admin/bootstrap-keys/{id}"))
        .insert_header(auth.clone())
        .to_request();
    assert_eq!(
        atest::call_service(&svc, del).await.status(),
        StatusCode::NO_CONTENT
    );
    let del = atest::TestRequest::delete()
        .uri(&format!("/private/v1/admin/bootstrap-keys/{id}"))
        .insert_header(auth.clone())
        .to_request();
    assert_eq!(
        atest::call_service(&svc, del).await.status(),
        StatusCode::NOT_FOUND
    );

    let audit: Value = atest::read_body_json(
        atest::call_service(&svc, get("/private/v1/admin/audit".into())).await,
    )
    .await;
    let actions: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "bootstrap_key.delete",
            "bootstrap_key.activate",
            "bootstrap_key.deactivate",
            "bootstrap_key.create"
        ]
    );
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "admin:admin"));
}

#[actix_web::test]
async fn openapi_documents_every_route() {
    let t = TestDb::sqlite();
    let (state, _dir) = state_with(&t, |_| {});
    let svc = atest::init_service(app(state)).await;
    let doc: Value = atest::read_body_json(
        atest::call_service(
            &svc,
            atest::TestRequest::get()
                .uri("/api/openapi.json")
                .to_request(),
        )
        .await,
    )
    .await;
    for (path, method) in [
        ("/public/v1/register", "post"),
        ("/public/v1/ca", "get"),
        ("/public/v1/crl", "get"),
        ("/private/v1/admin/bootstrap-keys", "post"),
        ("/private/v1/admin/bootstrap-keys", "get"),
        ("/private/v1/admin/bootstrap-keys/{id}", "get"),
        ("/private/v1/admin/bootstrap-keys/{id}", "delete"),
        ("/private/v1/admin/bootstrap-keys/{id}/activate", "post"),
        ("/private/v1/admin/bootstrap-keys/{id}/deactivate", "post"),
        ("/private/v1/admin/devices", "get"),
        ("/private/v1/admin/devices/{id}", "get"),
        ("/private/v1/admin/audit", "get"),
        ("/private/v1/admin/devices", "post"),
        ("/private/v1/admin/devices/{id}", "patch"),
        ("/private/v1/admin/devices/{id}", "delete"),
        ("/private/v1/admin/devices/{id}/revoke", "post"),
        ("/public/v1/bundles/{token}", "get"),
        ("/private/v1/admin/ca", "get"),
        ("/private/v1/admin/models", "post"),
        ("/private/v1/admin/models", "get"),
        ("/private/v1/admin/models/{code}", "get"),
        ("/private/v1/admin/models/{code}", "patch"),
        ("/private/v1/admin/models/{code}", "delete"),
        ("/private/v1/admin/models/{code}/firmware", "put"),
        ("/private/v1/admin/models/{code}/firmware", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].as_object().unwrap().len() >= 2,
            "{method} {path}: errors documented"
        );
    }
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
    assert!(doc["components"]["schemas"]["RegisterBody"].is_object());
}
