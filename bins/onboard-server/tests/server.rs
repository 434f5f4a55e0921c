//! The server over HTTP: in-process through actix's test service on both backends,
//! and end to end against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "cases/authz.rs"]
mod authz;
#[path = "cases/aws.rs"]
mod aws;
#[path = "cases/broker_outage.rs"]
mod broker_outage;
#[path = "cases/console.rs"]
mod console;
#[path = "cases/console_firmware.rs"]
mod console_firmware;
#[path = "cases/deploy.rs"]
mod deploy;
#[path = "cases/e2e.rs"]
mod e2e;
#[path = "cases/est.rs"]
mod est;
#[path = "cases/faults.rs"]
mod faults;
#[path = "cases/firmware.rs"]
mod firmware;
#[path = "cases/hostile.rs"]
mod hostile;
#[path = "cases/http.rs"]
mod http;
#[path = "cases/iot.rs"]
mod iot;
#[path = "cases/lifecycle.rs"]
mod lifecycle;
#[path = "cases/ocsp.rs"]
mod ocsp;
#[path = "cases/outages.rs"]
mod outages;
#[path = "cases/quickstart.rs"]
mod quickstart;
#[path = "cases/revocation.rs"]
mod revocation;
#[path = "cases/schema.rs"]
mod schema;
#[path = "cases/secrets.rs"]
mod secrets;
#[path = "cases/simulate.rs"]
mod simulate;
#[path = "cases/tls.rs"]
mod tls;
#[path = "cases/tokens.rs"]
mod tokens;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use onboard_core::{Onboard, Settings};
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::{app, AppState};

/// An app state on a fresh database with its CA in a temp dir (kept alive by the
/// returned guard).
fn state_for(t: &TestDb) -> (AppState, tempfile::TempDir) {
    state_with(t, |_| {})
}

pub(crate) fn state_with(
    t: &TestDb,
    configure: impl FnOnce(&mut Settings),
) -> (AppState, tempfile::TempDir) {
    state_with_clock(
        t,
        configure,
        std::sync::Arc::new(onboard_core::domain::SystemClock),
    )
}

pub(crate) fn state_with_clock(
    t: &TestDb,
    configure: impl FnOnce(&mut Settings),
    clock: std::sync::Arc<dyn onboard_core::domain::Clock>,
) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default().with_files_under(dir.path());
    settings.database.url = t.url.clone();
    configure(&mut settings);
    let onboard = Onboard::with_clock(settings, clock).unwrap();
    onboard.migrate().unwrap();
    // On PostgreSQL the server never creates its CA (replicas would each make
    // their own): make it first, as `onboardctl ca init` does.
    if onboard.backend() == "postgres" && !onboard.settings().ca_dir().join("ca.crt").exists() {
        onboard.init_ca(&onboard_core::CaInit::default()).unwrap();
    }
    (AppState::new(onboard).unwrap(), dir)
}

