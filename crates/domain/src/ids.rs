//! Identifiers and validated values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value that does not satisfy its rule. `field` names what was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| InvalidValue::new($field, "not a UUID"))
            }
        }
    };
}

uuid_id!(
    /// A device's identity; also its certificate's CN and its MQTT client id.
    DeviceId,
    "device id"
);
uuid_id!(
    /// A bootstrap key's id (not the secret).
    BootstrapKeyId,
    "bootstrap key id"
);
uuid_id!(
    /// A certificate record's id.
    CertificateId,
    "certificate id"
);

/// The longest serial a device may present.
pub const SERIAL_MAX_LEN: usize = 64;

/// A device's hardware serial: 1 to 64 characters of `A-Z a-z 0-9 . _ : -`, starting
/// with a letter or digit. The set is what fits in a certificate, a topic and a file
/// name without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Serial(String);

impl Serial {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let bad = |r: &str| Err(InvalidValue::new("serial", r));
        if s.is_empty() {
            return bad("must not be empty");
        }
        if s.len() > SERIAL_MAX_LEN {
            return bad("must be at most 64 characters");
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return bad("must start with a letter or a digit");
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        {
            return bad("may contain only letters, digits and . _ : -");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Serial::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A device model's code: 1 to 64 characters of lowercase letters, digits, `-` and
/// `_`, starting with a letter or digit (it appears in topics and URLs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ModelCode(String);

impl ModelCode {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let bad = |r: &str| Err(InvalidValue::new("model", r));
        if s.is_empty() || s.len() > 64 {
            return bad("must be 1 to 64 characters");
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return bad("must start with a lowercase letter or a digit");
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
        {
            return bad("may contain only lowercase letters, digits, - and _");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ModelCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ModelCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A firmware version as devices report it and as an image's application
/// descriptor carries it: 1 to 64 printable ASCII characters without spaces.
/// Empty is allowed only where "unknown" is meant ([`check_firmware_version`]
/// with `allow_empty`).
pub fn check_firmware_version(s: &str, allow_empty: bool) -> Result<(), InvalidValue> {
    if s.is_empty() && !allow_empty {
        return Err(InvalidValue::new("firmware_version", "must not be empty"));
    }
    if s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(InvalidValue::new(
            "firmware_version",
            "must be at most 64 printable characters without spaces",
        ));
    }
    Ok(())
}

/// The largest metadata object a device may register with, serialised.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

/// A JSON object of at most `max_bytes` serialised (device metadata, say).
pub fn check_json_object(
    field: &'static str,
    value: &serde_json::Value,
    max_bytes: usize,
) -> Result<(), InvalidValue> {
    if !value.is_object() {
        return Err(InvalidValue::new(field, "must be a JSON object"));
    }
    if value.to_string().len() > max_bytes {
        return Err(InvalidValue::new(
            field,
            format!("must be at most {max_bytes} bytes"),
        ));
    }
    Ok(())
}

/// A SHA-256 digest as 64 lowercase hex characters: the name of a stored
/// firmware image, so only this type (never a caller's text) makes a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sha256Digest(String);

impl Sha256Digest {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() != 64 || !s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(InvalidValue::new(
                "sha256",
                "must be 64 lowercase hexadecimal characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate serial number as uppercase hexadecimal without separators (at most
/// 20 octets, RFC 5280 4.1.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CertSerial(String);

impl CertSerial {
    /// Accepts hex with or without `:` separators, in either case.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.is_empty() || hex.len() > 40 {
            return Err(InvalidValue::new(
                "certificate serial",
                "must be 1 to 20 octets of hex",
            ));
        }
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(InvalidValue::new(
                "certificate serial",
                "must be hexadecimal",
            ));
        }
        Ok(Self(hex.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 fingerprint of a certificate's DER, lowercase hex (64 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(InvalidValue::new(
                "fingerprint",
                "must be 32 octets of hex (SHA-256)",
            ));
        }
        Ok(Self(hex.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_versions_and_digests() {
        for ok in ["1.4.2", "v2.0.0-rc1-3-gabc1234-dirty", &"9".repeat(64)] {
            assert!(check_firmware_version(ok, false).is_ok(), "{ok}");
        }
        assert!(check_firmware_version("", true).is_ok());
        for bad in ["", "1.0 beta", "1.0\n", &"9".repeat(65), "v\u{e9}"] {
            assert!(check_firmware_version(bad, false).is_err(), "{bad:?}");
        }
        let hex = "ab".repeat(32);
        assert_eq!(Sha256Digest::parse(&hex).unwrap().as_str(), hex);
        for bad in [
            "AB".repeat(32),
            "ab".repeat(31),
            format!("../{}", "a".repeat(61)),
        ] {
            assert!(Sha256Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serials_accept_the_documented_set() {
        for ok in ["SN-000123", "a", "ESP32:AA:BB", "lot_7.42", &"9".repeat(64)] {
            assert_eq!(Serial::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn serials_reject_everything_else() {
        for bad in [
            "",
            "-leading",
            "has space",
            "slash/topic",
            "plus+",
            "hash#",
            "ünicode",
            "new\nline",
            &"9".repeat(65),
        ] {
            let err = Serial::parse(bad).unwrap_err();
            assert_eq!(err.field, "serial", "{bad:?}");
        }
    }

    #[test]
    fn serial_deserialization_validates() {
        assert!(serde_json::from_str::<Serial>("\"SN-1\"").is_ok());
        let err = serde_json::from_str::<Serial>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("serial"), "{err}");
    }

    #[test]
    fn model_codes_are_lowercase_slugs() {
        assert!(ModelCode::parse("tempsensor").is_ok());
        assert!(ModelCode::parse("esp32-c3_v2").is_ok());
        for bad in ["", "Temp", "_x", "a b", "a/b", &"m".repeat(65)] {
            assert!(ModelCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cert_serials_normalise_to_uppercase_hex() {
        assert_eq!(CertSerial::parse("5a:1f:00").unwrap().as_str(), "5A1F00");
        assert!(CertSerial::parse("").is_err());
        assert!(CertSerial::parse("xyz").is_err());
        assert!(CertSerial::parse(&"A".repeat(41)).is_err());
    }

    #[test]
    fn fingerprints_are_sha256_hex() {
        let hex = "AB".repeat(32);
        assert_eq!(Fingerprint::parse(&hex).unwrap().as_str(), "ab".repeat(32));
        assert!(Fingerprint::parse("abcd").is_err());
    }

    #[test]
    fn uuid_ids_parse_and_reject() {
        let id: DeviceId = "3f0c2a8e-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(id.to_string(), "3f0c2a8e-0000-7000-8000-000000000001");
        let err = "nope".parse::<DeviceId>().unwrap_err();
        assert_eq!(err.field, "device id");
    }
}
