//! Reading certificates for display (`ca show`, certificate details).

use chrono::{DateTime, Utc};
use onboard_domain::{CertSerial, Fingerprint, KeyAlgorithm};
use openssl::x509::{X509Ref, X509};

use crate::error::PkiError;
use crate::keys;
use crate::x509util::{fingerprint, name_to_string, serial_of, to_datetime};

/// What `ca show` prints about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// `CN=..., O=...`
    pub subject: String,
    pub issuer: String,
    pub serial: CertSerial,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// The key algorithm when it is one Onboard supports.
    pub key_algorithm: Option<KeyAlgorithm>,
    /// The key for display, also when unsupported: `ecdsa-p256`, `rsa-8192`,
    /// `rsa-2048 (e = 3)`, `ec-secp521r1`.
    pub key_description: String,
    /// SHA-256 of the DER.
    pub fingerprint: Fingerprint,
    /// True when the subject equals the issuer and the certificate verifies with
    /// its own key (a root).
    pub self_signed: bool,
}

impl CertificateInfo {
    pub(crate) fn of(cert: &X509Ref) -> Result<Self, PkiError> {
        let key = cert.public_key()?;
        let self_signed = cert.subject_name().try_cmp(cert.issuer_name())?.is_eq()
            && cert.verify(&key).unwrap_or(false);
        Ok(Self {
            subject: name_to_string(cert.subject_name()),
            issuer: name_to_string(cert.issuer_name()),
            serial: serial_of(cert)?,
            not_before: to_datetime(cert.not_before())?,
            not_after: to_datetime(cert.not_after())?,
            key_algorithm: keys::classify(&key).ok(),
            key_description: keys::describe(&key),
            fingerprint: fingerprint(cert)?,
            self_signed,
        })
    }
}

/// Parses every certificate in a PEM text (a chain or a single certificate), in
/// order. An input without any certificate is an error.
pub fn chain_info(pem: &[u8]) -> Result<Vec<CertificateInfo>, PkiError> {
    let certs = X509::stack_from_pem(pem).map_err(|_| PkiError::CertificateUnreadable {
        reason: "not a list of PEM certificates".into(),
    })?;
    if certs.is_empty() {
        return Err(PkiError::CertificateUnreadable {
            reason: "no PEM certificate found".into(),
        });
    }
    certs.iter().map(|c| CertificateInfo::of(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_inputs_are_errors() {
        assert!(matches!(
            chain_info(b""),
            Err(PkiError::CertificateUnreadable { .. })
        ));
        assert!(matches!(
            chain_info(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(PkiError::CertificateUnreadable { .. })
        ));
    }
}
