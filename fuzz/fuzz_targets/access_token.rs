//! Device access tokens (compact JWS, ES256) as callers present them:
//! `TokenKey::verify` on any text must not panic, and never accepts what this key
//! did not sign; claims signed and verified come back unchanged, and a token with
//! any one character changed no longer verifies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use onboard_pki::TokenKey;

fn key() -> &'static TokenKey {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    KEY.get_or_init(|| match TokenKey::from_secret(&[7u8; 32]) {
        Ok(k) => k,
        Err(e) => panic!("the fuzz key: {e}"),
    })
}

/// Whether `v` holds a floating-point number: serde_json's float parsing is not
/// exact, so such claims need not come back bit for bit (not the verifier's doing).
fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    let text = String::from_utf8_lossy(data);
    // Nobody can forge ES256: arbitrary text never verifies.
    assert!(key.verify(&text, None).is_err());
    assert!(key.verify(&text, Some("at+jwt")).is_err());

    // The input as claims: a round trip, then tampering at a chosen place.
    let Some((&at, rest)) = data.split_first() else {
        return;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    if has_float(&claims) {
        return;
    }
    // Only an object is a claims set (RFC 7519 section 7.2).
    let Ok(token) = key.sign("at+jwt", &claims) else {
        assert!(!claims.is_object(), "an object was refused: {claims}");
        return;
    };
    assert!(claims.is_object(), "signed: {claims}");
    if token.len() > onboard_pki::MAX_ACCESS_TOKEN_BYTES {
        assert!(key.verify(&token, None).is_err(), "an oversized token");
        return;
    }
    assert_eq!(key.verify(&token, Some("at+jwt")).as_ref(), Ok(&claims));
    assert!(key.verify(&token, Some("other")).is_err());
    let mut tampered = token.into_bytes();
    let i = usize::from(at) * tampered.len() / 256;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap_or_default();
    assert!(key.verify(&tampered, None).is_err(), "{tampered}");
});
