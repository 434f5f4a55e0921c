//! The TLS listener's own certificate: issued from our CA for the configured names
//! and replaced before it expires (time moved explicitly), or read from files and
//! re-read when they change.

use chrono::Duration;
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::tls::{TlsIdentity, ISSUED_DAYS, RENEW_BEFORE_DAYS};

use crate::state_with;
use crate::support::openssl;

#[test]
fn the_issued_certificate_names_the_server_and_is_replaced_before_it_expires() {
    let t = TestDb::new(TestBackend::Sqlite);
    let (state, dir) = state_with(&t, |s| {
        s.server.public_base_url = "https://onboard.example.net:8443".into();
    });
    let onboard = &state.onboard;
    let id = TlsIdentity::load(onboard).unwrap();
    let pem = id.certificate_pem();
    std::fs::write(dir.path().join("server.pem"), &pem).unwrap();
    std::fs::write(
        dir.path().join("chain.pem"),
        onboard.ca().unwrap().chain_pem(),
    )
    .unwrap();
    let (ok, text) = openssl(
        dir.path(),
        &["x509", "-in", "server.pem", "-noout", "-text"],
    );
    assert!(ok, "{text}");
    for name in [
        "DNS:onboard.example.net",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ] {
        assert!(text.contains(name), "{name}: {text}");
    }
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let (ok, out) = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "chain.pem",
            "-purpose",
            "sslserver",
            "server.pem",
        ],
    );
    assert!(ok, "{out}");
    let now = onboard.clock().now();
    let not_after = id.not_after();
    assert!(not_after > now + Duration::days(i64::from(ISSUED_DAYS) - 1));

    // Not due: kept. Due: replaced, by a certificate valid for longer.
    let before = not_after - Duration::days(RENEW_BEFORE_DAYS) - Duration::hours(1);
    assert!(!id.refresh(onboard, before).unwrap());
    assert_eq!(id.certificate_pem(), pem);
    let due = not_after - Duration::days(RENEW_BEFORE_DAYS) + Duration::hours(1);
    assert!(id.refresh(onboard, due).unwrap());
    assert_ne!(id.certificate_pem(), pem);
}

#[test]
fn certificate_files_are_checked_and_reread_when_they_change() {
    let t = TestDb::new(TestBackend::Sqlite);
    let (state, dir) = state_with(&t, |_| {});
    let d = dir.path();
    let make = |name: &str, cn: &str| {
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
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-subj",
                &format!("/CN={cn}"),
                "-days",
                "30",
            ],
        );
        assert!(ok, "{out}");
    };
    make("one", "one.example");
    make("two", "two.example");
    let mut settings = state.onboard.settings().clone();
    settings.server.tls_cert_file = d.join("one.crt").display().to_string();
    settings.server.tls_key_file = d.join("two.key").display().to_string();
    let mismatched = onboard_core::Onboard::open(settings.clone()).unwrap();
    let err = TlsIdentity::load(&mismatched).unwrap_err().to_string();
    assert!(err.contains("does not belong"), "{err}");

    settings.server.tls_key_file = d.join("one.key").display().to_string();
    let onboard = onboard_core::Onboard::open(settings).unwrap();
    let id = TlsIdentity::load(&onboard).unwrap();
    assert_eq!(
        id.certificate_pem(),
        std::fs::read_to_string(d.join("one.crt")).unwrap()
    );
    let now = onboard.clock().now();
    assert!(!id.refresh(&onboard, now).unwrap(), "unchanged files");
    // A certificate manager replaces both files (new modification times).
    std::fs::copy(d.join("two.crt"), d.join("one.crt")).unwrap();
    std::fs::copy(d.join("two.key"), d.join("one.key")).unwrap();
    let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_000_000_000);
    for f in ["one.crt", "one.key"] {
        std::fs::File::options()
            .write(true)
            .open(d.join(f))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    assert!(id.refresh(&onboard, now).unwrap());
    assert_eq!(
        id.certificate_pem(),
        std::fs::read_to_string(d.join("two.crt")).unwrap()
    );
}
