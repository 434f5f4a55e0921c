//! The internal CA as the registration flow's certificate issuer, and the ports
//! Onboard uses by default.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use onboard_domain::{
    BrokerAccess, CertificateIssuer, CloudRegistrar, DeviceId, IssuedCert, KeyAlgorithm, NoBroker,
    NoCloud, Notifier, PortError, SecretString,
};
use onboard_pki::{CertificateAuthority, IssueParams, IssuedCertificate, PkiError};

/// Issues with the internal CA under the configured profile.
#[derive(Debug, Clone)]
pub struct InternalIssuer {
    pub ca: Arc<CertificateAuthority>,
    pub validity_days: u32,
    pub public_base_url: String,
    /// For server-generated keys.
    pub key_algorithm: KeyAlgorithm,
}

fn port_error(e: PkiError) -> PortError {
    if e.is_client_error() {
        PortError::Rejected(e.to_string())
    } else {
        PortError::Unavailable(e.to_string())
    }
}

impl InternalIssuer {
    fn params(&self, device: DeviceId, now: DateTime<Utc>) -> IssueParams<'_> {
        IssueParams {
            device_id: device,
            validity_days: self.validity_days,
            public_base_url: &self.public_base_url,
            now,
        }
    }

    /// Issues for a CSR the CA has already parsed and verified
    /// ([`onboard_pki::parse_csr`]).
    pub fn issue_from_checked(
        &self,
        device: DeviceId,
        csr: &onboard_pki::CheckedCsr,
        now: DateTime<Utc>,
    ) -> Result<IssuedCert, PortError> {
        self.ca
            .issue_from_checked(csr, &self.params(device, now))
            .map(|c| self.convert(c))
            .map_err(port_error)
    }

    fn convert(&self, c: IssuedCertificate) -> IssuedCert {
        IssuedCert {
            pem: c.pem,
            serial: c.serial,
            fingerprint: c.fingerprint,
            subject: c.subject,
            issuer: self.ca.subject(),
            key_algorithm: c.key_algorithm,
            not_before: c.not_before,
            not_after: c.not_after,
        }
    }
}

impl CertificateIssuer for InternalIssuer {
    fn issue_from_csr(
        &self,
        device: DeviceId,
        csr: &[u8],
        now: DateTime<Utc>,
    ) -> Result<IssuedCert, PortError> {
        self.ca
            .issue_from_csr(csr, &self.params(device, now))
            .map(|c| self.convert(c))
            .map_err(port_error)
    }

    fn issue_with_new_key(
        &self,
        device: DeviceId,
        now: DateTime<Utc>,
    ) -> Result<(IssuedCert, SecretString), PortError> {
        let generated = self
            .ca
            .issue_with_new_key(self.key_algorithm, &self.params(device, now))
            .map_err(port_error)?;
        let key = SecretString::new(generated.private_key.expose_secret());
        Ok((self.convert(generated.certificate), key))
    }

    fn ca_chain_pem(&self) -> String {
        self.ca.chain_pem().to_owned()
    }
}

/// The external components a registration goes through. `issuer: None` means the
/// internal CA.
#[derive(Debug, Clone)]
pub struct Ports {
    pub issuer: Option<Arc<dyn CertificateIssuer>>,
    pub broker: Arc<dyn BrokerAccess>,
    pub cloud: Arc<dyn CloudRegistrar>,
    /// Publishes the rotation notifications; `None`: made from the broker
    /// settings when a cycle needs it (and none while `broker.mqtt_url` is empty).
    pub notifier: Option<Arc<dyn Notifier>>,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            issuer: None,
            broker: Arc::new(NoBroker),
            cloud: Arc::new(NoCloud),
            notifier: None,
        }
    }
}
