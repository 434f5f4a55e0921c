//! Credential rotation without I/O: which state changes are legal
//! ([`transition`]), when the fleet is due ([`Schedule`]) and how many rotations a
//! cycle may start ([`start_slots`]), and where a device's notification goes
//! ([`notification_topic`]). The use cases in `onboard-core` persist and
//! audit what these functions decide.

mod machine;
mod notice;
mod schedule;

pub use machine::{start_slots, transition, IllegalRotation};
pub use notice::{notification_filter, notification_topic};
pub use onboard_domain::RotationState;
pub use schedule::{Schedule, ScheduleError};
