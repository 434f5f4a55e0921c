//! CSRs the CA must refuse, each with its own typed error.

use onboard_domain::KeyAlgorithm;
use onboard_pki::{check_csr, KeyPolicyViolation, PkiError};
use openssl::x509::X509Req;

use crate::support::*;

fn issue(csr: &[u8]) -> PkiError {
    let ca = root_only(KeyAlgorithm::EcdsaP256);
    let err = ca.issue_from_csr(csr, &params(device_id(1))).unwrap_err();
    assert!(err.is_client_error(), "{err}");
    err
}

#[test]
fn tampered_signature() {
    let dir = tempfile::tempdir().unwrap();
    let pem = cli_csr(dir.path(), "p256", &newkey_args(KeyAlgorithm::EcdsaP256));
    let mut der = X509Req::from_pem(&pem).unwrap().to_der().unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x5a;
    assert!(matches!(issue(&der), PkiError::CsrSignatureInvalid));
    // The untouched CSR is fine, in DER too.
    let ok = X509Req::from_pem(&pem).unwrap().to_der().unwrap();
    root_only(KeyAlgorithm::EcdsaP256)
        .issue_from_csr(&ok, &params(device_id(1)))
        .unwrap();
}

#[test]
fn rsa_1024() {
    let dir = tempfile::tempdir().unwrap();
    let csr = cli_csr(dir.path(), "rsa1024", &["-newkey", "rsa:1024"]);
    let err = issue(&csr);
    assert!(
        matches!(
            err,
            PkiError::KeyRejected(KeyPolicyViolation::RsaKeySize { bits: 1024 })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("1024"));
}

#[test]
fn rsa_public_exponent_other_than_65537() {
    let dir = tempfile::tempdir().unwrap();
    for e in ["3", "17"] {
        let csr = cli_csr(
            dir.path(),
            &format!("rsa-e{e}"),
            &[
                "-newkey",
                "rsa:2048",
                "-pkeyopt",
                &format!("rsa_keygen_pubexp:{e}"),
            ],
        );
        // openssl really made a key with that exponent.
        let text = run_ok(
            openssl()
                .args(["req", "-noout", "-text", "-in"])
                .arg(dir.path().join(format!("rsa-e{e}.csr"))),
        );
        assert!(text.contains(&format!("Exponent: {e} (")), "{text}");

        let err = issue(&csr);
        assert!(
            matches!(
                &err,
                PkiError::KeyRejected(KeyPolicyViolation::RsaExponent { exponent }) if exponent == e
            ),
            "e = {e}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!("key rejected: RSA keys must have the public exponent 65537; this one has {e}")
        );
        // `check_csr` (what the registration flow runs first) gives the same answer.
        assert!(matches!(
            check_csr(&csr),
            Err(PkiError::KeyRejected(
                KeyPolicyViolation::RsaExponent { .. }
            ))
        ));
    }
    // The same request with the default exponent is accepted.
    let ok = cli_csr(dir.path(), "rsa-f4", &newkey_args(KeyAlgorithm::Rsa2048));
    assert_eq!(check_csr(&ok).unwrap(), KeyAlgorithm::Rsa2048);
}

#[test]
fn unsupported_curves() {
    let dir = tempfile::tempdir().unwrap();
    for curve in ["secp256k1", "P-521"] {
        let csr = cli_csr(
            dir.path(),
            curve,
            &[
                "-newkey",
                "ec",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
            ],
        );
        let err = issue(&csr);
        assert!(
            matches!(
                &err,
                PkiError::KeyRejected(KeyPolicyViolation::UnsupportedCurve { .. })
            ),
            "{curve}: {err}"
        );
    }
}

#[test]
fn ed25519() {
    let dir = tempfile::tempdir().unwrap();
    let csr = cli_csr(dir.path(), "ed25519", &["-newkey", "ed25519"]);
    let err = issue(&csr);
    assert!(
        matches!(&err, PkiError::KeyRejected(KeyPolicyViolation::UnsupportedKeyType { kind }) if kind == "Ed25519"),
        "{err}"
    );
}

#[test]
fn garbage_and_empty() {
    assert!(matches!(issue(b""), PkiError::CsrEmpty));
    assert!(matches!(issue(b"\r\n\t "), PkiError::CsrEmpty));
    assert!(matches!(
        issue(b"hello, I am a CSR"),
        PkiError::CsrMalformed { .. }
    ));
    assert!(matches!(
        issue(&[0x30, 0x82, 0xff, 0xff, 0x01]),
        PkiError::CsrMalformed { .. }
    ));
    assert!(matches!(
        issue(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
        PkiError::CsrMalformed { .. }
    ));
}
