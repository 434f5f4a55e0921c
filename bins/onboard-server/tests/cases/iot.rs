//! The device API on the real binary's TLS listener, with independent clients:
//! curl presenting certificates we issued (mutual TLS), and a standard OAuth2
//! client library (requests-oauthlib) with PyJWT verifying tokens through the JWKS.

use std::path::Path;
use std::process::Command;

use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::e2e::env_for;
use crate::support::{self, free_port, openssl, p256_csr, post_json, Server};

/// A running server with its TLS listener, admin token and CA chain on disk.
pub(crate) struct Tls {
    pub(crate) server: Server,
    pub(crate) tls: String,
    pub(crate) token: String,
    pub(crate) chain: String,
}

pub(crate) fn start(dir: &Path, db: &TestDb, extra: &[(&'static str, String)]) -> Tls {
    let port = free_port();
    let mut env = env_for(db);
    env.push(("ONBOARD__SERVER__TLS_BIND", format!("127.0.0.1:{port}")));
    // Devices know the server by its TLS address: the token issuer and the links.
    env.push((
        "ONBOARD__SERVER__PUBLIC_BASE_URL",
        format!("https://127.0.0.1:{port}"),
    ));
    env.extend(extra.iter().cloned());
    let server = Server::start(dir, &env);
    let token = std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let chain = support::get(&server.url("/public/v1/ca")).body;
    std::fs::write(dir.join("chain.pem"), &chain).unwrap();
    Tls {
        server,
        tls: format!("https://127.0.0.1:{port}"),
        token,
        chain: dir.join("chain.pem").display().to_string(),
    }
}

/// curl's answer: HTTP status (0 when the TLS handshake failed), headers, body.
pub(crate) struct Curl {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

impl Curl {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub(crate) fn curl(
    dir: &Path,
    t: &Tls,
    method: &str,
    path: &str,
    cert: Option<&str>,
    extra: &[&str],
) -> Curl {
    let headers = dir.join("curl-headers.txt");
    let mut cmd = Command::new("curl");
    cmd.current_dir(dir).args([
        "-sS",
        "--http1.1",
        "--cacert",
        &t.chain,
        "-X",
        method,
        "-D",
        headers.to_str().unwrap(),
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(name) = cert {
        cmd.args([
            "--cert",
            &format!("{name}.crt"),
            "--key",
            &format!("{name}.key"),
        ]);
    }
    cmd.args(extra).arg(format!("{}{path}", t.tls));
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Curl {
        status: code.trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: if out.status.success() {
            body.to_owned()
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        },
    }
}

/// `POST /iot/renew` with `csr`, over the certificate `NAME.crt`.
fn renew(dir: &Path, t: &Tls, cert: &str, csr: &str) -> Curl {
    curl(
        dir,
        t,
        "POST",
        "/iot/renew",
        Some(cert),
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            &json!({"csr": csr}).to_string(),
        ],
    )
}

pub(crate) fn admin(t: &Tls) -> [(&'static str, String); 1] {
    [("Authorization", format!("Bearer {}", t.token))]
}

pub(crate) fn headers<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Creates the model `code` with the admin token.
pub(crate) fn create_model(t: &Tls, code: &str) {
    let r = post_json(
        &t.server.url("/private/v1/admin/models"),
        &headers(&admin(t)),
        &json!({"code": code}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Revokes device `id` over the admin API (`keyCompromise`).
pub(crate) fn revoke(t: &Tls, id: &str) {
    let r = post_json(
        &t.server
            .url(&format!("/private/v1/admin/devices/{id}/revoke")),
        &headers(&admin(t)),
        &json!({"reason": "keyCompromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Registers `serial` with a fresh key (`NAME.key`, `NAME.crt` in `dir`).
pub(crate) fn register(
    dir: &Path,
    t: &Tls,
    key: &str,
    serial: &str,
    name: &str,
) -> serde_json::Value {
    let csr = p256_csr(dir, name);
    let r = post_json(
        &t.server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {key}"))],
        &json!({"serial": serial, "model": "thermo", "csr": csr}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let body = r.json();
    std::fs::write(
        dir.join(format!("{name}.crt")),
        body["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    body
}

fn crl_text(dir: &Path, t: &Tls) -> String {
    let crl = support::get(&t.server.url("/public/v1/crl")).body;
    std::fs::write(dir.join("crl.pem"), crl).unwrap();
    let (ok, text) = openssl(dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(ok, "{text}");
    text
}

#[test]
fn devices_reach_their_own_data_over_mutual_tls_and_lose_it_when_revoked() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = start(d, &db, &[]);
    let auth = admin(&t);

    let r = post_json(
        &t.server.url("/private/v1/admin/models"),
        &headers(&auth),
        &json!({"code": "thermo", "config": {"interval": 30, "unit": "C"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = crate::faults::create_key(d, &env_for(&db), "iot", 10).secret;
    let a = register(d, &t, &key, "SN-IOT-A", "a");
    let b = register(d, &t, &key, "SN-IOT-B", "b");
    let (a_id, b_id) = (
        a["device_id"].as_str().unwrap().to_owned(),
        b["device_id"].as_str().unwrap().to_owned(),
    );
    // The device's own override wins over the model's default.
    let r = support::patch_json(
        &t.server.url(&format!("/private/v1/admin/devices/{a_id}")),
        &headers(&auth),
        &json!({"config": {"interval": 10, "room": "lab"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // The server's own certificate verifies with our chain for 127.0.0.1 (no -k).
    let r = curl(d, &t, "GET", "/iot/config", Some("a"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"interval": 10, "unit": "C", "room": "lab"})
    );
    let r = curl(d, &t, "GET", "/iot/config", Some("b"), &[]);
    assert_eq!(
        r.json(),
        json!({"interval": 30, "unit": "C"}),
        "b sees its own"
    );

    let r = curl(d, &t, "GET", "/iot/provisioning", Some("a"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json();
    assert_eq!(p["device_id"], a_id.as_str());
    assert_eq!(p["mqtt"]["client_id"], a_id.as_str());
    assert_eq!(p["credential"], "certificate");
    assert!(p["mqtt"]["publish"].as_array().unwrap().iter().all(|t| t
        .as_str()
        .unwrap()
        .contains(&a_id)
        && !t.as_str().unwrap().contains(&b_id)));
    assert_eq!(
        p["ca_chain_pem"].as_str().unwrap(),
        std::fs::read_to_string(&t.chain).unwrap()
    );
    assert_eq!(p["certificate"]["serial"], a["certificate_serial"]);
    let r = curl(d, &t, "GET", "/iot/provisioning", Some("b"), &[]);
    assert_eq!(r.json()["device_id"], b_id.as_str());

    // Firmware: none yet (404), then the model's image with ETag, 304 and ranges.
    let r = curl(d, &t, "GET", "/iot/firmware", Some("a"), &[]);
    assert_eq!(r.status, 404, "{}", r.body);
    let image = onboard_firmware::testing::ImageBuilder::app("2.1.0", "thermo-fw", "v5.2.1")
        .code_size(40_000)
        .build();
    std::fs::write(d.join("fw.bin"), &image).unwrap();
    let up = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {}", t.token),
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "@fw.bin",
            &t.server.url("/private/v1/admin/models/thermo/firmware"),
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&up.stdout), "200");
    let out = d.join("got.bin");
    let r = curl(
        d,
        &t,
        "GET",
        "/iot/firmware",
        Some("a"),
        &["-o", out.to_str().unwrap()],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(std::fs::read(&out).unwrap(), image);
    let h = r.headers.to_ascii_lowercase();
    assert!(h.contains("x-firmware-version: 2.1.0"), "{h}");
    assert!(
        h.contains(&format!("content-length: {}", image.len())),
        "{h}"
    );
    let etag = r
        .headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    let r = curl(
        d,
        &t,
        "GET",
        "/iot/firmware",
        Some("b"),
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(r.status, 304, "{}", r.headers);
    let r = curl(
        d,
        &t,
        "GET",
        "/iot/firmware",
        Some("a"),
        &["-o", out.to_str().unwrap(), "-H", "Range: bytes=100-199"],
    );
    assert_eq!(r.status, 206, "{}", r.headers);
    assert_eq!(std::fs::read(&out).unwrap(), image[100..200].to_vec());
    assert_eq!(curl(d, &t, "GET", "/iot/firmware", None, &[]).status, 401);

    // No certificate and no token: 401 with a challenge; nothing is answered.
    let r = curl(d, &t, "GET", "/iot/config", None, &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        r.headers
    );
    let r = curl(
        d,
        &t,
        "GET",
        "/iot/config",
        None,
        &["-H", "Authorization: Bearer not.a.token"],
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // A certificate of another CA does not get through the handshake.
    let (ok, out) = openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.crt",
            "-subj",
            &format!("/CN={a_id}"),
            "-days",
            "1",
        ],
    );
    assert!(ok, "{out}");
    let r = curl(d, &t, "GET", "/iot/config", Some("rogue"), &[]);
    assert_eq!(r.status, 0, "refused at the handshake: {}", r.body);

    // Activation over the API.
    let r = curl(d, &t, "POST", "/iot/activate", Some("a"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "active");

    // Renewal: the same key is refused; a new key gets a certificate, the old one
    // works until the new one is used, then it is revoked as superseded.
    let same = std::fs::read_to_string(d.join("a.csr")).unwrap();
    let r = renew(d, &t, "a", &same);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("new key"), "{}", r.body);
    let csr = p256_csr(d, "a2");
    let r = renew(d, &t, "a", &csr);
    assert_eq!(r.status, 200, "{}", r.body);
    let renewed = r.json();
    std::fs::write(
        d.join("a2.crt"),
        renewed["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, out) = openssl(d, &["verify", "-CAfile", &t.chain, "a2.crt"]);
    assert!(ok, "{out}");
    let old_serial = a["certificate_serial"].as_str().unwrap();
    assert_eq!(
        curl(d, &t, "GET", "/iot/config", Some("a"), &[]).status,
        200,
        "grace"
    );
    assert!(!crl_text(d, &t).contains(old_serial));
    assert_eq!(
        curl(d, &t, "GET", "/iot/config", Some("a2"), &[]).status,
        200
    );
    assert_eq!(
        curl(d, &t, "GET", "/iot/config", Some("a"), &[]).status,
        401,
        "superseded"
    );
    assert!(
        crl_text(d, &t).contains(old_serial),
        "the old certificate is in the CRL"
    );

    // Revocation takes effect at once, before any CRL reaches a client.
    let r = post_json(
        &t.server
            .url(&format!("/private/v1/admin/devices/{a_id}/revoke")),
        &headers(&auth),
        &json!({"reason": "keyCompromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(d, &t, "GET", "/iot/config", Some("a2"), &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        curl(d, &t, "GET", "/iot/config", Some("b"), &[]).status,
        200,
        "b is untouched"
    );
}

/// Runs the OAuth2 client script; returns its JSON report.
fn oauth_client(dir: &Path, t: &Tls, client_id: &str, secret: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oauth_client.py");
    let out = Command::new("python3")
        .current_dir(dir)
        .args([script, &t.tls, client_id, secret, &t.chain])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn password_devices_get_tokens_from_a_standard_oauth2_client() {
    let db = TestDb::new(TestBackend::Postgres);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = start(d, &db, &[]);
    let auth = admin(&t);
    let mk = |name: &str| {
        let r = post_json(
            &t.server.url("/private/v1/admin/devices"),
            &headers(&auth),
            &json!({"name": name, "credential": "password", "config": {"led": name}}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        assert!(v.get("certificate").is_none(), "{v}");
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    };
    let (id, secret) = mk("pw-one");
    let (other_id, other_secret) = mk("pw-two");
    assert_ne!(secret, other_secret);
    // The secret is stored only as a hash.
    let rows = support::sql(&db.url, "SELECT password_hash FROM mqtt_credentials");
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r[0].starts_with("$7$") && !r[0].contains(&secret)));

    let report = oauth_client(d, &t, &id, &secret);
    for method in ["basic", "post"] {
        let r = &report[method];
        assert_eq!(r["token_type"], "Bearer", "{report}");
        assert_eq!(r["claims"]["sub"], id.as_str(), "{report}");
        assert_eq!(r["claims"]["iss"], t.tls.as_str(), "{report}");
        assert_eq!(r["config_status"], 200, "{report}");
        assert_eq!(
            r["config"],
            json!({"led": "pw-one"}),
            "only its own data: {report}"
        );
    }
    assert_eq!(report["wrong_secret"], "invalid_client", "{report}");
    assert_eq!(report["tampered_status"], 401, "{report}");
    let other = oauth_client(d, &t, &other_id, &other_secret);
    assert_eq!(other["basic"]["config"], json!({"led": "pw-two"}));

    // A new secret from the admin provisioning download ends the old one and
    // every token issued for it.
    let r = support::get_with(
        &t.server
            .url(&format!("/private/v1/admin/devices/{id}/provisioning")),
        &headers(&auth),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json();
    let fresh = p["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(fresh, secret);
    assert_eq!(p["mqtt"]["username"], id.as_str());
    let old_token = report["basic"]["access_token"].as_str().unwrap();
    let r = curl(
        d,
        &t,
        "GET",
        "/iot/config",
        None,
        &["-H", &format!("Authorization: Bearer {old_token}")],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let again = oauth_client(d, &t, &id, &fresh);
    assert_eq!(again["basic"]["config_status"], 200, "{again}");
    let stale = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &t.chain,
            "-u",
            &format!("{id}:{secret}"),
            "-d",
            "grant_type=client_credentials",
            &format!("{}/iot/token", t.tls),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stale.stdout),
        "401",
        "the old secret is refused"
    );
}

/// Credential rotation over HTTP: the admin routes queue a device, the CronJob's
/// `onboardctl rotation run-job` starts it, the device renews over mutual TLS and
/// acknowledges with its new certificate; the old one is refused and in the CRL.
#[test]
fn a_rotation_is_queued_started_renewed_and_acknowledged_over_http() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = start(d, &db, &[]);
    let auth = admin(&t);
    let r = post_json(
        &t.server.url("/private/v1/admin/models"),
        &headers(&auth),
        &json!({"code": "thermo"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = crate::faults::create_key(d, &env_for(&db), "rot", 10).secret;
    let a = register(d, &t, &key, "SN-ROT-A", "ra");
    let a_id = a["device_id"].as_str().unwrap().to_owned();
    let rotate = format!("/private/v1/admin/devices/{a_id}/rotate");

    // Nothing pending: an acknowledgment is refused.
    let r = curl(d, &t, "POST", "/iot/rotation/ack", Some("ra"), &[]);
    assert_eq!(r.status, 409, "{}", r.body);
    // Admin routes need the admin token; an unknown device is 404.
    assert_eq!(
        post_json(&t.server.url(&rotate), &[], &json!({})).status,
        401
    );
    let r = post_json(
        &t.server
            .url("/private/v1/admin/devices/0190a0b0-0000-7000-8000-000000000000/rotate"),
        &headers(&auth),
        &json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.body);

    let r = post_json(&t.server.url(&rotate), &headers(&auth), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "QUEUED");
    let r = post_json(&t.server.url(&rotate), &headers(&auth), &json!({}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"], "conflict");
    let r = post_json(
        &t.server.url("/private/v1/admin/rotation/trigger"),
        &headers(&auth),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["queued"], 0, "the only device is queued already");

    // The CronJob's cycle starts it.
    let (ok, stdout, stderr) = support::onboardctl(d, &env_for(&db), &["rotation", "run-job"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 started, 1 pending (max 1)"), "{stdout}");
    let status = support::get_with(&t.server.url("/private/v1/admin/rotation"), &headers(&auth));
    assert_eq!(status.status, 200, "{}", status.body);
    let pending = &status.json()["states"][2];
    assert_eq!(pending["state"], "PENDING");
    assert_eq!(pending["count"], 1);
    assert_eq!(pending["devices"][0]["device_id"], a_id.as_str());

    // The device renews with a new key; the old certificate still works until the
    // new one is used; acknowledging with the old one is refused.
    let csr = p256_csr(d, "ra2");
    let r = renew(d, &t, "ra", &csr);
    assert_eq!(r.status, 200, "{}", r.body);
    std::fs::write(
        d.join("ra2.crt"),
        r.json()["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let r = curl(d, &t, "POST", "/iot/rotation/ack", Some("ra"), &[]);
    assert_eq!(r.status, 409, "{}", r.body);
    let r = curl(d, &t, "POST", "/iot/rotation/ack", Some("ra2"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "OK");
    assert!(r.json()["completed_at"].is_string());
    assert_eq!(
        curl(d, &t, "GET", "/iot/config", Some("ra"), &[]).status,
        401,
        "the old certificate is superseded"
    );
    let old_serial = a["certificate_serial"].as_str().unwrap();
    assert!(crl_text(d, &t).contains(old_serial));
    let status =
        support::get_with(&t.server.url("/private/v1/admin/rotation"), &headers(&auth)).json();
    assert_eq!(status["states"][0]["state"], "OK");
    assert_eq!(status["states"][0]["count"], 1);
    assert_eq!(status["states"][2]["count"], 0);
    // The OpenAPI document lists the new routes.
    let api = support::get(&t.server.url("/api/openapi.json")).json();
    for path in [
        "/private/v1/admin/rotation",
        "/private/v1/admin/rotation/trigger",
        "/private/v1/admin/devices/{id}/rotate",
        "/iot/rotation/ack",
    ] {
        assert!(api["paths"].get(path).is_some(), "{path} not documented");
    }
}

/// With `rotation.run_in_server` the server runs the cycle itself (at start and
/// every minute): a queued device becomes PENDING without the CronJob.
#[test]
fn the_server_runs_rotation_cycles_only_when_asked() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = start(
        d,
        &db,
        &[("ONBOARD__ROTATION__RUN_IN_SERVER", "true".into())],
    );
    let auth = admin(&t);
    let r = post_json(
        &t.server.url("/private/v1/admin/models"),
        &headers(&auth),
        &json!({"code": "thermo"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = crate::faults::create_key(d, &env_for(&db), "rot", 10).secret;
    let a = register(d, &t, &key, "SN-ROT-S", "rs");
    let a_id = a["device_id"].as_str().unwrap();
    let r = post_json(
        &t.server
            .url(&format!("/private/v1/admin/devices/{a_id}/rotate")),
        &headers(&auth),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The next minute's pass starts it (the test waits for it, up to 3 minutes).
    for _ in 0..180 {
        let status =
            support::get_with(&t.server.url("/private/v1/admin/rotation"), &headers(&auth)).json();
        if status["states"][2]["count"] == 1 {
            assert_eq!(status["states"][2]["devices"][0]["device_id"], a_id);
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("the server never started the rotation\n{}", t.server.log());
}
