//! Encrypted PKCS#8 with scrypt, for the CA key files.
//!
//! OpenSSL's `PEM_write_bio_PKCS8PrivateKey` (what
//! `PKey::private_key_to_pem_pkcs8_passphrase` calls) derives the key with
//! PBKDF2 at 2,048 iterations, and openssl 0.10 has no way to change that. So the
//! `EncryptedPrivateKeyInfo` (RFC 5958) is assembled here, in safe Rust: the
//! key derivation (`EVP_PBE_scrypt`), the cipher and the randomness are OpenSSL's,
//! only the DER around them is encoded by hand. The result has the structure that
//! `openssl pkcs8 -topk8 -scrypt -scrypt_N 16384 -scrypt_r 8 -scrypt_p 5
//! -v2 aes-256-cbc` writes (with a 16-byte salt where that command uses 8), and
//! OpenSSL reads it back without any help: `load` stays format-agnostic and also
//! reads the PBKDF2 files written before.
//!
//! ```text
//! EncryptedPrivateKeyInfo ::= SEQUENCE {
//!   encryptionAlgorithm SEQUENCE { id-PBES2, PBES2-params ::= SEQUENCE {
//!     keyDerivationFunc SEQUENCE { id-scrypt, scrypt-params ::= SEQUENCE {
//!       salt OCTET STRING, costParameter INTEGER, blockSize INTEGER,
//!       parallelizationParameter INTEGER } }        -- RFC 7914 section 7
//!     encryptionScheme SEQUENCE { aes256-CBC, iv OCTET STRING } } }
//!   encryptedData OCTET STRING }                    -- AES-256-CBC, PKCS#7 padding
//! ```

use openssl::asn1::Asn1Object;
use openssl::pkcs5::scrypt;
use openssl::pkey::{PKeyRef, Private};
use openssl::rand::rand_bytes;
use openssl::symm::{encrypt, Cipher};
use zeroize::Zeroizing;

use crate::error::PkiError;
use crate::x509util::tlv;

/// scrypt cost N (2^14). With r = 8 this needs 16 MiB: the largest N that
/// OpenSSL decrypts with its default 32 MiB scrypt memory limit, which
/// `PEM_read_bio_PrivateKey` (and so `load` and the `openssl` CLI) applies.
pub(crate) const SCRYPT_N: u64 = 1 << 14;
/// scrypt block size r.
pub(crate) const SCRYPT_R: u64 = 8;
/// scrypt parallelization p: N = 2^14, r = 8, p = 5 is one of the equivalent
/// minimum settings OWASP's password storage guidance gives for scrypt (the p
/// rounds run one after the other: five times the work in the same memory).
pub(crate) const SCRYPT_P: u64 = 5;
/// Memory we allow scrypt while encrypting (it needs about 16 MiB).
const SCRYPT_MAX_MEM: u64 = 64 * 1024 * 1024;
const SALT_LEN: usize = 16;
const IV_LEN: usize = 16;
const KEY_LEN: usize = 32;

const OID_PBES2: &str = "1.2.840.113549.1.5.13";
const OID_SCRYPT: &str = "1.3.6.1.4.1.11591.4.11";
const OID_AES_256_CBC: &str = "2.16.840.1.101.3.4.1.42";

