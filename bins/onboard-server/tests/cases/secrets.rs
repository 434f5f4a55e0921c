//! No secret is kept in clear or written to a log: the real binary at debug level
//! runs registrations (with and without a CSR), operator registrations and their
//! bundle downloads, password devices and their tokens, a password device's
//! rotation (trigger, run-job, the new secret fetched and acknowledged), renewals,
//! revocations and refused guesses; then the server log, the CLI's listings, the broker's files and
//! a dump of every table of the database are searched for every secret generated.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::e2e::env_for;
use crate::iot::{admin, create_model, curl, headers, register, revoke, start, Tls};
use crate::support::{self, onboardctl, p256_csr, post_json};

/// A secret and the name it is reported by.
struct Secret {
    what: String,
    value: String,
}

/// Every form a secret could be stored or printed in: as is, and its bytes in hex
/// (how SQLite's dump and PostgreSQL's bytea print blobs).
fn forms(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    vec![
        value.to_owned(),
        hex::encode(bytes),
        hex::encode_upper(bytes),
    ]
}

/// A private key's PEM: its base64 lines (each long enough to be unmistakable)
/// and its DER in hex.
fn key_forms(pem: &str) -> Vec<String> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .expect("a PEM body");
    let mut out: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_owned)
        .collect();
    out.push(hex::encode(&der));
    out.push(hex::encode_upper(&der));
    out
}

