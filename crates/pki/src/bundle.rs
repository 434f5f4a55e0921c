//! Credential bundles: a ZIP whose secret entries are encrypted with WinZip AES-256
//! (AE-2) under a random password.
//!
//! Entries: `device.crt` (the device certificate) and `ca.crt` (the CA chain,
//! issuing CA first), public by nature, deflated and not encrypted; `device.key`
//! (its PKCS#8 key) and `connection.json` (given by the caller; it may hold the
//! device's configuration secrets), stored rather than deflated, so that no
//! compressor buffer holds them, and encrypted. Each encrypted entry costs one
//! PBKDF2-HMAC-SHA1 key derivation (1,000 rounds, the format's), most of a bulk
//! import's CPU time, so only what is secret is encrypted, and the derivation runs
//! on the bare SHA-1 compression (`winzip`). The archive is written by `zipfile`.
//! The password is 24 characters from a 56-character alphabet without look-alikes
//! (no `0 O o 1 l I`), drawn without bias: about 139 bits.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use zeroize::Zeroizing;

use crate::error::PkiError;
use crate::keys::PrivateKeyPem;
use crate::secrets::random_string;
use crate::zipfile::{self, EntryData};

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

/// A certificate device's files, for [`BundleWriter::build`].
#[derive(Debug, Clone, Copy)]
pub struct DeviceFiles<'a> {
    pub certificate_pem: &'a str,
    pub private_key: &'a PrivateKeyPem,
    /// The device's connection settings (JSON made by the caller).
    pub connection_json: &'a [u8],
    /// The entries' modification time.
    pub created_at: DateTime<Utc>,
}

/// Builds the bundles of devices under one CA chain. The chain, the same in every
/// bundle, is deflated once here rather than once a bundle.
#[derive(Debug, Clone)]
pub struct BundleWriter {
    chain: EntryData,
}

const PUBLIC: u32 = 0o644;
const PRIVATE: u32 = 0o600;

impl BundleWriter {
    /// `ca_chain_pem`: the CA chain as PEM (`CertificateAuthority::chain_pem`).
    pub fn new(ca_chain_pem: &str) -> Result<Self, PkiError> {
        Ok(Self {
            chain: EntryData::deflated(ca_chain_pem.as_bytes())?,
        })
    }

    /// A certificate device's bundle, with a fresh random password.
    pub fn build(&self, files: &DeviceFiles<'_>) -> Result<CredentialBundle, PkiError> {
        let password = new_password()?;
        let secret = password.expose_secret().as_bytes();
        let cert = EntryData::deflated(files.certificate_pem.as_bytes())?;
        let key = EntryData::encrypted(files.private_key.expose_secret().as_bytes(), secret)?;
        let connection = EntryData::encrypted(files.connection_json, secret)?;
        let zip = zipfile::write(
            &[
                (entries::DEVICE_CERT, PUBLIC, &cert),
                (entries::DEVICE_KEY, PRIVATE, &key),
                (entries::CA_CHAIN, PUBLIC, &self.chain),
                (entries::CONNECTION, PRIVATE, &connection),
            ],
            dos_time(files.created_at),
        )?;
        Ok(CredentialBundle { zip, password })
    }

    /// A password device's bundle: `ca.crt` and `connection.json`, which holds the
    /// device's secret.
    pub fn build_password(
        &self,
        connection_json: &[u8],
        created_at: DateTime<Utc>,
    ) -> Result<CredentialBundle, PkiError> {
        let password = new_password()?;
        let connection =
            EntryData::encrypted(connection_json, password.expose_secret().as_bytes())?;
        let zip = zipfile::write(
            &[
                (entries::CA_CHAIN, PUBLIC, &self.chain),
                (entries::CONNECTION, PRIVATE, &connection),
            ],
            dos_time(created_at),
        )?;
        Ok(CredentialBundle { zip, password })
    }
}

fn new_password() -> Result<BundlePassword, PkiError> {
    Ok(BundlePassword(Zeroizing::new(random_string(
        PASSWORD_LEN,
        PASSWORD_ALPHABET,
    )?)))
}

/// Builds the encrypted ZIP with a fresh random password (one bundle; an import
/// keeps one [`BundleWriter`] for all of them).
pub fn build_bundle(contents: &BundleContents<'_>) -> Result<CredentialBundle, PkiError> {
    BundleWriter::new(contents.ca_chain_pem)?.build(&DeviceFiles {
        certificate_pem: contents.certificate_pem,
        private_key: contents.private_key,
        connection_json: contents.connection_json,
        created_at: contents.created_at,
    })
}

/// The bundle of a password device (see [`BundleWriter::build_password`]).
pub fn build_password_bundle(
    ca_chain_pem: &str,
    connection_json: &[u8],
    created_at: DateTime<Utc>,
) -> Result<CredentialBundle, PkiError> {
    BundleWriter::new(ca_chain_pem)?.build_password(connection_json, created_at)
}

