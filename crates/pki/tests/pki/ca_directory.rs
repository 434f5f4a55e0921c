//! The CA directory: encrypted keys, file modes, load errors, import.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use onboard_domain::KeyAlgorithm;
use onboard_pki::{
    ca_files, CaSpec, CertificateAuthority, IssueParams, KeyPolicyViolation, PkiError,
};

use crate::support::*;

const PASS: &[u8] = b"a long test passphrase";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_writes_encrypted_keys_with_mode_0600_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let spec = two_level_spec(KeyAlgorithm::EcdsaP256);
    let created = CertificateAuthority::create(&dir, &spec, Some(PASS), now()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for key in [ca_files::CA_KEY, ca_files::ROOT_KEY] {
        let path = dir.join(key);
        assert_eq!(mode(&path), 0o600, "{key}");
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{key}"
        );
        assert_scrypt_pkcs8(&path);
        // OpenSSL itself decrypts it with the passphrase, and only with it.
        let plain = run_ok(
            openssl()
                .args(["pkcs8", "-passin", "pass:a long test passphrase", "-in"])
                .arg(&path),
        );
        assert!(plain.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        run_ok(
            openssl()
                .args([
                    "pkey",
                    "-noout",
                    "-passin",
                    "pass:a long test passphrase",
                    "-in",
                ])
                .arg(&path),
        );
        let wrong = run(openssl()
            .args(["pkcs8", "-passin", "pass:a long test passphrasf", "-in"])
            .arg(&path));
        assert!(!wrong.status.success(), "{key}");
    }
    for cert in [ca_files::CA_CERT, ca_files::CHAIN, ca_files::ROOT_CERT] {
        assert_eq!(mode(&dir.join(cert)), 0o644, "{cert}");
    }
    let loaded = CertificateAuthority::load(&dir, Some(PASS)).unwrap();
    assert_eq!(loaded.chain_pem(), created.chain_pem());
    assert!(loaded.has_intermediate());
    assert!(CertificateAuthority::exists(&dir));

    // The chain on disk verifies what the loaded CA issues.
    let cert = loaded
        .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id(1)))
        .unwrap()
        .certificate;
    let path = write(tmp.path(), "device.crt", &cert.pem);
    let root = std::fs::read_to_string(dir.join(ca_files::ROOT_CERT)).unwrap();
    let inter = std::fs::read_to_string(dir.join(ca_files::CA_CERT)).unwrap();
    assert!(verify(tmp.path(), &root, Some(&inter), &path)
        .status
        .success());

    let again = CertificateAuthority::create(&dir, &spec, Some(PASS), now()).unwrap_err();
    assert!(matches!(again, PkiError::AlreadyExists { .. }), "{again}");
}

/// The key file is PBES2 with scrypt N = 16384 (0x4000), r = 8, p = 5 and
/// AES-256-CBC, as `openssl asn1parse` reads it.
fn assert_scrypt_pkcs8(path: &Path) {
    let asn1 = run_ok(openssl().args(["asn1parse", "-in"]).arg(path));
    let fields: Vec<&str> = asn1
        .lines()
        .filter_map(|l| l.split_once(" prim: "))
        .map(|(_, field)| field.trim())
        .collect();
    let expected_start = ["OBJECT            :PBES2", "OBJECT            :scrypt"];
    assert_eq!(&fields[..2], &expected_start, "{asn1}");
    assert!(
        fields[2].starts_with("OCTET STRING      [HEX DUMP]:") && fields[2].len() == 29 + 32,
        "a 16-byte salt: {asn1}"
    );
    assert_eq!(
        &fields[3..7],
        &[
            "INTEGER           :4000",
            "INTEGER           :08",
            "INTEGER           :05",
            "OBJECT            :aes-256-cbc",
        ],
        "{asn1}"
    );
    assert!(!asn1.contains("PBKDF2"), "{asn1}");
}

