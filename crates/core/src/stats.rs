//! Counts for the metrics: devices by status and rotations by state, straight
//! from the registry, so every replica reports the same numbers.

use onboard_domain::{DeviceRepository, DeviceStatus, RotationRepository, RotationState, Store};

use crate::app::Onboard;
use crate::error::CoreError;

/// Every status and every rotation state with its count (zero included, so a
/// dashboard shows the state before the first device reaches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCounts {
    pub devices_by_status: Vec<(&'static str, i64)>,
    pub rotations_by_state: Vec<(&'static str, i64)>,
    /// Rotations ended, by outcome (`completed`, `timed_out`), from the audit log,
    /// so the cycles the CronJob runs count as well.
    pub rotations_by_outcome: Vec<(&'static str, i64)>,
}

/// The audit action of each rotation outcome.
const OUTCOMES: [(&str, &str); 2] = [
    ("completed", "rotation.complete"),
    ("timed_out", "rotation.timeout"),
];

impl Onboard {
    pub fn fleet_counts(&self) -> Result<FleetCounts, CoreError> {
        let kinds = crate::rotation::rotated_kinds(self.settings());
        let (devices, rotations, outcomes) = self.store().read(|tx| -> Result<_, CoreError> {
            Ok((
                tx.count_devices_by_status()?,
                {
                    let records = tx.count_rotations_by_state()?;
                    crate::rotation::with_fleet_queued(tx, kinds, records)?
                },
                tx.count_audit_actions(&OUTCOMES.map(|(_, action)| action))?,
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
            rotations_by_outcome: OUTCOMES
                .iter()
                .map(|(outcome, action)| (*outcome, count(&outcomes, action)))
                .collect(),
        })
    }
}
