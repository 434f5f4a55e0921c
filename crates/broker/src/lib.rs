//! Broker access for Mosquitto 2.0: Onboard's [`onboard_domain::BrokerAccess`]
//! port, and the activation listener.
//!
//! - [`MosquittoFile`]: the ACL file (one `user` block per device, or in pattern
//!   mode, [`AclPatterns`], `pattern` lines and blocks only for the exceptions), the password
//!   file (`mosquitto_passwd` format, see [`hash_password`]) and the CRL, each
//!   replaced atomically, then Mosquitto reloaded ([`Reload`]) and the reload
//!   confirmed. The files are regenerated from the registry through a
//!   [`GrantLoader`], and concurrent changes share rewrites.
//! - [`MosquittoDynsec`]: live changes through the dynamic-security plugin over
//!   MQTT; the CRL still goes through a file and a reload.
//! - [`MqttPublisher`]: the service account's notices to devices (rotation
//!   notifications), QoS 1, each call bounded by a timeout.
//! - [`StatusListener`]: subscribes to the devices' status topics and reports
//!   sightings in batches, for activation.
//! - `testing` (feature `test-support`): a real Mosquitto in a temporary directory
//!   for integration tests.
//!
//! Every [`onboard_domain::BrokerAccess`] call blocks until the broker enforces
//! the change, or, while Mosquitto is not running yet (its pid file does not
//! exist), until the files are written (call it from a blocking context: `web::block`,
//! `spawn_blocking`, or a plain thread). `docs/mosquitto.md` gives the matching
//! Mosquitto configuration.

mod acl;
mod atomic;
mod dynsec;
mod error;
mod file;
mod mqtt;
mod passwd;
mod publish;
mod reload;
mod status;
#[cfg(feature = "test-support")]
mod test_client;
#[cfg(feature = "test-support")]
pub mod testing;

pub use acl::AclPatterns;
pub use dynsec::{DynsecConfig, MosquittoDynsec, ROLE_PREFIX};
pub use error::BrokerError;
pub use file::{DeviceGrantLoader, FileConfig, GrantLoader, MosquittoFile, ShutOutLoader};
pub use mqtt::MqttEndpoint;
pub use passwd::{hash_password, verify_password, PASSWORD_ITERATIONS};
pub use publish::{MqttPublisher, PublisherConfig};
pub use reload::{Reload, DEFAULT_CONFIRM_TIMEOUT};
pub use status::{StatusConfig, StatusListener};
