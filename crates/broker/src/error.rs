//! The one error type of the broker crate, and its mapping to the domain's
//! [`PortError`].
//!
//! Messages name the file, the command or the broker that failed. They never carry
//! a password, a password hash or a private key.

use std::path::PathBuf;
use std::time::Duration;

use onboard_domain::PortError;

/// Everything that can go wrong in the broker crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A grant cannot be written to Mosquitto's files or sent to the plugin (an
    /// empty or multi-line client id or topic, a malformed password hash).
    #[error("invalid broker grant: {0}")]
    InvalidGrant(String),

    /// A notice cannot be published: its topic is not a topic name.
    #[error("invalid notice: {0}")]
    InvalidNotice(String),

    /// The text given as a CRL is not a PEM CRL.
    #[error("the CRL is not PEM (-----BEGIN X509 CRL-----)")]
    InvalidCrl,

    /// A setting given to this crate is unusable.
    #[error("invalid broker configuration: {0}")]
    InvalidConfig(String),

    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Asking Mosquitto to reload failed (no pid file, no such process, the reload
    /// command failed).
    #[error("cannot reload Mosquitto: {0}")]
    Reload(String),

    /// Mosquitto was asked to reload but did not read the new file in time.
    #[error("Mosquitto did not read {} within {:?} of the reload request", path.display(), timeout)]
    ReloadNotConfirmed { path: PathBuf, timeout: Duration },

    /// The loader (the registry) could not list the grants.
    #[error("cannot list the broker grants: {0}")]
    Loader(PortError),

    /// The MQTT connection failed or timed out.
    #[error("MQTT: {0}")]
    Mqtt(String),

    /// The dynamic-security plugin answered a command with an error.
    #[error("dynamic-security command {command} failed: {error}")]
    Dynsec { command: String, error: String },

    /// A rewrite panicked (in the loader, for instance).
    #[error("internal error: {0}")]
    Internal(String),

    /// Hashing a password failed.
    #[error("cannot hash the password: {0}")]
    Pki(#[from] onboard_pki::PkiError),
}

impl BrokerError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<BrokerError> for PortError {
    /// An invalid grant or notice is the caller's ([`PortError::Rejected`]); everything else
    /// may work later ([`PortError::Unavailable`]). A loader error passes through.
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::InvalidGrant(_)
            | BrokerError::InvalidNotice(_)
            | BrokerError::InvalidCrl => PortError::Rejected(e.to_string()),
            BrokerError::Loader(inner) => inner,
            other => PortError::Unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_rejected_the_rest_is_unavailable() {
        assert!(matches!(
            PortError::from(BrokerError::InvalidGrant("x".into())),
            PortError::Rejected(_)
        ));
        assert!(matches!(
            PortError::from(BrokerError::Mqtt("down".into())),
            PortError::Unavailable(_)
        ));
        let inner = PortError::Unavailable("db down".into());
        assert_eq!(PortError::from(BrokerError::Loader(inner.clone())), inner);
    }
}
