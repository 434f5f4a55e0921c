//! The rotation schedule: a standard five-field cron expression (minute, hour,
//! day of month, month, day of week) with croner's `#` (nth weekday of the month)
//! and `L` (last), evaluated in UTC.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A schedule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("not a cron expression: {0}")]
    Invalid(String),
    #[error("the schedule has no occurrence: {0}")]
    NoOccurrence(String),
}

/// A parsed `rotation.cron`.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// Exactly five fields; seconds and years are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields = s.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Invalid(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(s)
            .map_err(|e| ScheduleError::Invalid(e.to_string()))?;
        Ok(Self { cron })
    }
}

impl Schedule {
    /// The latest occurrence `t` with `last < t <= now`: the schedule has come due
    /// since the last scheduled run at `last`. `None` when nothing is due.
    pub fn due_since(
        &self,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        if now <= last {
            return Ok(None);
        }
        let next = self
            .cron
            .find_next_occurrence(&last, false)
            .map_err(|e| ScheduleError::NoOccurrence(e.to_string()))?;
        if next > now {
            return Ok(None);
        }
        let latest = self
            .cron
            .find_previous_occurrence(&now, true)
            .map_err(|e| ScheduleError::NoOccurrence(e.to_string()))?;
        Ok(Some(latest.max(next)))
    }

    /// The first occurrence after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        self.cron
            .find_next_occurrence(&t, false)
            .map_err(|e| ScheduleError::NoOccurrence(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn s(expr: &str) -> Schedule {
        expr.parse().unwrap()
    }

    #[test]
    fn first_saturday_at_eight() {
        let sched = s("0 8 * * 6#1");
        let mut at = t(2026, 11, 23, 0, 0);
        let mut got = Vec::new();
        for _ in 0..4 {
            at = sched.next_after(at).unwrap();
            got.push(at);
        }
        assert_eq!(
            got,
            vec![
                t(2026, 12, 5, 8, 0),
                t(2027, 1, 2, 8, 0),
                t(2027, 2, 6, 8, 0),
                t(2027, 3, 6, 8, 0)
            ]
        );
    }

    #[test]
    fn due_only_once_the_occurrence_has_passed() {
        let sched = s("0 8 * * 6#1");
        let last = t(2026, 11, 23, 0, 0);
        assert_eq!(sched.due_since(last, t(2026, 12, 5, 7, 59)).unwrap(), None);
        assert_eq!(
            sched.due_since(last, t(2026, 12, 5, 8, 0)).unwrap(),
            Some(t(2026, 12, 5, 8, 0))
        );
        // The second Saturday is not an occurrence.
        let after_first = t(2026, 12, 5, 8, 0);
        assert_eq!(
            sched.due_since(after_first, t(2026, 12, 12, 9, 0)).unwrap(),
            None
        );
    }

    #[test]
    fn nothing_is_due_twice_or_backwards() {
        let sched = s("0 8 * * 6#1");
        let at = t(2026, 12, 5, 8, 0);
        assert_eq!(sched.due_since(at, at).unwrap(), None);
        assert_eq!(sched.due_since(at, t(2026, 12, 1, 0, 0)).unwrap(), None);
    }

    #[test]
    fn missed_occurrences_count_once_as_the_latest() {
        let sched = s("0 8 * * 6#1");
        // The job did not run for three months: one queueing, at the latest occurrence.
        assert_eq!(
            sched
                .due_since(t(2026, 11, 23, 0, 0), t(2027, 3, 10, 0, 0))
                .unwrap(),
            Some(t(2027, 3, 6, 8, 0))
        );
    }

    #[test]
    fn year_boundary() {
        let sched = s("0 8 * * 6#1");
        // December's first Saturday passed; January 2027's is the 2nd.
        let last = t(2026, 12, 5, 8, 0);
        assert_eq!(sched.due_since(last, t(2027, 1, 1, 23, 59)).unwrap(), None);
        assert_eq!(
            sched.due_since(last, t(2027, 1, 2, 8, 0)).unwrap(),
            Some(t(2027, 1, 2, 8, 0))
        );
        let newyear = s("0 0 1 1 *");
        assert_eq!(
            newyear
                .due_since(t(2026, 12, 31, 23, 59), t(2027, 1, 1, 0, 0))
                .unwrap(),
            Some(t(2027, 1, 1, 0, 0))
        );
    }

    #[test]
    fn last_day_of_month_across_month_ends_and_leap_years() {
        let sched = s("30 2 L * *");
        let mut at = t(2027, 1, 15, 0, 0);
        let mut got = Vec::new();
        for _ in 0..4 {
            at = sched.next_after(at).unwrap();
            got.push(at);
        }
        assert_eq!(
            got,
            vec![
                t(2027, 1, 31, 2, 30),
                t(2027, 2, 28, 2, 30),
                t(2027, 3, 31, 2, 30),
                t(2027, 4, 30, 2, 30)
            ]
        );
        assert_eq!(
            sched.next_after(t(2028, 2, 1, 0, 0)).unwrap(),
            t(2028, 2, 29, 2, 30)
        );
        // Due on the last day, not on the 30th of a 31-day month.
        assert_eq!(
            sched
                .due_since(t(2027, 3, 1, 0, 0), t(2027, 3, 30, 23, 0))
                .unwrap(),
            None
        );
    }

    #[test]
    fn last_weekday_of_the_month() {
        // The last Friday of each month.
        let sched = s("0 8 * * 5L");
        assert_eq!(
            sched.next_after(t(2026, 12, 1, 0, 0)).unwrap(),
            t(2026, 12, 25, 8, 0)
        );
        assert_eq!(
            sched.next_after(t(2026, 12, 25, 8, 0)).unwrap(),
            t(2027, 1, 29, 8, 0)
        );
    }

    #[test]
    fn only_five_fields_are_accepted() {
        for bad in [
            "",
            "every tuesday",
            "0 0 8 * * 6",
            "0 8 * * 6#1 2027",
            "0 8 * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            "99 8 * * *".parse::<Schedule>(),
            Err(ScheduleError::Invalid(_))
        ));
    }
}
