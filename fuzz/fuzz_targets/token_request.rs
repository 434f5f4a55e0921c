//! The token endpoint's client authentication (`POST /iot/token`): the
//! `Authorization: Basic` reader and the form decoding of RFC 6749 section
//! 2.3.1. Any header value is read without a panic; credentials encoded the way
//! the RFC says come back unchanged, whatever bytes they hold.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use onboard_domain::credentials::{basic_credentials, form_decode, percent_decode};

/// Form-urlencoding: every byte but unreserved ones as `%XX`, spaces as `+`.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Any header value, as sent.
    if let Ok((id, secret)) = basic_credentials(&text) {
        // What was read, encoded again, reads the same.
        let again = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", form_encode(&id), form_encode(&secret)))
        );
        assert_eq!(basic_credentials(&again), Ok((id, secret)));
    }
    let _ = percent_decode(&text);
    let _ = form_decode(&text);

    // The input split into an id (no colon, as a device id has none) and a
    // secret, encoded as a client would.
    let (id, secret) = text.split_once(':').unwrap_or((&text, ""));
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", form_encode(id), form_encode(secret)))
    );
    assert_eq!(
        basic_credentials(&header),
        Ok((id.to_owned(), secret.to_owned()))
    );
    assert_eq!(form_decode(&form_encode(&text)).as_deref(), Some(&*text));
});
