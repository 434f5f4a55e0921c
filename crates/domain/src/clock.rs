//! The only place that reads the wall clock.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// Where "now" comes from. Everything that depends on time takes a `Clock` (or a
/// timestamp read from one) so that tests can move time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one allowed reading of the wall clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is moved: for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One counter for the process, so that ids made in the same millisecond still
/// sort in the order they were made.
static ID_CONTEXT: Mutex<AssertUnwindSafe<uuid::ContextV7>> =
    Mutex::new(AssertUnwindSafe(uuid::ContextV7::new()));

/// A new time-ordered identifier (UUID v7) stamped with the clock's time, so that
/// ordering by id is ordering by creation (within a process, also inside one
/// millisecond) and keyset pagination needs no extra column.
pub fn new_id(clock: &dyn Clock) -> Uuid {
    let now = clock.now();
    let secs = u64::try_from(now.timestamp()).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(&ID_CONTEXT, secs, now.timestamp_subsec_nanos());
    Uuid::new_v7(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::minutes(31));
        assert_eq!(clock.now(), start + Duration::minutes(31));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn ids_follow_the_clock_order() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let a = new_id(&clock);
        clock.advance(Duration::milliseconds(5));
        let b = new_id(&clock);
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.get_version_num(), 7);
        // Within one instant, ids still sort in the order they were made.
        let same: Vec<Uuid> = (0..100).map(|_| new_id(&clock)).collect();
        assert!(same.windows(2).all(|w| w[0] < w[1]));
        assert!(b < same[0]);
    }
}
