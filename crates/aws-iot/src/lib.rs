//! The cloud registrar for AWS IoT Core, on `aws-sdk-iot` and `aws-config` (the
//! standard credential chain and region; `endpoint_url` for emulators).
//!
//! A registration is one Thing (named from the device id or a template, of the
//! configured thing type, with the attributes `onboard_device_id`, `serial`,
//! `model` and `firmware`), one certificate (ours registered with
//! `RegisterCertificateWithoutCA`, or AWS's from `CreateCertificateFromCsr` /
//! `CreateKeysAndCertificate`), the policy attached to it, the certificate attached
//! to the Thing, and the Thing in its thing groups. The certificate is created
//! INACTIVE and activated by the last step, so whatever a crash leaves behind grants
//! nothing. On a failure the steps already made are undone at once, in reverse
//! order; the core's durable intent finds anything a crash left by the
//! `onboard_device_id` attribute ([`AwsIot::deregister`]).
//!
//! The SDK is async; this crate owns a small tokio runtime and blocks on it, so the
//! synchronous core can call it from any thread. Every call has bounded timeouts and
//! the SDK's standard retries (throttling and transient errors).

mod client;
mod error;
mod policy;
#[cfg(feature = "test-support")]
pub mod testing;

pub use client::{AwsIot, AwsIotConfig, AMAZON_ROOT_CA_PEM, DEVICE_ID_ATTRIBUTE};
pub use error::AwsError;
pub use policy::{check_policy_name, policy_document};
