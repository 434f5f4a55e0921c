//! The root and intermediate certificates: profile and pkilint.

use onboard_domain::KeyAlgorithm;

use crate::support::*;

#[test]
fn root_and_intermediate_follow_the_profile_and_lint_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (label, ca) in [
        ("p256", root_only(KeyAlgorithm::EcdsaP256)),
        ("rsa3072", root_only(KeyAlgorithm::Rsa3072)),
        ("two-level", two_level(KeyAlgorithm::EcdsaP256)),
    ] {
        let root = write(
            dir.path(),
            &format!("{label}-root.crt"),
            ca.root_pem().unwrap(),
        );
        lint_cert(&root);
        let text = run_ok(
            openssl()
                .args(["x509", "-noout", "-text", "-in"])
                .arg(&root),
        );
        assert!(
            text.contains("X509v3 Basic Constraints: critical\n                CA:TRUE\n"),
            "{text}"
        );
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        if ca.has_intermediate() {
            let inter = write(
                dir.path(),
                &format!("{label}-inter.crt"),
                ca.certificate_pem().unwrap(),
            );
            lint_cert(&inter);
            lint_pair(&root, &inter);
            let text = run_ok(
                openssl()
                    .args(["x509", "-noout", "-text", "-in"])
                    .arg(&inter),
            );
            assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
            // The intermediate verifies against the root.
            let out = run(openssl()
                .args(["verify", "-x509_strict", "-attime"])
                .arg(now().timestamp().to_string())
                .arg("-CAfile")
                .arg(&root)
                .arg(&inter));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let info = ca.chain_info().unwrap();
        assert_eq!(info.len(), if ca.has_intermediate() { 2 } else { 1 });
        assert!(info.last().unwrap().self_signed);
        let fp = run_ok(
            openssl()
                .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
                .arg(&root),
        );
        let fp = fp
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_lowercase();
        assert_eq!(info.last().unwrap().fingerprint.as_str(), fp);
    }
}
