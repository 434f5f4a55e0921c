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

/// What a device does before it registers: a fresh key pair and a CSR for it
/// (subject CN `common_name`, signed with the key), both PEM. The CA takes only the
/// public key from the CSR. The same CSR sent again proves possession of the key
/// (`docs/registration.md`).
pub fn device_key_and_csr(
    algorithm: KeyAlgorithm,
    common_name: &str,
) -> Result<(keys::PrivateKeyPem, String), PkiError> {
    let key = keys::generate(algorithm)?;
    let mut name = openssl::x509::X509NameBuilder::new()?;
    name.append_entry_by_nid(openssl::nid::Nid::COMMONNAME, common_name)?;
    let mut b = openssl::x509::X509ReqBuilder::new()?;
    b.set_subject_name(&name.build())?;
    b.set_pubkey(&key)?;
    b.sign(&key, keys::signing_digest(algorithm))?;
    let csr = String::from_utf8(b.build().to_pem()?)
        .map_err(|_| PkiError::invalid("csr", "OpenSSL wrote non-UTF-8 PEM"))?;
    Ok((keys::PrivateKeyPem::from_key(&key)?, csr))
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
    fn a_device_key_and_csr_pass_our_policy_and_openssl() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let (key, csr) = device_key_and_csr(algorithm, "SN-1").unwrap();
            assert_eq!(check_csr(csr.as_bytes()).unwrap(), algorithm);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("csr.pem"), &csr).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["req", "-verify", "-noout", "-subject", "-in"])
                .arg(dir.path().join("csr.pem"))
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{said}");
            assert!(said.contains("CN = SN-1"), "{said}");
            let private = PKey::private_key_from_pem(key.expose_secret().as_bytes()).unwrap();
            let public = X509Req::from_pem(csr.as_bytes())
                .unwrap()
                .public_key()
                .unwrap();
            assert!(
                private.public_eq(&public),
                "the CSR carries the key's public half"
            );
        }
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
