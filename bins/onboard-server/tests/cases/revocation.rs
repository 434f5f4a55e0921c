//! Revocation and decommissioning through the HTTP API and onboardctl reaching
//! the file broker (ACL file, CRL file), retired and superseded serials that
//! register again, and a failed registration again that keeps the old
//! certificate: against the real binaries, both backends.

use std::collections::BTreeSet;
use std::path::Path;

use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::e2e::env_for;
use crate::faults::{acl_access, create_key, crl_serials, Key};
use crate::support::{self, onboardctl, openssl, p256_csr, post_json, sql, Server};

/// The server with the file broker under `dir/data/mosquitto`, and its
/// reconciler left to its start-up pass: every file change below is made by the
/// call under test.
fn start(db: &TestDb, dir: &Path) -> (Server, Vec<(&'static str, String)>, String) {
    let mut env = env_for(db);
    env.push(("ONBOARD__BROKER__RECONCILE_SECONDS", "3600".into()));
    let server = Server::start(dir, &env);
    let token = std::fs::read_to_string(dir.join("data/admin.token")).unwrap();
    let chain = support::get(&server.url("/public/v1/ca"));
    assert_eq!(chain.status, 200, "{}", chain.body);
    std::fs::write(dir.join("chain.pem"), &chain.body).unwrap();
    (server, env, format!("Bearer {}", token.trim()))
}

/// A registered device: its id, certificate serial (upper-case hex) and CSR.
struct Registered {
    id: String,
    cert: String,
    csr: String,
}

fn register(server: &Server, dir: &Path, key: &Key, serial: &str) -> Registered {
    let csr = p256_csr(dir, serial);
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {}", key.secret))],
        &json!({"serial": serial, "csr": csr}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    std::fs::write(
        dir.join(format!("{serial}.crt")),
        v["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    Registered {
        id: v["device_id"].as_str().unwrap().to_owned(),
        cert: v["certificate_serial"].as_str().unwrap().to_uppercase(),
        csr,
    }
}

/// The device ids the broker's ACL file gives access.
fn acl(dir: &Path, db: &TestDb) -> BTreeSet<String> {
    let text = std::fs::read_to_string(dir.join("data/mosquitto/acl")).unwrap();
    let registry = sql(&db.url, "SELECT id FROM devices")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    acl_access(&text, &registry)
}

/// The certificate serials the broker's CRL file lists (signature checked by
/// `openssl crl -verify`).
fn broker_crl(dir: &Path) -> BTreeSet<String> {
    let pem = std::fs::read_to_string(dir.join("data/mosquitto/crl.pem")).unwrap();
    crl_serials(dir, &pem, "broker-crl.pem")
}

/// Everything a refused registration must leave as it was: every certificate
/// row, every key's uses, the devices, the successful audit events.
fn snapshot(db: &TestDb) -> Vec<Vec<Vec<String>>> {
    [
        "SELECT id, device_id, serial, status, COALESCE(revocation_reason, '') \
         FROM certificates ORDER BY id",
        "SELECT key_id, SUM(uses) FROM bootstrap_key_uses GROUP BY key_id ORDER BY key_id",
        "SELECT id, serial, status FROM devices ORDER BY id",
        "SELECT id FROM audit_events WHERE outcome = 'success' ORDER BY id",
        "SELECT count(*) FROM pending_effects",
    ]
    .iter()
    .map(|q| sql(&db.url, q))
    .collect()
}

fn failures(db: &TestDb, serial: &str) -> Vec<Vec<String>> {
    sql(
        &db.url,
        &format!(
            "SELECT reason, count(*) FROM audit_events WHERE action = 'device.register' \
             AND outcome = 'failure' AND serial = '{serial}' GROUP BY reason ORDER BY reason"
        ),
    )
}

fn revocation_and_decommission_reach_the_broker_and_retired_serials_stay_refused(
    backend: TestBackend,
) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let (server, env, admin) = start(&db, dir.path());
    let key = create_key(dir.path(), &env, "retire", 10);
    let [a, b, c, d, e] = ["SN-R-A", "SN-R-B", "SN-R-C", "SN-R-D", "SN-R-E"]
        .map(|serial| register(&server, dir.path(), &key, serial));
    let all: BTreeSet<String> = [&a, &b, &c, &d, &e].iter().map(|r| r.id.clone()).collect();
    assert_eq!(acl(dir.path(), &db), all);
    assert_eq!(broker_crl(dir.path()), BTreeSet::new());

    let mut gone = BTreeSet::new();
    let mut revoked = BTreeSet::new();
    let mut check = |r: &Registered, how: &str| {
        gone.insert(r.id.clone());
        revoked.insert(r.cert.clone());
        let left: BTreeSet<String> = all.difference(&gone).cloned().collect();
        assert_eq!(
            acl(dir.path(), &db),
            left,
            "{how}: the ACL file drops the device"
        );
        assert_eq!(
            broker_crl(dir.path()),
            revoked,
            "{how}: the broker's CRL file lists the serial"
        );
    };

    // Revoked over HTTP.
    let r = post_json(
        &server.url(&format!("/private/v1/admin/devices/{}/revoke", a.id)),
        &[("Authorization", &admin)],
        &json!({"reason": "keyCompromise"}),
    );
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("revoked")),
        "{}",
        r.body
    );
    check(&a, "HTTP revoke");

    // Revoked with onboardctl.
    let (ok, stdout, stderr) = onboardctl(
        dir.path(),
        &env,
        &["devices", "revoke", &b.id, "--reason", "keyCompromise"],
    );
    assert!(ok, "{stdout}{stderr}");
    check(&b, "onboardctl devices revoke");

    // Decommissioned over HTTP.
    let r = support::delete_with(
        &server.url(&format!("/private/v1/admin/devices/{}", c.id)),
        &[("Authorization", &admin)],
    );
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("decommissioned")),
        "{}",
        r.body
    );
    check(&c, "HTTP DELETE");

    // Decommissioned with onboardctl.
    let (ok, stdout, stderr) = onboardctl(dir.path(), &env, &["devices", "delete", &d.id]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("decommissioned"), "{stdout}");
    check(&d, "onboardctl devices delete");

    // The revocation reasons as a client sees them in the CRL.
    let (ok, text) = openssl(
        dir.path(),
        &["crl", "-in", "broker-crl.pem", "-noout", "-text"],
    );
    assert!(ok, "{text}");
    assert_eq!(text.matches("Key Compromise").count(), 2, "{text}");
    assert_eq!(text.matches("Cessation Of Operation").count(), 2, "{text}");
    // Each retired device fails verification against the broker's CRL; E passes.
    for (serial, revoked) in [
        ("SN-R-A", true),
        ("SN-R-B", true),
        ("SN-R-C", true),
        ("SN-R-D", true),
        ("SN-R-E", false),
    ] {
        let crt = format!("{serial}.crt");
        let (ok, out) = openssl(
            dir.path(),
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "chain.pem",
                "-CRLfile",
                "broker-crl.pem",
                &crt,
            ],
        );
        if revoked {
            assert!(
                !ok && out.contains("certificate revoked"),
                "{serial}: {out}"
            );
        } else {
            assert!(ok && out.contains(": OK"), "{serial}: {out}");
        }
    }

    // A retired serial registering again, with its own CSR or without one: 409
    // `conflict`, audited as such, and nothing else changes.
    let before = snapshot(&db);
    let acl_before = acl(dir.path(), &db);
    let crl_before = broker_crl(dir.path());
    for r in [&a, &b, &c, &d] {
        let serial = sql(
            &db.url,
            &format!("SELECT serial FROM devices WHERE id = '{}'", r.id),
        );
        let serial = serial[0][0].clone();
        for body in [
            json!({"serial": serial, "csr": r.csr}),
            json!({"serial": serial}),
        ] {
            let res = post_json(
                &server.url("/public/v1/register"),
                &[("Authorization", &format!("Bearer {}", key.secret))],
                &body,
            );
            assert_eq!(res.status, 409, "{serial}: {}", res.body);
            assert_eq!(res.json()["error"], "conflict", "{serial}: {}", res.body);
            assert!(res.json().get("certificate_pem").is_none());
        }
        assert_eq!(failures(&db, &serial), [["conflict", "2"]], "{serial}");
    }
    assert_eq!(
        snapshot(&db),
        before,
        "a refused registration changes nothing"
    );
    assert_eq!(acl(dir.path(), &db), acl_before);
    assert_eq!(broker_crl(dir.path()), crl_before);
}

