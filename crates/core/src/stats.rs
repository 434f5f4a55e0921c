//! Counts for the metrics: devices by status and rotations by state, straight
//! from the registry, so every replica reports the same numbers.

use onboard_domain::{DeviceRepository, DeviceStatus, RotationState, Store};

use crate::app::Onboard;
use crate::error::CoreError;

/// Every status and every rotation state with its count (zero included, so a
/// dashboard shows the state before the first device reaches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCounts {
    pub devices_by_status: Vec<(&'static str, i64)>,
    pub rotations_by_state: Vec<(&'static str, i64)>,
}

impl Onboard {
    pub fn fleet_counts(&self) -> Result<FleetCounts, CoreError> {
        let (devices, rotations) = self.store().read(|tx| -> Result<_, CoreError> {
            Ok((
                tx.count_devices_by_status()?,
                tx.count_rotations_by_state()?,
            ))
        })?;
        let count = |found: &[(String, i64)], name: &str| {
            found
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, n)| *n)
                .sum()
        };
        Ok(FleetCounts {
            devices_by_status: DeviceStatus::ALL
                .iter()
                .map(|s| (s.as_str(), count(&devices, s.as_str())))
                .collect(),
            rotations_by_state: RotationState::ALL
                .iter()
                .map(|s| (s.as_str(), count(&rotations, s.as_str())))
                .collect(),
        })
    }
}
