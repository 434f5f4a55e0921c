//! The one error type of the pki crate.
//!
//! Messages name the file or the input that is wrong and what to do about it. They
//! never contain key material, passphrases or passwords: the only data they carry are
//! paths, sizes, algorithm names and OpenSSL's own error codes.

use std::path::PathBuf;

use openssl::error::ErrorStack;

/// Why a public key is not accepted (for a device CSR or an imported CA key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPolicyViolation {
    /// RSA keys must have a 2048, 3072 or 4096-bit modulus.
    #[error("RSA keys must be 2048, 3072 or 4096 bits; this one has {bits} bits")]
    RsaKeySize { bits: u32 },
    /// RSA keys must have the public exponent 65537 (F4). Small exponents such as
    /// 3 have a history of practical attacks on flawed padding and signature
    /// checks; nothing else is needed for interoperability. `exponent` is the
    /// exponent in decimal, or `a <n>-bit number` when it is wider than 64 bits.
    #[error("RSA keys must have the public exponent 65537; this one has {exponent}")]
    RsaExponent { exponent: String },
    /// EC keys must be on P-256 (prime256v1) or P-384 (secp384r1).
    #[error("EC keys must be on the P-256 or P-384 curve; this one is on {curve}")]
    UnsupportedCurve { curve: String },
    /// Neither RSA nor EC (DSA, Ed25519, Ed448, RSA-PSS, ...).
    #[error("{kind} keys are not accepted; use ECDSA P-256/P-384 or RSA 2048/3072/4096")]
    UnsupportedKeyType { kind: String },
}

/// Everything that can go wrong in the pki crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file the CA directory must hold is not there.
    #[error("the CA file {} is missing", path.display())]
    MissingFile { path: PathBuf },

    /// `create` or `import` found CA files already in the directory.
    #[error("{} already exists; refusing to overwrite an existing CA", path.display())]
    AlreadyExists { path: PathBuf },

    /// Reading or writing a CA file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The key is encrypted but the caller gave no passphrase.
    #[error("the CA key ({key}) is encrypted and no passphrase was given")]
    PassphraseRequired { key: String },

    /// The passphrase does not decrypt the key.
    #[error(
        "the passphrase does not decrypt the CA key ({key}): wrong passphrase or a damaged file"
    )]
    WrongPassphrase { key: String },

    /// The key is not a PEM private key OpenSSL can read.
    #[error("the CA key ({key}) cannot be read: expected a PEM private key (PKCS#8, optionally encrypted)")]
    KeyUnreadable { key: String },

    /// The private key is not the one the certificate was issued for.
    #[error("the CA key ({key}) does not match the CA certificate ({certificate})")]
    KeyMismatch { key: String, certificate: String },

    /// A CA certificate or chain is unusable (not a CA, broken chain, unreadable).
    #[error("the CA certificate ({certificate}) cannot be used: {reason}")]
    InvalidCaCertificate { certificate: String, reason: String },

    /// Certificate data given to an inspection helper could not be parsed.
    #[error("the certificate data cannot be read: {reason}")]
    CertificateUnreadable { reason: String },

    /// The CSR body is empty.
    #[error("the CSR is empty")]
    CsrEmpty,

    /// The CSR is not a PKCS#10 request (in PEM or DER).
    #[error("the CSR cannot be read: {reason}")]
    CsrMalformed { reason: &'static str },

    /// The CSR's self-signature does not verify: the requester did not prove it holds
    /// the private key.
    #[error("the CSR's signature does not verify with its own public key")]
    CsrSignatureInvalid,

    /// The key does not satisfy the key policy.
    #[error("key rejected: {0}")]
    KeyRejected(#[from] KeyPolicyViolation),

    /// A parameter given by the caller is out of range or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    /// Writing the credential bundle ZIP failed.
    #[error("cannot build the credential bundle: {0}")]
    Bundle(String),

    /// OpenSSL reported an error that is not one of the cases above (out of memory,
    /// an unexpected library failure). The text is OpenSSL's error queue.
    #[error("OpenSSL failed: {0}")]
    OpenSsl(#[from] ErrorStack),

    /// Encoding or decoding DER with RustCrypto's `der` failed where the data is
    /// ours (a certificate being issued, the CA's own certificate): a bug or an
    /// unusable CA, never something a client sent.
    #[error("DER encoding failed: {0}")]
    Der(String),
}

impl From<der::Error> for PkiError {
    fn from(e: der::Error) -> Self {
        Self::Der(e.to_string())
    }
}

impl PkiError {
    /// True for errors caused by what a client sent (a CSR, its key): the server
    /// answers these with 4xx (422 for a readable CSR that breaks the policy).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::CsrEmpty
                | Self::CsrMalformed { .. }
                | Self::CsrSignatureInvalid
                | Self::KeyRejected(_)
        )
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_and_key_policy_errors_are_the_clients() {
        assert!(PkiError::CsrEmpty.is_client_error());
        assert!(PkiError::CsrSignatureInvalid.is_client_error());
        assert!(PkiError::from(KeyPolicyViolation::RsaKeySize { bits: 1024 }).is_client_error());
        assert!(!PkiError::MissingFile {
            path: "ca.key".into()
        }
        .is_client_error());
    }

    #[test]
    fn messages_name_the_problem() {
        let e = PkiError::from(KeyPolicyViolation::RsaKeySize { bits: 1024 });
        assert_eq!(
            e.to_string(),
            "key rejected: RSA keys must be 2048, 3072 or 4096 bits; this one has 1024 bits"
        );
        let e = PkiError::from(KeyPolicyViolation::RsaExponent {
            exponent: "3".into(),
        });
        assert_eq!(
            e.to_string(),
            "key rejected: RSA keys must have the public exponent 65537; this one has 3"
        );
        let e = PkiError::WrongPassphrase {
            key: "/data/ca/ca.key".into(),
        };
        assert!(e.to_string().contains("/data/ca/ca.key"));
    }
}
