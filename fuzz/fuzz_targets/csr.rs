//! CSR and certificate input as devices send it: `check_csr` (the registration's
//! and renewal's CSR check, PEM or DER), `csr_matches_certificate` (proof of
//! possession on a registration again) and `presented_certificate` (a client
//! certificate's DER from TLS or a proxy header). None may panic, and each is a
//! function of its input.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use onboard_domain::{Clock, SystemClock};
use onboard_pki::{check_csr, csr_matches_certificate, presented_certificate, CaSpec};

/// A certificate to compare CSRs with (the CA's own; any certificate will do).
fn certificate() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        onboard_pki::CertificateAuthority::generate(&CaSpec::new("Fuzz CA"), SystemClock.now())
            .map(|ca| ca.chain_pem().to_owned())
            .unwrap_or_default()
    })
}

fuzz_target!(|data: &[u8]| {
    let checked = check_csr(data);
    assert_eq!(checked.as_ref().ok(), check_csr(data).as_ref().ok());
    let matched = csr_matches_certificate(data, certificate());
    // A CSR the check refuses never proves possession.
    if checked.is_err() {
        assert!(!matches!(matched, Ok(true)));
    }
    let presented = presented_certificate(data);
    assert_eq!(
        presented.as_ref().map(|p| p.fingerprint.clone()).ok(),
        presented_certificate(data).map(|p| p.fingerprint).ok()
    );
});
