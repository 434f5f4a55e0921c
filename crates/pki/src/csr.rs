//! Certificate signing requests: parse (PEM or DER), apply the key policy, verify
//! the self-signature. Only the public key is taken from a CSR: the subject and
//! every extension of the certificate are set by the CA.
//!
//! A CSR is parsed and verified once per request ([`parse_csr`]) and the checked
//! key is carried into issuance ([`crate::CertificateAuthority::issue_from_checked`]).
//! EC CSRs on P-256 and P-384 signed with ECDSA take a fast path: the DER is read
//! with RustCrypto `x509-cert` (strict DER, the whole request including its
//! subject and attributes), the key is built as an OpenSSL `EC_KEY` from its point
//! and the signature verified with `ECDSA_do_verify` over the request info's DER.
//! That avoids OpenSSL 3.0's decoder framework, which parsing an `X509_REQ` goes
//! through for its key (about half the CPU of a registration's PKI work), and
//! the encoder/decoder round trip `X509_set_pubkey` makes with a provider key.
//! Anything the fast path does not accept (RSA, other curves, BER, a bad
//! signature, trailing data) goes through OpenSSL's own parser, which gives the
//! answer and the typed error, so the fast path never accepts what OpenSSL
//! would refuse and never refuses anything itself.

use std::fmt;

use der::{Decode, Encode};
use onboard_domain::KeyAlgorithm;
use openssl::bn::BigNumContext;
use openssl::ec::{EcKey, EcPoint, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::X509Req;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::error::PkiError;
use crate::keys;

/// The largest CSR we read. An RSA 4096 CSR is under 2 KiB in PEM.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// A CSR whose key satisfies the policy and whose signature verifies: what
/// [`parse_csr`] returns and [`crate::CertificateAuthority::issue_from_checked`]
/// issues from, so that a request is parsed and verified once. Cheap to clone (the
/// key is reference-counted).
#[derive(Clone)]
pub struct CheckedCsr {
    pub(crate) public_key: PKey<Public>,
    /// The key as the certificate carries it (an EC point uncompressed).
    pub(crate) spki: SubjectPublicKeyInfoOwned,
    pub(crate) key_algorithm: KeyAlgorithm,
}

impl CheckedCsr {
    /// The key's algorithm under the key policy.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }
}

impl fmt::Debug for CheckedCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedCsr")
            .field("key_algorithm", &self.key_algorithm)
            .finish_non_exhaustive()
    }
}

