//! Credential bundles: a ZIP whose secret entries are encrypted with WinZip AES-256
//! (AE-2) under a random password.
//!
//! Entries: `device.crt` (the device certificate) and `ca.crt` (the CA chain,
//! issuing CA first), public by nature and not encrypted; `device.key` (its PKCS#8
//! key, stored rather than deflated so that no compressor buffer holds it) and
//! `connection.json` (given by the caller; it may hold the device's configuration
//! secrets), encrypted. Each encrypted entry costs one PBKDF2-HMAC-SHA1 key
//! derivation (1,000 rounds, the format's), most of a bulk import's CPU time, so
//! only what is secret is encrypted. The password is 24 characters from a 56-character alphabet without
//! look-alikes (no `0 O o 1 l I`), drawn without bias: about 139 bits.

use std::fmt;
use std::io::{Cursor, Write};

use chrono::{DateTime, Datelike, Timelike, Utc};
use zeroize::Zeroizing;
use zip::write::SimpleFileOptions;
use zip::{AesMode, CompressionMethod, ZipWriter};

use crate::error::PkiError;
use crate::keys::PrivateKeyPem;
use crate::secrets::random_string;

/// The password alphabet: letters and digits minus `0 O o 1 l I`.
pub const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
/// The password length.
pub const PASSWORD_LEN: usize = 24;

/// The names of the entries in a bundle.
pub mod entries {
    pub const DEVICE_CERT: &str = "device.crt";
    pub const DEVICE_KEY: &str = "device.key";
    pub const CA_CHAIN: &str = "ca.crt";
    pub const CONNECTION: &str = "connection.json";
}

/// A bundle's password. Shown to the operator once; never logged (`Debug` redacts
/// it), wiped from memory on drop, and not `Clone`.
///
/// ```compile_fail
/// fn copy(p: &onboard_pki::BundlePassword) -> onboard_pki::BundlePassword {
///     p.clone()
/// }
/// ```
pub struct BundlePassword(Zeroizing<String>);

impl BundlePassword {
    /// The password text. Handle with care.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BundlePassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BundlePassword([redacted])")
    }
}

/// What goes into a bundle.
#[derive(Debug, Clone, Copy)]
pub struct BundleContents<'a> {
    pub certificate_pem: &'a str,
    pub private_key: &'a PrivateKeyPem,
    /// The CA chain as PEM (`CertificateAuthority::chain_pem`).
    pub ca_chain_pem: &'a str,
    /// The device's connection settings (JSON made by the caller).
    pub connection_json: &'a [u8],
    /// The entries' modification time.
    pub created_at: DateTime<Utc>,
}

/// An encrypted ZIP and its password (not `Clone`, because of the password).
pub struct CredentialBundle {
    /// The ZIP file's bytes (the key and the connection settings encrypted; safe
    /// to store or send).
    pub zip: Vec<u8>,
    pub password: BundlePassword,
}

impl fmt::Debug for CredentialBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialBundle")
            .field("zip_bytes", &self.zip.len())
            .field("password", &self.password)
            .finish()
    }
}

/// Builds the encrypted ZIP with a fresh random password.
pub fn build_bundle(contents: &BundleContents<'_>) -> Result<CredentialBundle, PkiError> {
    let password = BundlePassword(Zeroizing::new(random_string(
        PASSWORD_LEN,
        PASSWORD_ALPHABET,
    )?));
    let zip = write_zip(contents, password.expose_secret())?;
    Ok(CredentialBundle { zip, password })
}

/// The bundle of a password device: `ca.crt` and `connection.json`, which holds
/// the device's secret (so it is stored, not deflated, as `device.key` is).
pub fn build_password_bundle(
    ca_chain_pem: &str,
    connection_json: &[u8],
    created_at: DateTime<Utc>,
) -> Result<CredentialBundle, PkiError> {
    let password = BundlePassword(Zeroizing::new(random_string(
        PASSWORD_LEN,
        PASSWORD_ALPHABET,
    )?));
    let (public, secret) = entry_options(created_at);
    let zip = write_entries(
        &[
            (entries::CA_CHAIN, ca_chain_pem.as_bytes(), public, false),
            (entries::CONNECTION, connection_json, secret, true),
        ],
        password.expose_secret(),
    )?;
    Ok(CredentialBundle { zip, password })
}

fn entry_options(created_at: DateTime<Utc>) -> (SimpleFileOptions, SimpleFileOptions) {
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(zip_time(created_at));
    let public = base.unix_permissions(0o644);
    // Secrets are stored, not deflated: the deflate encoder keeps what it reads in
    // its window and drops it unwiped, whereas a stored entry goes straight to
    // the AES writer, which wipes its buffer after every write.
    let secret = base
        .compression_method(CompressionMethod::Stored)
        .unix_permissions(0o600);
    (public, secret)
}

