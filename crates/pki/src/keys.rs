//! Key generation, the key policy, and private keys in and out of PEM.

use std::fmt;
use std::sync::OnceLock;

use onboard_domain::KeyAlgorithm;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use zeroize::Zeroizing;

use crate::error::{KeyPolicyViolation, PkiError};

/// A private key as unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
///
/// The text is wiped from memory when the value is dropped and never appears in
/// `Debug` output. It is not `Clone`: there is one copy, moved or borrowed, and
/// [`PrivateKeyPem::expose_secret`] is the only way to the text.
///
/// ```compile_fail
/// fn copy(key: &onboard_pki::PrivateKeyPem) -> onboard_pki::PrivateKeyPem {
///     key.clone()
/// }
/// ```
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps PEM text received from elsewhere (another issuer, a port). The
    /// `String` is moved in, not copied, and wiped with the value.
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text. Handle with care: this is the secret.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The key as PKCS#8 PEM. The `Vec` openssl returns becomes the wrapped
    /// `String` without another copy (OpenSSL's memory BIO behind it is OpenSSL's).
    pub(crate) fn from_key(key: &PKeyRef<Private>) -> Result<Self, PkiError> {
        let pem = key.private_key_to_pem_pkcs8()?;
        match String::from_utf8(pem) {
            Ok(text) => Ok(Self(Zeroizing::new(text))),
            Err(not_utf8) => {
                drop(Zeroizing::new(not_utf8.into_bytes()));
                Err(PkiError::invalid(
                    "private key",
                    "OpenSSL wrote non-UTF-8 PEM",
                ))
            }
        }
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

/// Generates a fresh key pair of the given algorithm (EC keys use the named curve
/// form, RSA keys the public exponent 65537).
pub(crate) fn generate(algorithm: KeyAlgorithm) -> Result<PKey<Private>, PkiError> {
    let key = match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => ec_key(algorithm)?,
        KeyAlgorithm::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
        KeyAlgorithm::Rsa3072 => PKey::from_rsa(Rsa::generate(3072)?)?,
        KeyAlgorithm::Rsa4096 => PKey::from_rsa(Rsa::generate(4096)?)?,
    };
    Ok(key)
}

fn ec_key(algorithm: KeyAlgorithm) -> Result<PKey<Private>, PkiError> {
    let group = curve_group(algorithm)?;
    Ok(PKey::from_ec_key(EcKey::generate(group)?)?)
}

/// The group of an EC algorithm's curve, made once per process: making one
/// (`EC_GROUP_new_by_curve_name`) sets the curve up anew each time, which was 2%
/// of a registration's CPU when every CSR made its own.
pub(crate) fn curve_group(algorithm: KeyAlgorithm) -> Result<&'static EcGroup, PkiError> {
    static P256: OnceLock<EcGroup> = OnceLock::new();
    static P384: OnceLock<EcGroup> = OnceLock::new();
    let (cell, nid) = match algorithm {
        KeyAlgorithm::EcdsaP256 => (&P256, Nid::X9_62_PRIME256V1),
        KeyAlgorithm::EcdsaP384 => (&P384, Nid::SECP384R1),
        _ => return Err(PkiError::invalid("key algorithm", "not an EC algorithm")),
    };
    if let Some(group) = cell.get() {
        return Ok(group);
    }
    let group = EcGroup::from_curve_name(nid)?;
    Ok(cell.get_or_init(|| group))
}

/// The only RSA public exponent the key policy accepts (F4).
pub(crate) const RSA_EXPONENT: u32 = 65_537;

/// Applies the key policy: RSA 2048/3072/4096 with e = 65537, or EC on
/// P-256/P-384, nothing else. For RSA the size is checked before the exponent.
pub(crate) fn classify<T: HasPublic>(key: &PKeyRef<T>) -> Result<KeyAlgorithm, KeyPolicyViolation> {
    match key.id() {
        Id::RSA => {
            let algorithm = match key.bits() {
                2048 => KeyAlgorithm::Rsa2048,
                3072 => KeyAlgorithm::Rsa3072,
                4096 => KeyAlgorithm::Rsa4096,
                bits => return Err(KeyPolicyViolation::RsaKeySize { bits }),
            };
            check_rsa_exponent(key)?;
            Ok(algorithm)
        }
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|ec| ec.group().curve_name());
            match curve {
                Some(Nid::X9_62_PRIME256V1) => Ok(KeyAlgorithm::EcdsaP256),
                Some(Nid::SECP384R1) => Ok(KeyAlgorithm::EcdsaP384),
                Some(nid) => Err(KeyPolicyViolation::UnsupportedCurve {
                    curve: nid.short_name().unwrap_or("an unnamed curve").to_owned(),
                }),
                None => Err(KeyPolicyViolation::UnsupportedCurve {
                    curve: "explicit curve parameters".to_owned(),
                }),
            }
        }
        id => Err(KeyPolicyViolation::UnsupportedKeyType {
            kind: key_type_name(id),
        }),
    }
}

