//! Reading devices: the fleet list, one device with its certificates, and its
//! broker grant.

use onboard_domain::{
    BrokerGrant, Certificate, CertificateRepository, CertificateStatus, CloudRecord,
    CloudRecordRepository, Device, DeviceFilter, DeviceId, DeviceModelRepository, DeviceRepository,
    DeviceStatus, Page, PageRequest, RepoError, Store,
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
        let (device, model) = self.store().read(|tx| -> Result<_, CoreError> {
            let device = tx.device(id)?;
            let model = match &device.model {
                Some(code) => match tx.model(code) {
                    Ok(m) => Some(m),
                    Err(RepoError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            };
            Ok((device, model))
        })?;
        if !matches!(
            device.status,
            DeviceStatus::Registered | DeviceStatus::Active
        ) {
            return Ok(None);
        }
        let mqtt = self.mqtt_info(&model, &device);
        Ok(Some(crate::provision::grant_of(&device, &mqtt, None)))
    }
}