/// Writes the entries; those marked `true` are encrypted with AES-256.
fn write_entries(
    files: &[(&str, &[u8], SimpleFileOptions, bool)],
    password: &str,
) -> Result<Vec<u8>, PkiError> {
    let fail = |e: zip::result::ZipError| PkiError::Bundle(e.to_string());
    let io_fail = |e: std::io::Error| PkiError::Bundle(e.to_string());
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, options, encrypted) in files {
        let options = if *encrypted {
            options.with_aes_encryption(AesMode::Aes256, password)
        } else {
            *options
        };
        zip.start_file(*name, options).map_err(fail)?;
        zip.write_all(data).map_err(io_fail)?;
    }
    Ok(zip.finish().map_err(fail)?.into_inner())
}

fn write_zip(contents: &BundleContents<'_>, password: &str) -> Result<Vec<u8>, PkiError> {
    let (public, secret) = entry_options(contents.created_at);
    let files: [(&str, &[u8], SimpleFileOptions, bool); 4] = [
        (
            entries::DEVICE_CERT,
            contents.certificate_pem.as_bytes(),
            public,
            false,
        ),
        (
            entries::DEVICE_KEY,
            contents.private_key.expose_secret().as_bytes(),
            secret,
            true,
        ),
        (
            entries::CA_CHAIN,
            contents.ca_chain_pem.as_bytes(),
            public,
            false,
        ),
        (entries::CONNECTION, contents.connection_json, public, true),
    ];
    write_entries(&files, password)
}

/// ZIP's DOS time (1980 to 2107, two-second steps); outside that range the ZIP
/// default (1980-01-01).
fn zip_time(t: DateTime<Utc>) -> zip::DateTime {
    let convert = || -> Option<zip::DateTime> {
        zip::DateTime::from_date_and_time(
            u16::try_from(t.year()).ok()?,
            u8::try_from(t.month()).ok()?,
            u8::try_from(t.day()).ok()?,
            u8::try_from(t.hour()).ok()?,
            u8::try_from(t.minute()).ok()?,
            u8::try_from(t.second()).ok()?,
        )
        .ok()
    };
    convert().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn alphabet_has_no_look_alikes() {
        assert_eq!(PASSWORD_ALPHABET.len(), 56);
        for c in b"0Oo1lI" {
            assert!(!PASSWORD_ALPHABET.contains(c));
        }
        let mut sorted = PASSWORD_ALPHABET.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 56);
    }

    #[test]
    fn bundle_has_a_fresh_password_and_aes_entries() {
        let key = crate::keys::generate(onboard_domain::KeyAlgorithm::EcdsaP256).unwrap();
        let key = PrivateKeyPem::from_key(&key).unwrap();
        let contents = BundleContents {
            certificate_pem: "cert",
            private_key: &key,
            ca_chain_pem: "chain",
            connection_json: b"{}",
            created_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        };
        let a = build_bundle(&contents).unwrap();
        let b = build_bundle(&contents).unwrap();
        assert_eq!(a.password.expose_secret().len(), PASSWORD_LEN);
        assert_ne!(a.password.expose_secret(), b.password.expose_secret());
        assert!(a.zip.starts_with(b"PK\x03\x04"));
        // The key's PEM header must not appear in clear.
        assert!(!a.zip.windows(11).any(|w| w == b"PRIVATE KEY"));
        let debug = format!("{a:?}");
        assert!(!debug.contains(a.password.expose_secret()));
        let mut archive = zip::ZipArchive::new(Cursor::new(a.zip.clone())).unwrap();
        assert_eq!(archive.len(), 4);
        assert!(archive.by_name(entries::DEVICE_KEY).is_err());
        let password = a.password.expose_secret().as_bytes();
        let key_entry = archive
            .by_name_decrypt(entries::DEVICE_KEY, password)
            .unwrap();
        assert_eq!(key_entry.compression(), CompressionMethod::Stored);
        drop(key_entry);
        assert!(archive.by_name(entries::CONNECTION).is_err());
        // The certificate and the chain are public and in clear.
        let cert_entry = archive.by_name(entries::DEVICE_CERT).unwrap();
        assert!(!cert_entry.encrypted());
        assert_eq!(cert_entry.compression(), CompressionMethod::Deflated);
        drop(cert_entry);
        assert!(!archive.by_name(entries::CA_CHAIN).unwrap().encrypted());
    }

    #[test]
    fn zip_time_falls_back_outside_dos_range() {
        let old = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(zip_time(old), zip::DateTime::default());
        let t = zip_time(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
        assert_eq!((t.year(), t.month(), t.day()), (2026, 11, 23));
    }
}
