//! AES-256-GCM for secrets Onboard must get back later (a password device's
//! previous and next secret during a rotation, ADR 6): `seal` and `open` with a
//! 256-bit key from the settings.
//!
//! A sealed value is `version (1 byte, 1) || nonce (12 random bytes) ||
//! ciphertext || tag (16 bytes)`. The associated data binds it to its place (the
//! device id), so a value copied to another row does not open there.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

use crate::error::PkiError;
use crate::secrets::random_bytes;

const VERSION: u8 = 1;
const NONCE: usize = 12;
const TAG: usize = 16;

/// A 256-bit AES key. `Debug` shows nothing of it; it is wiped when dropped.
pub struct SealKey(zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(***)")
    }
}

impl SealKey {
    /// From 64 hex digits (as `openssl rand -hex 32` prints them).
    pub fn from_hex(text: &str) -> Result<Self, PkiError> {
        let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            PkiError::invalid("key", "must be 64 hex digits (openssl rand -hex 32)")
        })?);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            PkiError::invalid("key", "must be 64 hex digits (openssl rand -hex 32)")
        })?;
        Ok(Self(zeroize::Zeroizing::new(key)))
    }

    /// Encrypts `plaintext` under a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, PkiError> {
        let nonce = random_bytes(NONCE)?;
        let mut tag = [0u8; TAG];
        let ciphertext = encrypt_aead(
            Cipher::aes_256_gcm(),
            self.0.as_slice(),
            Some(&nonce),
            aad,
            plaintext,
            &mut tag,
        )?;
        let mut out = Vec::with_capacity(1 + NONCE + ciphertext.len() + TAG);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts what [`SealKey::seal`] made with the same key and `aad`; any
    /// other key, `aad` or a changed byte fails (the tag does not verify).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, PkiError> {
        let bad = || PkiError::invalid("sealed value", "does not open with this key");
        if sealed.len() < 1 + NONCE + TAG || sealed[0] != VERSION {
            return Err(bad());
        }
        let (nonce, rest) = sealed[1..].split_at(NONCE);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            self.0.as_slice(),
            Some(nonce),
            aad,
            ciphertext,
            tag,
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_values_open_only_with_the_key_and_the_place() {
        let key = SealKey::from_hex(KEY).unwrap();
        let a = key.seal(b"device-a", b"the secret").unwrap();
        let b = key.seal(b"device-a", b"the secret").unwrap();
        assert_ne!(a, b, "every seal has its own nonce");
        assert!(!a.windows(10).any(|w| w == b"the secret"));
        assert_eq!(key.open(b"device-a", &a).unwrap().as_slice(), b"the secret");
        assert!(key.open(b"device-b", &a).is_err());
        let other = SealKey::from_hex(&KEY.replace("00", "ff")).unwrap();
        assert!(other.open(b"device-a", &a).is_err());
        for i in 0..a.len() {
            let mut changed = a.clone();
            changed[i] ^= 1;
            assert!(key.open(b"device-a", &changed).is_err(), "byte {i}");
        }
        assert!(key.open(b"device-a", &a[..a.len() - 1]).is_err());
        assert!(key.open(b"device-a", &[]).is_err());
    }

    #[test]
    fn keys_are_64_hex_digits_and_never_shown() {
        for bad in [
            "",
            "00",
            &KEY[..62],
            &format!("{KEY}00"),
            &KEY.replace('0', "g"),
        ] {
            assert!(SealKey::from_hex(bad).is_err(), "{bad:?}");
        }
        let key = SealKey::from_hex(&format!(" {KEY}\n")).unwrap();
        assert_eq!(format!("{key:?}"), "SealKey(***)");
    }
}
