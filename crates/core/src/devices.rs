//! Reading devices: the fleet list, one device with its certificates, and its
//! broker grant.

use onboard_domain::{
    BrokerGrant, Certificate, CertificateRepository, CertificateStatus, CloudRecord,
    CloudRecordRepository, Device, DeviceFilter, DeviceId, DeviceRepository, Page, PageRequest,
    Store,
};

use crate::app::Onboard;
use crate::audit::uuid_cursor;
use crate::error::CoreError;

/// A device with its certificates, newest first.
#[derive(Debug, Clone)]
pub struct DeviceDetails {
    pub device: Device,
    /// The newest certificate that is not revoked.
    pub current_certificate: Option<Certificate>,
    pub certificates: Vec<Certificate>,
    /// Where the device lives in AWS IoT Core, when it was registered there.
    pub aws: Option<CloudRecord>,
}

impl Onboard {
    /// Devices in creation order, filtered.
    pub fn devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<Device>, CoreError> {
        if let Some(after) = page.after() {
            uuid_cursor(after)?;
        }
        if filter.q.as_ref().is_some_and(|q| q.len() > 128) {
            return Err(CoreError::Invalid(onboard_domain::InvalidValue::new(
                "q",
                "must be at most 128 characters",
            )));
        }
        Ok(self.store().read(|tx| tx.list_devices(filter, page))?)
    }

    pub fn device(&self, id: DeviceId) -> Result<DeviceDetails, CoreError> {
        let (device, certificates, aws) = self.store().read(|tx| -> Result<_, CoreError> {
            Ok((
                tx.device(id)?,
                tx.certificates_of_device(id)?,
                tx.cloud_record(id)?,
            ))
        })?;
        let current_certificate = certificates
            .iter()
            .find(|c| c.status == CertificateStatus::Active)
            .cloned();
        Ok(DeviceDetails {
            device,
            current_certificate,
            certificates,
            aws,
        })
    }

    /// The broker grant the registry implies for a device, as `acl sync` writes it
    /// (without the password hash): `None` once the device is revoked or
    /// decommissioned, when it has no broker access.
    pub fn device_grant(&self, id: DeviceId) -> Result<Option<BrokerGrant>, CoreError> {
        let mut wanted = self.broker_wanted(&std::collections::BTreeSet::from([id]))?;
        Ok(wanted.pop().and_then(|(_, grant)| grant).map(|mut grant| {
            grant.password_hash = None;
            grant
        }))
    }
}
