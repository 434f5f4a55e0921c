//! Reading credentials that callers present, before anything is looked up: HTTP
//! Basic client credentials (RFC 6749 section 2.3.1) and percent-encoded text.
//! Pure functions of their input, so they can be fuzzed alone (`fuzz/`).

use base64::Engine;

/// Why an `Authorization` header holds no usable Basic credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicRejection {
    /// Another scheme (`Bearer ...`), or no scheme at all.
    NotBasic,
    /// Basic, but not base64 of UTF-8 `id:secret` with form-encoded parts.
    Unreadable,
}

/// The client id and secret of an `Authorization: Basic` header value. RFC 6749
/// section 2.3.1: each part is form-urlencoded (`+` for a space, `%XX`) before
/// the pair is base64-encoded.
pub fn basic_credentials(value: &str) -> Result<(String, String), BasicRejection> {
    let (scheme, rest) = value.split_once(' ').ok_or(BasicRejection::NotBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicRejection::NotBasic);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(BasicRejection::Unreadable)?;
    let (id, secret) = decoded.split_once(':').ok_or(BasicRejection::Unreadable)?;
    let unform = |s: &str| form_decode(s).ok_or(BasicRejection::Unreadable);
    Ok((unform(id)?, unform(secret)?))
}

/// `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte; the
/// result must be UTF-8.
pub fn form_decode(s: &str) -> Option<String> {
    String::from_utf8(percent_decode(&s.replace('+', " "))?).ok()
}

/// `%XX` sequences as bytes, everything else as it is; `None` for a `%` not
/// followed by two hex digits.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn basic_credentials_are_read_as_rfc_6749_says() {
        assert_eq!(
            basic_credentials(&basic("dev%3A1:s+e%2Bcret")),
            Ok(("dev:1".into(), "s e+cret".into()))
        );
        assert_eq!(
            basic_credentials(&basic("id:").replace("Basic", "bAsIc")),
            Ok(("id".into(), String::new()))
        );
        assert_eq!(
            basic_credentials("Bearer abc"),
            Err(BasicRejection::NotBasic)
        );
        assert_eq!(basic_credentials("Basic"), Err(BasicRejection::NotBasic));
        assert_eq!(
            basic_credentials("Basic !!!"),
            Err(BasicRejection::Unreadable)
        );
        assert_eq!(
            basic_credentials(&basic("no colon")),
            Err(BasicRejection::Unreadable)
        );
        assert_eq!(
            basic_credentials(&basic("id:%zz")),
            Err(BasicRejection::Unreadable)
        );
        assert_eq!(
            basic_credentials(&basic("id:%ff")),
            Err(BasicRejection::Unreadable),
            "not UTF-8"
        );
    }

    #[test]
    fn percent_decoding_refuses_broken_escapes() {
        assert_eq!(percent_decode("a%20b").unwrap(), b"a b");
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None, "a sign is no hex digit");
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é".as_bytes());
        // A multi-byte character right after `%` must not split it.
        assert_eq!(percent_decode("%é"), None);
    }
}
