//! Issue-level flows against the real binaries: onboardctl, onboard-server, openssl.

use std::sync::{Arc, Barrier};

use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::support::{self, onboardctl, openssl, post_json, Server};

/// Settings for a server and CLI that share one database, without rate limits
/// (the flows below send many requests from one address).
pub(crate) fn env_for(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("ONBOARD__DATABASE__URL", db.url.clone()),
        ("ONBOARD__RATE_LIMIT__REQUESTS_PER_MINUTE", "0".into()),
        ("ONBOARD__RATE_LIMIT__FAILURES_PER_HOUR", "0".into()),
    ]
}

fn create_key(dir: &std::path::Path, env: &[(&'static str, String)], max_uses: u32) -> String {
    crate::faults::create_key(dir, env, "line7-2026w47", max_uses).secret
}

#[test]
fn a_device_registers_end_to_end_with_cli_openssl_and_http() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&db);
    let server = Server::start(dir.path(), &env);

    // The batch, from the CLI, into a 0600 CSV.
    let (ok, stdout, stderr) = onboardctl(
        dir.path(),
        &env,
        &[
            "keys",
            "create",
            "--batch",
            "line7",
            "--count",
            "2",
            "--max-uses",
            "5",
            "--out",
            "keys.csv",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("written to keys.csv"), "{stdout}");
    let csv = std::fs::read_to_string(dir.path().join("keys.csv")).unwrap();
    let key = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .to_owned();
    assert!(key.starts_with("obk_"));
    assert!(
        !stdout.contains(&key),
        "with --out the keys are not printed"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("keys.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The device's key and CSR, from the openssl CLI.
    let (ok, out) = openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "device.key",
            "-out",
            "device.csr",
            "-subj",
            "/CN=ignored",
        ],
    );
    assert!(ok, "{out}");
    let csr = std::fs::read_to_string(dir.path().join("device.csr")).unwrap();

    let auth = format!("Bearer {key}");
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &auth)],
        &json!({"serial": "SN-000123", "model": "tempsensor", "firmware_version": "1.4.2",
                "csr": csr, "metadata": {"line": "7"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let body = r.json();
    assert!(body.get("private_key_pem").is_none());
    assert_eq!(body["serial"], "SN-000123");
    assert_eq!(body["status"], "registered");
    let device_id = body["device_id"].as_str().unwrap().to_owned();
    assert_eq!(body["mqtt"]["client_id"], device_id);
    assert_eq!(body["mqtt"]["publish"][0], format!("devices/{device_id}/#"));
    std::fs::write(
        dir.path().join("device.crt"),
        body["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();

    // Verified against the chain the server publishes.
    let chain = support::get(&server.url("/public/v1/ca"));
    std::fs::write(dir.path().join("chain.pem"), &chain.body).unwrap();
    let (ok, out) = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "chain.pem",
            "-purpose",
            "sslclient",
            "device.crt",
        ],
    );
    assert!(ok, "{out}");
    let (_, subject) = openssl(
        dir.path(),
        &["x509", "-in", "device.crt", "-noout", "-subject", "-serial"],
    );
    assert!(subject.contains(&device_id), "{subject}");
    assert!(
        subject.contains(body["certificate_serial"].as_str().unwrap()),
        "{subject}"
    );

    // The earlier service's way: X-Api-Key and device_id; no CSR, so a key comes back.
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("X-Api-Key", &key)],
        &json!({"device_id": "SN-legacy-1"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.json()["private_key_pem"]
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));

    // The operator sees both devices and the audit rows.
    let (ok, stdout, stderr) =
        onboardctl(dir.path(), &env, &["--output", "json", "devices", "list"]);
    assert!(ok, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let serials: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial"].clone())
        .collect();
    assert_eq!(serials, [json!("SN-000123"), json!("SN-legacy-1")]);
    let (ok, stdout, _) = onboardctl(dir.path(), &env, &["devices", "show", &device_id]);
    assert!(ok);
    assert!(stdout.contains("current certificate"), "{stdout}");
    let (ok, stdout, _) = onboardctl(
        dir.path(),
        &env,
        &[
            "--output",
            "json",
            "audit",
            "list",
            "--action",
            "device.register",
        ],
    );
    assert!(ok);
    let audit: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = audit["items"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["outcome"] == "success"));
    assert!(
        !stdout.contains(&key),
        "the key never reaches the audit log"
    );
    let (ok, stdout, _) = onboardctl(dir.path(), &env, &["audit", "list"]);
    assert!(ok && stdout.contains("bootstrap_key.create"), "{stdout}");
}

fn parallel_registrations_take_exactly_max_uses(backend: TestBackend) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&db);
    let server = Server::start(dir.path(), &env);
    let key = create_key(dir.path(), &env, 20);
    let url = server.url("/public/v1/register");
    let barrier = Arc::new(Barrier::new(50));
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (barrier, url, auth) = (barrier.clone(), url.clone(), format!("Bearer {key}"));
                s.spawn(move || {
                    barrier.wait();
                    post_json(
                        &url,
                        &[("Authorization", &auth)],
                        &json!({"serial": format!("SN-{i:03}")}),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!((created, refused), (20, 30), "{statuses:?}");

    // Ten at once for one serial: one device.
    let key = create_key(dir.path(), &env, 100);
    let barrier = Arc::new(Barrier::new(10));
    std::thread::scope(|s| {
        for _ in 0..10 {
            let (barrier, url, auth) = (barrier.clone(), url.clone(), format!("Bearer {key}"));
            s.spawn(move || {
                barrier.wait();
                post_json(
                    &url,
                    &[("Authorization", &auth)],
                    &json!({"serial": "SN-same"}),
                );
            });
        }
    });
    let (ok, stdout, stderr) = onboardctl(
        dir.path(),
        &env,
        &["--output", "json", "devices", "list", "--q", "SN-same"],
    );
    assert!(ok, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[test]
fn sqlite_parallel_registrations_take_exactly_max_uses() {
    parallel_registrations_take_exactly_max_uses(TestBackend::Sqlite);
}

#[test]
fn postgres_parallel_registrations_take_exactly_max_uses() {
    parallel_registrations_take_exactly_max_uses(TestBackend::Postgres);
}

#[test]
fn a_first_start_writes_an_admin_token_that_opens_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let path = dir.path().join("data/admin.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(!server.log().contains(&token), "the token is never logged");
    assert!(
        server.log().contains("admin.token"),
        "the log names the file"
    );

    let url = server.url("/private/v1/admin/bootstrap-keys");
    let r = support::get(&url);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let auth = format!("Bearer {token}");
    let r = post_json(
        &url,
        &[("Authorization", &auth)],
        &json!({"batch": "b1", "count": 3, "max_uses": 2}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let secrets: Vec<&str> = created["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(secrets.len(), 3);
    let listed = support::get_with(&url, &[("Authorization", &auth)]);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 3);
    for secret in &secrets {
        assert!(!listed.body.contains(secret), "no secrets in listings");
    }
    let audit = support::get_with(
        &server.url("/private/v1/admin/audit"),
        &[("Authorization", &auth)],
    );
    assert_eq!(audit.json()["items"][0]["actor"], "admin:admin");

    // A token configured by hash (onboardctl admin token create) replaces the file.
    let (ok, stdout, _) = onboardctl(
        dir.path(),
        &[],
        &[
            "--output", "json", "admin", "token", "create", "--name", "ops",
        ],
    );
    assert!(ok);
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    drop(server);
    let hash = created["hash"].as_str().unwrap().to_owned();
    let server = Server::start(dir.path(), &[("ONBOARD__ADMIN__TOKEN_HASHES", hash)]);
    let url = server.url("/private/v1/admin/bootstrap-keys");
    assert_eq!(
        support::get_with(&url, &[("Authorization", &auth)]).status,
        401,
        "the file token no longer works"
    );
    let ops = format!("Bearer {}", created["token"].as_str().unwrap());
    assert_eq!(
        support::get_with(&url, &[("Authorization", &ops)]).status,
        200
    );
}
