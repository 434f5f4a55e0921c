//! Certs-only PKCS#7 (a degenerate CMS SignedData, RFC 5652 / RFC 7030 4.1.3): the
//! format EST answers certificates in. Built with RustCrypto `cms`; the openssl
//! crate cannot build it.

use cms::content_info::ContentInfo;
use der::{Decode, Encode};

use crate::error::PkiError;

/// A certs-only SignedData (no signers, no content, an empty CRL set) holding the
/// DER certificates in `certs`, as DER.
pub fn certs_only_pkcs7(certs: &[&[u8]]) -> Result<Vec<u8>, PkiError> {
    let mut parsed = Vec::with_capacity(certs.len());
    for der in certs {
        parsed.push(x509_cert::Certificate::from_der(der).map_err(|e| {
            PkiError::CertificateUnreadable {
                reason: e.to_string(),
            }
        })?);
    }
    let info =
        ContentInfo::try_from(parsed).map_err(|e| PkiError::invalid("PKCS#7", e.to_string()))?;
    info.to_der()
        .map_err(|e| PkiError::invalid("PKCS#7", e.to_string()))
}

/// Certs-only PKCS#7 DER of every certificate in `pem` (one or more PEM blocks).
pub fn certs_only_pkcs7_from_pem(pem: &str) -> Result<Vec<u8>, PkiError> {
    let certs = openssl::x509::X509::stack_from_pem(pem.as_bytes()).map_err(|_| {
        PkiError::CertificateUnreadable {
            reason: "not PEM certificates".into(),
        }
    })?;
    let ders = certs
        .iter()
        .map(|c| c.to_der())
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
    certs_only_pkcs7(&refs)
}

impl crate::CertificateAuthority {
    /// The CA chain (issuing CA to root) as certs-only PKCS#7 DER (EST `cacerts`).
    pub fn chain_pkcs7(&self) -> Result<Vec<u8>, PkiError> {
        let ders = self
            .chain_certificates()
            .iter()
            .map(|c| c.to_der())
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
        certs_only_pkcs7(&refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaSpec, CertificateAuthority, IntermediateSpec};
    use chrono::TimeZone;
    use openssl::pkcs7::Pkcs7;

    #[test]
    fn openssl_reads_every_certificate_back() {
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .unwrap();
        let mut spec = CaSpec::new("Root");
        spec.intermediate = Some(IntermediateSpec {
            common_name: "Issuing".into(),
            validity_days: 365,
        });
        let ca = CertificateAuthority::generate(&spec, now).unwrap();
        let der = ca.chain_pkcs7().unwrap();
        let p7 = Pkcs7::from_der(&der).unwrap();
        let certs = p7.signed().unwrap().certificates().unwrap();
        let mut got: Vec<Vec<u8>> = certs.iter().map(|c| c.to_der().unwrap()).collect();
        let mut want: Vec<Vec<u8>> = ca
            .chain_certificates()
            .iter()
            .map(|c| c.to_der().unwrap())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(certs_only_pkcs7(&[b"not a certificate"]).is_err());
    }
}
