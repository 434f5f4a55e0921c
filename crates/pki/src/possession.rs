//! Proof of possession for a device that registers again: its CSR must carry the
//! public key of the certificate it already holds.

use openssl::x509::X509;

use crate::csr;
use crate::error::PkiError;

/// Whether the CSR (PEM or DER, self-signature checked) is for the same public key
/// as the certificate (PEM). A CSR signed with that key proves that its sender
/// holds the certificate's private key.
pub fn csr_matches_certificate(csr_bytes: &[u8], certificate_pem: &str) -> Result<bool, PkiError> {
    checked_csr_matches_certificate(&csr::parse(csr_bytes)?, certificate_pem)
}

/// [`csr_matches_certificate`] for a CSR already parsed and verified.
pub fn checked_csr_matches_certificate(
    checked: &csr::CheckedCsr,
    certificate_pem: &str,
) -> Result<bool, PkiError> {
    let cert = X509::from_pem(certificate_pem.as_bytes())
        .map_err(|_| PkiError::invalid("certificate", "expected a PEM certificate"))?;
    let theirs = cert.public_key()?.public_key_to_der()?;
    let ours = checked.public_key.public_key_to_der()?;
    Ok(theirs == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use onboard_domain::KeyAlgorithm;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::{X509Builder, X509ReqBuilder};

    fn csr_pem(key: &PKey<Private>) -> Vec<u8> {
        let mut b = X509ReqBuilder::new().unwrap();
        b.set_pubkey(key).unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }

    fn cert_pem(key: &PKey<Private>) -> String {
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "test").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.set_pubkey(key).unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        String::from_utf8(b.build().to_pem().unwrap()).unwrap()
    }

    #[test]
    fn the_same_key_matches_and_another_does_not() {
        let key = keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let other = keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let cert = cert_pem(&key);
        assert!(csr_matches_certificate(&csr_pem(&key), &cert).unwrap());
        assert!(!csr_matches_certificate(&csr_pem(&other), &cert).unwrap());
        assert!(csr_matches_certificate(b"garbage", &cert).is_err());
        assert!(csr_matches_certificate(&csr_pem(&key), "not a cert").is_err());
    }
}

/// A client certificate as a device presented it, once checked against the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCertificate {
    pub serial: onboard_domain::CertSerial,
    pub fingerprint: onboard_domain::Fingerprint,
}

/// The serial and fingerprint of a certificate the TLS handshake already verified
/// against the CA (DER, as OpenSSL hands it over).
pub fn presented_certificate(der: &[u8]) -> Result<PresentedCertificate, PkiError> {
    let cert = openssl::x509::X509::from_der(der).map_err(|_| PkiError::CertificateUnreadable {
        reason: "not a DER X.509 certificate".into(),
    })?;
    Ok(PresentedCertificate {
        serial: crate::x509util::serial_of(&cert)?,
        fingerprint: crate::x509util::fingerprint(&cert)?,
    })
}

impl crate::CertificateAuthority {
    /// Verifies a client certificate that did not pass our own TLS handshake (one a
    /// trusted proxy forwarded, PEM): its chain to this CA, its validity at `now` and
    /// its use for client authentication. A certificate of any other issuer fails.
    pub fn verify_client_certificate(
        &self,
        pem: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PresentedCertificate, PkiError> {
        use openssl::stack::Stack;
        use openssl::x509::store::X509StoreBuilder;
        use openssl::x509::verify::X509VerifyFlags;
        use openssl::x509::{X509StoreContext, X509};
        let unreadable = |reason: &str| PkiError::CertificateUnreadable {
            reason: reason.into(),
        };
        let cert = X509::from_pem(pem).map_err(|_| unreadable("not a PEM X.509 certificate"))?;
        let mut store = X509StoreBuilder::new()?;
        for c in self.chain_certificates() {
            store.add_cert(c.clone())?;
        }
        store.set_flags(X509VerifyFlags::X509_STRICT)?;
        let param = {
            let mut p = openssl::x509::verify::X509VerifyParam::new()?;
            p.set_time(now.timestamp());
            p.set_purpose(openssl::x509::X509PurposeId::SSL_CLIENT)?;
            p
        };
        store.set_param(&param)?;
        let store = store.build();
        let chain = Stack::new()?;
        let mut ctx = X509StoreContext::new()?;
        let ok = ctx.init(&store, &cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok {
                Ok(())
            } else {
                Err(c.error().error_string().to_owned())
            })
        })?;
        ok.map_err(|reason| unreadable(&format!("not a valid certificate of this CA: {reason}")))?;
        Ok(PresentedCertificate {
            serial: crate::x509util::serial_of(&cert)?,
            fingerprint: crate::x509util::fingerprint(&cert)?,
        })
    }
}
