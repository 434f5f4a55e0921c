//! The OCSP responder against the real binary, checked by two independent clients:
//! `openssl ocsp` and GnuTLS `ocsptool`. Good before a revocation, revoked with its
//! reason right after it (no restart), unknown for a serial we never issued,
//! unauthorized for another CA's certificate, malformedRequest for garbage, the GET
//! form with its cache headers, the nonce echoed, and pkilint on the responder
//! certificate.

use std::path::Path;
use std::process::Command;

use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::e2e::env_for;
use crate::faults::create_key;
use crate::support::{self, p256_csr, post_json, Server};

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl ocsp` asking `url` about `args` (a `-cert FILE` or `-serial N`), the
/// response verified against the CA chain; stdout and stderr together.
fn openssl_ocsp(dir: &Path, url: &str, args: &[&str]) -> String {
    let (_, out, err) = run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "ocsp",
            "-issuer",
            "ca.pem",
            "-url",
            url,
            "-CAfile",
            "chain.pem",
            "-resp_text",
        ])
        .args(args));
    format!("{out}{err}")
}

/// GnuTLS ocsptool asking about `cert` (it sends a nonce and checks it, and verifies
/// the signature against `--load-trust`).
fn ocsptool(dir: &Path, url: &str, cert: &str) -> String {
    let (_, out, err) = run(Command::new("ocsptool")
        .current_dir(dir)
        .arg(format!("--ask={url}"))
        .args(["--load-cert", cert, "--load-issuer", "ca.pem"])
        .args(["--load-trust", "chain.pem", "--nonce"]));
    format!("{out}{err}")
}

fn curl(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(Command::new("curl")
        .current_dir(dir)
        .args(["-sS"])
        .args(args));
    assert!(ok, "curl {args:?}: {err}");
    out
}

fn lint_pkix_cert() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testenv/bin/lint_pkix_cert")
}

#[test]
fn openssl_and_ocsptool_see_good_revoked_and_unknown() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env = env_for(&db);
    let server = Server::start(d, &env);
    let admin = format!(
        "Bearer {}",
        std::fs::read_to_string(d.join("data/admin.token"))
            .unwrap()
            .trim()
    );
    let chain = support::get(&server.url("/public/v1/ca"));
    assert_eq!(chain.status, 200);
    std::fs::write(d.join("chain.pem"), &chain.body).unwrap();
    // The issuing CA is the chain's first certificate.
    let first_end = chain.body.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(d.join("ca.pem"), format!("{}\n", &chain.body[..first_end])).unwrap();

    let key = create_key(d, &env, "ocsp", 5);
    let csr = p256_csr(d, "OCSP-1");
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {}", key.secret))],
        &json!({"serial": "OCSP-1", "csr": csr}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    std::fs::write(d.join("dev.pem"), v["certificate_pem"].as_str().unwrap()).unwrap();
    let device = v["device_id"].as_str().unwrap().to_owned();

    // The certificate names the responder (AIA), and that URL answers.
    let (_, text, _) = run(Command::new("openssl").current_dir(d).args([
        "x509",
        "-in",
        "dev.pem",
        "-noout",
        "-ext",
        "authorityInfoAccess",
    ]));
    let aia = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("OCSP - URI:"))
        .unwrap_or_else(|| panic!("no OCSP URL in {text}"))
        .to_owned();
    assert!(aia.ends_with("/public/v1/ocsp"), "{aia}");
    let url = server.url("/public/v1/ocsp");

    // Good, signature verified against the CA, nonce sent and checked by default.
    let out = openssl_ocsp(d, &url, &["-cert", "dev.pem"]);
    assert!(out.contains("dev.pem: good"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains("OCSP Nonce"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    assert!(out.contains("Next Update:"), "{out}");
    let out = ocsptool(d, &url, "dev.pem");
    assert!(out.contains("Certificate Status: good"), "{out}");
    assert!(out.contains("Verifying OCSP Response: Success"), "{out}");
    assert!(out.contains("Nonce:"), "{out}");

    // The responder certificate the answer carries: delegated, pkilint clean.
    let (_, resp_text, _) = run(Command::new("openssl")
        .current_dir(d)
        .args([
            "ocsp", "-issuer", "ca.pem", "-cert", "dev.pem", "-url", &url,
        ])
        .args(["-CAfile", "chain.pem", "-respout", "good.der"]));
    assert!(resp_text.contains("good"), "{resp_text}");
    let (_, full, _) = run(Command::new("openssl").current_dir(d).args([
        "ocsp",
        "-respin",
        "good.der",
        "-noverify",
        "-resp_text",
    ]));
    let begin = full
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a responder certificate");
    let end = full.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(d.join("responder.pem"), format!("{}\n", &full[begin..end])).unwrap();
    let (_, rtext, _) = run(Command::new("openssl").current_dir(d).args([
        "x509",
        "-in",
        "responder.pem",
        "-noout",
        "-text",
    ]));
    assert!(rtext.contains("OCSP Signing"), "{rtext}");
    assert!(rtext.contains("OCSP No Check"), "{rtext}");
    let (ok, lint, err) = run(Command::new(lint_pkix_cert())
        .args(["lint", "-s", "ERROR"])
        .arg(d.join("responder.pem")));
    assert!(
        ok && !lint.contains("(ERROR)") && !lint.contains("(FATAL)"),
        "pkilint: {lint}{err}"
    );

    // A serial we never issued: unknown.
    let out = openssl_ocsp(d, &url, &["-serial", "0x0123456789ABCDEF0123456789ABCDEF"]);
    assert!(out.contains(": unknown"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");

    // Revoked, with the reason, at once.
    let r = post_json(
        &server.url(&format!("/private/v1/admin/devices/{device}/revoke")),
        &[("Authorization", &admin)],
        &json!({"reason": "keyCompromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let out = openssl_ocsp(d, &url, &["-cert", "dev.pem"]);
    assert!(out.contains("dev.pem: revoked"), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    let out = ocsptool(d, &url, "dev.pem");
    assert!(out.contains("Certificate Status: revoked"), "{out}");
    assert!(out.contains("Verifying OCSP Response: Success"), "{out}");

    // The GET form: URL-encoded base64 of a request without nonce; cacheable.
    let (ok, _, err) = run(Command::new("openssl")
        .current_dir(d)
        .args(["ocsp", "-issuer", "ca.pem", "-cert", "dev.pem", "-no_nonce"])
        .args(["-reqout", "req.der"]));
    assert!(ok, "{err}");
    use base64::Engine as _;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join("req.der")).unwrap());
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let headers = curl(
        d,
        &["-D", "-", "-o", "get.der", &format!("{url}/{encoded}")],
    );
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    let lower = headers.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/ocsp-response"),
        "{headers}"
    );
    let max_age: i64 = lower
        .split("max-age=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no max-age in {headers}"));
    assert!((1..=300).contains(&max_age), "{headers}");
    assert!(
        lower.contains("last-modified:") && lower.contains("expires:"),
        "{headers}"
    );
    let out = {
        let (_, o, e) = run(Command::new("openssl").current_dir(d).args([
            "ocsp",
            "-respin",
            "get.der",
            "-issuer",
            "ca.pem",
            "-cert",
            "dev.pem",
            "-CAfile",
            "chain.pem",
            "-resp_text",
        ]));
        format!("{o}{e}")
    };
    assert!(out.contains("dev.pem: revoked"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    // POST answers are not cached.
    let headers = curl(
        d,
        &[
            "-D",
            "-",
            "-o",
            "post.der",
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            "@req.der",
            &url,
        ],
    );
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{headers}"
    );

    // Garbage: malformedRequest (HTTP 200, an OCSP error status), over POST and GET.
    std::fs::write(d.join("junk.der"), b"\x30\x03\x02\x01").unwrap();
    curl(
        d,
        &[
            "-o",
            "bad.der",
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            "@junk.der",
            &url,
        ],
    );
    curl(d, &["-o", "bad-get.der", &format!("{url}/not-base64!")]);
    for file in ["bad.der", "bad-get.der"] {
        let (_, o, e) = run(Command::new("openssl").current_dir(d).args([
            "ocsp",
            "-respin",
            file,
            "-noverify",
            "-resp_text",
        ]));
        assert!(
            format!("{o}{e}").contains("malformedrequest"),
            "{file}: {o}{e}"
        );
    }
    // Wrong content type: 415 with our JSON error.
    let headers = curl(
        d,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "@req.der",
            &url,
        ],
    );
    assert!(headers.starts_with("HTTP/1.1 415"), "{headers}");

    // Another CA's certificate: unauthorized.
    let (ok, _, err) = run(Command::new("openssl").current_dir(d).args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-subj",
        "/CN=Other CA",
        "-days",
        "30",
    ]));
    assert!(ok, "{err}");
    let (_, o, e) = run(Command::new("openssl").current_dir(d).args([
        "ocsp",
        "-issuer",
        "other.pem",
        "-serial",
        "0x01",
        "-url",
        &url,
        "-noverify",
    ]));
    assert!(format!("{o}{e}").contains("unauthorized"), "{o}{e}");
}
