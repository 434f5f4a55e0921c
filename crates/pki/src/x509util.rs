//! Small X.509 helpers shared by the CA, issuing, CRL and inspection code: serials,
//! times, names, fingerprints, the DER extensions we encode by hand, and the DER
//! tag-length-value helper that `pkcs8` uses too.

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{CertSerial, Fingerprint};
use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time, Asn1TimeRef};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::x509::{X509Extension, X509NameRef, X509Ref};

use crate::error::PkiError;
use crate::secrets;

/// How far `not_before` is moved into the past to tolerate device clock skew.
pub(crate) const BACKDATE: Duration = Duration::minutes(5);

/// The longest validity we accept for anything (100 years).
pub(crate) const MAX_VALIDITY_DAYS: u32 = 36_500;

/// A fresh serial: 16 random octets, top bit cleared (positive) and the next bit set
/// (so it always encodes in exactly 16 octets and is never zero): 126 random bits.
pub(crate) fn random_serial() -> Result<(BigNum, CertSerial), PkiError> {
    let (bytes, serial) = random_serial_bytes()?;
    Ok((BigNum::from_slice(&bytes)?, serial))
}

/// [`random_serial`] as the big-endian octets of the (positive) integer.
pub(crate) fn random_serial_bytes() -> Result<(Vec<u8>, CertSerial), PkiError> {
    let mut bytes = secrets::random_bytes(16)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    let serial = CertSerial::parse(&hex::encode_upper(&bytes))
        .map_err(|e| PkiError::invalid("serial", e.reason))?;
    Ok((bytes.to_vec(), serial))
}

/// A certificate's serial as the domain type (uppercase hex, whole octets).
pub(crate) fn serial_of(cert: &X509Ref) -> Result<CertSerial, PkiError> {
    let bn = cert.serial_number().to_bn()?;
    if bn.is_negative() {
        return Err(PkiError::CertificateUnreadable {
            reason: "the certificate has a negative serial number".into(),
        });
    }
    CertSerial::parse(&hex::encode_upper(bn.to_vec())).map_err(|e| {
        PkiError::CertificateUnreadable {
            reason: format!("its serial number is unusable: {}", e.reason),
        }
    })
}

/// A serial from the domain type, for a CRL entry.
pub(crate) fn serial_bn(serial: &CertSerial) -> Result<BigNum, PkiError> {
    Ok(BigNum::from_hex_str(serial.as_str())?)
}

/// SHA-256 of the certificate's DER.
pub(crate) fn fingerprint(cert: &X509Ref) -> Result<Fingerprint, PkiError> {
    let digest = cert.digest(MessageDigest::sha256())?;
    Fingerprint::parse(&hex::encode(digest)).map_err(|e| PkiError::invalid("fingerprint", e.reason))
}

/// SHA-256 of a certificate given as DER.
pub(crate) fn fingerprint_of_der(der: &[u8]) -> Result<Fingerprint, PkiError> {
    let digest = openssl::hash::hash(MessageDigest::sha256(), der)?;
    Fingerprint::parse(&hex::encode(digest)).map_err(|e| PkiError::invalid("fingerprint", e.reason))
}

/// Whole seconds, as certificates carry them.
pub(crate) fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

// `time_t` is i64 here but 32 bits on some targets: keep the checked conversion.
#[allow(clippy::useless_conversion)]
pub(crate) fn asn1_time(t: DateTime<Utc>) -> Result<Asn1Time, PkiError> {
    let secs = t
        .timestamp()
        .try_into()
        .map_err(|_| PkiError::invalid("time", "out of range for this platform"))?;
    Ok(Asn1Time::from_unix(secs)?)
}

pub(crate) fn to_datetime(t: &Asn1TimeRef) -> Result<DateTime<Utc>, PkiError> {
    let epoch = Asn1Time::from_unix(0)?;
    let diff = epoch.diff(t)?;
    let secs = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    DateTime::from_timestamp(secs, 0).ok_or_else(|| PkiError::CertificateUnreadable {
        reason: "a time field is out of range".into(),
    })
}

/// The validity window for something issued at `now` for `days`:
/// `now - 5 min` to `now + days`, in whole seconds.
pub(crate) fn validity(
    now: DateTime<Utc>,
    days: u32,
) -> Result<(DateTime<Utc>, DateTime<Utc>), PkiError> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(PkiError::invalid(
            "validity days",
            format!("must be between 1 and {MAX_VALIDITY_DAYS}"),
        ));
    }
    let now = truncate(now);
    let not_after = now
        .checked_add_signed(Duration::days(i64::from(days)))
        .ok_or_else(|| PkiError::invalid("validity days", "the end date is out of range"))?;
    Ok((now - BACKDATE, not_after))
}

