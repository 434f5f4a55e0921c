//! Randomness, hashing and comparison for the rest of the workspace, which may not
//! use openssl itself. Everything random comes from OpenSSL's CSPRNG (`RAND_bytes`).

use openssl::memcmp;
use openssl::rand::rand_bytes;
use openssl::sha::sha256;

use crate::error::PkiError;

/// `n` bytes from OpenSSL's CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, PkiError> {
    let mut buf = vec![0u8; n];
    rand_bytes(&mut buf)?;
    Ok(buf)
}

/// A fresh 256-bit secret as URL-safe text: base64url without padding, 43
/// characters of `A-Z a-z 0-9 - _`.
pub fn random_token() -> Result<String, PkiError> {
    let bytes = zeroize::Zeroizing::new(random_bytes(32)?);
    Ok(base64url(&bytes))
}

/// Whether `s` has the shape of a [`random_token`]: 43 characters of
/// `A-Z a-z 0-9 - _`. Callers refuse anything else before a lookup.
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Lowercase hex SHA-256 of `data` (64 characters).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// Compares two byte strings in time independent of their contents (the length is
/// not secret: different lengths return `false` at once).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && memcmp::eq(a, b)
}

/// `len` characters drawn uniformly from `alphabet` (rejection sampling, so no
/// character is more likely than another). `alphabet` must have 1 to 256 entries.
pub(crate) fn random_string(len: usize, alphabet: &[u8]) -> Result<String, PkiError> {
    let size = alphabet.len();
    if size == 0 || size > 256 {
        return Err(PkiError::invalid(
            "alphabet",
            "must have 1 to 256 characters",
        ));
    }
    // The largest multiple of `size` that fits in a byte: bytes at or above it are
    // thrown away so that `byte % size` is uniform.
    let limit = 256 - 256 % size;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let batch = zeroize::Zeroizing::new(random_bytes(len * 2)?);
        for &b in batch.iter() {
            if usize::from(b) < limit {
                out.push(char::from(alphabet[usize::from(b) % size]));
                if out.len() == len {
                    break;
                }
            }
        }
    }
    Ok(out)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_have_the_token_shape_and_little_else_does() {
        for _ in 0..100 {
            assert!(is_token_shaped(&random_token().unwrap()));
        }
        let ok = "A".repeat(43);
        assert!(is_token_shaped(&ok));
        assert!(!is_token_shaped(&"A".repeat(42)));
        assert!(!is_token_shaped(&"A".repeat(44)));
        assert!(!is_token_shaped(&format!("{}=", "A".repeat(42))));
        assert!(!is_token_shaped(&format!("{}/", "A".repeat(42))));
        // 43 bytes, but fewer characters: not ASCII.
        assert!(!is_token_shaped(&format!("{}é", "A".repeat(41))));
    }

    #[test]
    fn random_bytes_have_the_requested_length_and_differ() {
        assert_eq!(random_bytes(0).unwrap().len(), 0);
        let a = random_bytes(32).unwrap();
        let b = random_bytes(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn tokens_are_256_bit_base64url() {
        let t = random_token().unwrap();
        assert_eq!(t.len(), 43);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(t, random_token().unwrap());
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        // RFC 4648 section 10, without padding; then the URL-safe characters.
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), expected);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn sha256_hex_matches_the_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_checks_length_and_content() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_strings_use_only_the_alphabet_and_cover_it() {
        let alphabet = b"abc";
        let s = random_string(3000, alphabet).unwrap();
        assert_eq!(s.len(), 3000);
        for c in ['a', 'b', 'c'] {
            let n = s.chars().filter(|x| *x == c).count();
            // Expected 1000 each; 6 standard deviations is about 155.
            assert!((800..1200).contains(&n), "{c}: {n}");
        }
        assert!(random_string(5, b"").is_err());
    }
}
