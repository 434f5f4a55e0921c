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
}

/// A device's record in a cloud IoT registry (AWS IoT Core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudDevice {
    pub device_id: DeviceId,
    pub serial: Serial,
    pub certificate_pem: String,
}

/// The cloud side of a device.
pub trait CloudRegistrar: Send + Sync + std::fmt::Debug {
    fn register(&self, device: &CloudDevice) -> Result<(), PortError>;
    /// Undoes `register`; removing nothing is not an error.
    fn deregister(&self, device: DeviceId) -> Result<(), PortError>;
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
}

/// No cloud registry (AWS off).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCloud;

impl CloudRegistrar for NoCloud {
    fn register(&self, _: &CloudDevice) -> Result<(), PortError> {
        Ok(())
    }
    fn deregister(&self, _: DeviceId) -> Result<(), PortError> {
        Ok(())
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