/// Refuses an RSA key whose public exponent is not exactly 65537.
fn check_rsa_exponent<T: HasPublic>(key: &PKeyRef<T>) -> Result<(), KeyPolicyViolation> {
    let rsa = key
        .rsa()
        .map_err(|_| KeyPolicyViolation::UnsupportedKeyType {
            kind: "unreadable RSA".to_owned(),
        })?;
    let e = rsa.e();
    let f4 =
        BigNum::from_u32(RSA_EXPONENT).map_err(|_| KeyPolicyViolation::UnsupportedKeyType {
            kind: "unreadable RSA".to_owned(),
        })?;
    if *e == f4 {
        return Ok(());
    }
    // A u64 prints in full; anything wider (up to the modulus' size) is named by
    // its size so that the message stays short.
    let exponent = match e.to_dec_str() {
        Ok(dec) if e.num_bits() <= 64 => dec.to_string(),
        _ => format!("a {}-bit number", e.num_bits()),
    };
    Err(KeyPolicyViolation::RsaExponent { exponent })
}

fn key_type_name(id: Id) -> String {
    match id {
        Id::DSA => "DSA".to_owned(),
        Id::ED25519 => "Ed25519".to_owned(),
        Id::ED448 => "Ed448".to_owned(),
        Id::X25519 => "X25519".to_owned(),
        Id::X448 => "X448".to_owned(),
        Id::DH => "DH".to_owned(),
        Id::RSA_PSS => "RSA-PSS".to_owned(),
        other => Nid::from_raw(other.as_raw())
            .short_name()
            .map(str::to_owned)
            .unwrap_or_else(|_| format!("unknown (OpenSSL key type {})", other.as_raw())),
    }
}

/// A short description of any public key, for display: `ecdsa-p256`, `rsa-8192`,
/// `rsa-2048 (e = 3)`, `ec-secp521r1`, `ed25519`.
pub(crate) fn describe<T: HasPublic>(key: &PKeyRef<T>) -> String {
    match classify(key) {
        Ok(alg) => alg.as_str().to_owned(),
        Err(KeyPolicyViolation::RsaKeySize { bits }) => format!("rsa-{bits}"),
        Err(KeyPolicyViolation::RsaExponent { exponent }) => {
            format!("rsa-{} (e = {exponent})", key.bits())
        }
        Err(KeyPolicyViolation::UnsupportedCurve { curve }) => format!("ec-{curve}"),
        Err(KeyPolicyViolation::UnsupportedKeyType { kind }) => kind.to_ascii_lowercase(),
    }
}

/// The digest a key of this algorithm signs with: SHA-384 for P-384, else SHA-256.
pub(crate) fn signing_digest(algorithm: KeyAlgorithm) -> MessageDigest {
    match algorithm {
        KeyAlgorithm::EcdsaP384 => MessageDigest::sha384(),
        _ => MessageDigest::sha256(),
    }
}

/// PKCS#8 PEM; when a passphrase is given, encrypted with PBES2: scrypt
/// (N = 2^14, r = 8, p = 5) and AES-256-CBC (see [`crate::pkcs8`]).
pub(crate) fn to_pkcs8_pem(
    key: &PKeyRef<Private>,
    passphrase: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    match passphrase {
        Some([]) => Err(PkiError::invalid("passphrase", "must not be empty")),
        Some(pass) => crate::pkcs8::encrypt_pem(key, pass),
        None => Ok(Zeroizing::new(key.private_key_to_pem_pkcs8()?)),
    }
}

