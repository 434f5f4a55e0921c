//! Credential bundles opened by Python `pyzipper`.

use std::process::Command;

use onboard_domain::KeyAlgorithm;
use onboard_pki::{build_bundle, BundleContents};

use crate::support::*;

const EXTRACT: &str = r#"
import os, sys, pyzipper
path, password, out = sys.argv[1], sys.argv[2], sys.argv[3]
with pyzipper.AESZipFile(path) as z:
    z.setpassword(password.encode())
    for info in z.infolist():
        if info.filename in ("device.key", "connection.json"):
            assert info.flag_bits & 1 and info.wz_aes_strength == 3, info  # encrypted, AES-256
        else:
            assert not info.flag_bits & 1, info  # public: in clear
        with open(os.path.join(out, info.filename), "wb") as f:
            f.write(z.read(info.filename))
print(",".join(sorted(z.namelist())))
"#;

#[test]
fn pyzipper_opens_it_with_the_password_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = two_level(KeyAlgorithm::EcdsaP256);
    let cred = ca
        .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id(9)))
        .unwrap();
    let connection = br#"{"mqtt_host":"broker.example.test","port":8883}"#;
    let bundle = build_bundle(&BundleContents {
        certificate_pem: &cred.certificate.pem,
        private_key: &cred.private_key,
        ca_chain_pem: ca.chain_pem(),
        connection_json: connection,
        created_at: now(),
    })
    .unwrap();
    let password = bundle.password.expose_secret();
    assert!(password.len() >= 20);
    let zip = write(dir.path(), "bundle.zip", &bundle.zip);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();

    let listed = run_ok(
        Command::new(python())
            .arg("-c")
            .arg(EXTRACT)
            .arg(&zip)
            .arg(password)
            .arg(&out),
    );
    assert_eq!(
        listed.trim(),
        "ca.crt,connection.json,device.crt,device.key"
    );
    let read = |n: &str| std::fs::read(out.join(n)).unwrap();
    assert_eq!(read("device.crt"), cred.certificate.pem.as_bytes());
    assert_eq!(
        read("device.key"),
        cred.private_key.expose_secret().as_bytes()
    );
    assert_eq!(read("ca.crt"), ca.chain_pem().as_bytes());
    assert_eq!(read("connection.json"), connection);

    // The extracted files work: the chain verifies the certificate.
    let verified = verify(
        dir.path(),
        &ca.root_pem().unwrap(),
        Some(&ca.certificate_pem().unwrap()),
        &out.join("device.crt"),
    );
    assert!(verified.status.success());

    let wrong = run(Command::new(python())
        .arg("-c")
        .arg(EXTRACT)
        .arg(&zip)
        .arg("WrongPassword12345678901")
        .arg(&out));
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("Bad password"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