async fn operations_routes_answer(backend: TestBackend) {
    let t = TestDb::new(backend);
    let (state, _ca) = state_for(&t);
    let svc = atest::init_service(app(state)).await;

    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/api/health").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = atest::read_body_json(res).await;
    assert_eq!(body, serde_json::json!({"status": "ok"}));

    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/api/health/ready")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = atest::read_body_json(res).await;
    let expected = match backend {
        TestBackend::Sqlite => "sqlite",
        TestBackend::Postgres => "postgres",
    };
    assert_eq!(body["database"], expected);

    let res =
        atest::call_service(&svc, atest::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap();
    assert!(
        text.contains(
            "onboard_http_requests_total{endpoint=\"/api/health\",method=\"GET\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("onboard_http_requests_duration_seconds_bucket"),
        "{text}"
    );
}

#[actix_web::test]
async fn sqlite_operations_routes_answer() {
    operations_routes_answer(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_operations_routes_answer() {
    operations_routes_answer(TestBackend::Postgres).await;
}

#[actix_web::test]
async fn openapi_documents_every_operations_route_and_docs_are_served_offline() {
    let t = TestDb::sqlite();
    let (state, _ca) = state_for(&t);
    let svc = atest::init_service(app(state)).await;
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/api/openapi.json")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc: serde_json::Value = atest::read_body_json(res).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/health",
        "/api/health/ready",
        "/metrics",
        "/api/openapi.json",
        "/api/docs",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/api/docs").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(res.headers().get("location").unwrap(), "/api/docs/");
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/api/docs/").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // The UI's script comes from the binary, not from a CDN.
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/api/docs/swagger-ui-bundle.js")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(atest::read_body(res).await.len() > 100_000);
    assert!(
        !html.contains("https://"),
        "the docs page must not load anything from the internet"
    );
}

#[actix_web::test]
async fn every_error_is_a_json_body() {
    let t = TestDb::sqlite();
    let (state, _ca) = state_for(&t);
    let svc = atest::init_service(app(state)).await;

    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/no/such/route").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body: serde_json::Value = atest::read_body_json(res).await;
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["message"], "no route for GET /no/such/route");

    let res = atest::call_service(
        &svc,
        atest::TestRequest::post()
            .uri("/api/health")
            .insert_header(("content-type", "application/json"))
            .set_payload(vec![b' '; 70_000])
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = atest::read_body_json(res).await;
    assert_eq!(body["error"], "payload_too_large");
    assert!(body["message"].as_str().unwrap().contains("65536"));
}

// ---- the real binary ----------------------------------------------------------

#[test]
fn the_binary_runs_with_no_settings_in_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = support::Server::start(dir.path(), &[]);
    for path in [
        "/api/health",
        "/api/health/ready",
        "/metrics",
        "/api/openapi.json",
        "/api/docs/",
    ] {
        let r = support::get(&server.url(path));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let ready = support::get(&server.url("/api/health/ready")).json();
    assert_eq!(ready["database"], "sqlite");
    assert!(
        dir.path().join("data/onboard.db").is_file(),
        "the SQLite file lives under ./data/"
    );
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status}: {}",
        server.log()
    );
    assert!(
        server.log().contains("onboard-server stopped"),
        "{}",
        server.log()
    );
}

#[test]
fn the_binary_migrates_and_serves_on_postgres_by_either_variable() {
    for var in ["ONBOARD__DATABASE__URL", "DATABASE_URL"] {
        let db = TestDb::postgres();
        let dir = tempfile::tempdir().unwrap();
        let server = support::Server::start(dir.path(), &[(var, db.url.clone())]);
        let ready = support::get(&server.url("/api/health/ready"));
        assert_eq!(ready.status, 200, "{var}: {}", ready.body);
        assert_eq!(ready.json()["database"], "postgres");
        assert!(
            db.db.pending_migrations().unwrap().is_empty(),
            "{var}: migrated on start"
        );
        assert!(!dir.path().join("data/onboard.db").exists());
    }
}

#[test]
fn on_postgres_the_server_refuses_to_create_a_ca_and_serves_the_one_ca_init_made() {
    let db = TestDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let env = [("ONBOARD__DATABASE__URL", db.url.clone())];
    let (status, output) = support::run_to_exit(dir.path(), &env);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("onboardctl ca init") && output.contains("mount"),
        "{output}"
    );
    assert!(
        !dir.path().join("data/ca/ca.key").exists() && !dir.path().join("data/ca/ca.crt").exists(),
        "no CA was made"
    );

    // `onboardctl ca init` (the Kubernetes Job) makes it; two servers on the
    // same database and CA directory serve the same chain.
    let (ok, out, err) = support::onboardctl(dir.path(), &env, &["ca", "init"]);
    assert!(ok, "{out}{err}");
    let chain = std::fs::read_to_string(dir.path().join("data/ca/chain.pem")).unwrap();
    let a = support::Server::start(dir.path(), &env);
    let b = support::Server::start(dir.path(), &env);
    for server in [&a, &b] {
        let served = support::get(&server.url("/public/v1/ca"));
        assert_eq!(served.status, 200, "{}", served.body);
        assert_eq!(served.body, chain);
    }
}

#[test]
fn readiness_follows_postgres_going_away_and_coming_back() {
    let pg = support::PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let server = support::Server::start(dir.path(), &[("ONBOARD__DATABASE__URL", pg.url())]);
    assert_eq!(support::get(&server.url("/api/health/ready")).status, 200);

    pg.stop();
    let r = support::get(&server.url("/api/health/ready"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "not_ready");
    assert!(r.content_type.starts_with("application/json"));
    assert_eq!(
        support::get(&server.url("/api/health")).status,
        200,
        "liveness stays up"
    );

    pg.resume();
    let r = support::get(&server.url("/api/health/ready"));
    assert_eq!(r.status, 200, "ready again without a restart: {}", r.body);
}

#[test]
fn an_invalid_setting_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (status, output) =
        support::run_to_exit(dir.path(), &[("CERT_VALIDITY_DAYS", "forever".into())]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("ca.validity_days"), "{output}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before settings are valid"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = support::Server::start(dir.path(), &[("ONBOARD__LOG__FORMAT", "json".into())]);
    support::get(&server.url("/api/health"));
    server.terminate();
    let log = server.log();
    let request_line = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .find(|v| v["target"] == "onboard::http")
        .expect("a request log line");
    assert_eq!(request_line["route"], "/api/health");
    assert_eq!(request_line["status"], 200);
    assert_eq!(request_line["method"], "GET");
}

#[test]
fn with_migrations_off_the_server_stays_unready_until_migrated() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let server = support::Server::start(
        dir.path(),
        &[
            ("DATABASE_URL", db.url.clone()),
            ("ONBOARD__DATABASE__RUN_MIGRATIONS", "false".into()),
        ],
    );
    let r = support::get(&server.url("/api/health/ready"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("migration(s) pending"),
        "{}",
        r.body
    );
    db.db.run_migrations().unwrap();
    assert_eq!(support::get(&server.url("/api/health/ready")).status, 200);
}

// ---- CA and CRL ------------------------------------------------------------------

async fn ca_and_crl_are_served_and_verify(backend: TestBackend) {
    let t = TestDb::new(backend);
    let (state, tmp) = state_for(&t);
    let svc = atest::init_service(app(state)).await;

    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/public/v1/ca").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/x-pem-file"
    );
    let etag = res
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let chain = atest::read_body(res).await;
    std::fs::write(tmp.path().join("chain.pem"), &chain).unwrap();
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/public/v1/ca")
            .insert_header(("if-none-match", etag))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/public/v1/crl").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/x-pem-file"
    );
    assert_eq!(res.headers().get("x-crl-number").unwrap(), "1");
    assert_eq!(
        res.headers().get("cache-control").unwrap(),
        "public, max-age=43200"
    );
    let etag = res
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    std::fs::write(tmp.path().join("crl.pem"), atest::read_body(res).await).unwrap();
    let (ok, out) = support::openssl(
        tmp.path(),
        &[
            "crl",
            "-in",
            "crl.pem",
            "-CAfile",
            "chain.pem",
            "-verify",
            "-noout",
        ],
    );
    assert!(ok && out.contains("verify OK"), "{out}");

    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/public/v1/crl")
            .insert_header(("accept", "application/pkix-crl"))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/pkix-crl"
    );
    std::fs::write(tmp.path().join("crl.der"), atest::read_body(res).await).unwrap();
    let (ok, out) = support::openssl(
        tmp.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            "chain.pem",
            "-verify",
            "-noout",
            "-crlnumber",
        ],
    );
    assert!(ok && out.contains("crlNumber=0x01"), "{out}");

    // The same CRL while it is fresh: 304 for the ETag the client holds.
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/public/v1/crl")
            .insert_header(("if-none-match", etag))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[actix_web::test]