/// Parses a CSR (PEM or DER PKCS#10), applies the key policy and verifies its
/// self-signature, once; issue from the result.
pub fn parse_csr(csr: &[u8]) -> Result<CheckedCsr, PkiError> {
    parse(csr)
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
    let pem = trimmed.starts_with(b"-----BEGIN");
    if let Some(checked) = fast_ec(if pem { trimmed } else { csr }, pem) {
        return Ok(checked);
    }
    let req = if pem {
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
    let public_key = legacy(public_key)?;
    Ok(CheckedCsr {
        // OpenSSL's own encoding of a key it parsed: canonical DER, which
        // `x509-cert` reads; were it not, that is still about the CSR's key.
        spki: SubjectPublicKeyInfoOwned::from_der(&public_key.public_key_to_der()?).map_err(
            |_| PkiError::CsrMalformed {
                reason: "its public key cannot be encoded in a certificate",
            },
        )?,
        public_key,
        key_algorithm,
    })
}

/// The key re-wrapped as a legacy `EC_KEY` or `RSA` key: `X509_set_pubkey` then
/// encodes it directly instead of through OpenSSL 3.0's encoder and decoder.
fn legacy(key: PKey<Public>) -> Result<PKey<Public>, PkiError> {
    Ok(match key.id() {
        Id::EC => PKey::from_ec_key(key.ec_key()?)?,
        Id::RSA => PKey::from_rsa(key.rsa()?)?,
        _ => key,
    })
}

const ID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ECDSA_WITH_SHA256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");

/// The fast path for an ECDSA-signed CSR on P-256 or P-384 (see the module
/// documentation); `None` for anything else, which OpenSSL's parser then judges.
fn fast_ec(bytes: &[u8], pem: bool) -> Option<CheckedCsr> {
    let decoded;
    let der = if pem {
        let (label, der) = der::pem::decode_vec(bytes).ok()?;
        if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
            return None;
        }
        decoded = der;
        decoded.as_slice()
    } else {
        bytes
    };
    let req = x509_cert::request::CertReq::from_der(der).ok()?;
    let spki = &req.info.public_key;
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()?
        .decode_as::<der::asn1::ObjectIdentifier>()
        .ok()?;
    let key_algorithm = match curve {
        SECP256R1 => KeyAlgorithm::EcdsaP256,
        SECP384R1 => KeyAlgorithm::EcdsaP384,
        _ => return None,
    };
    if req.algorithm.parameters.is_some() {
        return None;
    }
    let digest = match req.algorithm.oid {
        ECDSA_WITH_SHA256 => MessageDigest::sha256(),
        ECDSA_WITH_SHA384 => MessageDigest::sha384(),
        ECDSA_WITH_SHA512 => MessageDigest::sha512(),
        _ => return None,
    };
    let info = req.info.to_der().ok()?;
    let signature = req.signature.as_bytes()?;
    let point_bytes = spki.subject_public_key.as_bytes()?;

    let group = keys::curve_group(key_algorithm).ok()?;
    let mut ctx = BigNumContext::new().ok()?;
    let point = EcPoint::from_bytes(group, point_bytes, &mut ctx).ok()?;
    let uncompressed = point_bytes.first() == Some(&4);
    let key = EcKey::from_public_key(group, &point).ok()?;
    let sig = EcdsaSig::from_der(signature).ok()?;
    // OpenSSL's own verify refuses a signature that is not exactly DER.
    if sig.to_der().ok()? != signature {
        return None;
    }
    let hashed = openssl::hash::hash(digest, &info).ok()?;
    if !sig.verify(&hashed, &key).ok()? {
        return None;
    }
    // A compressed point is written out uncompressed, as OpenSSL did when it
    // encoded the key for the certificate.
    let spki = if uncompressed {
        req.info.public_key
    } else {
        let uncompressed = point
            .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .ok()?;
        SubjectPublicKeyInfoOwned {
            algorithm: req.info.public_key.algorithm,
            subject_public_key: der::asn1::BitString::from_bytes(&uncompressed).ok()?,
        }
    };
    Some(CheckedCsr {
        public_key: PKey::from_ec_key(key).ok()?,
        spki,
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

    fn csr_with(key: &PKey<Private>, digest: MessageDigest) -> Vec<u8> {
        let mut b = X509ReqBuilder::new().unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "SN-1").unwrap();
        b.set_subject_name(&name.build()).unwrap();
        b.set_pubkey(key).unwrap();
        b.sign(key, digest).unwrap();
        b.build().to_der().unwrap()
    }

    #[test]
    fn the_fast_path_agrees_with_openssl() {
        for (algorithm, digests) in [
            (
                KeyAlgorithm::EcdsaP256,
                [
                    MessageDigest::sha256(),
                    MessageDigest::sha384(),
                    MessageDigest::sha512(),
                ],
            ),
            (
                KeyAlgorithm::EcdsaP384,
                [
                    MessageDigest::sha256(),
                    MessageDigest::sha384(),
                    MessageDigest::sha512(),
                ],
            ),
        ] {
            for digest in digests {
                let key = keys::generate(algorithm).unwrap();
                let der = csr_with(&key, digest);
                let pem = X509Req::from_der(&der).unwrap().to_pem().unwrap();
                let old_label = String::from_utf8(pem.clone())
                    .unwrap()
                    .replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
                for (bytes, is_pem) in [
                    (der.clone(), false),
                    (pem.clone(), true),
                    (old_label.into_bytes(), true),
                ] {
                    let fast = fast_ec(&bytes, is_pem).expect("the fast path takes it");
                    assert_eq!(fast.key_algorithm(), algorithm);
                    assert!(fast.public_key.public_eq(&key));
                    // OpenSSL's parser reads the same key from the same bytes.
                    let req = if is_pem {
                        X509Req::from_pem(&bytes).unwrap()
                    } else {
                        X509Req::from_der(&bytes).unwrap()
                    };
                    assert!(req.public_key().unwrap().public_eq(&fast.public_key));
                    assert_eq!(parse(&bytes).unwrap().key_algorithm(), algorithm);
                }
            }
        }
    }

    #[test]
    fn the_fast_path_leaves_everything_else_to_openssl() {
        // RSA, a bad signature and trailing data are not the fast path's to judge.
        let rsa = keys::generate(KeyAlgorithm::Rsa2048).unwrap();
        let rsa_der = csr_with(&rsa, MessageDigest::sha256());
        assert!(fast_ec(&rsa_der, false).is_none());
        assert_eq!(
            parse(&rsa_der).unwrap().key_algorithm(),
            KeyAlgorithm::Rsa2048
        );

        let key = keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut der = csr_with(&key, MessageDigest::sha256());
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(fast_ec(&trailing, false).is_none());
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert!(fast_ec(&der, false).is_none());
        assert!(matches!(parse(&der), Err(PkiError::CsrSignatureInvalid)));

        // Another curve: OpenSSL's path refuses it with its name.
        let k1 = PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP256K1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let other_curve = csr_with(&k1, MessageDigest::sha256());
        assert!(fast_ec(&other_curve, false).is_none());
        assert!(matches!(
            parse(&other_curve),
            Err(PkiError::KeyRejected(
                crate::KeyPolicyViolation::UnsupportedCurve { .. }
            ))
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
