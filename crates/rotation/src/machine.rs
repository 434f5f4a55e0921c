//! The per-device rotation state machine.

use onboard_domain::RotationState;

/// A rotation state change the machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a rotation cannot go from {from} to {to}")]
pub struct IllegalRotation {
    pub from: RotationState,
    pub to: RotationState,
}

/// The legal transitions, and only these:
///
/// - `OK -> QUEUED`: the schedule came due, or an operator queued the device;
/// - `QUEUED -> PENDING`: the rotation started (new credential, notification);
/// - `PENDING -> OK`: the device acknowledged its new credential;
/// - `PENDING -> TIMEOUT`: the deadline passed, the old credential is restored;
/// - `TIMEOUT -> PENDING`: a later cycle retries;
/// - `TIMEOUT -> QUEUED`: an operator re-queued the device by hand.
///
/// A device without a rotation record is `OK`.
pub fn transition(
    from: RotationState,
    to: RotationState,
) -> Result<RotationState, IllegalRotation> {
    use RotationState::*;
    let legal = matches!(
        (from, to),
        (Ok, Queued)
            | (Queued, Pending)
            | (Pending, Ok)
            | (Pending, Timeout)
            | (Timeout, Pending)
            | (Timeout, Queued)
    );
    if legal {
        Result::Ok(to)
    } else {
        Err(IllegalRotation { from, to })
    }
}

/// How many rotations a cycle may start when `pending` are PENDING already and at
/// most `max_in_flight` may be.
pub fn start_slots(pending: u64, max_in_flight: u32) -> u64 {
    u64::from(max_in_flight).saturating_sub(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RotationState::*;

    #[test]
    fn only_the_documented_transitions_are_legal() {
        let legal = [
            (Ok, Queued),
            (Queued, Pending),
            (Pending, Ok),
            (Pending, Timeout),
            (Timeout, Pending),
            (Timeout, Queued),
        ];
        for &from in RotationState::ALL {
            for &to in RotationState::ALL {
                let got = transition(from, to);
                if legal.contains(&(from, to)) {
                    assert_eq!(got, Result::Ok(to), "{from} -> {to}");
                } else {
                    assert_eq!(got, Err(IllegalRotation { from, to }), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn illegal_transitions_name_both_states() {
        let e = transition(Ok, Pending).unwrap_err();
        assert_eq!(e.to_string(), "a rotation cannot go from OK to PENDING");
    }

    #[test]
    fn slots_never_go_below_zero() {
        assert_eq!(start_slots(0, 1), 1);
        assert_eq!(start_slots(1, 1), 0);
        assert_eq!(start_slots(5, 2), 0);
        assert_eq!(start_slots(1, 3), 2);
    }
}
