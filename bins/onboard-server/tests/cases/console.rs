//! The web console: in-process through actix's test service on both backends
//! (cookie attributes, headers, CSRF and origin checks, session expiry with the
//! Clock, HTML escaping), and in headless Chromium against the real binary
//! (`tests/console_browser.py`).

use std::process::Command;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::test as atest;
use chrono::{Duration, TimeZone, Utc};
use onboard_core::domain::ManualClock;
use onboard_core::{Actor, NewDeviceRequest};
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::app;
use serde_json::json;

use crate::state_with_clock;
use crate::support::{self, Server};

pub(crate) fn admin_token(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

pub(crate) fn form(body: &str) -> atest::TestRequest {
    atest::TestRequest::post()
        .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
        .set_payload(body.to_owned())
}

pub(crate) fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The `name=value` of a `Set-Cookie` header.
pub(crate) fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token of the first form on a page.
pub(crate) fn csrf_of(page: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = page.find(marker).expect("a CSRF field") + marker.len();
    page[start..start + 64].to_owned()
}

pub async fn sessions_cookies_headers_csrf_and_escaping(backend: TestBackend) {
    let t = TestDb::new(backend);
    let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 8, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let (state, dir) = state_with_clock(
        &t,
        |s| {
            s.rate_limit.requests_per_minute = 0;
            s.rate_limit.failures_per_hour = 0;
            s.console.idle_timeout_minutes = 30;
            s.console.absolute_timeout_hours = 2;
        },
        clock.clone(),
    );
    let token = admin_token(dir.path());
    let onboard = state.onboard.clone();
    let device = onboard
        .register_device(
            &Actor::cli(),
            &NewDeviceRequest {
                name: "<script>alert('x')</script>".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .device;
    let svc = atest::init_service(app(state)).await;

    // Without a session: to the sign-in page, with the console's headers.
    let res =
        atest::call_service(&svc, atest::TestRequest::get().uri("/admin/").to_request()).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get(header::LOCATION).unwrap(),
        "/admin/sign-in"
    );
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/admin/sign-in").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    let csp = h
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
    assert_eq!(h.get(header::REFERRER_POLICY).unwrap(), "same-origin");
    assert_eq!(h.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");
    let page = text(&atest::read_body(res).await);
    assert!(!page.contains("<script>"), "no inline script: {page}");

    // The API's fallback for paths and methods that are not console routes.
    for req in [
        atest::TestRequest::get().uri("/admin/nope").to_request(),
        atest::TestRequest::put().uri("/admin/sign-in").to_request(),
    ] {
        let res = atest::call_service(&svc, req).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = atest::read_body_json(res).await;
        assert_eq!(body["error"], "not_found", "{body}");
    }
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/api/openapi.json")
            .to_request(),
    )
    .await;
    let spec = text(&atest::read_body(res).await);
    assert!(
        !spec.contains("\"/admin"),
        "the console is not in the JSON API's schema"
    );

    // A wrong token: 401, no cookie.
    let res = atest::call_service(
        &svc,
        form("token=oat.admin.wrong")
            .uri("/admin/sign-in")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().get(header::SET_COOKIE).is_none());

    // Sign-in from another origin is refused too.
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .insert_header((header::ORIGIN, "http://evil.example"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get(header::SET_COOKIE).is_none());

    // The right token: a session cookie with the promised attributes (plain HTTP
    // here, so not Secure).
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set.contains("; HttpOnly"), "{set}");
    assert!(set.contains("; SameSite=Strict"), "{set}");
    assert!(set.contains("; Path=/admin"), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    let cookie = cookie_pair(&set);
    // Behind a TLS-terminating proxy that says so, the cookie is Secure.
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .insert_header(("x-forwarded-proto", "https"))
            .to_request(),
    )
    .await;
    let secure = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(secure.contains("; Secure"), "{secure}");
    let secure_cookie = cookie_pair(&secure);
    let csrf_page = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/admin/")
            .insert_header((header::COOKIE, secure_cookie.clone()))
            .to_request(),
    )
    .await;
    let secure_csrf = csrf_of(&text(&atest::read_body(csrf_page).await));
    let res = atest::call_service(
        &svc,
        form(&format!("csrf={secure_csrf}"))
            .uri("/admin/sign-out")
            .insert_header((header::COOKIE, secure_cookie))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let id = cookie.split_once('=').unwrap().1.to_owned();
    // Only a hash of the id is stored.
    let stored = support::sql(&t.url, "SELECT id_hash, token_name FROM console_sessions");
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0][0], id);
    assert!(!stored[0][0].contains(&id));
    assert_eq!(stored[0][1], "admin");

    let get = |uri: &str| {
        atest::TestRequest::get()
            .uri(uri)
            .insert_header((header::COOKIE, cookie.clone()))
            .to_request()
    };
    // The overview: a failed registration over the last day, by its reason.
    let res = atest::call_service(
        &svc,
        atest::TestRequest::post()
            .uri("/public/v1/register")
            .insert_header((header::AUTHORIZATION, "Bearer obk_0000000000000000.nope"))
            .set_json(json!({"serial": "SN-X", "csr": "x"}))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let reason = support::sql(
        &t.url,
        "SELECT reason FROM audit_events WHERE action = 'device.register' AND outcome = 'failure'",
    );
    assert_eq!(reason.len(), 1, "{reason:?}");
    let res = atest::call_service(&svc, get("/admin/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = text(&atest::read_body(res).await);
    assert!(
        page.contains(&format!(
            r#"<th scope="row">{}</th><td>1</td>"#,
            reason[0][0]
        )),
        "{page}"
    );
    assert!(
        page.contains(r#"<td data-count="registered">1</td>"#),
        "{page}"
    );

    // HTML escaping: the device name is text.
    let res = atest::call_service(&svc, get("/admin/devices")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = text(&atest::read_body(res).await);
    assert!(
        page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    // Bad filters answer with the API's message.
    let res = atest::call_service(&svc, get("/admin/devices?status=sleepy")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(&atest::read_body(res).await);
    assert!(page.contains("class=\"error\""), "{page}");

    // CSRF: a revoke without the token or with a wrong one is refused and changes
    // nothing; with it, the device is revoked and audited with the token's name.
    let res = atest::call_service(&svc, get(&format!("/admin/devices/{}", device.id))).await;
    let csrf = csrf_of(&text(&atest::read_body(res).await));
    let revoke = format!("/admin/devices/{}/revoke", device.id);
    for body in [
        "reason=keyCompromise".to_owned(),
        format!("reason=keyCompromise&csrf={}", "0".repeat(64)),
    ] {
        let res = atest::call_service(
            &svc,
            form(&body)
                .uri(&revoke)
                .insert_header((header::COOKIE, cookie.clone()))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{body}");
    }
    let res = atest::call_service(
        &svc,
        form(&format!("reason=keyCompromise&csrf={csrf}"))
            .uri(&revoke)
            .insert_header((header::COOKIE, cookie.clone()))
            .insert_header(("sec-fetch-site", "cross-site"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "cross-site");
    assert_eq!(
        onboard.device(device.id).unwrap().device.status.as_str(),
        "registered"
    );
    let res = atest::call_service(
        &svc,
        form(&format!("reason=keyCompromise&csrf={csrf}"))
            .uri(&revoke)
            .insert_header((header::COOKIE, cookie.clone()))
            .insert_header(("sec-fetch-site", "same-origin"))
            .insert_header((header::ORIGIN, "http://localhost:8080"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        onboard.device(device.id).unwrap().device.status.as_str(),
        "revoked"
    );
    let actors = support::sql(
        &t.url,
        "SELECT actor FROM audit_events WHERE action = 'device.revoke'",
    );
    assert_eq!(actors, vec![vec!["admin:admin".to_owned()]]);

    // Idle timeout: 29 minutes apart is fine, 31 is not.
    clock.advance(Duration::minutes(29));
    let res = atest::call_service(&svc, get("/admin/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    clock.advance(Duration::minutes(31));
    let res = atest::call_service(&svc, get("/admin/")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "idle session ended");
    assert!(support::sql(&t.url, "SELECT id_hash FROM console_sessions").is_empty());

    // Absolute timeout: used every 20 minutes, the session still ends after 2 hours.
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .to_request(),
    )
    .await;
    let cookie2 = cookie_pair(
        res.headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap(),
    );
    let get2 = |uri: &str| {
        atest::TestRequest::get()
            .uri(uri)
            .insert_header((header::COOKIE, cookie2.clone()))
            .to_request()
    };
    for _ in 0..5 {
        clock.advance(Duration::minutes(20));
        let res = atest::call_service(&svc, get2("/admin/")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    clock.advance(Duration::minutes(21));
    let res = atest::call_service(&svc, get2("/admin/")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "absolute timeout");

    // Sign-out ends the session for good.
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .to_request(),
    )
    .await;
    let cookie3 = cookie_pair(
        res.headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap(),
    );
    let get3 = |uri: &str| {
        atest::TestRequest::get()
            .uri(uri)
            .insert_header((header::COOKIE, cookie3.clone()))
            .to_request()
    };
    let res = atest::call_service(&svc, get3("/admin/")).await;
    let csrf3 = csrf_of(&text(&atest::read_body(res).await));
    let res = atest::call_service(
        &svc,
        form(&format!("csrf={csrf3}"))
            .uri("/admin/sign-out")
            .insert_header((header::COOKIE, cookie3.clone()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let res = atest::call_service(&svc, get3("/admin/")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed out");
    let actions = support::sql(
        &t.url,
        "SELECT action FROM audit_events WHERE action LIKE 'console.%' ORDER BY occurred_at, action",
    );
    assert_eq!(
        actions.iter().filter(|r| r[0] == "console.sign_in").count(),
        4
    );
    assert_eq!(
        actions
            .iter()
            .filter(|r| r[0] == "console.sign_out")
            .count(),
        2
    );
}

/// The browser test: headless Chromium against the real server.
#[test]
fn the_console_works_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &[]);
    let token = admin_token(&d.join("data"));
    // The image the browser uploads on the models page.
    std::fs::write(
        d.join("thermo-1.2.0.bin"),
        onboard_firmware::testing::ImageBuilder::app("1.2.0", "thermo", "v5.3.1").build(),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console_browser.py");
    // scripts/test-services.sh puts target/testenv (with selenium) first on PATH.
    let mut cmd = Command::new("python3");
    cmd.args([script, &server.url(""), &token, d.to_str().unwrap()]);
    if let Ok(shots) = std::env::var("ONBOARD_CONSOLE_SCREENSHOTS") {
        cmd.env("ONBOARD_CONSOLE_SCREENSHOTS", shots);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["signed_in"], json!(true), "{report}");
    assert_eq!(report["signed_out"], json!(true), "{report}");
    assert_eq!(report["key_shown_once"], json!(true), "{report}");
    assert_eq!(report["csv_keys"], json!(2), "{report}");
    assert_eq!(report["key_actions"], json!(true), "{report}");
    assert_eq!(report["device_actions"], json!(true), "{report}");
    assert_eq!(report["audit_filters"], json!(true), "{report}");
    assert_eq!(report["models"], json!(true), "{report}");
    assert_eq!(report["firmware_uploaded"], json!("1.2.0"), "{report}");
    assert_eq!(report["forged_posts_refused"], json!(4), "{report}");
    assert_eq!(report["audit_actor"], json!("admin:admin"), "{report}");
}

/// Failed sign-ins count in the public routes' rate limiter: once a client has no
/// failure left, even the right token is refused with 429 and `Retry-After`.
pub async fn failed_sign_ins_lock_the_client_out(backend: TestBackend) {
    let t = TestDb::new(backend);
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 12, 3, 8, 0, 0).unwrap(),
    ));
    let (state, dir) = state_with_clock(
        &t,
        |s| {
            s.rate_limit.requests_per_minute = 0;
            s.rate_limit.failures_per_hour = 2;
            s.rate_limit.failure_burst = 2;
        },
        clock,
    );
    let token = admin_token(dir.path());
    let svc = atest::init_service(app(state)).await;
    let peer: std::net::SocketAddr = "192.0.2.7:5000".parse().unwrap();
    for _ in 0..2 {
        let res = atest::call_service(
            &svc,
            form("token=oat.admin.wrong")
                .uri("/admin/sign-in")
                .peer_addr(peer)
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .peer_addr(peer)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get(header::RETRY_AFTER).is_some());
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    // Another client is not affected.
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .peer_addr("192.0.2.8:5000".parse().unwrap())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}
