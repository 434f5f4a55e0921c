//! Issue-level flows against the real binaries: onboardctl, onboard-server, openssl.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::faults::{create_key, crl_serials, Key};
use crate::support::{self, onboardctl, openssl, post_json, sql, Server};

/// Settings for a server and CLI that share one database, without rate limits
/// (the flows below send many requests from one address).
pub(crate) fn env_for(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("ONBOARD__DATABASE__URL", db.url.clone()),
        ("ONBOARD__RATE_LIMIT__REQUESTS_PER_MINUTE", "0".into()),
        ("ONBOARD__RATE_LIMIT__FAILURES_PER_HOUR", "0".into()),
    ]
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

/// One registration's answer: status, `error` (empty on success) and the
/// certificate serial (empty on failure).
type Outcome = (u16, String, String);

/// `n` registrations of `serial(i)` sent at once through a barrier.
fn at_once(
    url: &str,
    key: &str,
    n: usize,
    serial: impl Fn(usize) -> String + Sync,
) -> Vec<Outcome> {
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, auth, serial) = (barrier.clone(), format!("Bearer {key}"), &serial);
                s.spawn(move || {
                    let body = json!({"serial": serial(i)});
                    barrier.wait();
                    // A device retries a 503 (nothing was kept); on a loaded
                    // machine SQLite's writers can wait out the busy timeout.
                    let mut r = post_json(url, &[("Authorization", &auth)], &body);
                    for _ in 0..100 {
                        if r.status != 503 {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        r = post_json(url, &[("Authorization", &auth)], &body);
                    }
                    let v = r.json();
                    let text = |f: &str| v[f].as_str().unwrap_or_default().to_owned();
                    (r.status, text("error"), text("certificate_serial"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The certificates of the device with `serial`: (serial, status, reason).
fn certificates_of(db: &TestDb, serial: &str) -> Vec<(String, String, String)> {
    sql(
        &db.url,
        &format!(
            "SELECT c.serial, c.status, COALESCE(c.revocation_reason, '') FROM certificates c \
             JOIN devices d ON d.id = c.device_id WHERE d.serial = '{serial}' ORDER BY c.serial"
        ),
    )
    .into_iter()
    .map(|r| (r[0].to_uppercase(), r[1].clone(), r[2].clone()))
    .collect()
}

fn key_uses(db: &TestDb, key: &Key) -> String {
    let rows = sql(
        &db.url,
        &format!(
            "SELECT SUM(uses) FROM bootstrap_key_uses WHERE key_id = '{}'",
            key.id
        ),
    );
    rows[0][0].clone()
}

fn parallel_registrations_take_exactly_max_uses(backend: TestBackend) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&db);
    let server = Server::start(dir.path(), &env);
    let key = create_key(dir.path(), &env, "line7-2026w47", 20);
    let url = server.url("/public/v1/register");
    let outcomes = at_once(&url, &key.secret, 50, |i| format!("SN-{i:03}"));
    let created = outcomes.iter().filter(|o| o.0 == 201).count();
    let refused = outcomes
        .iter()
        .filter(|o| (o.0, o.1.as_str()) == (401, "unauthorized"))
        .count();
    assert_eq!((created, refused), (20, 30), "{outcomes:?}");
    // What the registry holds: exactly 20 devices, 20 uses, one active
    // certificate each, and the 30 refusals audited as a used-up key.
    let devices = sql(
        &db.url,
        &format!(
            "SELECT count(*), count(DISTINCT c.id) FROM devices d JOIN certificates c \
             ON c.device_id = d.id AND c.status = 'active' WHERE d.bootstrap_key_id = '{}'",
            key.id
        ),
    );
    assert_eq!(devices, [["20", "20"]]);
    assert_eq!(sql(&db.url, "SELECT count(*) FROM certificates"), [["20"]]);
    assert_eq!(key_uses(&db, &key), "20");
    assert_eq!(
        sql(
            &db.url,
            "SELECT count(*) FROM audit_events WHERE action = 'device.register' \
             AND outcome = 'failure' AND reason = 'key_used_up'"
        ),
        [["30"]]
    );

    // Ten at once for one serial with a shared key and no CSR: one device. The
    // first to commit wins; the others find the serial taken, prove nothing
    // (docs/registration.md: proof of possession) and are refused as possible
    // takeovers, taking no use and leaving no certificate.
    let shared = create_key(dir.path(), &env, "shared", 100);
    let outcomes = at_once(&url, &shared.secret, 10, |_| "SN-same".into());
    let won: Vec<_> = outcomes.iter().filter(|o| o.0 == 201).collect();
    let taken = outcomes
        .iter()
        .filter(|o| (o.0, o.1.as_str()) == (409, "serial_taken"))
        .count();
    assert_eq!((won.len(), taken), (1, 9), "{outcomes:?}");
    assert_eq!(key_uses(&db, &shared), "1");
    assert_eq!(
        certificates_of(&db, "SN-same"),
        [(won[0].2.to_uppercase(), "active".into(), String::new())]
    );
    assert_eq!(
        sql(
            &db.url,
            "SELECT outcome, reason, count(*) FROM audit_events WHERE action = 'device.register' \
             AND serial = 'SN-same' GROUP BY outcome, reason ORDER BY outcome"
        ),
        [
            vec!["failure".to_owned(), "possible_takeover".into(), "9".into()],
            vec!["success".to_owned(), String::new(), "1".into()]
        ]
    );

    // Ten at once with the device's own single-use key and no CSR: that key may
    // register its serial again while the device is registered, so every request
    // is answered (one registration, nine again), each with its own certificate;
    // one use; each answer supersedes the one committed before it, so exactly one
    // certificate stays active and the other nine are in the CRL.
    let own = create_key(dir.path(), &env, "own", 1);
    let outcomes = at_once(&url, &own.secret, 10, |_| "SN-own".into());
    assert!(outcomes.iter().all(|o| o.0 == 201), "{outcomes:?}");
    let answered: BTreeSet<String> = outcomes.iter().map(|o| o.2.to_uppercase()).collect();
    assert_eq!(answered.len(), 10, "{outcomes:?}");
    assert_eq!(key_uses(&db, &own), "1");
    let certs = certificates_of(&db, "SN-own");
    assert_eq!(
        certs.iter().map(|c| c.0.clone()).collect::<BTreeSet<_>>(),
        answered
    );
    let active: Vec<_> = certs.iter().filter(|c| c.1 == "active").collect();
    assert_eq!(active.len(), 1, "{certs:?}");
    let superseded: BTreeSet<String> = certs
        .iter()
        .filter(|c| (c.1.as_str(), c.2.as_str()) == ("revoked", "superseded"))
        .map(|c| c.0.clone())
        .collect();
    assert_eq!(superseded.len(), 9, "{certs:?}");
    // The served CRL and the broker's CRL file list exactly those nine.
    std::fs::write(
        dir.path().join("chain.pem"),
        support::get(&server.url("/public/v1/ca")).body,
    )
    .unwrap();
    let served = support::get(&server.url("/public/v1/crl"));
    assert_eq!(served.status, 200, "{}", served.body);
    let broker = std::fs::read_to_string(dir.path().join("data/mosquitto/crl.pem")).unwrap();
    for (name, pem) in [("served.pem", &served.body), ("broker.pem", &broker)] {
        assert_eq!(crl_serials(dir.path(), pem, name), superseded, "{name}");
    }
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
