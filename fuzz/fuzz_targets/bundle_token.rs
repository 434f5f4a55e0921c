//! Credential bundle download tokens (`/public/v1/bundles/{token}`): the shape
//! check that runs before any lookup accepts exactly 43 characters of
//! `A-Z a-z 0-9 - _`, whatever the input, and every token the server makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onboard_pki::secrets::{is_token_shaped, random_token, sha256_hex};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let expected = text.chars().count() == 43
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    assert_eq!(is_token_shaped(&text), expected, "{text:?}");
    if expected {
        // What is looked up: the token's hash, never the token.
        let hash = sha256_hex(text.as_bytes());
        assert_eq!(hash.len(), 64);
    }
    if data.first() == Some(&0) {
        let made = random_token().unwrap_or_default();
        assert!(is_token_shaped(&made), "{made}");
    }
});