/// `key` as `-----BEGIN ENCRYPTED PRIVATE KEY-----` PEM: PBES2 with scrypt
/// (N = 2^14, r = 8, p = 5, a fresh 16-byte salt) and AES-256-CBC (a fresh IV).
/// The plaintext PKCS#8 and the derived key are wiped when this returns.
pub(crate) fn encrypt_pem(
    key: &PKeyRef<Private>,
    passphrase: &[u8],
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let mut salt = [0u8; SALT_LEN];
    rand_bytes(&mut salt)?;
    let mut iv = [0u8; IV_LEN];
    rand_bytes(&mut iv)?;
    let mut derived = Zeroizing::new([0u8; KEY_LEN]);
    scrypt(
        passphrase,
        &salt,
        SCRYPT_N,
        SCRYPT_R,
        SCRYPT_P,
        SCRYPT_MAX_MEM,
        &mut derived[..],
    )?;
    let plain = Zeroizing::new(key.private_key_to_pkcs8()?);
    let encrypted = encrypt(Cipher::aes_256_cbc(), &derived[..], Some(&iv), &plain)?;

    let scrypt_params = tlv(
        0x30,
        &[
            tlv(0x04, &salt),
            der_uint(SCRYPT_N),
            der_uint(SCRYPT_R),
            der_uint(SCRYPT_P),
        ]
        .concat(),
    );
    let kdf = tlv(0x30, &[oid(OID_SCRYPT)?, scrypt_params].concat());
    let scheme = tlv(0x30, &[oid(OID_AES_256_CBC)?, tlv(0x04, &iv)].concat());
    let pbes2_params = tlv(0x30, &[kdf, scheme].concat());
    let algorithm = tlv(0x30, &[oid(OID_PBES2)?, pbes2_params].concat());
    let der = tlv(0x30, &[algorithm, tlv(0x04, &encrypted)].concat());
    Ok(Zeroizing::new(pem("ENCRYPTED PRIVATE KEY", &der)))
}

/// An OBJECT IDENTIFIER's DER from its dotted form (OpenSSL encodes the arcs).
fn oid(dotted: &str) -> Result<Vec<u8>, PkiError> {
    Ok(tlv(0x06, Asn1Object::from_str(dotted)?.as_slice()))
}

/// A non-negative INTEGER: big-endian, minimal, a leading zero when the top bit
/// is set.
fn der_uint(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes
        .iter()
        .take_while(|b| **b == 0)
        .count()
        .min(bytes.len() - 1);
    let mut content = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[skip..]);
    tlv(0x02, &content)
}

/// RFC 7468 PEM: base64 in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = openssl::base64::encode_block(der);
    let mut out = Vec::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboard_domain::KeyAlgorithm;
    use openssl::pkey::PKey;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(der_uint(0), vec![0x02, 1, 0]);
        assert_eq!(der_uint(5), vec![0x02, 1, 5]);
        assert_eq!(der_uint(0x80), vec![0x02, 2, 0, 0x80]);
        assert_eq!(der_uint(16_384), vec![0x02, 2, 0x40, 0]);
        assert_eq!(
            der_uint(u64::MAX),
            [&[0x02, 9, 0][..], &[0xff; 8][..]].concat()
        );
    }

    #[test]
    fn oids_are_the_registered_ones() {
        // id-scrypt, as RFC 7914 section 7 lists it in DER.
        assert_eq!(
            oid(OID_SCRYPT).unwrap(),
            vec![0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x04, 0x0b]
        );
        assert_eq!(
            Asn1Object::from_str(OID_AES_256_CBC)
                .unwrap()
                .nid()
                .short_name()
                .unwrap(),
            "AES-256-CBC"
        );
        assert_eq!(
            Asn1Object::from_str(OID_PBES2)
                .unwrap()
                .nid()
                .short_name()
                .unwrap(),
            "PBES2"
        );
    }

    #[test]
    fn openssl_decrypts_what_we_write() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let key = crate::keys::generate(alg).unwrap();
            let pem = encrypt_pem(&key, b"correct horse").unwrap();
            assert!(pem.starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
            assert!(pem.ends_with(b"-----END ENCRYPTED PRIVATE KEY-----\n"));
            let text = std::str::from_utf8(&pem).unwrap();
            assert!(text.lines().all(|l| l.len() <= 64));
            let back = PKey::private_key_from_pem_passphrase(&pem, b"correct horse").unwrap();
            assert!(back.public_eq(&key));
            assert!(PKey::private_key_from_pem_passphrase(&pem, b"correct horsf").is_err());
            // Fresh salt and IV every time.
            assert_ne!(*pem, *encrypt_pem(&key, b"correct horse").unwrap());
        }
    }
}
