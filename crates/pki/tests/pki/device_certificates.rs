//! Device certificates of every key type, from CSRs and generated keys, checked with `openssl verify`, `openssl x509 -text` and pkilint.

use std::path::Path;

use onboard_domain::KeyAlgorithm;
use onboard_pki::{CertificateAuthority, IssuedCertificate};

use crate::support::*;

/// For each CA shape (root-only P-256, root-only RSA-2048, root + intermediate
/// P-384): a CSR-based and a server-generated certificate of `alg`, each checked
/// with `openssl verify -purpose sslclient`, its profile read back with
/// `openssl x509 -text`, and pkilint (alone and against its issuer).
fn check_algorithm(alg: KeyAlgorithm) {
    let dir = tempfile::tempdir().unwrap();
    let cas = [
        ("root-p256", root_only(KeyAlgorithm::EcdsaP256)),
        ("root-rsa2048", root_only(KeyAlgorithm::Rsa2048)),
        ("two-level-p384", two_level(KeyAlgorithm::EcdsaP384)),
    ];
    let csr = cli_csr(dir.path(), "device", &newkey_args(alg));
    for (n, (label, ca)) in cas.iter().enumerate() {
        let n = n as u32;
        let from_csr = ca.issue_from_csr(&csr, &params(device_id(2 * n))).unwrap();
        assert_eq!(from_csr.key_algorithm, alg);
        check_one(dir.path(), ca, &format!("{label}-csr"), &from_csr, 2 * n);

        let generated = ca
            .issue_with_new_key(alg, &params(device_id(2 * n + 1)))
            .unwrap();
        let key_path = write(
            dir.path(),
            &format!("{label}-gen.key"),
            generated.private_key.expose_secret(),
        );
        check_one(
            dir.path(),
            ca,
            &format!("{label}-gen"),
            &generated.certificate,
            2 * n + 1,
        );
        // The generated key belongs to the certificate.
        let cert_path = dir.path().join(format!("{label}-gen.crt"));
        let from_cert = run_ok(
            openssl()
                .args(["x509", "-noout", "-pubkey", "-in"])
                .arg(&cert_path),
        );
        let from_key = run_ok(openssl().args(["pkey", "-pubout", "-in"]).arg(&key_path));
        assert_eq!(from_cert, from_key);
    }
}

fn check_one(dir: &Path, ca: &CertificateAuthority, name: &str, cert: &IssuedCertificate, n: u32) {
    let path = write(dir, &format!("{name}.crt"), &cert.pem);
    let out = if ca.has_intermediate() {
        verify(
            dir,
            &ca.root_pem().unwrap(),
            Some(&ca.certificate_pem().unwrap()),
            &path,
        )
    } else {
        verify(dir, ca.chain_pem(), None, &path)
    };
    assert!(
        out.status.success(),
        "openssl verify failed for {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let id = device_id(n);
    let text = run_ok(
        openssl()
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&path),
    );
    let subject = run_ok(
        openssl()
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(&path),
    );
    assert_eq!(subject.trim(), format!("subject=CN={id}"), "{name}");
    assert!(
        !text.contains("evil.example") && !text.contains("Attacker"),
        "{name}"
    );
    for expected in [
        "CA:FALSE".to_owned(),
        "TLS Web Client Authentication".to_owned(),
        format!("URI:{BASE_URL}/devices/{id}"),
        format!("URI:{BASE_URL}/public/v1/crl"),
        format!("OCSP - URI:{BASE_URL}/public/v1/ocsp"),
        "X509v3 Subject Key Identifier".to_owned(),
        "X509v3 Authority Key Identifier".to_owned(),
    ] {
        assert!(
            text.contains(&expected),
            "{name}: no {expected:?} in\n{text}"
        );
    }
    assert!(
        text.contains("X509v3 Basic Constraints: critical"),
        "{name}"
    );
    assert!(text.contains("X509v3 Key Usage: critical"), "{name}");
    let usage = if cert.key_algorithm.is_rsa() {
        "Digital Signature, Key Encipherment"
    } else {
        "Digital Signature\n"
    };
    assert!(text.contains(usage), "{name}: key usage\n{text}");
    let serial = run_ok(
        openssl()
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&path),
    );
    assert_eq!(serial.trim(), format!("serial={}", cert.serial));
    let fp = run_ok(
        openssl()
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&path),
    );
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(fp, cert.fingerprint.as_str());

    lint_cert(&path);
    let issuer = write(
        dir,
        &format!("{name}-issuer.crt"),
        ca.certificate_pem().unwrap(),
    );
    lint_pair(&issuer, &path);
}

#[test]
fn p256() {
    check_algorithm(KeyAlgorithm::EcdsaP256);
}

#[test]
fn p384() {
    check_algorithm(KeyAlgorithm::EcdsaP384);
}

#[test]
fn rsa2048() {
    check_algorithm(KeyAlgorithm::Rsa2048);
}

#[test]
fn rsa3072() {
    check_algorithm(KeyAlgorithm::Rsa3072);
}

#[test]
fn rsa4096() {
    check_algorithm(KeyAlgorithm::Rsa4096);
}
