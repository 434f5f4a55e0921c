//! Onboard's internal certificate authority, on OpenSSL.
//!
//! This is the only crate of the workspace that uses `openssl`. It provides:
//!
//! - the CA life cycle ([`CertificateAuthority::create`], [`CertificateAuthority::load`],
//!   [`CertificateAuthority::import`]): a self-signed root, optionally with an
//!   intermediate that issues so the root key can stay offline; the CA key at rest
//!   as encrypted PKCS#8 (PBES2: scrypt and AES-256-CBC) in files of mode 0600;
//! - device certificates from a CSR ([`CertificateAuthority::issue_from_csr`]) or
//!   with a generated key pair ([`CertificateAuthority::issue_with_new_key`]), under
//!   one fixed profile and the key policy (ECDSA P-256/P-384, RSA 2048/3072/4096
//!   with the public exponent 65537);
//! - CRLs ([`CertificateAuthority::build_crl`]);
//! - OCSP responses signed by a delegated responder certificate
//!   ([`CertificateAuthority::ocsp_response`]);
//! - AES-256 encrypted ZIP credential bundles ([`build_bundle`], [`BundleWriter`]);
//! - certificate inspection for display ([`chain_info`]);
//! - device access tokens ([`TokenKey`]): ES256 JWS with a key derived from the CA
//!   key;
//! - [`secrets`]: randomness, hashing and constant-time comparison for the other
//!   crates.
//!
//! "Now" is always a parameter; nothing here reads the clock. Nothing secret is
//! ever in an error message or in `Debug` output. `docs/pki.md` describes the
//! directory layout, the certificate and CRL profiles and the decisions behind them.

mod bundle;
mod ca;
mod crl;
mod csr;
mod error;
mod info;
mod issue;
mod jwt;
mod keys;
mod ocsp;
mod pkcs7;
mod pkcs8;
mod possession;
mod seal;
pub mod secrets;
mod server_cert;
mod winzip;
mod x509util;
mod zipfile;

pub use bundle::{
    build_bundle, build_password_bundle, entries as bundle_entries, BundleContents, BundlePassword,
    BundleWriter, CredentialBundle, DeviceFiles, PASSWORD_ALPHABET, PASSWORD_LEN,
};
pub use ca::{files as ca_files, CaSpec, CertificateAuthority, IntermediateSpec};
pub use crl::{crl_pem_from_der, Crl, CrlParams, RevokedCertificate};
pub use csr::{check_csr, device_key_and_csr, parse_csr, CheckedCsr, MAX_CSR_BYTES};
pub use error::{KeyPolicyViolation, PkiError};
pub use info::{chain_info, CertificateInfo};
pub use issue::{
    device_uri, GeneratedCredential, IssueParams, IssuedCertificate, CRL_PATH, DEVICE_URI_PATH,
    OCSP_PATH,
};
pub use jwt::{TokenError, TokenKey, MAX_TOKEN_BYTES as MAX_ACCESS_TOKEN_BYTES};
pub use keys::PrivateKeyPem;
pub use ocsp::{
    ocsp_max_age, OcspFailure, OcspResponder, OcspStatus, ParsedOcspRequest, MAX_OCSP_REQUESTS,
    MAX_OCSP_REQUEST_BYTES, RESPONDER_VALIDITY_DAYS,
};
pub use pkcs7::{certs_only_pkcs7, certs_only_pkcs7_from_pem, est_csr_attributes};
pub use possession::{
    checked_csr_matches_certificate, csr_matches_certificate, presented_certificate,
    PresentedCertificate,
};
pub use seal::SealKey;
pub use server_cert::{mosquitto_password_hash, ServerCertParams, ServiceCertParams};
