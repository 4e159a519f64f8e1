//! Usage-plan quota periods: a limit of requests per DAY, WEEK or MONTH,
//! on the UTC calendar (Amazon API Gateway does not document its reset
//! instant; UTC midnight is the common reading). Weeks start on Monday
//! (ISO 8601), months on the 1st. Calendar arithmetic is the `time`
//! crate's: not our core.

use serde::Deserialize;
use time::{Date, Duration, OffsetDateTime, Time};

/// How long a quota counts before it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "DAY",
            Period::Week => "WEEK",
            Period::Month => "MONTH",
        }
    }

    /// Start of the period holding `unix_secs`, in Unix seconds.
    pub fn start(self, unix_secs: u64) -> u64 {
        let day = utc_date(unix_secs);
        let first = match self {
            Period::Day => day,
            Period::Week => {
                let back = i64::from(day.weekday().number_days_from_monday());
                day.checked_sub(Duration::days(back)).unwrap_or(day)
            }
            Period::Month => day.replace_day(1).unwrap_or(day),
        };
        secs_of(first)
    }

    /// Start of the period after the one holding `unix_secs`.
    pub fn next_start(self, unix_secs: u64) -> u64 {
        let start = utc_date(self.start(unix_secs));
        let next = match self {
            Period::Day => start.next_day(),
            Period::Week => start.checked_add(Duration::days(7)),
            Period::Month => {
                let (y, m) = (start.year(), start.month());
                let (y, m) = if m == time::Month::December {
                    (y + 1, time::Month::January)
                } else {
                    (y, m.next())
                };
                Date::from_calendar_date(y, m, 1).ok()
            }
        };
        next.map(secs_of).unwrap_or(u64::MAX)
    }
}

/// The current period of one quota, advanced by the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodClock {
    period: Period,
    start: u64,
    next: u64,
}

impl PeriodClock {
    pub fn new(period: Period, unix_secs: u64) -> PeriodClock {
        PeriodClock {
            period,
            start: period.start(unix_secs),
            next: period.next_start(unix_secs),
        }
    }

    /// Moves to the period holding `unix_secs`; true when that is a new
    /// one (the quota resets).
    pub fn roll(&mut self, unix_secs: u64) -> bool {
        if unix_secs < self.next {
            return false;
        }
        *self = PeriodClock::new(self.period, unix_secs);
        true
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn next_start(&self) -> u64 {
        self.next
    }
}

fn utc_date(unix_secs: u64) -> Date {
    let secs = i64::try_from(unix_secs).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| t.date())
        .unwrap_or(Date::MAX)
}

fn secs_of(d: Date) -> u64 {
    u64::try_from(d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-25 16:40:00 UTC, a Wednesday.
    const NOW: u64 = 1_795_624_800;
    const DAY: u64 = 86_400;

    #[test]
    fn periods_start_at_utc_midnight_monday_and_the_first() {
        let midnight = NOW - NOW % DAY;
        assert_eq!(Period::Day.start(NOW), midnight);
        assert_eq!(Period::Day.next_start(NOW), midnight + DAY);
        // Monday 2026-11-23.
        assert_eq!(Period::Week.start(NOW), midnight - 2 * DAY);
        assert_eq!(Period::Week.next_start(NOW), midnight + 5 * DAY);
        // 2026-11-01 and 2026-12-01.
        assert_eq!(Period::Month.start(NOW), midnight - 24 * DAY);
        assert_eq!(Period::Month.next_start(NOW), midnight + 6 * DAY);
    }

    #[test]
    fn the_clock_rolls_once_per_period() {
        let mut c = PeriodClock::new(Period::Day, NOW);
        assert!(!c.roll(NOW + 60));
        let next = c.next_start();
        assert!(c.roll(next));
        assert_eq!(c.start(), next);
        assert!(!c.roll(next + 1));
        // A gap of several periods rolls once, to the current one.
        assert!(c.roll(next + 10 * DAY + 5));
        assert_eq!(c.start(), next + 10 * DAY);
    }

    #[test]
    fn december_rolls_into_january_and_boundaries_belong_to_the_new_period() {
        // 2026-12-31 12:00 UTC.
        let dec31 = 1_798_718_400;
        let jan1 = 1_798_761_600;
        assert_eq!(Period::Month.next_start(dec31), jan1);
        assert_eq!(Period::Month.start(jan1), jan1);
        assert_eq!(Period::Day.start(jan1), jan1);
        assert_eq!(Period::Day.start(jan1 - 1), jan1 - DAY);
    }
}