/// ZIP's DOS time and date (1980 to 2107, two-second steps); outside that range
/// the ZIP default, 1980-01-01 00:00.
fn dos_time(t: DateTime<Utc>) -> (u16, u16) {
    let year = t.year();
    if !(1980..=2107).contains(&year) {
        return (0, (1 << 5) | 1);
    }
    // Each field fits its bits: hours < 24 (5 bits), minutes < 60 (6), seconds / 2
    // < 30 (5; a leap second's 60 reads as 59), year - 1980 < 128 (7), month
    // <= 12 (4), day <= 31 (5).
    let time = (t.hour() << 11) | (t.minute() << 5) | (t.second().min(59) / 2);
    let date = (((year - 1980) as u32) << 9) | (t.month() << 5) | t.day();
    (time as u16, date as u16)
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

    fn open(zip: &[u8]) -> zip::ZipArchive<std::io::Cursor<Vec<u8>>> {
        zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec())).unwrap()
    }

    #[test]
    fn bundle_has_a_fresh_password_and_aes_entries() {
        use std::io::Read;
        use zip::CompressionMethod;
        let key = crate::keys::generate(onboard_domain::KeyAlgorithm::EcdsaP256).unwrap();
        let key = PrivateKeyPem::from_key(&key).unwrap();
        let contents = BundleContents {
            certificate_pem: "cert",
            private_key: &key,
            ca_chain_pem: "chain",
            connection_json: b"{\"wifi_password\":\"hunter2\"}",
            created_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        };
        let a = build_bundle(&contents).unwrap();
        let b = build_bundle(&contents).unwrap();
        assert_eq!(a.password.expose_secret().len(), PASSWORD_LEN);
        assert_ne!(a.password.expose_secret(), b.password.expose_secret());
        assert!(a.zip.starts_with(b"PK\x03\x04"));
        // Neither the key's PEM header nor the settings appear in clear.
        assert!(!a.zip.windows(11).any(|w| w == b"PRIVATE KEY"));
        assert!(!a.zip.windows(7).any(|w| w == b"hunter2"));
        let debug = format!("{a:?}");
        assert!(!debug.contains(a.password.expose_secret()));
        let mut archive = open(&a.zip);
        assert_eq!(archive.len(), 4);
        let password = a.password.expose_secret().as_bytes();
        for (name, content) in [
            (entries::DEVICE_KEY, key.expose_secret().as_bytes()),
            (entries::CONNECTION, contents.connection_json),
        ] {
            assert!(archive.by_name(name).is_err(), "{name} needs the password");
            let mut entry = archive.by_name_decrypt(name, password).unwrap();
            assert_eq!(entry.compression(), CompressionMethod::Stored, "{name}");
            assert_eq!(entry.unix_mode(), Some(0o100_600), "{name}");
            let mut read = Vec::new();
            entry.read_to_end(&mut read).unwrap();
            assert_eq!(read, content, "{name}");
        }
        assert!(archive
            .by_name_decrypt(entries::DEVICE_KEY, b"not the password")
            .is_err());
        // The certificate and the chain are public and in clear.
        for (name, content) in [(entries::DEVICE_CERT, "cert"), (entries::CA_CHAIN, "chain")] {
            let mut entry = archive.by_name(name).unwrap();
            assert!(!entry.encrypted());
            assert_eq!(entry.compression(), CompressionMethod::Deflated);
            assert_eq!(entry.unix_mode(), Some(0o100_644), "{name}");
            let mut read = String::new();
            entry.read_to_string(&mut read).unwrap();
            assert_eq!(read, content);
        }
        let t = archive
            .by_name(entries::CA_CHAIN)
            .unwrap()
            .last_modified()
            .unwrap();
        assert_eq!((t.year(), t.month(), t.day(), t.hour()), (2026, 11, 23, 10));
    }

    #[test]
    fn a_writer_reuses_the_chain_but_not_the_salts() {
        let writer = BundleWriter::new("chain").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let a = writer.build_password(b"{\"secret\":1}", at).unwrap();
        let b = writer.build_password(b"{\"secret\":1}", at).unwrap();
        // An AES entry's data starts with its salt.
        let salt = |z: &[u8]| -> Vec<u8> {
            let mut archive = open(z);
            let idx = archive.index_for_name(entries::CONNECTION).unwrap();
            let start = archive.by_index_raw(idx).unwrap().data_start().unwrap() as usize;
            z[start..start + 16].to_vec()
        };
        assert_ne!(salt(&a.zip), salt(&b.zip));
        let mut archive = open(&a.zip);
        assert_eq!(archive.len(), 2);
        let mut read = Vec::new();
        std::io::Read::read_to_end(
            &mut archive
                .by_name_decrypt(entries::CONNECTION, a.password.expose_secret().as_bytes())
                .unwrap(),
            &mut read,
        )
        .unwrap();
        assert_eq!(read, b"{\"secret\":1}");
    }

    #[test]
    fn dos_time_falls_back_outside_its_range() {
        let old = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(dos_time(old), (0, 33));
        let late = Utc.with_ymd_and_hms(2108, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(dos_time(late), (0, 33));
        let t = dos_time(Utc.with_ymd_and_hms(2026, 11, 23, 10, 7, 31).unwrap());
        assert_eq!(t, ((10 << 11) | (7 << 5) | 15, (46 << 9) | (11 << 5) | 23));
    }
}