#[test]
fn key_files_written_with_pbkdf2_before_scrypt_still_load() {
    // A CA directory from before: its key re-encrypted the way OpenSSL's default
    // (and so this crate, until scrypt) wrote it: PBKDF2, 2,048 iterations.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let created =
        CertificateAuthority::create(&dir, &CaSpec::new("Old"), Some(PASS), now()).unwrap();
    let key = dir.join(ca_files::CA_KEY);
    let plain = run_ok(
        openssl()
            .args(["pkcs8", "-passin", "pass:a long test passphrase", "-in"])
            .arg(&key),
    );
    let plain_path = write(tmp.path(), "plain.key", plain);
    let old_path = tmp.path().join("old.key");
    run_ok(
        openssl()
            .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-iter", "2048"])
            .args(["-passout", "pass:a long test passphrase", "-in"])
            .arg(&plain_path)
            .arg("-out")
            .arg(&old_path),
    );
    let asn1 = run_ok(openssl().args(["asn1parse", "-in"]).arg(&old_path));
    assert!(asn1.contains(":PBKDF2") && asn1.contains(":0800"), "{asn1}");
    std::fs::write(&key, std::fs::read(&old_path).unwrap()).unwrap();

    let loaded = CertificateAuthority::load(&dir, Some(PASS)).unwrap();
    assert_eq!(loaded.chain_pem(), created.chain_pem());
    let err = CertificateAuthority::load(&dir, Some(b"not it")).unwrap_err();
    assert!(matches!(err, PkiError::WrongPassphrase { .. }), "{err}");
}

#[test]
fn without_passphrase_the_key_is_plain_pkcs8() {
    let tmp = tempfile::tempdir().unwrap();
    CertificateAuthority::create(tmp.path(), &CaSpec::new("Plain"), None, now()).unwrap();
    let pem = std::fs::read_to_string(tmp.path().join(ca_files::CA_KEY)).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(mode(&tmp.path().join(ca_files::CA_KEY)), 0o600);
    assert!(!tmp.path().join(ca_files::ROOT_CERT).exists());
    CertificateAuthority::load(tmp.path(), None).unwrap();
}

#[test]
fn wrong_or_missing_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    CertificateAuthority::create(tmp.path(), &CaSpec::new("Locked"), Some(PASS), now()).unwrap();
    let err = CertificateAuthority::load(tmp.path(), Some(b"not it")).unwrap_err();
    assert!(matches!(err, PkiError::WrongPassphrase { .. }), "{err}");
    assert!(!err.to_string().contains("not it"));
    let err = CertificateAuthority::load(tmp.path(), None).unwrap_err();
    assert!(matches!(err, PkiError::PassphraseRequired { .. }), "{err}");
}

#[test]
fn key_that_does_not_match_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    CertificateAuthority::create(&a, &CaSpec::new("A"), Some(PASS), now()).unwrap();
    CertificateAuthority::create(&b, &CaSpec::new("B"), Some(PASS), now()).unwrap();
    std::fs::copy(b.join(ca_files::CA_KEY), a.join(ca_files::CA_KEY)).unwrap();
    let err = CertificateAuthority::load(&a, Some(PASS)).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
}

