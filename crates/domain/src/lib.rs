//! The vocabulary of Onboard: identifiers, entities, states, the rules that need no
//! I/O, and the ports (traits) that the outer crates implement.
//!
//! This crate depends on no other crate of ours and performs no I/O.

mod clock;
pub mod credentials;
mod entities;
mod ids;
mod ports;
mod services;
mod states;

pub use clock::{new_id, Clock, ManualClock, SystemClock};
pub use entities::{
    AuditEvent, BootstrapKey, Certificate, CrlRecord, Device, DeviceModel, FleetGeneration,
    KeyRejection, ModelFirmware, MqttCredential, NewAuditEvent, NewBootstrapKey, NewCertificate,
    NewDevice, Rotation,
};
pub use ids::{
    check_firmware_version, check_json_object, BootstrapKeyId, CertSerial, CertificateId, DeviceId,
    Fingerprint, InvalidValue, ModelCode, Serial, Sha256Digest, MAX_METADATA_BYTES,
};
pub use ports::{
    AuditFilter, AuditRepository, BootstrapKeyFilter, BootstrapKeyRepository,
    CertificateRepository, CloudRecordRepository, CredentialBundleRepository, CrlRepository,
    DeviceFilter, DeviceModelRepository, DeviceRepository, DeviceUpdate, Effect, EffectRepository,
    FirmwareRepository, MqttCredentialRepository, NewCredentialBundle, NewRegistration, Page,
    PageRequest, PendingEffect, RepoError, Repositories, RotationRepository, Store, MAX_PAGE_SIZE,
};
pub use services::{
    BrokerAccess, BrokerGrant, CertificateIssuer, CloudCertificate, CloudDevice, CloudIssued,
    CloudRecord, CloudRegistrar, CloudRegistration, Delivery, IssuedCert, NoBroker, NoCloud,
    Notice, Notifier, PortError, SecretString,
};
pub use states::{
    AuditOutcome, CertificateStatus, CredentialKind, DeviceStatus, IllegalTransition, KeyAlgorithm,
    RevocationReason, RotationState,
};