#[test]
fn sqlite_revocation_and_decommission_reach_the_broker_and_retired_serials_stay_refused() {
    revocation_and_decommission_reach_the_broker_and_retired_serials_stay_refused(
        TestBackend::Sqlite,
    );
}

#[test]
fn postgres_revocation_and_decommission_reach_the_broker_and_retired_serials_stay_refused() {
    revocation_and_decommission_reach_the_broker_and_retired_serials_stay_refused(
        TestBackend::Postgres,
    );
}

/// Registers `serial` again without a CSR with its own single-use key; returns
/// the answer's status, `error` and certificate serial.
fn again_without_csr(server: &Server, key: &Key, serial: &str) -> (u16, String, String) {
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {}", key.secret))],
        &json!({"serial": serial}),
    );
    let v = r.json();
    let text = |f: &str| v[f].as_str().unwrap_or_default().to_owned();
    (
        r.status,
        text("error"),
        text("certificate_serial").to_uppercase(),
    )
}

/// The device's certificate (upper-case serial) verifies against the CRL the
/// server serves now, and the broker's ACL still lists the device.
fn still_works(server: &Server, db: &TestDb, dir: &Path, device: &Registered, serial: &str) {
    let crl = support::get(&server.url("/public/v1/crl"));
    assert_eq!(crl.status, 200, "{}", crl.body);
    let listed = crl_serials(dir, &crl.body, "served-crl.pem");
    assert!(!listed.contains(&device.cert), "{listed:?}");
    let crt = format!("{serial}.crt");
    let (ok, out) = openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "chain.pem",
            "-CRLfile",
            "served-crl.pem",
            &crt,
        ],
    );
    assert!(ok && out.contains(": OK"), "{out}");
    assert!(
        acl(dir, db).contains(&device.id),
        "the ACL still lists the device"
    );
}

