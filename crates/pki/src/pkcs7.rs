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

/// The EST CSR attributes (RFC 7030 4.5.2) of our key policy, DER: the key types
/// `issue_from_csr` accepts — id-ecPublicKey on P-256 or P-384 (an attribute whose
/// values are the curves) and rsaEncryption (2048, 3072 or 4096 bits, e = 65537,
/// which the format cannot say). Nothing else in a CSR is used.
pub fn est_csr_attributes() -> Vec<u8> {
    use crate::x509util::tlv;
    const ID_EC_PUBLIC_KEY: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const PRIME256V1: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const SECP384R1: [u8; 5] = [0x2b, 0x81, 0x04, 0x00, 0x22];
    const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    // SET OF in DER order: the shorter encoding (secp384r1) first.
    let mut curves = tlv(0x06, &SECP384R1);
    curves.extend(tlv(0x06, &PRIME256V1));
    let mut ec = tlv(0x06, &ID_EC_PUBLIC_KEY);
    ec.extend(tlv(0x31, &curves));
    let mut attrs = tlv(0x30, &ec);
    attrs.extend(tlv(0x06, &RSA_ENCRYPTION));
    tlv(0x30, &attrs)
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
    fn csr_attributes_name_the_accepted_key_types() {
        let der = est_csr_attributes();
        // A SEQUENCE of two: the EC attribute (type + SET of two curves), the RSA OID.
        let items = Vec::<der::Any>::from_der(&der).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            der::asn1::ObjectIdentifier::from_der(&items[1].to_der().unwrap()).unwrap(),
            der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1")
        );
        let attr = Vec::<der::Any>::from_der(&items[0].to_der().unwrap()).unwrap();
        let curves = der::asn1::SetOfVec::<der::asn1::ObjectIdentifier>::from_der(
            &attr[1].to_der().unwrap(),
        )
        .unwrap();
        assert_eq!(curves.len(), 2);
    }

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