/// `CN=..., O=...` in the order the name holds its entries.
pub(crate) fn name_to_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".to_owned());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// DER tag-length-value.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// An extension from its dotted OID and its DER value.
pub(crate) fn extension_from_der(
    oid: &str,
    critical: bool,
    der: &[u8],
) -> Result<X509Extension, PkiError> {
    let oid = Asn1Object::from_str(oid)?;
    let value = Asn1OctetString::new_from_bytes(der)?;
    Ok(X509Extension::new_from_der(&oid, critical, &value)?)
}

const OID_AUTHORITY_KEY_IDENTIFIER: &str = "2.5.29.35";
const OID_CRL_REASON: &str = "2.5.29.21";

/// The DER of cRLDistributionPoints with one distribution point whose full name is
/// `uri` (a visible-ASCII URL: `issue::base_url` checks it).
pub(crate) fn crl_distribution_point(uri: &str) -> Vec<u8> {
    let general_name = tlv(0x86, uri.as_bytes()); // [6] IMPLICIT IA5String
    let full_name = tlv(0xa0, &general_name); // fullName [0] IMPLICIT GeneralNames
    let dp_name = tlv(0xa0, &full_name); // distributionPoint [0] (CHOICE: explicit)
    let dp = tlv(0x30, &dp_name); // DistributionPoint
    tlv(0x30, &dp) // CRLDistributionPoints
}

/// id-ad-ocsp (1.3.6.1.5.5.7.48.1) as a DER OBJECT IDENTIFIER.
const ID_AD_OCSP_DER: [u8; 10] = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];

/// The DER of authorityInfoAccess with one id-ad-ocsp access description at `uri`
/// (like the CRL distribution point).
pub(crate) fn ocsp_access(uri: &str) -> Vec<u8> {
    let mut description = ID_AD_OCSP_DER.to_vec();
    description.extend(tlv(0x86, uri.as_bytes())); // uniformResourceIdentifier [6]
    tlv(0x30, &tlv(0x30, &description))
}

/// authorityKeyIdentifier with only the key identifier (for CRLs, which have no
/// X509v3 context in openssl 0.10).
pub(crate) fn authority_key_id(key_id: &[u8]) -> Result<X509Extension, PkiError> {
    let der = tlv(0x30, &tlv(0x80, key_id)); // keyIdentifier [0] IMPLICIT OCTET STRING
    extension_from_der(OID_AUTHORITY_KEY_IDENTIFIER, false, &der)
}

/// The CRLReason entry extension for `code` (an ENUMERATED).
pub(crate) fn crl_reason(code: i32) -> Result<X509Extension, PkiError> {
    let byte = u8::try_from(code).map_err(|_| PkiError::invalid("reason code", "out of range"))?;
    extension_from_der(OID_CRL_REASON, false, &tlv(0x0a, &[byte]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn serials_are_positive_sixteen_octets() {
        for _ in 0..50 {
            let (bn, serial) = random_serial().unwrap();
            assert_eq!(bn.num_bytes(), 16);
            assert_eq!(serial.as_str().len(), 32);
            assert!(!bn.is_negative());
            assert_eq!(serial_bn(&serial).unwrap(), bn);
        }
    }

    #[test]
    fn times_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        assert_eq!(to_datetime(&asn1_time(t).unwrap()).unwrap(), t);
        let late = Utc.with_ymd_and_hms(2061, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(to_datetime(&asn1_time(late).unwrap()).unwrap(), late);
    }

    #[test]
    fn validity_backdates_and_checks_days() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let (nb, na) = validity(now, 365).unwrap();
        assert_eq!(now - nb, Duration::minutes(5));
        assert_eq!(na - now, Duration::days(365));
        assert!(validity(now, 0).is_err());
        assert!(validity(now, MAX_VALIDITY_DAYS + 1).is_err());
    }

    #[test]
    fn der_lengths_use_long_form_past_127() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(0x04, &[0; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn hand_encoded_extensions_parse() {
        authority_key_id(&[7; 20]).unwrap();
        crl_reason(1).unwrap();
    }
}
