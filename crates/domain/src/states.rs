//! State enums and the transitions that are legal between them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::InvalidValue;

/// Generates `as_str`, `Display` and `FromStr` from one table of names so the text
/// stored in the database and shown in the API can never drift apart.
macro_rules! named_enum {
    ($name:ident, $field:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(InvalidValue::new(
                        $field,
                        format!("must be one of: {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }
    };
}

/// How a device authenticates to the broker and to the device API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An X.509 certificate of our CA (mutual TLS).
    #[default]
    Certificate,
    /// A client id and a secret (MQTT username/password, `POST /iot/token`).
    Password,
}

named_enum!(CredentialKind, "credential", {
    Certificate => "certificate",
    Password => "password",
});

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Credentials issued; the backend has not heard from the device yet.
    Registered,
    /// The device has reported in.
    Active,
    /// Its credentials were revoked; it can no longer connect.
    Revoked,
    /// Retired for good; the record stays for the audit trail.
    Decommissioned,
}

named_enum!(DeviceStatus, "device status", {
    Registered => "registered",
    Active => "active",
    Revoked => "revoked",
    Decommissioned => "decommissioned",
});

/// A device status change that the life cycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a device cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: DeviceStatus,
    pub to: DeviceStatus,
}

impl DeviceStatus {
    /// The life cycle: registered -> active; either -> revoked; anything but
    /// decommissioned -> decommissioned. Nothing leaves decommissioned, and a revoked
    /// device is never re-activated (it registers anew with new credentials).
    pub fn transition(self, to: DeviceStatus) -> Result<DeviceStatus, IllegalTransition> {
        use DeviceStatus::*;
        let legal = matches!(
            (self, to),
            (Registered, Active)
                | (Registered, Revoked)
                | (Active, Revoked)
                | (Registered, Decommissioned)
                | (Active, Decommissioned)
                | (Revoked, Decommissioned)
        );
        if legal {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

/// A certificate record's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateStatus {
    Active,
    Revoked,
}

named_enum!(CertificateStatus, "certificate status", {
    Active => "active",
    Revoked => "revoked",
});

/// The credential rotation state of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RotationState {
    Ok,
    Queued,
    Pending,
    Timeout,
}

named_enum!(RotationState, "rotation state", {
    Ok => "OK",
    Queued => "QUEUED",
    Pending => "PENDING",
    Timeout => "TIMEOUT",
});

/// Whether an audited action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Success,
    Failure,
}

named_enum!(AuditOutcome, "outcome", {
    Success => "success",
    Failure => "failure",
});

/// Key algorithms the CA issues for and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

named_enum!(KeyAlgorithm, "key algorithm", {
    EcdsaP256 => "ecdsa-p256",
    EcdsaP384 => "ecdsa-p384",
    Rsa2048 => "rsa-2048",
    Rsa3072 => "rsa-3072",
    Rsa4096 => "rsa-4096",
});

impl KeyAlgorithm {
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096)
    }
}

/// RFC 5280 5.3.1 CRL reason codes, named as the RFC names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevocationReason {
    #[serde(rename = "unspecified")]
    Unspecified,
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    #[serde(rename = "cACompromise")]
    CaCompromise,
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    #[serde(rename = "superseded")]
    Superseded,
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    #[serde(rename = "certificateHold")]
    CertificateHold,
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
    #[serde(rename = "aACompromise")]
    AaCompromise,
}

named_enum!(RevocationReason, "reason", {
    Unspecified => "unspecified",
    KeyCompromise => "keyCompromise",
    CaCompromise => "cACompromise",
    AffiliationChanged => "affiliationChanged",
    Superseded => "superseded",
    CessationOfOperation => "cessationOfOperation",
    CertificateHold => "certificateHold",
    PrivilegeWithdrawn => "privilegeWithdrawn",
    AaCompromise => "aACompromise",
});

impl RevocationReason {
    /// The CRLReason code (RFC 5280 5.3.1; 7 is unused and removeFromCRL is delta-only).
    pub fn code(self) -> i32 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_every_enum() {
        for s in DeviceStatus::ALL {
            assert_eq!(s.as_str().parse::<DeviceStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RotationState::ALL {
            assert_eq!(s.as_str().parse::<RotationState>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in KeyAlgorithm::ALL {
            assert_eq!(s.as_str().parse::<KeyAlgorithm>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RevocationReason::ALL {
            assert_eq!(s.as_str().parse::<RevocationReason>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in CertificateStatus::ALL {
            assert_eq!(s.as_str().parse::<CertificateStatus>().unwrap(), *s);
        }
        for s in AuditOutcome::ALL {
            assert_eq!(s.as_str().parse::<AuditOutcome>().unwrap(), *s);
        }
    }

    #[test]
    fn unknown_names_say_what_is_allowed() {
        let err = "lost".parse::<DeviceStatus>().unwrap_err();
        assert_eq!(err.field, "device status");
        assert!(err
            .reason
            .contains("registered, active, revoked, decommissioned"));
    }

    #[test]
    fn device_life_cycle() {
        use DeviceStatus::*;
        assert_eq!(Registered.transition(Active), Ok(Active));
        assert_eq!(Active.transition(Revoked), Ok(Revoked));
        assert_eq!(Revoked.transition(Decommissioned), Ok(Decommissioned));
        for to in DeviceStatus::ALL {
            assert!(
                Decommissioned.transition(*to).is_err(),
                "decommissioned -> {to}"
            );
        }
        assert!(Revoked.transition(Active).is_err());
        assert!(Active.transition(Registered).is_err());
    }

    #[test]
    fn reason_codes_follow_rfc5280() {
        assert_eq!(RevocationReason::KeyCompromise.code(), 1);
        assert_eq!(RevocationReason::CessationOfOperation.code(), 5);
        assert_eq!(RevocationReason::PrivilegeWithdrawn.code(), 9);
        assert_eq!(RevocationReason::AaCompromise.code(), 10);
    }

    #[test]
    fn only_rsa_is_rsa() {
        assert!(KeyAlgorithm::Rsa2048.is_rsa());
        assert!(!KeyAlgorithm::EcdsaP256.is_rsa());
    }
}
