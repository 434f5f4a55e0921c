//! Ports to the world outside storage: the certificate issuer, the broker and the
//! cloud registry. Each registration calls all three; the `none` adapters are real
//! implementations for deployments that have no such component.

use chrono::{DateTime, Utc};

use crate::ids::{CertSerial, DeviceId, Fingerprint, Serial};
use crate::states::KeyAlgorithm;

/// Text that must not be logged or shown: `Debug` prints `***`, and the text is
/// wiped from memory when the value (and each clone of it) is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl Drop for SecretString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(***)")
    }
}

/// Why an external step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The input is not acceptable (a CSR that breaks the key policy): 4xx.
    #[error("{0}")]
    Rejected(String),
    /// The component cannot be reached or failed; the step may work later.
    #[error("{0}")]
    Unavailable(String),
}

/// A certificate as issued, whoever issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub pem: String,
    pub serial: CertSerial,
    pub fingerprint: Fingerprint,
    pub subject: String,
    pub issuer: String,
    pub key_algorithm: KeyAlgorithm,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// Issues device certificates.
pub trait CertificateIssuer: Send + Sync + std::fmt::Debug {
    /// For the key in `csr` (PEM); the subject is the device id, not the CSR's.
    fn issue_from_csr(
        &self,
        device: DeviceId,
        csr: &[u8],
        now: DateTime<Utc>,
    ) -> Result<IssuedCert, PortError>;
    /// With a key pair generated here; the key comes back once, as PKCS#8 PEM.
    fn issue_with_new_key(
        &self,
        device: DeviceId,
        now: DateTime<Utc>,
    ) -> Result<(IssuedCert, SecretString), PortError>;
    /// The chain devices must trust, PEM.
    fn ca_chain_pem(&self) -> String;
}

/// What a device may do on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerGrant {
    pub device_id: DeviceId,
    pub serial: Serial,
    /// The MQTT client id and username (the certificate's CN).
    pub client_id: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub max_qos: u8,
    pub retain_allowed: bool,
    /// For devices that log in with a password (instead of a client certificate):
    /// the hash in `mosquitto_passwd` format (`$7$...`, PBKDF2-SHA512). Never the
    /// password.
    pub password_hash: Option<String>,
}

/// Broker permissions. Every call returns once the broker enforces the change
/// (files written and reloaded, or the broker acknowledged), so a revocation is in
/// force when it returns.
pub trait BrokerAccess: Send + Sync + std::fmt::Debug {
    fn grant(&self, grant: &BrokerGrant) -> Result<(), PortError>;
    /// Many grants as one change (bulk import): implementations that rewrite files
    /// do it once, not once per device.
    fn grant_many(&self, grants: &[BrokerGrant]) -> Result<(), PortError> {
        grants.iter().try_for_each(|g| self.grant(g))
    }
    /// Removes everything granted to the device; removing nothing is not an error.
    fn revoke(&self, device: DeviceId) -> Result<(), PortError>;
    /// Makes the broker's state exactly `grants` (start-up, `onboardctl acl sync`):
    /// devices not listed lose their access.
    fn sync(&self, grants: &[BrokerGrant]) -> Result<(), PortError>;
    /// Installs a new CRL (PEM) where the broker reads it, and reloads.
    fn publish_crl(&self, crl_pem: &str) -> Result<(), PortError>;
    /// False for [`NoBroker`]: device grants then need no work after a commit.
    fn enabled(&self) -> bool {
        true
    }
    /// True when the broker already enforces `grant` for a device that is new to
    /// it, without any change (the file backend's pattern mode: the patterns give
    /// it exactly these topics); the registration then records no broker effect.
    /// False whenever that cannot be told for sure.
    fn enforces_new_device(&self, _grant: &BrokerGrant) -> bool {
        false
    }
}

/// A message for one device (a rotation notification), published at QoS 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub topic: String,
    pub payload: String,
}

/// What became of a batch of notices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivery {
    /// Per notice, in order: whether the broker acknowledged it (PUBACK).
    pub acknowledged: Vec<bool>,
    /// Why the others were not: the broker could not be reached, refused the
    /// connection, or did not answer within the notifier's bound.
    pub error: Option<PortError>,
}

/// Publishes notices to devices through the broker (Onboard's service account).
/// A call never waits longer than the notifier's configured bound.
pub trait Notifier: Send + Sync + std::fmt::Debug {
    fn notify(&self, notices: &[Notice]) -> Delivery;
}

/// How the cloud registry gets a device's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudCertificate {
    /// Our CA issued it: the registry takes it as it is (PEM).
    Own { pem: String },
    /// The registry issues it: from the device's CSR (PEM), or with a key pair it
    /// generates when there is none.
    Issue { csr: Option<Vec<u8>> },
}