/// Reads a PEM private key. `what` names it in errors (a path, or "the imported
/// key"). OpenSSL is never allowed to prompt on a terminal: an encrypted key without
/// a passphrase is [`PkiError::PassphraseRequired`].
pub(crate) fn from_pem(
    pem: &[u8],
    passphrase: Option<&[u8]>,
    what: &str,
) -> Result<PKey<Private>, PkiError> {
    let encrypted = contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(pem, b"Proc-Type: 4,ENCRYPTED");
    let key = what.to_owned();
    if encrypted {
        let pass = passphrase.ok_or_else(|| PkiError::PassphraseRequired { key: key.clone() })?;
        PKey::private_key_from_pem_passphrase(pem, pass)
            .map_err(|_| PkiError::WrongPassphrase { key })
    } else {
        // The empty passphrase is never used for a plain key; it only keeps OpenSSL
        // from falling back to a terminal prompt.
        PKey::private_key_from_pem_passphrase(pem, b"").map_err(|_| PkiError::KeyUnreadable { key })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::dsa::Dsa;

    #[test]
    fn generated_keys_satisfy_the_policy() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let key = generate(alg).unwrap();
            assert_eq!(classify(&key).unwrap(), alg);
            assert_eq!(describe(&key), alg.as_str());
        }
    }

    #[test]
    fn policy_rejects_small_rsa_other_curves_and_other_types() {
        let rsa = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        assert_eq!(
            classify(&rsa),
            Err(KeyPolicyViolation::RsaKeySize { bits: 1024 })
        );
        let k1 = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP256K1).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            classify(&k1),
            Err(KeyPolicyViolation::UnsupportedCurve {
                curve: "secp256k1".into()
            })
        );
        let ed = PKey::generate_ed25519().unwrap();
        assert_eq!(
            classify(&ed),
            Err(KeyPolicyViolation::UnsupportedKeyType {
                kind: "Ed25519".into()
            })
        );
        let dsa = PKey::from_dsa(Dsa::generate(2048).unwrap()).unwrap();
        assert!(matches!(
            classify(&dsa),
            Err(KeyPolicyViolation::UnsupportedKeyType { kind }) if kind == "DSA"
        ));
    }

    #[test]
    fn policy_accepts_only_the_rsa_exponent_65537() {
        let with_e = |e: u32| {
            let e = BigNum::from_u32(e).unwrap();
            PKey::from_rsa(Rsa::generate_with_e(2048, &e).unwrap()).unwrap()
        };
        assert_eq!(classify(&with_e(65_537)).unwrap(), KeyAlgorithm::Rsa2048);
        for e in [3, 17, 257, 65_539] {
            let key = with_e(e);
            assert_eq!(
                classify(&key),
                Err(KeyPolicyViolation::RsaExponent {
                    exponent: e.to_string()
                }),
                "e = {e}"
            );
            // The public half alone (as in a CSR) is judged the same way.
            let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
            assert!(matches!(
                classify(&public),
                Err(KeyPolicyViolation::RsaExponent { .. })
            ));
        }
        assert_eq!(describe(&with_e(3)), "rsa-2048 (e = 3)");
        // The size is checked first.
        let small =
            PKey::from_rsa(Rsa::generate_with_e(1024, &BigNum::from_u32(3).unwrap()).unwrap())
                .unwrap();
        assert_eq!(
            classify(&small),
            Err(KeyPolicyViolation::RsaKeySize { bits: 1024 })
        );
    }

    #[test]
    fn wide_rsa_exponents_are_named_by_their_size() {
        // Only a public key can be built with such an exponent: take a real modulus
        // and pair it with 2^64 + 1.
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let rsa = key.rsa().unwrap();
        let mut e = BigNum::new().unwrap();
        e.set_bit(64).unwrap();
        e.set_bit(0).unwrap();
        let public = Rsa::from_public_components(rsa.n().to_owned().unwrap(), e).unwrap();
        let public = PKey::from_rsa(public).unwrap();
        assert_eq!(
            classify(&public),
            Err(KeyPolicyViolation::RsaExponent {
                exponent: "a 65-bit number".into()
            })
        );
    }

    #[test]
    fn encrypted_pem_round_trips_and_reports_passphrase_problems() {
        let key = generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = to_pkcs8_pem(&key, Some(b"correct horse")).unwrap();
        assert!(pem.starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let back = from_pem(&pem, Some(b"correct horse"), "k").unwrap();
        assert!(back.public_eq(&key));
        assert!(matches!(
            from_pem(&pem, Some(b"wrong"), "k"),
            Err(PkiError::WrongPassphrase { .. })
        ));
        assert!(matches!(
            from_pem(&pem, None, "k"),
            Err(PkiError::PassphraseRequired { .. })
        ));
        assert!(matches!(
            from_pem(b"not a key", None, "k"),
            Err(PkiError::KeyUnreadable { .. })
        ));
        assert!(matches!(
            to_pkcs8_pem(&key, Some(b"")),
            Err(PkiError::InvalidInput { .. })
        ));
    }

    #[test]
    fn keys_encrypted_the_old_way_still_load() {
        // What `to_pkcs8_pem` wrote before scrypt: OpenSSL's default PBES2 with
        // PBKDF2 (2,048 iterations) and AES-256-CBC.
        let key = generate(KeyAlgorithm::EcdsaP256).unwrap();
        let old = key
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pass")
            .unwrap();
        assert!(from_pem(&old, Some(b"pass"), "k").unwrap().public_eq(&key));
        assert!(matches!(
            from_pem(&old, Some(b"wrong"), "k"),
            Err(PkiError::WrongPassphrase { .. })
        ));
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let key = generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = PrivateKeyPem::from_key(&key).unwrap();
        assert!(pem
            .expose_secret()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(format!("{pem:?}"), "PrivateKeyPem([redacted])");
    }
}