/// SQL that makes the database refuse every successful registration's audit
/// event: the last write of a registration again, after the old certificate was
/// marked superseded in the same transaction.
fn failing_audit_trigger(backend: TestBackend) -> &'static str {
    match backend {
        TestBackend::Sqlite => {
            "CREATE TRIGGER onboard_test_fail BEFORE INSERT ON audit_events \
             WHEN NEW.action = 'device.register' AND NEW.outcome = 'success' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        }
        TestBackend::Postgres => {
            "CREATE FUNCTION onboard_test_fail() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
             CREATE TRIGGER onboard_test_fail BEFORE INSERT ON audit_events FOR EACH ROW \
             WHEN (NEW.action = 'device.register' AND NEW.outcome = 'success') \
             EXECUTE FUNCTION onboard_test_fail();"
        }
    }
}

fn superseded_serials_need_proof_and_a_failed_registration_again_keeps_the_old_certificate(
    backend: TestBackend,
) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let (server, env, _) = start(&db, dir.path());

    // F registers with its CSR, then again without one (its own single-use key):
    // the first certificate is superseded. The superseded key pair's CSR proves
    // nothing now: 409 `serial_taken`, and nothing changes.
    let own = create_key(dir.path(), &env, "superseded", 1);
    let f = register(&server, dir.path(), &own, "SN-S-F");
    let (status, error, newer) = again_without_csr(&server, &own, "SN-S-F");
    assert_eq!(status, 201, "{error}");
    assert_ne!(newer, f.cert);
    assert_eq!(broker_crl(dir.path()), BTreeSet::from([f.cert.clone()]));
    let before = snapshot(&db);
    let res = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {}", own.secret))],
        &json!({"serial": "SN-S-F", "csr": f.csr}),
    );
    assert_eq!(res.status, 409, "{}", res.body);
    assert_eq!(res.json()["error"], "serial_taken", "{}", res.body);
    assert_eq!(snapshot(&db), before);
    assert_eq!(failures(&db, "SN-S-F"), [["possible_takeover", "1"]]);

    // G registers; a registration again fails inside its transaction after the
    // old certificate was marked superseded (the database refuses the success
    // audit event): 500 `internal`, everything rolled back, the old certificate
    // active and in use, no use taken, nothing left to apply.
    let key = create_key(dir.path(), &env, "rollback", 1);
    let g = register(&server, dir.path(), &key, "SN-S-G");
    let before = snapshot(&db);
    sql(&db.url, failing_audit_trigger(backend));
    let (status, error, cert) = again_without_csr(&server, &key, "SN-S-G");
    assert_eq!(
        (status, error.as_str(), cert.as_str()),
        (500, "internal", "")
    );
    assert_eq!(
        snapshot(&db),
        before,
        "the failed registration left nothing"
    );
    assert_eq!(failures(&db, "SN-S-G"), [["internal", "1"]]);
    assert_eq!(
        sql(
            &db.url,
            &format!(
                "SELECT serial, status FROM certificates WHERE device_id = '{}'",
                g.id
            )
        )
        .into_iter()
        .map(|r| (r[0].to_uppercase(), r[1].clone()))
        .collect::<Vec<_>>(),
        [(g.cert.clone(), "active".to_owned())]
    );
    still_works(&server, &db, dir.path(), &g, "SN-S-G");

    // Once the database accepts it again, the same request succeeds and only
    // then is the old certificate superseded.
    let drop = match backend {
        TestBackend::Sqlite => "DROP TRIGGER onboard_test_fail;",
        TestBackend::Postgres => {
            "DROP TRIGGER onboard_test_fail ON audit_events; DROP FUNCTION onboard_test_fail();"
        }
    };
    sql(&db.url, drop);
    let (status, error, newer) = again_without_csr(&server, &key, "SN-S-G");
    assert_eq!(status, 201, "{error}");
    assert_ne!(newer, g.cert);
    assert_eq!(
        broker_crl(dir.path()),
        BTreeSet::from([f.cert.clone(), g.cert.clone()])
    );
}

#[test]
fn sqlite_superseded_serials_need_proof_and_a_failed_registration_again_keeps_the_old_certificate()
{
    superseded_serials_need_proof_and_a_failed_registration_again_keeps_the_old_certificate(
        TestBackend::Sqlite,
    );
}

#[test]
fn postgres_superseded_serials_need_proof_and_a_failed_registration_again_keeps_the_old_certificate(
) {
    superseded_serials_need_proof_and_a_failed_registration_again_keeps_the_old_certificate(
        TestBackend::Postgres,
    );
}
