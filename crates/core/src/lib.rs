//! Onboard's use cases. The server and the CLI call these and nothing below them, so
//! the two can never disagree.

mod adapters;
mod admin;
mod app;
mod audit;
mod broker;
mod ca;
mod cloud;
pub mod console;
mod device_api;
mod devices;
mod effects;
mod error;
mod firmware;
mod import;
mod keys;
mod lifecycle;
mod models;
mod notify;
mod ocsp;
mod operator;
mod provision;
mod register;
mod rotation;
mod secret_rotation;
pub mod secrets;
pub mod settings;
mod stats;

pub use adapters::{InternalIssuer, Ports};
pub use admin::AdminSetup;
pub use app::{NotReady, Onboard, READINESS_TIMEOUT};
pub use audit::Actor;
pub use broker::{grants_from_registry, service_endpoint, status_config, AclSync, Unactivated};
pub use ca::{CaInit, CaSummary, CrlStatus, InfraCertificate, PublishedCrl};
pub use cloud::{aws_registrar, CloudAnswer};
pub use device_api::{
    AccessToken, DeviceAuth, DeviceSession, Provisioning, Renewed, ACCESS_TOKEN_AUDIENCE,
    ACCESS_TOKEN_TYPE,
};
pub use devices::DeviceDetails;
pub use effects::{Reconciled, EFFECT_GRACE_SECONDS};
pub use error::CoreError;
pub use firmware::{FirmwareFile, StagedFirmware};
pub use import::{ImportOutcome, ImportResult, ImportRow, IMPORT_CHUNK};
pub use keys::{
    validate_batch_name, CreatedKey, KeyBatchRequest, MAX_BATCH_COUNT, MAX_USES, MAX_VALID_DAYS,
};
pub use lifecycle::DevicePatch;
pub use models::{check_topic_template, ModelRequest};
pub use ocsp::{OcspAnswer, OcspResponderCache, OCSP_VALIDITY_SECONDS};
pub use onboard_broker::{StatusConfig, StatusListener};
pub use onboard_domain as domain;
pub use onboard_firmware::ImageError;
pub use onboard_pki::{
    certs_only_pkcs7_from_pem, est_csr_attributes, ocsp_max_age, presented_certificate,
    OcspFailure, PresentedCertificate,
};
pub use operator::{BundleLink, NewDeviceRequest, OperatorRegistered};
pub use provision::render_topic;
pub use register::{MqttInfo, RegisterRequest, Registered, DEFAULT_TOPIC, MAX_CSR_BYTES};
pub use rotation::{
    CycleSummary, RotationEntry, RotationStatus, StateDevices, STATUS_DEVICES_PER_STATE,
};
pub use settings::{AwsCertificateMode, Secret, Settings, SettingsError};
pub use stats::FleetCounts;
