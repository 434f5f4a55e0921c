//! Operator registration, bundle delivery, revocation and decommissioning over
//! HTTP, with time moved through the Clock.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use chrono::{Duration, TimeZone, Utc};
use onboard_core::domain::{Clock, ManualClock};
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::app;
use serde_json::{json, Value};

use crate::state_with_clock;
use crate::support::openssl;

/// Opens a ZIP with pyzipper (independent of our code) and writes its files to `dir`.
fn unzip_with_pyzipper(
    dir: &std::path::Path,
    zip: &[u8],
    password: &str,
) -> Result<Vec<String>, String> {
    let path = dir.join("bundle.zip");
    std::fs::write(&path, zip).unwrap();
    let script = r#"
import sys, os, pyzipper
with pyzipper.AESZipFile(sys.argv[1]) as z:
    z.setpassword(sys.argv[2].encode())
    for n in z.namelist():
        with open(os.path.join(sys.argv[3], n), "wb") as f:
            f.write(z.read(n))
        print(n)
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            path.to_str().unwrap(),
            password,
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn operator_flow(backend: TestBackend) {
    let t = TestDb::new(backend);
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap(),
    ));
    let (state, dir) = state_with_clock(
        &t,
        |s| s.delivery.download_expiry_minutes = 30,
        clock.clone(),
    );
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let auth = ("authorization", format!("Bearer {token}"));
    let svc = atest::init_service(app(state)).await;
    let post = |uri: &str, body: Value| {
        atest::TestRequest::post()
            .uri(uri)
            .insert_header(auth.clone())
            .set_json(body)
            .to_request()
    };

    // An unknown model is refused, naming it; then the model exists.
    let res = atest::call_service(
        &svc,
        post(
            "/private/v1/admin/devices",
            json!({"name": "boiler", "model": "tempsensor"}),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = atest::read_body_json(res).await;
    assert!(
        body["message"].as_str().unwrap().contains("tempsensor"),
        "{body}"
    );
    let res = atest::call_service(
        &svc,
        post("/private/v1/admin/models", json!({"code": "tempsensor"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = atest::call_service(&svc, post("/private/v1/admin/devices", json!({"name": "boiler", "model": "tempsensor", "location": "hall 7", "firmware_version": "2.0.1"}))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = atest::read_body_json(res).await;
    let id = created["device"]["id"].as_str().unwrap().to_owned();
    let url = created["bundle_url"].as_str().unwrap().to_owned();
    let password = created["bundle_password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 20);
    assert_eq!(created["bundle_expires_at"], "2026-11-23T09:30:00Z");
    let path = url
        .strip_prefix("http://localhost:8080")
        .unwrap()
        .to_owned();

    let res = atest::call_service(&svc, atest::TestRequest::get().uri(&path).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/zip"
    );
    let zip = atest::read_body(res).await;
    let files = unzip_with_pyzipper(dir.path(), &zip, &password).unwrap();
    assert_eq!(files.len(), 4, "{files:?}");
    let at = clock.now().timestamp().to_string();
    let (ok, out) = openssl(
        dir.path(),
        &[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslclient",
            "device.crt",
        ],
    );
    assert!(ok, "{out}");
    let refused = unzip_with_pyzipper(dir.path(), &zip, "not the password").unwrap_err();
    assert!(refused.contains("Bad password"), "{refused}");

    // Once only, and the same answer for a used, tampered or unknown link.
    let again = atest::call_service(&svc, atest::TestRequest::get().uri(&path).to_request()).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let used: Value = atest::read_body_json(again).await;
    let unknown: Value = atest::read_body_json(
        atest::call_service(
            &svc,
            atest::TestRequest::get()
                .uri(&format!("/public/v1/bundles/{}", "x".repeat(43)))
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(used, unknown);

    // A link used after its expiry fails too, and the sweep leaves no key behind.
    let res = atest::call_service(
        &svc,
        post("/private/v1/admin/devices", json!({"name": "late"})),
    )
    .await;
    let late: Value = atest::read_body_json(res).await;
    let late_path = late["bundle_url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://localhost:8080")
        .unwrap()
        .to_owned();
    clock.advance(Duration::minutes(31));
    let res =
        atest::call_service(&svc, atest::TestRequest::get().uri(&late_path).to_request()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    {
        use onboard_core::domain::{Clock, CredentialBundleRepository, Store};
        let purged =
            t.db.transaction(|tx| tx.purge_expired_bundles(clock.now()))
                .unwrap();
        assert_eq!(purged, 1, "the expired bundle's content is dropped");
    }

    // PATCH, revoke, decommission.
    let patch = atest::TestRequest::patch()
        .uri(&format!("/private/v1/admin/devices/{id}"))
        .insert_header(auth.clone())
        .set_json(json!({"location": "roof"}))
        .to_request();
    let res = atest::call_service(&svc, patch).await;
    assert_eq!(res.status(), StatusCode::OK);
    let patched: Value = atest::read_body_json(res).await;
    assert_eq!(
        (patched["location"].as_str(), patched["name"].as_str()),
        (Some("roof"), Some("boiler"))
    );
    let bad = atest::TestRequest::patch()
        .uri(&format!("/private/v1/admin/devices/{id}"))
        .insert_header(auth.clone())
        .set_json(json!({"name": ""}))
        .to_request();
    assert_eq!(
        atest::call_service(&svc, bad).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let res = atest::call_service(
        &svc,
        post(
            &format!("/private/v1/admin/devices/{id}/revoke"),
            json!({"reason": "bogus"}),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let res = atest::call_service(
        &svc,
        post(
            &format!("/private/v1/admin/devices/{id}/revoke"),
            json!({"reason": "keyCompromise"}),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let revoked: Value = atest::read_body_json(res).await;
    assert_eq!(revoked["status"], "revoked");
    let serial = revoked["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let crl = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/public/v1/crl").to_request(),
    )
    .await;
    std::fs::write(dir.path().join("crl.pem"), atest::read_body(crl).await).unwrap();
    let (ok, text) = openssl(
        dir.path(),
        &[
            "crl", "-in", "crl.pem", "-CAfile", "ca.crt", "-verify", "-noout", "-text",
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(&serial) && text.contains("Key Compromise"),
        "{text}"
    );
    let res = atest::call_service(
        &svc,
        post(&format!("/private/v1/admin/devices/{id}/revoke"), json!({})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "idempotent");

    let del = atest::TestRequest::delete()
        .uri(&format!("/private/v1/admin/devices/{id}"))
        .insert_header(auth.clone())
        .to_request();
    let res = atest::call_service(&svc, del).await;
    assert_eq!(res.status(), StatusCode::OK);
    let gone: Value = atest::read_body_json(res).await;
    assert_eq!(gone["status"], "decommissioned");
    let audit: Value = atest::read_body_json(
        atest::call_service(
            &svc,
            atest::TestRequest::get()
                .uri(&format!("/private/v1/admin/audit?device={id}"))
                .insert_header(auth.clone())
                .to_request(),
        )
        .await,
    )
    .await;
    let trail: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("device.decommission".to_owned(), "admin:admin".to_owned()),
            ("device.revoke".to_owned(), "admin:admin".to_owned()),
            ("device.update".to_owned(), "admin:admin".to_owned()),
            ("device.create".to_owned(), "admin:admin".to_owned()),
        ]
    );
}

#[actix_web::test]
async fn sqlite_operator_registration_bundle_revocation_and_decommission() {
    operator_flow(TestBackend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_operator_registration_bundle_revocation_and_decommission() {
    operator_flow(TestBackend::Postgres).await;
}