/// A device to enter in a cloud IoT registry (AWS IoT Core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudDevice {
    pub device_id: DeviceId,
    pub serial: Serial,
    pub model: Option<String>,
    /// The bootstrap key batch the device registered with.
    pub batch: Option<String>,
    pub firmware_version: String,
    pub certificate: CloudCertificate,
}

/// Where a device lives in the cloud registry; stored with the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudRecord {
    pub device_id: DeviceId,
    pub thing_name: String,
    pub thing_arn: String,
    pub certificate_id: String,
    pub certificate_arn: String,
    /// SHA-256 of the registered certificate's DER, lowercase hex: tells whether
    /// the cloud holds the device's current certificate.
    pub certificate_fingerprint: String,
}

/// A certificate the cloud registry issued (`CloudCertificate::Issue`).
#[derive(Debug, Clone)]
pub struct CloudIssued {
    pub certificate_pem: String,
    /// Only when the registry generated the key pair (no CSR).
    pub private_key: Option<SecretString>,
    /// The chain a device trusts to reach the registry's endpoint (Amazon's roots).
    pub ca_chain_pem: String,
}

/// What a complete cloud registration made.
#[derive(Debug, Clone)]
pub struct CloudRegistration {
    /// `certificate_fingerprint` is empty in `Issue` mode: the caller fills it in
    /// from `issued`.
    pub record: CloudRecord,
    /// The data endpoint devices connect to.
    pub endpoint: String,
    pub issued: Option<CloudIssued>,
}

/// The cloud side of a device. Every call returns once the registry holds the
/// change; an error names the call that failed.
pub trait CloudRegistrar: Send + Sync + std::fmt::Debug {
    /// False for [`NoCloud`]: registration then makes no cloud calls at all.
    fn enabled(&self) -> bool {
        true
    }
    /// True when the registry issues certificates (`CloudCertificate::Issue`)
    /// instead of registering our CA's.
    fn issues_certificates(&self) -> bool {
        false
    }
    /// The endpoint devices connect to, when the registry has one.
    fn endpoint(&self) -> Result<Option<String>, PortError> {
        Ok(None)
    }
    /// Creates everything a device needs, all or nothing: on a failure the steps
    /// already made are undone before the error returns (what cannot be undone
    /// then is found again by [`CloudRegistrar::deregister`]).
    fn register(&self, device: &CloudDevice) -> Result<CloudRegistration, PortError>;
    /// Puts `pem` (from our CA) in place of the record's certificate.
    fn replace_certificate(
        &self,
        record: &CloudRecord,
        pem: &str,
    ) -> Result<CloudRecord, PortError>;
    /// Marks the record's certificate revoked.
    fn revoke(&self, record: &CloudRecord) -> Result<(), PortError>;
    /// Removes everything the registry holds for the device (found by the device
    /// id it is marked with); removing nothing is not an error.
    fn deregister(&self, device: DeviceId) -> Result<(), PortError>;
    /// Every device id the registry holds resources for (marked as ours).
    fn devices(&self) -> Result<Vec<DeviceId>, PortError>;
}

/// No broker to manage (the broker is AWS IoT Core, or permissions are external).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBroker;

impl BrokerAccess for NoBroker {
    fn grant(&self, _: &BrokerGrant) -> Result<(), PortError> {
        Ok(())
    }
    fn revoke(&self, _: DeviceId) -> Result<(), PortError> {
        Ok(())
    }
    fn sync(&self, _: &[BrokerGrant]) -> Result<(), PortError> {
        Ok(())
    }
    fn publish_crl(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
    fn enabled(&self) -> bool {
        false
    }
}

/// No cloud registry (AWS off).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCloud;

impl CloudRegistrar for NoCloud {
    fn enabled(&self) -> bool {
        false
    }
    fn register(&self, _: &CloudDevice) -> Result<CloudRegistration, PortError> {
        Err(PortError::Unavailable(
            "no cloud registry is configured".into(),
        ))
    }
    fn replace_certificate(&self, record: &CloudRecord, _: &str) -> Result<CloudRecord, PortError> {
        Ok(record.clone())
    }
    fn revoke(&self, _: &CloudRecord) -> Result<(), PortError> {
        Ok(())
    }
    fn deregister(&self, _: DeviceId) -> Result<(), PortError> {
        Ok(())
    }
    fn devices(&self) -> Result<Vec<DeviceId>, PortError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_debug_print() {
        let s = SecretString::new("-----BEGIN PRIVATE KEY-----");
        assert_eq!(format!("{s:?}"), "SecretString(***)");
        assert_eq!(s.expose(), "-----BEGIN PRIVATE KEY-----");
    }
}