#[test]
fn missing_and_unreadable_files() {
    let tmp = tempfile::tempdir().unwrap();
    let err = CertificateAuthority::load(tmp.path(), None).unwrap_err();
    assert!(
        matches!(&err, PkiError::MissingFile { path } if path.ends_with("ca.crt")),
        "{err}"
    );
    assert!(!CertificateAuthority::exists(tmp.path()));

    CertificateAuthority::create(tmp.path(), &CaSpec::new("C"), None, now()).unwrap();
    std::fs::remove_file(tmp.path().join(ca_files::CHAIN)).unwrap();
    let err = CertificateAuthority::load(tmp.path(), None).unwrap_err();
    assert!(
        matches!(&err, PkiError::MissingFile { path } if path.ends_with("chain.pem")),
        "{err}"
    );

    std::fs::write(
        tmp.path().join(ca_files::CHAIN),
        std::fs::read(tmp.path().join(ca_files::CA_CERT)).unwrap(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join(ca_files::CA_KEY),
        b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = CertificateAuthority::load(tmp.path(), None).unwrap_err();
    assert!(matches!(err, PkiError::KeyUnreadable { .. }), "{err}");
}

#[test]
fn import_an_openssl_made_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("ext.key");
    let cert = tmp.path().join("ext.crt");
    run_ok(
        openssl()
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:3072",
                "-days",
                "3650",
                "-subj",
                "/O=Elsewhere/CN=External Root",
            ])
            .args(["-passout", "pass:old secret", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    let key_pem = std::fs::read(&key).unwrap();
    let cert_pem = std::fs::read(&cert).unwrap();
    let dir = tmp.path().join("ca");

    let err = CertificateAuthority::import(&dir, &cert_pem, &key_pem, Some(b"wrong"), Some(PASS))
        .unwrap_err();
    assert!(matches!(err, PkiError::WrongPassphrase { .. }), "{err}");

    let ca =
        CertificateAuthority::import(&dir, &cert_pem, &key_pem, Some(b"old secret"), Some(PASS))
            .unwrap();
    assert_eq!(ca.key_algorithm(), KeyAlgorithm::Rsa3072);
    assert_eq!(ca.subject(), "O=Elsewhere, CN=External Root");
    let stored = std::fs::read_to_string(dir.join(ca_files::CA_KEY)).unwrap();
    assert!(stored.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    // Re-encrypted with scrypt, whatever the imported key used.
    assert_scrypt_pkcs8(&dir.join(ca_files::CA_KEY));
    let loaded = CertificateAuthority::load(&dir, Some(PASS)).unwrap();
    // openssl made the CA with the real clock: issue and verify inside its validity.
    let at = loaded.chain_info().unwrap()[0].not_before + chrono::Duration::hours(1);
    let issued = loaded
        .issue_with_new_key(
            KeyAlgorithm::EcdsaP256,
            &IssueParams {
                now: at,
                ..params(device_id(5))
            },
        )
        .unwrap()
        .certificate;
    let path = write(tmp.path(), "device.crt", &issued.pem);
    let out = verify_at(
        tmp.path(),
        &String::from_utf8(cert_pem).unwrap(),
        None,
        &path,
        at,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn import_refuses_a_non_ca_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("leaf.key");
    let cert = tmp.path().join("leaf.crt");
    run_ok(
        openssl()
            .args([
                "req",
                "-x509",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-days", "30", "-subj", "/CN=leaf", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "keyUsage=critical,digitalSignature"]),
    );
    let err = CertificateAuthority::import(
        &tmp.path().join("ca"),
        &std::fs::read(&cert).unwrap(),
        &std::fs::read(&key).unwrap(),
        None,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, PkiError::InvalidCaCertificate { .. }),
        "{err}"
    );
    assert!(!tmp.path().join("ca").join(ca_files::CA_KEY).exists());
}

#[test]
fn import_refuses_an_rsa_ca_key_with_exponent_3() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("e3.key");
    let cert = tmp.path().join("e3.crt");
    run_ok(
        openssl()
            .args(["req", "-x509", "-nodes", "-newkey", "rsa:2048"])
            .args(["-pkeyopt", "rsa_keygen_pubexp:3"])
            .args(["-days", "30", "-subj", "/CN=Small Exponent Root", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    let dir = tmp.path().join("ca");
    let err = CertificateAuthority::import(
        &dir,
        &std::fs::read(&cert).unwrap(),
        &std::fs::read(&key).unwrap(),
        None,
        Some(PASS),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            PkiError::KeyRejected(KeyPolicyViolation::RsaExponent { exponent }) if exponent == "3"
        ),
        "{err}"
    );
    assert!(!dir.join(ca_files::CA_KEY).exists());
    // `ca show` still describes such a certificate.
    let info = onboard_pki::chain_info(&std::fs::read(&cert).unwrap()).unwrap();
    assert_eq!(info[0].key_algorithm, None);
    assert_eq!(info[0].key_description, "rsa-2048 (e = 3)");
}
