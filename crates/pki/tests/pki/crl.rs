//! CRLs: `openssl crl -verify -text`, pkilint, revocation with `-crl_check`, 100,000 entries.

use chrono::Duration;
use onboard_domain::{CertSerial, KeyAlgorithm, RevocationReason};
use onboard_pki::{CrlParams, RevokedCertificate};

use crate::support::*;

#[test]
fn crl_verifies_lists_reasons_lints_clean_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = two_level(KeyAlgorithm::EcdsaP256);
    let revoked_cert = ca
        .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id(1)))
        .unwrap()
        .certificate;
    let other_revoked = ca
        .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id(2)))
        .unwrap()
        .certificate;
    let good = ca
        .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id(3)))
        .unwrap()
        .certificate;
    let revoked = [
        RevokedCertificate {
            serial: revoked_cert.serial.clone(),
            revoked_at: now() - Duration::hours(2),
            reason: RevocationReason::KeyCompromise,
        },
        RevokedCertificate {
            serial: other_revoked.serial.clone(),
            revoked_at: now() - Duration::hours(1),
            reason: RevocationReason::CessationOfOperation,
        },
        RevokedCertificate {
            serial: CertSerial::parse("4000000000000000000000000000ABCD").unwrap(),
            revoked_at: now() - Duration::hours(1),
            reason: RevocationReason::Superseded,
        },
        RevokedCertificate {
            serial: CertSerial::parse("4000000000000000000000000000ABCE").unwrap(),
            revoked_at: now() - Duration::hours(1),
            reason: RevocationReason::Unspecified,
        },
    ];
    let crl = ca
        .build_crl(&CrlParams {
            number: 7,
            this_update: now(),
            next_update: now() + Duration::days(7),
            revoked: &revoked,
        })
        .unwrap();
    let crl_path = write(dir.path(), "crl.pem", &crl.pem);
    write(dir.path(), "crl.der", &crl.der);
    let chain = write(dir.path(), "chain.pem", ca.chain_pem());

    let out = run(openssl()
        .args(["crl", "-verify", "-text", "-noout", "-in"])
        .arg(&crl_path)
        .arg("-CAfile")
        .arg(&chain));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("verify OK"), "{stderr}");
    assert!(stdout.contains("Version 2"), "{stdout}");
    assert!(
        stdout.contains("X509v3 CRL Number: \n                7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("X509v3 Authority Key Identifier"),
        "{stdout}"
    );
    for (entry, reason) in revoked.iter().zip([
        Some("Key Compromise"),
        Some("Cessation Of Operation"),
        Some("Superseded"),
        None,
    ]) {
        let at = stdout
            .find(&format!("Serial Number: {}", entry.serial))
            .unwrap_or_else(|| panic!("{} not listed:\n{stdout}", entry.serial));
        let block = &stdout[at..];
        let block = &block[..block[1..]
            .find("Serial Number:")
            .map_or(block.len(), |i| i + 1)];
        match reason {
            Some(reason) => assert!(block.contains(reason), "{block}"),
            None => assert!(!block.contains("Reason Code"), "{block}"),
        }
    }

    let lint = run(std::process::Command::new(tool("lint_crl"))
        .args(["lint", "-t", "CRL", "-p", "PKIX", "-s", "ERROR"])
        .arg(&crl_path));
    let text = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && !text.contains("(ERROR)") && !text.contains("(FATAL)"),
        "lint_crl findings:\n{text}{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    // The CRL does its job: the revoked certificate fails, the other passes.
    let check = |cert: &str, name: &str| {
        let path = write(dir.path(), name, cert);
        run(openssl()
            .args(["verify", "-crl_check", "-purpose", "sslclient", "-attime"])
            .arg(now().timestamp().to_string())
            .arg("-CAfile")
            .arg(&chain)
            .arg("-CRLfile")
            .arg(&crl_path)
            .arg(path))
    };
    let out = check(&revoked_cert.pem, "revoked.crt");
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("certificate revoked"), "{said}");
    let out = check(&good.pem, "good.crt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn crl_with_100000_entries_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = root_only(KeyAlgorithm::EcdsaP256);
    let reasons = RevocationReason::ALL;
    let revoked: Vec<RevokedCertificate> = (0..100_000u32)
        .map(|i| RevokedCertificate {
            serial: CertSerial::parse(&format!("40{i:030X}")).unwrap(),
            revoked_at: now() - Duration::seconds(i64::from(i)),
            reason: reasons[i as usize % reasons.len()],
        })
        .collect();
    let started = std::time::Instant::now();
    let crl = ca
        .build_crl(&CrlParams {
            number: u64::MAX,
            this_update: now(),
            next_update: now() + Duration::days(1),
            revoked: &revoked,
        })
        .unwrap();
    let took = started.elapsed();
    assert_eq!(crl.entries, 100_000);
    let path = write(dir.path(), "big.crl", &crl.der);
    let chain = write(dir.path(), "chain.pem", ca.chain_pem());
    let out = run(openssl()
        .args(["crl", "-inform", "DER", "-verify", "-noout", "-in"])
        .arg(&path)
        .arg("-CAfile")
        .arg(&chain));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("verify OK"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let number = run_ok(
        openssl()
            .args(["crl", "-inform", "DER", "-noout", "-crlnumber", "-in"])
            .arg(&path),
    );
    assert_eq!(number.trim(), format!("crlNumber=0x{:X}", u64::MAX));
    eprintln!(
        "100,000-entry CRL built in {took:?} ({} bytes)",
        crl.der.len()
    );
}
