//! EST (RFC 7030) on the real binary's TLS listener with an independent client,
//! strongSwan's `pki --estca` / `pki --est`, and the curl + openssl recipe of
//! `docs/est.md`: the CA chain, enrollment with a bootstrap key, the certificate
//! through `openssl verify`, a wrong key refused with 401 and a challenge, a bad CSR
//! 400, the batch-labelled paths (only the batch's keys and devices), the plain
//! listener refused.

use std::path::Path;
use std::process::Command;

use onboard_registry::testing::{TestBackend, TestDb};

use crate::e2e::env_for;
use crate::faults::create_key;
use crate::support::{self, free_port, Server};

fn run(dir: &Path, cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sh(dir: &Path, script: &str) -> (bool, String, String) {
    run(dir, Command::new("sh").args(["-c", script]))
}

#[test]
fn strongswan_pki_and_curl_enroll_over_est() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let mut env = env_for(&db);
    env.push(("ONBOARD__SERVER__TLS_BIND", format!("127.0.0.1:{port}")));
    env.push((
        "ONBOARD__SERVER__PUBLIC_BASE_URL",
        format!("https://127.0.0.1:{port}"),
    ));
    let server = Server::start(d, &env);
    let tls = format!("https://127.0.0.1:{port}");
    let chain = support::get(&server.url("/public/v1/ca")).body;
    std::fs::write(d.join("chain.pem"), &chain).unwrap();

    // cacerts with strongSwan.
    let (ok, out, err) = run(
        d,
        Command::new("pki").args([
            "--estca",
            "--url",
            &tls,
            "--cacert",
            "chain.pem",
            "--caout",
            "estca.pem",
            "--outform",
            "pem",
            "--force",
        ]),
    );
    assert!(ok, "pki --estca: {out}{err}");
    let got = std::fs::read_to_string(d.join("estca.pem")).unwrap();
    assert_eq!(got.trim(), chain.trim(), "{out}{err}");

    // cacerts with the curl recipe of docs/est.md.
    let (ok, out, err) = sh(
        d,
        &format!(
            "curl -sS --cacert chain.pem {tls}/.well-known/est/cacerts | base64 -d \
             | openssl pkcs7 -inform DER -print_certs"
        ),
    );
    assert!(
        ok && out.contains("-----BEGIN CERTIFICATE-----"),
        "{out}{err}"
    );

    // csrattrs: the accepted key types, read by openssl asn1parse.
    let (ok, out, err) = sh(
        d,
        &format!(
            "curl -sS -D headers.txt --cacert chain.pem {tls}/.well-known/est/csrattrs \
             | base64 -d | openssl asn1parse -inform DER"
        ),
    );
    assert!(ok, "{out}{err}");
    for name in ["id-ecPublicKey", "prime256v1", "secp384r1", "rsaEncryption"] {
        assert!(out.contains(name), "{name} missing: {out}");
    }
    let headers = std::fs::read_to_string(d.join("headers.txt")).unwrap();
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/csrattrs"),
        "{headers}"
    );

    // simpleenroll with strongSwan and a bootstrap key.
    let key = create_key(d, &env, "est", 5);
    let (ok, _, err) = run(
        d,
        Command::new("openssl").args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "dev.key",
            "-subj",
            "/CN=EST-1",
            "-outform",
            "DER",
            "-out",
            "dev.csr",
        ]),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        d,
        Command::new("pki")
            .args([
                "--est",
                "--url",
                &tls,
                "--in",
                "dev.csr",
                "--cacert",
                "chain.pem",
            ])
            .args([
                "--userpass",
                &format!("EST-1:{}", key.secret),
                "--outform",
                "pem",
            ]),
    );
    assert!(ok, "pki --est: {out}{err}");
    std::fs::write(d.join("dev.pem"), &out).unwrap();
    let (ok, vout, verr) = run(
        d,
        Command::new("openssl").args(["verify", "-CAfile", "chain.pem", "dev.pem"]),
    );
    assert!(ok && vout.contains("dev.pem: OK"), "{vout}{verr}");
    // The certificate is the CSR's key's.
    let (_, a, _) = sh(d, "openssl x509 -in dev.pem -noout -pubkey");
    let (_, b, _) = sh(d, "openssl pkey -in dev.key -pubout");
    assert_eq!(a, b);
    // Registered like POST /public/v1/register: the device shows in the admin API.
    let (ok, list, err) = support::onboardctl(d, &env, &["--output", "json", "devices", "list"]);
    assert!(ok && list.contains("EST-1"), "{list}{err}");
    // A lost answer: the same CSR again gets the same certificate and spends no use.
    let uses = key_uses(d, &env, "est");
    let (ok, again, err) = run(
        d,
        Command::new("pki")
            .args([
                "--est",
                "--url",
                &tls,
                "--in",
                "dev.csr",
                "--cacert",
                "chain.pem",
            ])
            .args([
                "--userpass",
                &format!("EST-1:{}", key.secret),
                "--outform",
                "pem",
            ]),
    );
    assert!(ok, "pki --est again: {again}{err}");
    assert_eq!(again, out, "the same certificate");
    assert_eq!(key_uses(d, &env, "est"), uses);

    // A wrong key: strongSwan fails, curl sees 401 with the Basic challenge.
    let (ok, out, err) = run(
        d,
        Command::new("pki")
            .args([
                "--est",
                "--url",
                &tls,
                "--in",
                "dev.csr",
                "--cacert",
                "chain.pem",
            ])
            .args(["--userpass", "EST-1:ob_wrong_key", "--outform", "pem"]),
    );
    assert!(!ok, "{out}{err}");
    let (_, headers, err) = sh(
        d,
        &format!(
            "base64 -w0 dev.csr | curl -sS -o /dev/null -D - --cacert chain.pem \
             -u EST-1:ob_wrong_key -H 'Content-Type: application/pkcs10' --data-binary @- \
             {tls}/.well-known/est/simpleenroll"
        ),
    );
    assert!(headers.starts_with("HTTP/1.1 401"), "{headers}{err}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{headers}"
    );
    // No credentials at all: 401 too.
    let (_, headers, _) = sh(
        d,
        &format!(
            "base64 -w0 dev.csr | curl -sS -o /dev/null -D - --cacert chain.pem \
             -H 'Content-Type: application/pkcs10' --data-binary @- \
             {tls}/.well-known/est/simpleenroll"
        ),
    );
    assert!(headers.starts_with("HTTP/1.1 401"), "{headers}");
    // A body that is not a base64 CSR: 400.
    let (_, headers, _) = sh(
        d,
        &format!(
            "printf 'bm90IGEgQ1NS' | curl -sS -o /dev/null -D - --cacert chain.pem \
             -u EST-1:{} -H 'Content-Type: application/pkcs10' --data-binary @- \
             {tls}/.well-known/est/simpleenroll",
            key.secret
        ),
    );
    assert!(headers.starts_with("HTTP/1.1 400"), "{headers}");
    // Re-enrollment over mutual TLS with the current certificate and a new key.
    let (ok, _, err) = run(
        d,
        Command::new("openssl").args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "dev2.key",
            "-subj",
            "/CN=EST-1",
            "-outform",
            "DER",
            "-out",
            "dev2.csr",
        ]),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        d,
        Command::new("pki")
            .args([
                "--est",
                "--url",
                &tls,
                "--in",
                "dev2.csr",
                "--cacert",
                "chain.pem",
            ])
            .args(["--cert", "dev.pem", "--key", "dev.key", "--outform", "pem"]),
    );
    assert!(ok, "pki --est (re-enroll): {out}{err}");
    std::fs::write(d.join("dev2.pem"), &out).unwrap();
    let (ok, vout, verr) = run(
        d,
        Command::new("openssl").args(["verify", "-CAfile", "chain.pem", "dev2.pem"]),
    );
    assert!(ok && vout.contains("dev2.pem: OK"), "{vout}{verr}");
    let (_, a, _) = sh(d, "openssl x509 -in dev2.pem -noout -pubkey");
    let (_, b, _) = sh(d, "openssl pkey -in dev2.key -pubout");
    assert_eq!(a, b);
    let (_, s1, _) = sh(d, "openssl x509 -in dev.pem -noout -serial");
    let (_, s2, _) = sh(d, "openssl x509 -in dev2.pem -noout -serial");
    assert_ne!(s1, s2);
    // Without a client certificate: 401.
    let (_, headers, _) = sh(
        d,
        &format!(
            "base64 -w0 dev2.csr | curl -sS -o /dev/null -D - --cacert chain.pem \
             --data-binary @- {tls}/.well-known/est/simplereenroll"
        ),
    );
    assert!(headers.starts_with("HTTP/1.1 401"), "{headers}");

    // A revoked certificate cannot re-enroll.
    let admin = format!(
        "Bearer {}",
        std::fs::read_to_string(d.join("data/admin.token"))
            .unwrap()
            .trim()
    );
    let devices: serde_json::Value = serde_json::from_str(&list).unwrap();
    let id = devices["items"]
        .as_array()
        .or_else(|| devices.as_array())
        .and_then(|a| a.iter().find(|d| d["serial"] == "EST-1"))
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("EST-1 not in {list}"));
    let r = support::post_json(
        &server.url(&format!("/private/v1/admin/devices/{id}/revoke")),
        &[("Authorization", &admin)],
        &serde_json::json!({"reason": "keyCompromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (ok, out, err) = run(
        d,
        Command::new("pki")
            .args([
                "--est",
                "--url",
                &tls,
                "--in",
                "dev2.csr",
                "--cacert",
                "chain.pem",
            ])
            .args([
                "--cert",
                "dev2.pem",
                "--key",
                "dev2.key",
                "--outform",
                "pem",
            ]),
    );
    assert!(!ok, "a revoked certificate re-enrolled: {out}{err}");
    let (_, headers, _) = sh(
        d,
        &format!(
            "base64 -w0 dev2.csr | curl -sS -o /dev/null -D - --cacert chain.pem \
             --cert dev2.pem --key dev2.key --data-binary @- \
             {tls}/.well-known/est/simplereenroll"
        ),
    );
    assert!(headers.starts_with("HTTP/1.1 401"), "{headers}");

    // Under a batch label (`/.well-known/est/<batch>/`), with the curl recipe: the
    // same chain and policy; only that batch's keys enroll and only its devices
    // re-enroll.
    let (ok, out, err) = sh(
        d,
        &format!(
            "curl -sS --cacert chain.pem {tls}/.well-known/est/est/cacerts | base64 -d \
             | openssl pkcs7 -inform DER -print_certs | grep -c 'BEGIN CERTIFICATE'"
        ),
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.trim(),
        chain.matches("BEGIN CERTIFICATE").count().to_string()
    );
    let (_, headers, _) = sh(
        d,
        &format!(
            "curl -sS -o /dev/null -D - --cacert chain.pem \
             {tls}/.well-known/est/est/csrattrs"
        ),
    );
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    // A batch that does not exist is not told apart from one that does.
    let (_, headers, _) = sh(
        d,
        &format!(
            "curl -sS -o /dev/null -D - --cacert chain.pem \
             {tls}/.well-known/est/no-such-batch/cacerts"
        ),
    );
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    let enroll_under = |label: &str, serial: &str, csr: &str, out: &str| {
        sh(
            d,
            &format!(
                "base64 -w0 {csr} | curl -sS -o {out} -w '%{{http_code}}' -D {out}.headers \
                 --cacert chain.pem -u {serial}:{} -H 'Content-Type: application/pkcs10' \
                 --data-binary @- {tls}/.well-known/est/{label}/simpleenroll",
                key.secret
            ),
        )
        .1
    };
    for name in ["dev3", "dev4"] {
        let (ok, _, err) = sh(
            d,
            &format!(
                "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                 -keyout {name}.key -subj /CN=EST-2 -outform DER -out {name}.csr"
            ),
        );
        assert!(ok, "{err}");
    }
    let other = create_key(d, &env, "est-other", 5);
    assert_ne!(other.secret, key.secret);
    // The "est" batch's key under another batch's label: 401 with the challenge,
    // no device, no use spent.
    let uses_before = key_uses(d, &env, "est");
    assert_eq!(
        enroll_under("est-other", "EST-2", "dev3.csr", "x.b64"),
        "401"
    );
    let headers = std::fs::read_to_string(d.join("x.b64.headers")).unwrap();
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{headers}"
    );
    assert_eq!(key_uses(d, &env, "est"), uses_before);
    let (_, list, _) = support::onboardctl(d, &env, &["--output", "json", "devices", "list"]);
    assert!(!list.contains("EST-2"), "{list}");
    // Not a batch name: 404 with our JSON body.
    let r = sh(
        d,
        &format!("curl -sS -w ' %{{http_code}}' --cacert chain.pem '{tls}/.well-known/est/no%20such/cacerts'"),
    )
    .1;
    assert!(r.ends_with(" 404") && r.contains("\"not_found\""), "{r}");
    // Under its own label: enrolled, and strongSwan-free curl + openssl reads it.
    assert_eq!(enroll_under("est", "EST-2", "dev3.csr", "dev3.b64"), "200");
    let (ok, _, err) = sh(
        d,
        "base64 -d dev3.b64 | openssl pkcs7 -inform DER -print_certs > dev3.pem \
         && openssl verify -CAfile chain.pem dev3.pem",
    );
    assert!(ok, "{err}");
    assert_eq!(key_uses(d, &env, "est"), uses_before + 1);
    // Re-enrollment of EST-2 over mutual TLS: refused under another batch's label,
    // served under its own.
    let reenroll_under = |label: &str| {
        sh(
            d,
            &format!(
                "base64 -w0 dev4.csr | curl -sS -o dev4.b64 -w '%{{http_code}}' \
                 --cacert chain.pem --cert dev3.pem --key dev3.key --data-binary @- \
                 {tls}/.well-known/est/{label}/simplereenroll"
            ),
        )
        .1
    };
    assert_eq!(reenroll_under("est-other"), "401");
    assert_eq!(reenroll_under("est"), "200");
    let (ok, _, err) = sh(
        d,
        "base64 -d dev4.b64 | openssl pkcs7 -inform DER -print_certs > dev4.pem \
         && openssl verify -CAfile chain.pem dev4.pem \
         && [ \"$(openssl x509 -in dev4.pem -noout -pubkey)\" = \"$(openssl pkey -in dev4.key -pubout)\" ]",
    );
    assert!(ok, "{err}");

    // The plain listener does not serve EST.
    let r = support::get(&server.url("/.well-known/est/cacerts"));
    assert_eq!(r.status, 403, "{}", r.body);
}

/// The uses taken from the keys of one batch, from `onboardctl keys list`.
fn key_uses(dir: &Path, env: &[(&'static str, String)], batch: &str) -> i64 {
    let (ok, out, err) = support::onboardctl(
        dir,
        env,
        &["--output", "json", "keys", "list", "--batch", batch],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = v["items"].as_array().or_else(|| v.as_array()).unwrap();
    assert!(!items.is_empty(), "no keys of {batch}: {out}");
    items.iter().map(|k| k["uses"].as_i64().unwrap()).sum()
}
