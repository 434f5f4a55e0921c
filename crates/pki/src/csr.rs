//! Certificate signing requests: parse (PEM or DER), apply the key policy, verify
//! the self-signature. Only the public key is taken from a CSR: the subject and
//! every extension of the certificate are set by the CA.

use onboard_domain::KeyAlgorithm;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509Req;

use crate::error::PkiError;
use crate::keys;

/// The largest CSR we read. An RSA 4096 CSR is under 2 KiB in PEM.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// A CSR whose key satisfies the policy and whose signature verifies.
pub(crate) struct CheckedCsr {
    pub(crate) public_key: PKey<Public>,
    pub(crate) key_algorithm: KeyAlgorithm,
}

/// Checks a CSR without issuing anything: returns the key algorithm, or the typed
/// error the issuing call would return.
pub fn check_csr(csr: &[u8]) -> Result<KeyAlgorithm, PkiError> {
    parse(csr).map(|c| c.key_algorithm)
}

pub(crate) fn parse(csr: &[u8]) -> Result<CheckedCsr, PkiError> {
    let trimmed = csr.trim_ascii();
    if trimmed.is_empty() {
        return Err(PkiError::CsrEmpty);
    }
    if trimmed.len() > MAX_CSR_BYTES {
        return Err(PkiError::CsrMalformed {
            reason: "it is larger than 64 KiB",
        });
    }
    let req = if trimmed.starts_with(b"-----BEGIN") {
        X509Req::from_pem(trimmed).map_err(|_| PkiError::CsrMalformed {
            reason: "expected a PEM CERTIFICATE REQUEST (PKCS#10)",
        })?
    } else {
        X509Req::from_der(csr).map_err(|_| PkiError::CsrMalformed {
            reason: "neither PEM nor DER PKCS#10",
        })?
    };
    let public_key = req.public_key().map_err(|_| {
        PkiError::KeyRejected(crate::KeyPolicyViolation::UnsupportedKeyType {
            kind: "an unrecognised".into(),
        })
    })?;
    let key_algorithm = keys::classify(&public_key)?;
    if !req.verify(&public_key).unwrap_or(false) {
        return Err(PkiError::CsrSignatureInvalid);
    }
    Ok(CheckedCsr {
        public_key,
        key_algorithm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::pkey::Private;
    use openssl::x509::X509ReqBuilder;

    fn csr_der(key: &PKey<Private>) -> Vec<u8> {
        let mut b = X509ReqBuilder::new().unwrap();
        b.set_pubkey(key).unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        b.build().to_der().unwrap()
    }

    #[test]
    fn accepts_pem_and_der() {
        let key = keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let der = csr_der(&key);
        assert_eq!(check_csr(&der).unwrap(), KeyAlgorithm::EcdsaP256);
        let pem = X509Req::from_der(&der).unwrap().to_pem().unwrap();
        assert_eq!(check_csr(&pem).unwrap(), KeyAlgorithm::EcdsaP256);
    }

    #[test]
    fn rejects_empty_garbage_and_tampered() {
        assert!(matches!(check_csr(b""), Err(PkiError::CsrEmpty)));
        assert!(matches!(check_csr(b" \n"), Err(PkiError::CsrEmpty)));
        assert!(matches!(
            check_csr(b"\x00\x01garbage"),
            Err(PkiError::CsrMalformed { .. })
        ));
        assert!(matches!(
            check_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n"),
            Err(PkiError::CsrMalformed { .. })
        ));
        assert!(matches!(
            check_csr(&vec![b'A'; MAX_CSR_BYTES + 1]),
            Err(PkiError::CsrMalformed { .. })
        ));
        let key = keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut der = csr_der(&key);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert!(matches!(
            check_csr(&der),
            Err(PkiError::CsrSignatureInvalid)
        ));
    }

    #[test]
    fn applies_the_key_policy() {
        let ed = PKey::generate_ed25519().unwrap();
        let mut b = X509ReqBuilder::new().unwrap();
        b.set_pubkey(&ed).unwrap();
        b.sign(&ed, MessageDigest::null()).unwrap();
        let der = b.build().to_der().unwrap();
        assert!(matches!(
            check_csr(&der),
            Err(PkiError::KeyRejected(
                crate::KeyPolicyViolation::UnsupportedKeyType { .. }
            ))
        ));
    }
}