/// The whole database as text: `sqlite3 .dump` or `pg_dump --data-only`.
fn dump(db: &TestDb) -> String {
    let out = if let Some(file) = db.url.strip_prefix("sqlite://") {
        Command::new("sqlite3").args([file, ".dump"]).output()
    } else {
        Command::new("pg_dump")
            .args(["--data-only", "--no-owner", &db.url])
            .output()
    }
    .expect("sqlite3 or pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tables the dump holds, so the search is known to have covered them.
fn tables(db: &TestDb) -> Vec<String> {
    let query = if db.url.starts_with("sqlite://") {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    } else {
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    };
    support::sql(&db.url, query)
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

fn token_for(d: &Path, t: &Tls, client_id: &str, secret: &str) -> String {
    let r = curl(
        d,
        t,
        "POST",
        "/iot/token",
        None,
        &[
            "-u",
            &format!("{client_id}:{secret}"),
            "--data",
            "grant_type=client_credentials",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn no_secret_is_kept_or_logged(backend: TestBackend) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut env = env_for(&db);
    env.push(("ONBOARD__LOG__LEVEL", "debug".into()));
    // The key that seals a password device's secrets during its rotation.
    let seal_key = "5d2e8b1a9c3f7e6d4b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918070f1e2d3".to_owned();
    env.push(("ONBOARD__ROTATION__SECRET_KEY", seal_key.clone()));
    let t = start(
        d,
        &db,
        &[
            ("ONBOARD__LOG__LEVEL", "debug".into()),
            ("ONBOARD__ROTATION__SECRET_KEY", seal_key.clone()),
        ],
    );
    let auth = admin(&t);
    let mut secrets = vec![
        Secret {
            what: "admin token".into(),
            value: t.token.clone(),
        },
        Secret {
            what: "rotation.secret_key".into(),
            value: seal_key,
        },
    ];
    let mut keys: Vec<(String, String)> = vec![];

    create_model(&t, "thermo");
    let key = crate::faults::create_key(d, &env, "secrets", 10);
    secrets.push(Secret {
        what: "bootstrap key".into(),
        value: key.secret.clone(),
    });

    // Self-registration with a CSR, then with a key the server generates.
    let a = register(d, &t, &key.secret, "SN-SECRET-A", "a");
    let r = post_json(
        &t.server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {}", key.secret))],
        &json!({"serial": "SN-SECRET-B", "model": "thermo"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let pem = r.json()["private_key_pem"].as_str().unwrap().to_owned();
    keys.push(("server-generated private key".into(), pem));

    // A guessed bootstrap key and a guessed client secret are refused and, being
    // someone's secret or close to it, are not written down either.
    let guess = format!("{}x", key.secret);
    let r = post_json(
        &t.server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {guess}"))],
        &json!({"serial": "SN-SECRET-C", "model": "thermo", "csr": p256_csr(d, "c")}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    secrets.push(Secret {
        what: "guessed bootstrap key".into(),
        value: guess,
    });

    // Operator registration: the bundle's link and password, its download.
    let r = post_json(
        &t.server.url("/private/v1/admin/devices"),
        &headers(&auth),
        &json!({"name": "boiler", "model": "thermo"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let op = r.json();
    let url = op["bundle_url"].as_str().unwrap().to_owned();
    let link = url.rsplit('/').next().unwrap().to_owned();
    secrets.push(Secret {
        what: "bundle link token".into(),
        value: link.clone(),
    });
    secrets.push(Secret {
        what: "bundle password".into(),
        value: op["bundle_password"].as_str().unwrap().to_owned(),
    });
    let r = curl(
        d,
        &t,
        "GET",
        &format!("/public/v1/bundles/{link}"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "the bundle downloads once");

    // A password device: its secret, a token, a fresh secret from the admin
    // provisioning download, a wrong secret.
    let r = post_json(
        &t.server.url("/private/v1/admin/devices"),
        &headers(&auth),
        &json!({"name": "pw", "credential": "password"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let pw = r.json();
    let pw_id = pw["device"]["id"].as_str().unwrap().to_owned();
    let client_id = pw["client_id"].as_str().unwrap().to_owned();
    let first = pw["client_secret"].as_str().unwrap().to_owned();
    secrets.push(Secret {
        what: "bundle password of the password device".into(),
        value: pw["bundle_password"].as_str().unwrap().to_owned(),
    });
    let access = token_for(d, &t, &client_id, &first);
    secrets.push(Secret {
        what: "client secret".into(),
        value: first.clone(),
    });
    secrets.push(Secret {
        what: "access token".into(),
        value: access.clone(),
    });
    let r = curl(
        d,
        &t,
        "GET",
        "/iot/config",
        None,
        &["-H", &format!("Authorization: Bearer {access}")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = support::get_with(
        &t.server
            .url(&format!("/private/v1/admin/devices/{pw_id}/provisioning")),
        &headers(&auth),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.json()["client_secret"].as_str().unwrap().to_owned();
    secrets.push(Secret {
        what: "client secret from the provisioning download".into(),
        value: fresh.clone(),
    });
    let second = token_for(d, &t, &client_id, &fresh);
    secrets.push(Secret {
        what: "second access token".into(),
        value: second,
    });
    let wrong = format!("{fresh}0");
    let r = curl(
        d,
        &t,
        "POST",
        "/iot/token",
        None,
        &[
            "-u",
            &format!("{client_id}:{wrong}"),
            "--data",
            "grant_type=client_credentials",
        ],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    secrets.push(Secret {
        what: "wrong client secret".into(),
        value: wrong,
    });

    // The password device's rotation, run by the CronJob's command: the new secret
    // fetched with a token of the old one, acknowledged with a token of the new.
    let (ok, out, err) = onboardctl(d, &env, &["rotation", "trigger", "--device", &pw_id]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = onboardctl(d, &env, &["rotation", "run-job"]);
    assert!(ok && out.contains("1 started"), "{out}{err}");
    let old_token = token_for(d, &t, &client_id, &fresh);
    let r = curl(
        d,
        &t,
        "GET",
        "/iot/provisioning",
        None,
        &["-H", &format!("Authorization: Bearer {old_token}")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.json()["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(rotated, fresh);
    let rotated_token = token_for(d, &t, &client_id, &rotated);
    let r = curl(
        d,
        &t,
        "POST",
        "/iot/rotation/ack",
        None,
        &["-H", &format!("Authorization: Bearer {rotated_token}")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "OK", "{}", r.body);
    for (what, value) in [
        ("token of the secret a rotation replaced", old_token),
        ("client secret set by a rotation", rotated),
        ("token of the rotated secret", rotated_token),
    ] {
        secrets.push(Secret {
            what: what.into(),
            value,
        });
    }

    // A renewal over mutual TLS, then a revocation.
    let csr = p256_csr(d, "a2");
    let r = curl(
        d,
        &t,
        "POST",
        "/iot/renew",
        Some("a"),
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            &json!({"csr": csr}).to_string(),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    revoke(&t, a["device_id"].as_str().unwrap());

    // What an operator lists with the CLI.
    let mut cli = String::new();
    for args in [
        &["keys", "list", "--batch", "secrets"][..],
        &["devices", "list"],
        &["audit", "list"],
    ] {
        let (ok, out, err) = onboardctl(d, &env, args);
        assert!(ok, "{args:?}: {err}");
        cli.push_str(&out);
        cli.push_str(&err);
    }

    let log = t.server.log();
    assert!(
        log.contains("DEBUG"),
        "the server logged at debug level: {log}"
    );
    let dumped = dump(&db);
    let tables = tables(&db);
    assert!(tables.len() >= 10, "{tables:?}");
    for table in &tables {
        assert!(dumped.contains(table.as_str()), "the dump holds {table}");
    }
    let mut broker = String::new();
    for entry in std::fs::read_dir(d.join("data/mosquitto")).unwrap() {
        let path = entry.unwrap().path();
        broker.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
    }
    assert!(
        broker.contains(&client_id),
        "the broker's files name the password device"
    );

    let places = [
        ("the server log", &log),
        ("the CLI's listings", &cli),
        ("the database", &dumped),
        ("the broker's files", &broker),
    ];
    let mut found = vec![];
    let mut needles = 0;
    for s in &secrets {
        for form in forms(&s.value) {
            needles += 1;
            for (place, text) in &places {
                if text.contains(&form) {
                    found.push(format!("{} in {place}", s.what));
                }
            }
        }
    }
    for (what, pem) in &keys {
        for form in key_forms(pem) {
            needles += 1;
            for (place, text) in &places {
                if text.contains(&form) {
                    found.push(format!("{what} in {place}"));
                }
            }
        }
    }
    assert!(needles > 30, "{needles} forms searched");
    assert!(found.is_empty(), "secrets found: {found:?}");
}

#[test]
fn sqlite_no_secret_is_kept_or_logged() {
    no_secret_is_kept_or_logged(TestBackend::Sqlite);
}

#[test]
fn postgres_no_secret_is_kept_or_logged() {
    no_secret_is_kept_or_logged(TestBackend::Postgres);
}