async fn sqlite_ca_and_crl_are_served_and_verify() {
    ca_and_crl_are_served_and_verify(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_ca_and_crl_are_served_and_verify() {
    ca_and_crl_are_served_and_verify(TestBackend::Postgres).await;
}

#[test]
fn a_wrong_ca_passphrase_or_a_mismatched_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, "right one\n").unwrap();
    let env =
        |file: &std::path::Path| vec![("ONBOARD__CA__PASSPHRASE_FILE", file.display().to_string())];
    // First start creates the CA with the passphrase, then stops.
    let mut server = support::Server::start(dir.path(), &env(&pass));
    assert!(server.terminate().success());
    let key = std::fs::read_to_string(dir.path().join("data/ca/ca.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let (status, output) = support::run_to_exit(dir.path(), &env(&wrong));
    assert!(!status.success());
    assert!(
        output.contains("passphrase does not decrypt the CA key"),
        "{output}"
    );
    assert!(
        !output.contains("not it") && !output.contains("right one"),
        "{output}"
    );

    let other = tempfile::tempdir().unwrap();
    let mut other_server = support::Server::start(other.path(), &[]);
    other_server.terminate();
    std::fs::copy(
        other.path().join("data/ca/ca.key"),
        dir.path().join("data/ca/ca.key"),
    )
    .unwrap();
    let (status, output) = support::run_to_exit(dir.path(), &[]);
    assert!(!status.success());
    assert!(
        output.contains("does not match the CA certificate"),
        "{output}"
    );
}

// ---- model firmware ----------------------------------------------------------------

#[actix_web::test]
async fn sqlite_firmware_is_uploaded_shown_and_downloaded_with_etag_and_ranges() {
    firmware::firmware_is_uploaded_shown_and_downloaded_with_etag_and_ranges(TestBackend::Sqlite)
        .await;
}

#[actix_web::test]
async fn postgres_firmware_is_uploaded_shown_and_downloaded_with_etag_and_ranges() {
    firmware::firmware_is_uploaded_shown_and_downloaded_with_etag_and_ranges(TestBackend::Postgres)
        .await;
}

#[actix_web::test]
async fn sqlite_invalid_images_are_422_naming_the_problem_and_change_nothing() {
    firmware::invalid_images_are_422_naming_the_problem_and_change_nothing(TestBackend::Sqlite)
        .await;
}

#[actix_web::test]
async fn postgres_invalid_images_are_422_naming_the_problem_and_change_nothing() {
    firmware::invalid_images_are_422_naming_the_problem_and_change_nothing(TestBackend::Postgres)
        .await;
}

#[actix_web::test]
async fn sqlite_the_serving_helper_works_in_any_app() {
    firmware::the_serving_helper_works_in_any_app(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_the_serving_helper_works_in_any_app() {
    firmware::the_serving_helper_works_in_any_app(TestBackend::Postgres).await;
}

// ---- web console -------------------------------------------------------------------

#[actix_web::test]
async fn sqlite_console_sessions_cookies_headers_csrf_and_escaping() {
    console::sessions_cookies_headers_csrf_and_escaping(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_console_sessions_cookies_headers_csrf_and_escaping() {
    console::sessions_cookies_headers_csrf_and_escaping(TestBackend::Postgres).await;
}

#[actix_web::test]
async fn sqlite_console_firmware_is_uploaded_from_the_models_page() {
    console_firmware::firmware_is_uploaded_from_the_models_page(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_console_firmware_is_uploaded_from_the_models_page() {
    console_firmware::firmware_is_uploaded_from_the_models_page(TestBackend::Postgres).await;
}

#[actix_web::test]
async fn sqlite_console_failed_sign_ins_lock_the_client_out() {
    console::failed_sign_ins_lock_the_client_out(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_console_failed_sign_ins_lock_the_client_out() {
    console::failed_sign_ins_lock_the_client_out(TestBackend::Postgres).await;
}
